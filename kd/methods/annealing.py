"""Annealing-KD (Jafari et al., EACL 2021).

Phase 1 regresses the student's raw logits onto Phi(T) * teacher logits while T steps
down from tau_max to 1; phase 2 fine-tunes on hard labels from the best phase-1 student
(CE; MSE on a regression task such as STS-B). Both phases share the run's epoch budget:
phase 2 gets what phase 1 leaves.
"""
from kd.losses import annealing_kd_loss, phi, temperature_schedule
from kd.methods.base import METHODS, EpochContext, Method, Param, Phase

TAU_MAX = Param("tau_max", int, 10, "maximum temperature", low=1)
STAGE_EPOCHS = Param("stage_epochs", int, 3, "epochs per temperature step", low=1)


@METHODS.register("annealing")
class AnnealingKD(Method):
    label = "Annealing-KD"
    final_phase = "from phase 2 on"
    reference = ("Jafari, Rezagholizadeh, Sharma and Ghodsi, Annealing Knowledge Distillation (EACL 2021, "
                 "arXiv 2104.07163); code huawei-noah/Efficient-NLP, Annealing_KD/")
    rule = ("phase 1 lasts tau_max x stage_epochs epochs (MSE onto Phi(T) z_t); phase 2 (CE from the best "
            "phase-1 checkpoint) gets the rest of the budget")
    colour, marker, order = "#D55E00", "^", 30
    needs_teacher = True
    params = (TAU_MAX, STAGE_EPOCHS)
    search = {"tau_max": [2, 8], "stage_epochs": [1, 3], "min_phase2_epochs": 2}
    search_settings = ("min_phase2_epochs",)  # the fewest phase-2 epochs the longest schedule must leave

    @classmethod
    def validate(cls, cfg, fail):
        if cfg.epochs < cfg.phase1_epochs + 1:
            fail("epochs", f"annealing needs tau_max x stage_epochs = {cfg.tau_max} x "
                           f"{cfg.stage_epochs} = {cfg.phase1_epochs} phase-1 epochs plus at "
                           f"least 1 phase-2 epoch, i.e. epochs >= {cfg.phase1_epochs + 1}")

    @classmethod
    def check_search(cls, corner, space, epochs):
        min_phase2 = space.get("min_phase2_epochs", 1)
        needed = corner["tau_max"] * corner["stage_epochs"] + min_phase2
        if needed <= epochs:
            return None
        return (f"the annealing search can ask for tau_max {corner['tau_max']} x stage_epochs "
                f"{corner['stage_epochs']} plus {min_phase2} phase-2 epochs = {needed} epochs (raise epochs "
                f"or narrow search.annealing)")

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
