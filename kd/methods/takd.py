"""TAKD (Mirzadeh et al. 2020): Hinton KD from a teacher assistant.

The assistant is a mid-size model trained once by KD from the teacher (the teacher store
does that); the student then distils from the assistant, which the trainer passes in the
teacher slot.
"""
from kd.methods.base import METHODS
from kd.methods.kd import HintonKD


@METHODS.register("takd")
class TeacherAssistantKD(HintonKD):
    label = "TAKD"
    reference = ("Mirzadeh et al., Improved Knowledge Distillation via Teacher Assistant (AAAI 2020, "
                 "arXiv 1902.03393)")
    rule = "Hinton KD from the assistant"
    colour, marker, order = "#CC79A7", "D", 20
    needs_assistant = True
