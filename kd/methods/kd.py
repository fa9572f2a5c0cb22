"""Hinton KD: (1 - alpha) CE + alpha tau^2 KL, the "KD" row of every table."""
import torch.nn.functional as F

from kd.losses import soft_kl
from kd.methods.base import METHODS, Method


@METHODS.register("kd")
class HintonKD(Method):
    needs_teacher = True

    def losses(self, student_logits, teacher_logits, labels, ctx):
        # The two terms are reported apart; their sum is exactly losses.hinton_kd_loss.
        alpha, tau = self.cfg.alpha, self.cfg.temperature
        return {
            "ce": (1.0 - alpha) * F.cross_entropy(student_logits.float(), labels),
            "kl": alpha * soft_kl(student_logits, teacher_logits, tau),
        }
