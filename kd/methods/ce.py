"""Baseline: the student trained on hard labels alone (CE; MSE for a regression task)."""
from kd.methods.base import METHODS, Method


@METHODS.register("ce")
class CrossEntropy(Method):
    def losses(self, student_logits, teacher_logits, labels, ctx):
        return {self.label_term: self.label_loss(student_logits, labels)}
