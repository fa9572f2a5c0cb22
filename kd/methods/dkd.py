"""Decoupled KD (Zhao, Cui, Song, Qiu and Liang, CVPR 2022).

Hinton's KL split in two and weighted apart: a target-class term (TCKD, the KL between the
binary distributions "target class" / "all the others") and a non-target term (NCKD, the KL
between the distributions over the non-target classes alone). The loss is
    dkd_ce_weight CE + min(epoch / dkd_warmup_epochs, 1) (tckd_weight TCKD + nckd_weight NCKD),
both KL terms at temperature T, summed over classes, times T^2, averaged over the batch,
epochs counted from 1, as in the authors' code (megvii-research/mdistiller,
mdistiller/distillers/DKD.py). Its CIFAR-100 defaults are the ones here (alpha 1, beta 8,
T 4, CE weight 1, warm-up 20 of 240 epochs); its ResNet-56/110 pairs set beta 2.
"""
import torch
import torch.nn.functional as F

from kd.methods.base import METHODS, Method, Param
from kd.methods.kd import TEMPERATURE

TCKD_WEIGHT = Param("tckd_weight", float, 1.0, "alpha, the weight of the target-class term (TCKD)", low=0.0)
NCKD_WEIGHT = Param("nckd_weight", float, 8.0, "beta, the weight of the non-target-class term (NCKD)", low=0.0)
CE_WEIGHT = Param("dkd_ce_weight", float, 1.0, "weight of the cross-entropy on the labels", low=0.0)
WARMUP_EPOCHS = Param("dkd_warmup_epochs", int, 20, "epochs over which the distillation term ramps up linearly",
                      low=1)
# Subtracted from the target logit: the softmax then spreads over the other classes alone.
TARGET_MASK = 1000.0


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             tckd_weight: float, nckd_weight: float, temperature: float) -> torch.Tensor:
    """tckd_weight TCKD + nckd_weight NCKD, each KL(teacher || student) at `temperature`,
    summed over classes, times T^2, averaged over the batch (mdistiller's dkd_loss)."""
    student = student_logits.float() / temperature
    teacher = teacher_logits.detach().float() / temperature
    target = F.one_hot(labels, student.shape[1]).bool()
    p_student, p_teacher = F.softmax(student, dim=1), F.softmax(teacher, dim=1)

    def binary(p: torch.Tensor) -> torch.Tensor:  # (p of the target class, p of all the others)
        return torch.stack([(p * target).sum(dim=1), (p * ~target).sum(dim=1)], dim=1)

    tckd = F.kl_div(torch.log(binary(p_student)), binary(p_teacher), reduction="sum")
    nckd = F.kl_div(F.log_softmax(student - TARGET_MASK * target, dim=1),
                    F.softmax(teacher - TARGET_MASK * target, dim=1), reduction="sum")
    return (tckd_weight * tckd + nckd_weight * nckd) * temperature**2 / labels.shape[0]


@METHODS.register("dkd")
class DecoupledKD(Method):
    label = "DKD"
    reference = ("Zhao, Cui, Song, Qiu and Liang, Decoupled Knowledge Distillation (CVPR 2022, arXiv 2203.08679); "
                 "code megvii-research/mdistiller")
    rule = ("dkd_ce_weight CE + min(epoch / dkd_warmup_epochs, 1) x (tckd_weight TCKD + nckd_weight NCKD) at "
            "temperature T; the warm-up lasts dkd_warmup_fraction x epochs")
    colour, marker, order = "#56B4E9", "X", 15
    needs_teacher = True
    params = (TCKD_WEIGHT, NCKD_WEIGHT, TEMPERATURE, CE_WEIGHT, WARMUP_EPOCHS)
    # The authors tune beta per pair (8 by default, 2 for the CIFAR ResNets) and keep alpha 1,
    # T 4 and CE weight 1; the warm-up keeps its share of their budget, 20 of 240 epochs.
    search = {"nckd_weight": [1.0, 8.0], "tckd_weight": 1.0, "temperature": 4.0, "dkd_ce_weight": 1.0,
              "dkd_warmup_fraction": round(20 / 240, 4)}
    budget_fractions = {"dkd_warmup_fraction": "dkd_warmup_epochs"}

    @classmethod
    def validate(cls, cfg, fail):
        from kd.data import dataset_info

        if dataset_info(cfg.dataset).task.regression:
            fail("method", f"dkd splits class probabilities; dataset {cfg.dataset} is a regression task")
        if cfg.dkd_warmup_epochs > cfg.epochs:
            fail("dkd_warmup_epochs", f"it must be <= epochs={cfg.epochs}")

    def losses(self, student_logits, teacher_logits, labels, ctx):
        warmup = min((ctx.phase_epoch + 1) / self.cfg.dkd_warmup_epochs, 1.0)
        return {
            "ce": self.cfg.dkd_ce_weight * self.label_loss(student_logits, labels),
            "dkd": warmup * dkd_loss(student_logits, teacher_logits, labels, self.cfg.tckd_weight,
                                     self.cfg.nckd_weight, self.cfg.temperature),
        }
