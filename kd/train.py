"""train(cfg, report=callback): one run of one method, top to bottom, with exact resume.

The run is a list of phases (the method decides: one for CE/KD/TAKD/Continuation-KD, two
for Annealing-KD). Each phase gets a fresh optimiser (SGD, or AdamW for transformers) and
learning-rate schedule, and keeps its own best checkpoint, selected on the validation
score (test only under `paper_protocol`). The reported test score is always that of the
selected checkpoint.

Scores: the dataset's task names its metrics (kd/metrics.py), the first one primary.
`val_acc`, `test_acc`, `best_val_acc` and `selected_test_acc` hold the PRIMARY metric x100
(accuracy for images; for GLUE e.g. MCC on CoLA, F1 on MRPC, Pearson on STS-B), so the
study and the analysis select and prune on it unchanged. Every metric is also reported
by name: `val_<metric>`, `test_<metric>`, `selected_test_<metric>`, and for further test
sets `test_<metric>_<suffix>` (MNLI mismatched: `test_accuracy_mm`).

After every epoch `report(metrics, save_state)` is called; `save_state(path)` writes
everything needed to continue exactly from that point (`train(..., resume_from=path)`).
This module knows nothing of Ray: the study's trainable decides when to checkpoint.

The teacher's logits come from a kd.bank.TeacherBank when one is passed or cfg.teacher_bank
is on (evaluated once per (example, view), read back for the views each epoch draws), or
from the live teacher (cfg.teacher_bank off, or the bank over cfg.bank_memory_gb).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from kd.bank import TeacherBank, bank_for_training, check_bank
from kd.config import ConfigError, TrainConfig
from kd.data import Data, load_data
from kd.methods import EpochContext, Phase, build_method
from kd.models import build_model, count_parameters
from kd.runtime import autocast_for, load_teacher, select_device

Report = Callable[[dict[str, Any], Callable[[str | Path], None]], Any]


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def linear_warmup_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """lr factor at a step: up from 0 over the warmup, then down to 0 at total_steps
    (transformers.get_linear_schedule_with_warmup, the GLUE code's schedule)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def make_optimizer(cfg: TrainConfig, model: nn.Module, epochs: int, steps_per_epoch: int = 1):
    """A fresh optimiser and schedule for one phase of `epochs` epochs. The linear schedule
    steps per batch (the trainer calls scheduler.step() after every optimiser step), the
    others per epoch."""
    if cfg.optimizer == "adamw":
        # Transformer convention: no weight decay on biases and normalisation weights.
        params = list(model.parameters())
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "linear":
        total = epochs * steps_per_epoch
        factor = linear_warmup_decay(total, math.ceil(cfg.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    elif cfg.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    else:  # the official code's step schedule: x0.1 at 50% and x0.01 at 75% of the phase
        half, three_quarters = int(epochs / 2), int(epochs * 3 / 4)
        factor = lambda e: 1.0 if e < half else (0.1 if e < three_quarters else 0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


@dataclass
class Best:
    """The checkpoint selected so far in the current phase (val_acc/test_acc: the primary
    metric; metrics: every metric of that checkpoint, by report key)."""
    score: float = -math.inf
    val_acc: float = float("nan")
    test_acc: float = float("nan")
    epoch: int = 0
    state_dict: dict | None = None
    metrics: dict | None = None


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One generator per (seed, epoch): shuffling and views are reproducible after a resume
    # without having to capture a generator's position mid-run.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, x: torch.Tensor, y: torch.Tensor,
             autocast: Callable[[], Any], batch_size: int | None = None) -> dict[str, float]:
    """Every metric of the data's task (x100) on (x, y); the primary one comes first."""
    model.eval()
    order = torch.arange(len(x), device=x.device)
    if data.pad_id is not None:
        # Similar lengths together: batches trimmed to their longest sequence stay short.
        order = (x[:, 0] != data.pad_id).sum(1).argsort()
        batch_size = batch_size or 256
    outputs = []
    for index in order.split(batch_size or 1024):
        with autocast():
            outputs.append(model(data.inputs(x[index])).float())
    return data.task.score(torch.cat(outputs), y[order])


def scores(model: nn.Module, data: Data, autocast: Callable[[], Any]) -> dict[str, float]:
    """Report keys: val_<metric>, test_<metric> and test_<metric>_<suffix> of further test sets."""
    out = {f"val_{k}": v for k, v in evaluate(model, data, data.val_x, data.val_y, autocast).items()}
    out.update({f"test_{k}": v for k, v in evaluate(model, data, data.test_x, data.test_y, autocast).items()})
    for suffix, (x, y) in data.extra_test.items():
        out.update({f"test_{k}_{suffix}": v for k, v in evaluate(model, data, x, y, autocast).items()})
    return out


def train(cfg: TrainConfig, report: Report | None = None, resume_from: str | Path | None = None,
          data: Data | None = None, bank: TeacherBank | None = None) -> dict[str, Any]:
    cfg.validate()
    method = build_method(cfg)
    distill_from = cfg.assistant_checkpoint if method.needs_assistant else cfg.teacher_checkpoint
    if method.needs_teacher and not distill_from:
        field = "assistant_checkpoint" if method.needs_assistant else "teacher_checkpoint"
        raise ConfigError(f"{field}: None is not allowed; method {cfg.method} trains from a stored "
                          f"model (kd.store.TeacherStore.resolve(cfg) trains and fills it in)")
    device = select_device(cfg.device)
    use_cuda = device.type == "cuda"
    autocast = autocast_for(device, cfg.amp)
    torch.manual_seed(cfg.seed)

    data = (data or load_data(cfg)).to(device)
    student = build_model(cfg.model, data.num_classes, **data.model_kwargs).to(device)
    teacher = None
    if use_cuda and data.train_x.dim() == 4:
        student = student.to(memory_format=torch.channels_last)
    forward = torch.compile(student) if cfg.compile else student
    phases: list[Phase] = method.phases()
    resume = torch.load(resume_from, map_location=device, weights_only=False) if resume_from else None
    if resume is not None and resume["config"] != cfg.to_dict():
        raise ConfigError("resume_from: the saved state belongs to a different configuration")

    # Teacher logits come from a bank (kd/bank.py: evaluated once per (example, view), exact
    # up to fp16 rounding) or from the live teacher. The bank is built here only if a
    # remaining phase needs it; bank_build_seconds is this call's build time (0 if passed in).
    # Before a resume restores the RNG state: building a model draws from the global RNG.
    bank_build_seconds = 0.0
    if not method.needs_teacher:
        bank = None
    else:
        remaining = phases[resume["phase_index"] if resume is not None else 0:]
        if bank is None and cfg.teacher_bank and any(p.uses_teacher for p in remaining):
            bank_started = time.perf_counter()
            bank = bank_for_training(cfg, distill_from, data, device)  # None: over bank_memory_gb
            bank_build_seconds = time.perf_counter() - bank_started if bank is not None else 0.0
        if bank is not None:
            check_bank(bank, data, distill_from, cfg)
        else:
            teacher = load_teacher(distill_from, device, data)
    bank_stats = {"bank_bytes": bank.nbytes if bank is not None else 0,
                  "bank_build_seconds": bank_build_seconds}
    first_report = True

    phase_index, phase_epoch, epoch = 0, 0, 0
    best, previous_best = Best(), Best()
    if resume is not None:
        phase_index, phase_epoch, epoch = resume["phase_index"], resume["phase_epoch"], resume["epoch"]
        best, previous_best = Best(**resume["best"]), Best(**resume["previous_best"])
        student.load_state_dict(resume["student"])
        torch.set_rng_state(resume["torch_rng"].cpu())

    started = time.perf_counter()
    num_train = len(data.train_x)
    steps_per_epoch = math.ceil(num_train / cfg.batch_size)
    per_batch_schedule = cfg.lr_schedule == "linear"
    primary = data.task.primary
    while phase_index < len(phases):
        phase = phases[phase_index]
        optimizer, scheduler = make_optimizer(cfg, student, phase.epochs, steps_per_epoch)
        if resume is not None:  # continue the phase we were in, exactly where it stopped
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            resume = None
        elif phase.start_from_best:
            student.load_state_dict(previous_best.state_dict)

        while phase_epoch < phase.epochs:
            ctx: EpochContext = method.context(phase_index + 1, phase_epoch)
            lr = optimizer.param_groups[0]["lr"]
            epoch_start = time.perf_counter()
            student.train()
            generator = _epoch_generator(cfg.seed, epoch)
            order = torch.randperm(num_train, generator=generator).to(device)
            views = torch.randint(data.num_views, (num_train,), generator=generator).to(device)
            totals: dict[str, float] = {}
            for batch in order.split(cfg.batch_size):
                x = data.inputs(data.train_x[batch], views[batch] if data.num_views > 1 else None)
                if use_cuda and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    student_logits = forward(x)
                    if not phase.uses_teacher:
                        teacher_logits = None
                    elif bank is not None:  # the very (example, view) pairs the student sees in x
                        teacher_logits = bank.lookup(batch, views[batch])
                    else:
                        teacher_logits = teacher(x) if teacher is not None else None
                    terms = method.losses(student_logits, teacher_logits, data.train_y[batch], ctx)
                loss = sum(terms.values())
                if not torch.isfinite(loss):
                    raise DivergedError(f"loss became {loss.item()} at epoch {epoch + 1} "
                                        f"(phase {phase.name}, lr {lr:g})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                optimizer.step()
                if per_batch_schedule:
                    scheduler.step()
                for name, value in terms.items():  # .item() syncs; fine at this model size
                    totals[name] = totals.get(name, 0.0) + value.item() * len(batch)
            if not per_batch_schedule:
                scheduler.step()
            train_seconds = time.perf_counter() - epoch_start

            epoch_scores = scores(student, data, autocast)
            val_acc, test_acc = epoch_scores[f"val_{primary}"], epoch_scores[f"test_{primary}"]
            score = test_acc if cfg.paper_protocol else val_acc
            if score > best.score:
                best = Best(score, val_acc, test_acc, epoch + 1, copy.deepcopy(student.state_dict()),
                            {k: v for k, v in epoch_scores.items() if k.startswith("test_")})
            phase_epoch += 1
            epoch += 1

            losses = {f"loss_{k}": v / num_train for k, v in totals.items()}
            next_ctx = method.context(phase_index + 1, phase_epoch) if phase_epoch < phase.epochs else None
            metrics = {
                "epoch": epoch, "phase": phase_index + 1, "phase_name": phase.name,
                "phase_epoch": phase_epoch,
                # Epochs on the method's final objective: where runs become comparable (pruning)
                "final_phase_epoch": method.final_phase_epochs(phase_index + 1, phase_epoch),
                "T": ctx.T, "phi": ctx.phi, "psi": ctx.psi, "lr": lr,
                "train_loss": sum(losses.values()), **losses,
                "val_acc": val_acc, "test_acc": test_acc,
                "best_val_acc": best.val_acc, "selected_test_acc": best.test_acc,
                "selected_epoch": best.epoch, "primary_metric": primary, **epoch_scores,
                **{f"selected_{k}": v for k, v in (best.metrics or {}).items()},
                # Where a temperature stage or a phase ends: where a study checkpoints.
                "stage_end": next_ctx is None or next_ctx.T != ctx.T,
                "finished": phase_epoch == phase.epochs and phase_index == len(phases) - 1,
                "epoch_seconds": time.perf_counter() - epoch_start,
                "samples_per_s": num_train / train_seconds,
            }
            if first_report:  # the bank's cost, once per call
                metrics.update(bank_stats)
                first_report = False

            def save_state(path, _phase_index=phase_index, _opt=optimizer, _sched=scheduler):
                state = {
                    "config": cfg.to_dict(), "phase_index": _phase_index, "phase_epoch": phase_epoch,
                    "epoch": epoch, "student": student.state_dict(), "optimizer": _opt.state_dict(),
                    "scheduler": _sched.state_dict(), "best": vars(best), "previous_best": vars(previous_best),
                    "torch_rng": torch.get_rng_state(),
                }
                tmp = Path(path).with_suffix(".tmp")
                torch.save(state, tmp)
                tmp.replace(path)  # atomic: a killed save never leaves half a state behind

            if report is not None:
                report(metrics, save_state)

        previous_best, best = best, Best()
        phase_index, phase_epoch = phase_index + 1, 0

    return {
        "best_val_acc": previous_best.val_acc,
        "test_acc": previous_best.test_acc,
        "selected_epoch": previous_best.epoch,
        "primary_metric": primary,
        "metrics": dict(previous_best.metrics or {}),  # every test metric of the selected checkpoint
        "model_kwargs": dict(data.model_kwargs),      # what rebuilding the model needs (text)
        "epochs_run": epoch,
        "seconds": time.perf_counter() - started,
        "student_params": count_parameters(student),
        **bank_stats,
        "selection": "test (paper protocol)" if cfg.paper_protocol else "validation",
        "state_dict": previous_best.state_dict,
    }


def evaluate_teacher(cfg: TrainConfig) -> dict[str, Any]:
    """Scores of the teacher named by cfg.teacher_checkpoint (a stored file or a fine-tuned
    `hf:` checkpoint used as it is) on cfg's data, in the shape of train()'s result."""
    started = time.perf_counter()
    device = select_device(cfg.device)
    autocast = autocast_for(device, cfg.amp)
    data = load_data(cfg).to(device)
    teacher = load_teacher(cfg.teacher_checkpoint, device, data)
    found = scores(teacher, data, autocast)
    primary = data.task.primary
    return {"best_val_acc": found[f"val_{primary}"], "test_acc": found[f"test_{primary}"],
            "primary_metric": primary, "metrics": {k: v for k, v in found.items() if k.startswith("test_")},
            "epochs_run": 0, "seconds": time.perf_counter() - started,
            # a frozen teacher has no trainable parameters: count its model's, as train() does
            "student_params": sum(p.numel() for p in teacher.parameters())}
