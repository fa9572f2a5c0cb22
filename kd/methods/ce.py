"""Baseline: the student trained on hard labels alone."""
import torch.nn.functional as F

from kd.methods.base import METHODS, Method


@METHODS.register("ce")
class CrossEntropy(Method):
    def losses(self, student_logits, teacher_logits, labels, ctx):
        return {"ce": F.cross_entropy(student_logits.float(), labels)}
