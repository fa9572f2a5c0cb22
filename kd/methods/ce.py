"""Baseline: the student trained on hard labels alone (CE; MSE for a regression task)."""
from kd.methods.base import METHODS, Method


@METHODS.register("ce")
class CrossEntropy(Method):
    label = "CE (no teacher)"
    reference = "the student trained on the labels alone"
    rule = "labels only"
    colour, marker, order = "#555555", "o", 0

    def losses(self, student_logits, teacher_logits, labels, ctx):
        return {self.label_term: self.label_loss(student_logits, labels)}
