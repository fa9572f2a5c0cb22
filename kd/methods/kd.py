"""Hinton KD: (1 - alpha) CE + alpha tau^2 KL, the "KD" row of every table.

A regression output has no softmax to soften: there the form is
(1 - alpha) MSE(z_s, y) + alpha MSE(z_s, z_t) (losses.regression_kd_loss; temperature unused).
"""
import torch.nn.functional as F

from kd.losses import soft_kl
from kd.methods.base import METHODS, Method


@METHODS.register("kd")
class HintonKD(Method):
    needs_teacher = True

    def losses(self, student_logits, teacher_logits, labels, ctx):
        # The two terms are reported apart; their sum is exactly losses.hinton_kd_loss
        # (losses.regression_kd_loss for a regression task).
        alpha, tau = self.cfg.alpha, self.cfg.temperature
        label_term = {self.label_term: (1.0 - alpha) * self.label_loss(student_logits, labels)}
        if self.regression:
            return {**label_term,
                    "teacher_mse": alpha * F.mse_loss(student_logits.float(), teacher_logits.detach().float())}
        return {**label_term, "kl": alpha * soft_kl(student_logits, teacher_logits, tau)}
