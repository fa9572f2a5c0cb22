"""Annealing-KD (Jafari et al., EACL 2021).

Phase 1 regresses the student's raw logits onto Phi(T) * teacher logits while T steps
down from tau_max to 1; phase 2 fine-tunes on hard labels from the best phase-1 student
(CE; MSE on a regression task such as STS-B). Both phases share the run's epoch budget:
phase 2 gets what phase 1 leaves.
"""
from kd.losses import annealing_kd_loss, phi, temperature_schedule
from kd.methods.base import METHODS, EpochContext, Method, Phase


@METHODS.register("annealing")
class AnnealingKD(Method):
    needs_teacher = True

    @classmethod
    def validate(cls, cfg, fail):
        if cfg.tau_max < 1:
            fail("tau_max", "it must be an integer >= 1")
        if cfg.stage_epochs < 1:
            fail("stage_epochs", "it must be an integer >= 1")
        if cfg.epochs < cfg.phase1_epochs + 1:
            fail("epochs", f"annealing needs tau_max x stage_epochs = {cfg.tau_max} x "
                           f"{cfg.stage_epochs} = {cfg.phase1_epochs} phase-1 epochs plus at "
                           f"least 1 phase-2 epoch, i.e. epochs >= {cfg.phase1_epochs + 1}")

    def phases(self):
        phase1 = self.cfg.phase1_epochs
        return [Phase("anneal", phase1, uses_teacher=True),
                Phase("finetune", self.cfg.epochs - phase1, uses_teacher=False, start_from_best=True)]

    def context(self, phase, phase_epoch):
        if phase == 2:
            return EpochContext(phase, phase_epoch)
        T = temperature_schedule(self.cfg.tau_max, self.cfg.stage_epochs)[phase_epoch]
        return EpochContext(phase, phase_epoch, T=T, phi=phi(T, self.cfg.tau_max))

    def losses(self, student_logits, teacher_logits, labels, ctx):
        if ctx.phase == 1:
            return {"mse": annealing_kd_loss(student_logits, teacher_logits, ctx.T, self.cfg.tau_max)}
        return {self.label_term: self.label_loss(student_logits, labels)}
