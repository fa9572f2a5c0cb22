"""TAKD (Mirzadeh et al. 2020): Hinton KD from a teacher assistant.

The assistant is a mid-size model trained once by KD from the teacher (the teacher store
does that); the student then distils from the assistant, which the trainer passes in the
teacher slot.
"""
from kd.methods.base import METHODS
from kd.methods.kd import HintonKD


@METHODS.register("takd")
class TeacherAssistantKD(HintonKD):
    needs_assistant = True
