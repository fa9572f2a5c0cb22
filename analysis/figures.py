"""The report's figures: matplotlib on the Agg canvas, one PNG per function.

Every function takes an Experiment and an output path and returns the path. Figures are
built on `matplotlib.figure.Figure` directly (never pyplot) so that no global state or
interactive backend is touched: the report can run inside any process, headless.
A figure whose data does not exist yet (no annealing cells, no progress files) is still
written, with a sentence saying what is missing, so the report's links never break.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from analysis import tables, tasks
from analysis.load import Experiment
from kd.methods import Method

DPI = 110


def style(method: str) -> tuple[str, str, str]:
    """Colour, marker and label as the method declares them (Okabe-Ito colours, colour-blind
    safe, so a method looks the same everywhere); a method this process does not know is
    drawn in the default style under its name."""
    found = tables.method_of(method)
    return (found.colour, found.marker, found.label) if found is not None else (Method.colour, Method.marker, method)


def _save(fig: Figure, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=DPI)
    return out


def _placeholder(out, title: str, message: str) -> Path:
    fig = Figure(figsize=(6, 2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return _save(fig, out)


def _log_ratio_axis(ax, ratios: pd.Series) -> None:
    """Log x axis labelled only at the capacity ratios that exist, with the student's name."""
    ax.set_xscale("log")
    ax.set_xticks(list(ratios.values))
    ax.set_xticklabels([f"{r:.1f}×\n{s}" for s, r in ratios.items()], fontsize=8)
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = ratios.min(), ratios.max()
    ax.set_xlim(lo / 1.35, hi * 1.35)  # room for the dodged error bars at both ends
    ax.set_xlabel("capacity ratio (teacher params / student params, log scale)")
    ax.grid(True, alpha=0.3)


def _dodge(i: int, n: int) -> float:
    """Multiplicative x offset so that error bars of methods at one ratio do not overlap."""
    return math.exp(0.035 * (i - (n - 1) / 2))


def _methods(df: pd.DataFrame) -> list[str]:
    return sorted(df["method"].unique(), key=tables.method_key)


def gap_curve(exp: Experiment, out) -> Path:
    """Test accuracy (mean ± std over seeds) and gap to the teacher against the capacity ratio."""
    fig = gap_curve_figure(exp)
    return _save(fig, out) if fig is not None else _placeholder(out, "Teacher-student gap",
                                                                "no completed trials yet")


def gap_curve_figure(exp: Experiment) -> Figure | None:
    """The gap curve as a Figure (tests read its plotted points), None without data."""
    gap = tables.gap_table(exp).dropna(subset=["test_mean", "capacity_ratio"])
    if gap.empty:
        return None
    ratios = gap.groupby("student")["capacity_ratio"].first().sort_values()
    teacher = tables.teacher_accuracy(exp)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    acc_ax, gap_ax = fig.subplots(1, 2)
    methods = _methods(gap)
    for i, method in enumerate(methods):
        rows = gap[gap["method"] == method].sort_values("capacity_ratio")
        colour, marker, label = style(method)
        x = rows["capacity_ratio"] * _dodge(i, len(methods))
        std = rows["test_std"].fillna(0)
        single = rows["source"] != "rerun"
        for ax, y in ((acc_ax, rows["test_mean"]), (gap_ax, rows["gap"])):
            ax.errorbar(x, y, yerr=std, color=colour, marker=marker, capsize=3, label=label)
            if single.any():  # hollow: one search trial, not a mean over seeds
                ax.plot(x[single], y[single], linestyle="none", marker=marker, markersize=9,
                        markerfacecolor="white", color=colour)
    if pd.notna(teacher):
        acc_ax.axhline(teacher, color="black", linestyle="--", linewidth=1,
                       label=f"teacher ({teacher:.2f})")
    seeds = gap.loc[gap["source"] == "rerun", "n_seeds"]
    spread = f"mean ± std over {_seed_range(seeds)} seeds" if len(seeds) else "single search trials"
    acc_ax.set_title(f"Student test {_score(exp)} ({spread})")
    acc_ax.set_ylabel(f"test {_score(exp, unit=True)}")
    gap_ax.set_title("Gap to the teacher (teacher − student)")
    gap_ax.set_ylabel(f"{_score(exp)} gap (points)")
    for ax in (acc_ax, gap_ax):
        _log_ratio_axis(ax, ratios)
    handles, _ = acc_ax.get_legend_handles_labels()
    if (gap["source"] != "rerun").any():
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", color="grey",
                              label="hollow: no re-runs, best search trial"))
    acc_ax.legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(f"{exp.name}: {exp.dataset}, teacher {_teacher_name(exp)}")
    return fig


