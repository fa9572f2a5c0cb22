"""Continuation-KD (Jafari et al., Findings of EMNLP 2022).

One phase: psi * CE + (1 - psi) * hinge(||z_s - Phi(T) z_t||^2 - m Phi(T)), with T stepping
down as in Annealing-KD (then staying at 1) and psi ramping linearly from 0 at the first
epoch to 1 after `psi_epochs` epochs. On a regression task the CE becomes an MSE.
"""
from kd.losses import continuation_hinge, phi, temperature_schedule
from kd.methods.base import METHODS, EpochContext, Method, validate_schedule


@METHODS.register("continuation")
class ContinuationKD(Method):
    needs_teacher = True

    @classmethod
    def validate(cls, cfg, fail):
        validate_schedule(cfg, fail)
        if cfg.phase1_epochs > cfg.epochs:
            fail("epochs", f"continuation steps T through tau_max x stage_epochs = "
                           f"{cfg.phase1_epochs} epochs, more than the budget")
        if not 1 <= cfg.psi_epochs <= cfg.epochs:
            fail("psi_epochs", f"it must lie in [1, epochs={cfg.epochs}]")

    def context(self, phase, phase_epoch):
        schedule = temperature_schedule(self.cfg.tau_max, self.cfg.stage_epochs)
        T = schedule[phase_epoch] if phase_epoch < len(schedule) else 1
        psi = min(1.0, phase_epoch / self.cfg.psi_epochs)
        return EpochContext(phase, phase_epoch, T=T, phi=phi(T, self.cfg.tau_max), psi=psi)

    def losses(self, student_logits, teacher_logits, labels, ctx):
        hinge = continuation_hinge(student_logits, teacher_logits, ctx.T, self.cfg.tau_max, self.cfg.margin)
        return {
            self.label_term: ctx.psi * self.label_loss(student_logits, labels),
            "hinge": (1.0 - ctx.psi) * hinge,
        }
