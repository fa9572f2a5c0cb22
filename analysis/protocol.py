"""The report's protocol: the facts a reader needs before trusting any number, read from the
experiment directory alone (study.json, teachers.csv, summary.csv), in reading order; and
how each method was run (its teacher, what was searched over which ranges, what was fixed).
"""
from __future__ import annotations

import re
from typing import Any

import pandas as pd

from analysis import tasks
from analysis.load import Experiment
from analysis.tables import (PAPER_SELECTION_RULE, SELECTION_RULE, capacity_ratios, completed, first_value,
                             method_key, method_of, teacher_accuracy)


def protocol(exp: Experiment) -> list[tuple[str, str]]:
    """The facts a reader needs before trusting any number, in reading order."""
    info, cfg, trials = exp.info, exp.config, exp.trials
    seeds = sorted(int(s) for s in completed(trials, "rerun")["seed"].dropna().unique())
    params = trials.groupby("student")["student_params"].max()
    students = ", ".join(f"{s} ({_count(params.get(s))} params, ratio {r:.2f})"
                         for s, r in capacity_ratios(exp).sort_values().items())
    teacher = cfg.get("teacher") or first_value(trials["teacher"])
    versions = info.get("versions") or {}
    hardware = info.get("hardware") or {}
    several = len(exp.tasks) > 1
    metric = "score" if several else tasks.score_label(exp.primary_metric)
    if several:
        dataset = "GLUE: " + ", ".join(f"{tasks.task_label(t)} ({t})" for t in exp.tasks)
        teacher_text = f"{teacher}, fine-tuned per task (scores in the overview)"
    else:
        dataset = exp.dataset or "not recorded"
        teacher_text = f"{teacher}, test {metric} {_num(teacher_accuracy(exp))}"
    selection = SELECTION_RULE if metric == "accuracy" else \
        f"checkpoint with best validation {metric}; test {metric} reported for that checkpoint" + \
        (" (each task's primary metric)" if several else "")
    return [
        ("Study", f"{exp.name} (preset {info.get('preset') or 'none'}), status {exp.status}, "
                  f"started {info.get('started') or '?'}, finished {info.get('finished') or 'not yet'}"),
        ("Dataset", dataset),
        ("Splits", _splits(exp.tasks[0] if several else exp.dataset, cfg)),
        ("Metrics", _metrics_text(exp)),
        ("Teacher", teacher_text + (f"; assistant {cfg['assistant']}" if cfg.get("assistant") else "")),
        ("Students", students or "none yet"),
        ("Methods", ", ".join(sorted(set(trials["method"]) | set(cfg.get("methods") or []), key=method_key))),
        ("Epoch budget", _budget(exp)),
        ("Fixed for every run", ", ".join(f"{k} {v}" for k, v in sorted((cfg.get("train") or {}).items()))
         or "the training defaults (python -m kd train --help)"),
        ("Selection rule", PAPER_SELECTION_RULE if cfg.get("paper_protocol") else selection),
        ("Search", _search(cfg, info.get("pruning") or {})),
        ("Configuration choice", _choice(cfg)),
        ("Seeds", _seeds(cfg, seeds)),
        ("Headline numbers", f"test {metric} (%) of the re-runs: mean ± sample std (ddof 1) over seeds"
                             if metric == "accuracy" else
                             f"test {metric} (x100{', the primary metric of each task' if several else ''}) of "
                             f"the re-runs: mean ± sample std (ddof 1) over seeds"),
        ("Versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "not recorded"),
        ("Git revision", _revision(info.get("git_revision"))),
        ("Hardware", f"{hardware.get('nodes', '?')} node(s), {hardware.get('cpus', '?')} CPUs, "
                     f"{hardware.get('gpus', '?')} GPUs"
                     + (f" ({', '.join(hardware['gpu_names'])})" if hardware.get("gpu_names") else "")),
        ("Compute", _compute(exp)),
    ]


def _metrics_text(exp: Experiment) -> str:
    """What the numbers measure, per task."""
    parts = []
    for dataset in exp.tasks or [exp.dataset]:
        sub = exp.subset(dataset) if len(exp.tasks) > 1 else exp
        named = tasks.task_metrics(sub)["label"].unique() if not sub.trials.empty else []
        primary = tasks.metric_label(sub.primary_metric)
        others = [m for m in named if m != primary]
        parts.append(f"{tasks.task_label(dataset)}: {primary} (primary: selection, pruning, headline)"
                     + (f", also {', '.join(others)}" if others else ""))
    return "; ".join(parts) + ("; all x100" if tasks.is_text(exp.dataset) else "")


def _setting(cfg: dict[str, Any], key: str, default: Any) -> tuple[Any, str]:
    """A run setting from the study config or its fixed `train` values; otherwise the
    kd.TrainConfig default, marked as such because study.json does not record it."""
    for source in (cfg, cfg.get("train") or {}):
        if source.get(key) is not None:
            return source[key], ""
    return default, " [default]"


def _splits(dataset: str, cfg: dict[str, Any]) -> str:
    seed, seed_note = _setting(cfg, "data_seed", 0)
    if dataset.startswith("glue"):
        val, note = _setting(cfg, "val_size", None)
        size = f"{val:,}{note}" if val else "10% of train, at most 5,000,"
        return (f"GLUE train minus a validation split ({size} held out, seed {seed}{seed_note}) / GLUE dev "
                f"as the test split (GLUE's test labels are hidden; MNLI: dev matched, plus mismatched)")
    if dataset in ("cifar10", "cifar100"):
        val, note = _setting(cfg, "val_size", 5000)
        return (f"{50_000 - val:,} train / {val:,}{note} validation (held out of the training set, "
                f"seed {seed}{seed_note}) / 10,000 test")
    generated = {"mnist1d": "generated", "template-text": "generated template sentences"}
    if dataset in generated:
        # Both generators keep 80% of the samples for training, 20% for test.
        n, n_note = _setting(cfg, "num_samples", 5000)
        val, note = _setting(cfg, "val_size", 500)
        return (f"{int(0.8 * n) - val:,} train / {val:,}{note} validation (seed {seed}{seed_note}) / "
                f"{n - int(0.8 * n):,} test ({generated[dataset]}, {n:,}{n_note} samples)")
    return "not recorded in study.json"


def _choice(cfg: dict[str, Any]) -> str:
    """How each cell's re-run configuration was chosen (study/search.py `selected`)."""
    top, seeds = cfg.get("confirm_top") or 0, cfg.get("confirm_seeds") or 0
    if not top:
        return "per cell, the completed search trial with the best validation score (one seed)"
    return (f"per cell, the {top} completed search trials with the best validation score were run with "
            f"{seeds} more seed(s) each (study seed + 1001 on, never a headline seed); the configuration "
            f"with the best mean validation score over its {seeds + 1} seeds was re-run")


def _seeds(cfg: dict[str, Any], seen: list[int]) -> str:
    text = f"study seed {cfg.get('seed', '?')}; {cfg.get('rerun_seeds', '?')} re-run seeds per cell"
    most = cfg.get("rerun_max_seeds")
    if most and most > cfg.get("rerun_seeds", most):
        # study/search.py: the same seeds for every cell of a student, chosen on validation only
        text += (f", up to {most} for a student while one of its cells' 95% interval of the validation "
                 f"score is wider than ±{cfg.get('rerun_target', '?')} points")
    return text + f" (seeds seen: {', '.join(map(str, seen)) or 'none'})"


def _budget(exp: Experiment) -> str:
    epochs = exp.config.get("epochs")
    text = f"{epochs} epochs per trial, all phases included" if epochs else "not recorded in study.json"
    trained = exp.teachers[exp.teachers["role"] == "teacher"]["epochs"].dropna()
    if len(trained):
        text += f"; teacher {int(trained.iloc[0])} epochs"
    return text


def _search(cfg: dict[str, Any], pruning: dict[str, Any]) -> str:
    sampler = None
    if "startup_trials" in cfg:
        # The study builds its sampler in code (SPEC §6, study/search.py); study.json keeps its knobs.
        sampler = f"Optuna TPE (multivariate, constant liar) after {cfg['startup_trials']} random trials"
    pruner = str(cfg.get("pruner") or "not recorded")
    if pruning.get("decision_steps"):
        pruner += (f" within each cell, trials compared at the same epoch of their final phase "
                   f"({_final_phases(cfg.get('methods') or [])}), deciding at "
                   f"final-phase epochs {', '.join(map(str, pruning['decision_steps']))}")
    elif cfg.get("grace_epochs") is not None and pruner != "none":
        pruner += f" (never before epoch {cfg['grace_epochs']})"
    text = (f"{cfg.get('trials_per_cell', '?')} trials per cell; sampler {sampler or 'not recorded'}; "
            f"pruner {pruner}")
    if cfg.get("audit_pruned"):
        text += f"; {cfg['audit_pruned']} pruned configuration(s) per cell re-run to completion (audit)"
    return text


def _final_phases(methods: list[str]) -> str:
    """Where each method's final phase starts, as the methods declare it: 'every epoch for CE
    and Hinton KD; once psi = 1 for Continuation-KD'."""
    groups: dict[str, list[str]] = {}
    for method in sorted(methods, key=method_key):
        found = method_of(method)
        phrase = found.final_phase if found is not None else "as its method declares (not loadable here)"
        groups.setdefault(phrase, []).append(found.label if found is not None else method)
    return "; ".join(f"{phrase} for {_and(labels)}" for phrase, labels in groups.items())


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _revision(revision) -> str:
    if not revision:
        return "not recorded: the code that produced these numbers is not pinned"
    if not re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", str(revision)):
        return f"{revision} (not a commit hash: the code that produced these numbers is not pinned)"
    return f"{revision} (uncommitted changes)" if str(revision).endswith("-dirty") else str(revision)


def _compute(exp: Experiment) -> str:
    cfg = exp.config
    cpu, gpu = cfg.get("cpus_per_trial"), cfg.get("gpus_per_trial")
    hours = exp.trials["seconds"].sum() / 3600
    teacher_hours = exp.teachers["seconds"].dropna().sum() / 3600
    tail = f"; teachers {teacher_hours:.2f} h"
    if exp.info.get("wall_seconds"):
        tail += f"; study wall clock {exp.info['wall_seconds'] / 3600:.2f} h"
    if exp.info.get("utilisation") is not None:
        tail += (f"; utilisation {exp.info['utilisation']:.2f} (busy trial and teacher seconds / "
                 f"(wall clock × trial slots))")
    if cpu is None and gpu is None:
        return f"{hours:.2f} trial-hours (resources per trial not recorded){tail}"
    return (f"{hours * (cpu or 0):.2f} CPU-hours, {hours * (gpu or 0):.2f} GPU-hours "
            f"({hours:.2f} trial-hours × {cpu or 0} CPU, {gpu or 0} GPU per trial){tail}")


def _count(value) -> str:
    return f"{int(value):,}" if value is not None and pd.notna(value) else "?"


def _num(value) -> str:
    return f"{value:.2f}" if pd.notna(value) else "n/a"


def method_protocol(exp: Experiment) -> pd.DataFrame:
    """How each method was run: its teacher, what its cell searched over which ranges (as
    recorded in study.json), the trials and the budget it had, and what was fixed: by
    construction (the method's `rule`) and in the study's space."""
    cfg, spaces = exp.config, exp.info.get("search_spaces") or {}
    methods = sorted(set(exp.trials["method"]) | set(cfg.get("methods") or []), key=method_key)
    rows = []
    for method in methods:
        space = spaces.get(method)
        searched = ", ".join(_range_text(k, v) for k, v in space.items() if isinstance(v, list)) if space \
            else "not recorded in study.json"
        fixed = [f"{k} {v}" for k, v in (space or {}).items() if not isinstance(v, list)]
        rows.append({"method": method, "teacher": _teacher_of(exp, method), "searched": searched or "nothing",
                     "fixed": "; ".join([_rule(method), *fixed]).strip("; "),
                     "trials per cell": cfg.get("trials_per_cell", "?"),
                     "epoch budget": cfg.get("epochs", "?")})
    return pd.DataFrame(rows, columns=["method", "teacher", "searched", "fixed", "trials per cell", "epoch budget"])


def _rule(method: str) -> str:
    found = method_of(method)
    return found.rule if found is not None else ""


def _range_text(name: str, spec: list) -> str:
    if len(spec) == 2 and all(isinstance(v, (int, float)) for v in spec):
        scale = " log" if name in ("lr", "weight_decay") and spec[0] > 0 else ""
        return f"{name} [{spec[0]:g}, {spec[1]:g}]{scale}"
    return f"{name} {{{', '.join(f'{v:g}' if isinstance(v, (int, float)) else str(v) for v in spec)}}}"


def _teacher_of(exp: Experiment, method: str) -> str:
    found = method_of(method)  # one this process does not know is taken to distil from the teacher
    if found is not None and not found.needs_teacher:
        return "none"
    role = "assistant" if found is not None and found.needs_assistant else "teacher"
    rows = exp.teachers[exp.teachers["role"] == role]
    if rows.empty:
        return f"{role} not recorded in teachers.csv"
    row = rows.iloc[-1].to_dict()
    known = lambda key: key in row and pd.notna(row[key])
    if not (known("epochs") and row["epochs"] > 0):
        return f"{row['arch']}: a given checkpoint, used as it is"
    how = f"{row['arch']}, trained once: {int(row['epochs'])} epochs"
    if row.get("method") == "kd":
        teacher = first_value(exp.teachers.loc[exp.teachers["role"] == "teacher", "arch"])
        how += f" of Hinton KD from {teacher}"
        if known("temperature"):
            how += f" at tau {row['temperature']:g}, alpha {row['alpha']:g} (not searched)"
    if known("lr"):
        how += f", lr {row['lr']:g}, weight decay {row['weight_decay']:g}"
    return how
