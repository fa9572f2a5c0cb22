"""Hinton KD: (1 - alpha) CE + alpha tau^2 KL, the "KD" row of every table.

A regression output has no softmax to soften: there the form is
(1 - alpha) MSE(z_s, y) + alpha MSE(z_s, z_t) (losses.regression_kd_loss; temperature unused).
"""
import torch.nn.functional as F

from kd.losses import soft_kl
from kd.methods.base import METHODS, Method, Param

TEMPERATURE = Param("temperature", float, 4.0, "softmax temperature", low=0.0, above_low=True)
ALPHA = Param("alpha", float, 0.9, "weight of the distillation term", low=0.0, high=1.0)
# TAKD's sets (its repository's search_space.json)
TAKD_SEARCH = {"temperature": [1, 2, 5, 10, 15, 20], "alpha": [round(0.05 * i, 2) for i in range(1, 21)]}


@METHODS.register("kd")
class HintonKD(Method):
    label = "Hinton KD"
    reference = "Hinton, Vinyals and Dean, Distilling the Knowledge in a Neural Network (2015, arXiv 1503.02531)"
    rule = "(1 - alpha) CE + alpha tau^2 KL"
    colour, marker, order = "#0072B2", "s", 10
    needs_teacher = True
    params = (TEMPERATURE, ALPHA)
    search = TAKD_SEARCH

    def losses(self, student_logits, teacher_logits, labels, ctx):
        # The two terms are reported apart; their sum is exactly losses.hinton_kd_loss
        # (losses.regression_kd_loss for a regression task).
        alpha, tau = self.cfg.alpha, self.cfg.temperature
        label_term = {self.label_term: (1.0 - alpha) * self.label_loss(student_logits, labels)}
        if self.regression:
            return {**label_term,
                    "teacher_mse": alpha * F.mse_loss(student_logits.float(), teacher_logits.detach().float())}
        return {**label_term, "kl": alpha * soft_kl(student_logits, teacher_logits, tau)}
