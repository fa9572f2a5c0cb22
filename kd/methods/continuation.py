"""Continuation-KD (Jafari et al., Findings of EMNLP 2022).

One phase: psi * CE + (1 - psi) * hinge(||z_s - Phi(T) z_t||^2 - m Phi(T)). As in the paper's
Algorithm 1, T steps down from tau_max every floor(epochs / tau_max) epochs over the whole
run (then stays at 1 for the epochs the division leaves over), and psi ramps linearly from 0
at the first epoch to 1 after `psi_epochs` epochs; from there the loss is the CE alone (an
MSE on a regression task). `stage_epochs` is Annealing-KD's and plays no part here.
"""
from kd.losses import continuation_hinge, phi, temperature_schedule
from kd.methods.annealing import TAU_MAX
from kd.methods.base import METHODS, EpochContext, Method, Param

# Its range depends on the budget (1 to epochs): validate checks it.
PSI_EPOCHS = Param("psi_epochs", int, 45, "epochs over which psi ramps from 0 to 1")
MARGIN = Param("margin", float, 0.0, "hinge margin m", low=0.0)


@METHODS.register("continuation")
class ContinuationKD(Method):
    label = "Continuation-KD"
    final_phase = "once psi = 1"
    reference = ("Jafari et al., Continuation KD: Improved Knowledge Distillation through the Lens of "
                 "Continuation Optimization (Findings of EMNLP 2022, arXiv 2212.05998)")
    rule = ("T steps down every floor(epochs / tau_max) epochs over the whole run (Algorithm 1); psi "
            "ramps from 0 to 1 over psi_fraction x epochs")
    colour, marker, order = "#009E73", "v", 40
    needs_teacher = True
    params = (TAU_MAX, PSI_EPOCHS, MARGIN)
    # T steps over the whole run (Algorithm 1): no stage length to search
    search = {"tau_max": [2, 10], "psi_fraction": [0.2, 0.8], "margin": [0.0, 5.0]}
    budget_fractions = {"psi_fraction": "psi_epochs"}

    @classmethod
    def validate(cls, cfg, fail):
        if cfg.tau_max > cfg.epochs:
            fail("tau_max", f"continuation steps T down every floor(epochs / tau_max) epochs, so tau_max "
                            f"must be <= epochs={cfg.epochs}")
        if not 1 <= cfg.psi_epochs <= cfg.epochs:
            fail("psi_epochs", f"it must lie in [1, epochs={cfg.epochs}]")

    def context(self, phase, phase_epoch):
        schedule = temperature_schedule(self.cfg.tau_max, self.cfg.epochs // self.cfg.tau_max)
        T = schedule[phase_epoch] if phase_epoch < len(schedule) else 1
        psi = min(1.0, phase_epoch / self.cfg.psi_epochs)
        return EpochContext(phase, phase_epoch, T=T, phi=phi(T, self.cfg.tau_max), psi=psi)

    def final_phase_epochs(self, phase, phase_epochs_done):
        # psi reaches 1 at (0-based) epoch psi_epochs: the loss is the label loss from there on
        return max(0, phase_epochs_done - self.cfg.psi_epochs)

    def losses(self, student_logits, teacher_logits, labels, ctx):
        hinge = continuation_hinge(student_logits, teacher_logits, ctx.T, self.cfg.tau_max, self.cfg.margin)
        return {
            self.label_term: ctx.psi * self.label_loss(student_logits, labels),
            "hinge": (1.0 - ctx.psi) * hinge,
        }