def gain_over_ce(exp: Experiment, out) -> Path:
    """Paired gain over CE against the capacity ratio, 95% t-intervals as error bars."""
    gain = tables.gain_over_ce(exp).dropna(subset=["gain_mean", "capacity_ratio"])
    if gain.empty:
        return _placeholder(out, "Gain over CE", "no method has re-runs paired by seed with CE yet")
    ratios = gain.groupby("student")["capacity_ratio"].first().sort_values()
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    methods = _methods(gain)
    for i, method in enumerate(methods):
        rows = gain[gain["method"] == method].sort_values("capacity_ratio")
        colour, marker, label = style(method)
        errors = np.vstack([rows["gain_mean"] - rows["ci95_low"], rows["ci95_high"] - rows["gain_mean"]])
        ax.errorbar(rows["capacity_ratio"] * _dodge(i, len(methods)), rows["gain_mean"],
                    yerr=np.nan_to_num(errors), color=colour, marker=marker, capsize=4, label=label)
    ax.axhline(0, color="black", linewidth=1)
    _log_ratio_axis(ax, ratios)
    ax.set_ylabel(f"test {_score(exp)} gain over CE (points)")
    ax.set_title(f"Gain over CE, paired by seed ({_seed_range(gain['n_pairs'])} pairs); "
                 f"bars: 95% t-interval (none when n < 2)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out)


def _grid(exp: Experiment, cells: list[str], width: float = 4.2, height: float = 3.2):
    """One panel per cell: students (by capacity ratio) down, methods across."""
    trials = exp.trials[exp.trials["cell"].isin(cells)]
    ratios = tables.capacity_ratios(exp)
    students = sorted(trials["student"].unique(), key=lambda s: (ratios.get(s, math.inf), s))
    methods = _methods(trials)
    fig = Figure(figsize=(width * len(methods), height * len(students) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(students), len(methods), squeeze=False))
    panels = {}
    for r, student in enumerate(students):
        for c, method in enumerate(methods):
            cell = f"{student}-{method}"
            if cell in cells:
                panels[cell] = axes[r, c]
                axes[r, c].set_title(f"{cell} (ratio {ratios.get(student, math.nan):.1f}×)", fontsize=9)
            else:
                axes[r, c].set_axis_off()
    return fig, panels


def annealing_sensitivity(exp: Experiment, out) -> Path:
    """Validation accuracy over tau_max x stage_epochs for every search trial of the
    annealing-type cells (Continuation-KD shares both hyperparameters)."""
    trials = exp.trials
    usable = trials[trials["method"].isin(["annealing", "continuation"]) & (trials["stage"] == "search")
                    & trials["status"].isin(["completed", "pruned"])].dropna(
        subset=["tau_max", "stage_epochs", "best_val_acc"])
    if usable.empty:
        return _placeholder(out, "Annealing-KD sensitivity", "no annealing trials with τ_max, stage_epochs "
                                                             "and a validation accuracy yet")
    ratios = tables.capacity_ratios(exp)
    cells = sorted(usable["cell"].unique(), key=lambda c: (ratios.get(c.rsplit("-", 1)[0], math.inf), c))
    # Few cells (one per student), so panels run across in rows of three, not in the cell grid.
    ncols = min(3, len(cells))
    nrows = math.ceil(len(cells) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.2 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(cells):]:
        ax.set_axis_off()
    for cell, ax in zip(cells, axes):
        rows = usable[usable["cell"] == cell]
        jitter = _jitter(rows[["tau_max", "stage_epochs"]])
        x, y = rows["tau_max"] + jitter["dx"], rows["stage_epochs"] + jitter["dy"]
        done = rows["status"] == "completed"
        # Only full runs set the colour scale: a pruned trial's accuracy is from a truncated run.
        points = ax.scatter(x[done], y[done], c=rows.loc[done, "best_val_acc"], cmap="viridis", marker="o",
                            s=80, edgecolors="black", linewidths=0.5, zorder=3)
        ax.scatter(x[~done], y[~done], color="black", marker="x", s=50, zorder=3)
        if done.any():
            top = rows.loc[done, "best_val_acc"].idxmax()
            ax.annotate(f"best {rows.at[top, 'best_val_acc']:.2f}", (x[top], y[top]), xytext=(6, 6),
                        textcoords="offset points", fontsize=8)
            fig.colorbar(points, ax=ax, label=f"best val {_score(exp, unit=True)}, completed trials")
        ax.set_title(f"{cell} (ratio {ratios.get(rows['student'].iloc[0], math.nan):.1f}×)", fontsize=9)
        ax.set_xlabel("τ_max")
        ax.set_ylabel("stage_epochs (epochs per T)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(0.15)
        ax.grid(True, alpha=0.3)
    fig.legend(handles=[Line2D([], [], marker="o", linestyle="none", color="grey", label="completed"),
                        Line2D([], [], marker="x", linestyle="none", color="black",
                               label="pruned (stopped early, not coloured)")],
               loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(f"Annealing sensitivity:\nvalidation {_score(exp)} over τ_max × stage_epochs (search trials)")
    return _save(fig, out)


def _jitter(points: pd.DataFrame) -> pd.DataFrame:
    """Offsets (dx, dy) that spread trials sharing a grid point on a small circle, so none hides another."""
    offsets = pd.DataFrame(0.0, index=points.index, columns=["dx", "dy"])
    for idx in points.groupby(list(points.columns)).groups.values():
        if len(idx) > 1:
            angles = np.linspace(0, 2 * np.pi, len(idx), endpoint=False)
            offsets.loc[idx, "dx"], offsets.loc[idx, "dy"] = 0.12 * np.cos(angles), 0.12 * np.sin(angles)
    return offsets


def learning_curves(exp: Experiment, out) -> Path:
    """Validation accuracy per epoch of each cell's best search trial, schedule marked."""
    best = tables.best_configs(exp)
    best = best[best["best_trial_id"] != ""]
    curves = exp.epochs[exp.epochs["trial_id"].isin(best["best_trial_id"])]
    if curves.empty:
        return _placeholder(out, "Learning curves", "no per-epoch file for any cell's best trial yet")
    fig, panels = _grid(exp, sorted(curves["cell"].unique()))
    for cell, ax in panels.items():
        rows = curves[curves["cell"] == cell].sort_values("epoch")
        colour = style(rows["method"].iloc[0])[0]
        ax.plot(rows["epoch"], rows["val_acc"], color=colour, marker=".", label="val acc")
        if "T" in rows and rows["T"].notna().any():
            t_ax = ax.twinx()
            t_ax.step(rows["epoch"], rows["T"], where="mid", color="grey", alpha=0.6, linewidth=1)
            t_ax.set_ylabel("T", color="grey")
            t_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            steps = rows["epoch"][rows["T"].ne(rows["T"].shift()) & rows["T"].notna() & rows["T"].shift().notna()]
            for epoch in steps:
                ax.axvline(epoch - 0.5, color="grey", linestyle=":", linewidth=1)
        switches = rows["epoch"][rows["phase"].ne(rows["phase"].shift()) & (rows.index != rows.index[0])]
        for epoch in switches:
            ax.axvline(epoch - 0.5, color="black", linestyle="--", linewidth=1.3)
        final = rows.iloc[-1]
        if pd.notna(final.get("selected_epoch")):
            chosen = rows[rows["epoch"] == final["selected_epoch"]]
            ax.plot(chosen["epoch"], chosen["val_acc"], marker="*", markersize=13, color="gold",
                    markeredgecolor="black", linestyle="none")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {_score(exp, unit=True)}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    fig.legend(handles=[
        Line2D([], [], color="black", marker=".", label=f"validation {_score(exp)}"),
        Line2D([], [], color="grey", alpha=0.6, label="temperature T (right axis)"),
        Line2D([], [], color="grey", linestyle=":", label="T step"),
        Line2D([], [], color="black", linestyle="--", label="phase switch"),
        Line2D([], [], marker="*", color="gold", markeredgecolor="black", markersize=12, linestyle="none",
               label="selected checkpoint (best val, final phase)")],
        loc="outside lower center", ncols=5, fontsize=8)
    fig.suptitle("Learning curves of each cell's best search trial")
    return _save(fig, out)


def search_pruning(exp: Experiment, out) -> Path:
    """Validation accuracy of every search trial in order, pruned vs completed, epochs saved."""
    search = exp.trials[exp.trials["stage"] == "search"]
    if search.empty:
        return _placeholder(out, "Search and pruning", "no search trials yet")
    audit = tables.pruning_audit(exp).set_index("cell")
    audits = exp.trials[exp.trials["audit"] & (exp.trials["status"] == "completed")]
    fig, panels = _grid(exp, sorted(search["cell"].unique()))
    markers = {"completed": ("o", "C0"), "pruned": ("x", "C3"), "running": ("^", "C1"), "failed": ("v", "black")}
    for cell, ax in panels.items():
        rows = _in_start_order(exp, search[search["cell"] == cell])
        order = pd.Series(np.arange(1, len(rows) + 1), index=rows.index)
        values = rows["best_val_acc"]
        floor = values.min() if values.notna().any() else 0.0
        for status, (marker, colour) in markers.items():
            sub = rows[rows["status"] == status]
            # Failed trials have no accuracy: drawn on the floor so they still count visibly.
            y = sub["best_val_acc"].fillna(floor) if status == "failed" else sub["best_val_acc"]
            ax.scatter(order[sub.index], y, marker=marker, color=colour, s=45, zorder=3)
        done = values.where(rows["status"] == "completed")
        ax.step(order, done.cummax().ffill(), where="post", color="C0", alpha=0.5, linewidth=1)
        for a in audits[audits["cell"] == cell].itertuples(index=False):
            source = rows.index[(rows["config"] == a.config) & (rows["status"] == "pruned")]
            if len(source):  # where the pruned config would have ended had it not been stopped
                x = order[source[0]]
                ax.plot([x, x], [rows.at[source[0], "best_val_acc"], a.best_val_acc], color="C3",
                        linestyle=":", linewidth=1)
                ax.scatter([x], [a.best_val_acc], marker="D", facecolors="none", edgecolors="C3", s=45, zorder=3)
        stats = audit.loc[cell]
        ax.set_title(f"{cell}\npruned {stats['pruned']}/{stats['trials']}, saved {stats['epochs_saved']:.0f} of "
                     f"{stats['epochs_without_pruning']:.0f} epochs ({_percent(stats['saved_ratio'])})", fontsize=9)
        ax.set_xlabel("trial (in start order)")
        ax.set_ylabel(f"best validation {_score(exp, unit=True)}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], marker=m, color=c, linestyle="none", label=s) for s, (m, c) in markers.items()]
    handles += [Line2D([], [], color="C0", alpha=0.5, label="best completed so far"),
                Line2D([], [], marker="D", markerfacecolor="none", color="C3", linestyle=":",
                       label="audit: pruned config re-run to completion")]
    fig.legend(handles=handles, loc="outside lower center", ncols=6, fontsize=8)
    fig.suptitle(f"Search and pruning (pruned trials: validation {_score(exp)} when stopped)")
    return _save(fig, out)


def _in_start_order(exp: Experiment, rows: pd.DataFrame) -> pd.DataFrame:
    """Trials in the order they started: summary.csv is sorted by folder name, not by time.
    Tune's per-epoch `timestamp` dates each trial; trials without progress come last."""
    if "timestamp" not in exp.epochs:
        return rows.reset_index(drop=True)
    started = rows["trial_id"].map(exp.epochs.groupby("trial_id")["timestamp"].min())
    return rows.assign(_started=started).sort_values("_started", kind="stable", na_position="last") \
        .drop(columns="_started").reset_index(drop=True)


def _score(exp: Experiment, unit: bool = False) -> str:
    """What the plotted numbers are: accuracy, or the task's primary GLUE metric (MCC, F1, ...)."""
    return tasks.score_label(exp.primary_metric, "axis" if unit else "name")


def _seed_range(counts: pd.Series) -> str:
    counts = counts.dropna().astype(int)
    if counts.empty:
        return "0"
    return str(counts.min()) if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"


def _percent(ratio) -> str:
    return f"{ratio:.0%}" if pd.notna(ratio) else "n/a"


def _teacher_name(exp: Experiment) -> str:
    return str(exp.config.get("teacher") or tables.first_value(exp.trials["teacher"]) or "?")
