"""write_report: figures, CSV tables, report.md and a self-contained report.html.

The report is built once as a list of blocks (heading, paragraph, bullet list, table,
figure, key-value block) and rendered twice, so the Markdown and the HTML can never
disagree. The HTML inlines every figure as a base64 data URI and carries its own CSS:
it opens offline, from an e-mail attachment or a CI artifact, with nothing to fetch.
"""
from __future__ import annotations

import base64
import html
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import figures, protocol, published, tables, tasks, verdict
from analysis.load import Experiment, ExperimentError, load_experiment

DASH = "–"
NUMBER = re.compile(r"^-?[\d.]+( ± [\d.]+)?%?$")  # right-aligned in HTML tables
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.missing { background: #fff4e5; border-left: 4px solid #e69f00; padding: .5em 1em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


@dataclass
class Block:
    kind: str                   # "h2", "p", "list", "missing", "kv", "table", "figure"
    content: object
    caption: str = ""


# ---------------------------------------------------------------------------- formatting
def num(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if pd.notna(value) else DASH


def pm(mean, std) -> str:
    """"63.10 ± 0.45"; the mean alone when there is no spread to show (one seed)."""
    if pd.isna(mean):
        return DASH
    return f"{mean:.2f} ± {std:.2f}" if pd.notna(std) else f"{mean:.2f}"


def integer(value) -> str:
    return str(int(value)) if pd.notna(value) else DASH


def method_label(method: str) -> str:
    return figures.style(method)[2]


def short_config(text: str) -> str:
    """A trial's tuned hyperparameters, readable: 'lr=0.1237, tau_max=4'."""
    try:
        values = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return str(text or DASH)
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or DASH


# ---------------------------------------------------------------------------- display tables
def show_gap(gap: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    unit = tasks.score_label(metric, "heading")
    return pd.DataFrame({
        "method": gap["method"].map(method_label), "student": gap["student"],
        "capacity ratio": gap["capacity_ratio"].map(num),
        f"test {unit} (mean ± std)": [pm(m, s) for m, s in zip(gap["test_mean"], gap["test_std"])],
        "seeds": gap["n_seeds"].map(integer), "source": gap["source"],
        tasks.score_label(metric, "teacher"): gap["teacher_test_acc"].map(num),
        "gap (teacher − student)": gap["gap"].map(num)})


def show_task_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """Wide: one row per cell, one column per metric by its GLUE name, 'mean ± std'."""
    rows = []
    for (ratio, student, method), group in metrics.groupby(["capacity_ratio", "student", "method"], sort=False):
        row = {"method": method_label(method), "student": student, "capacity ratio": num(ratio)}
        for r in group.itertuples(index=False):
            row[f"{r.label} ×100"] = pm(r.mean, r.std)
        row["seeds"] = integer(group["n"].max())
        row["source"] = ", ".join(sorted(set(group["source"])))
        rows.append(row)
    return pd.DataFrame(rows).fillna(DASH) if rows else pd.DataFrame(columns=["method", "student"])


def show_overview(overview: pd.DataFrame) -> pd.DataFrame:
    """The GLUE table: one row per (method, student), one column per task ('task (metric)')."""
    overview = overview.assign(column=[t if t == "Average" else f"{t} ({m})"
                                       for t, m in zip(overview["task"], overview["metric"])])
    columns = list(dict.fromkeys(overview["column"]))
    rows = []
    for (method, student), group in overview.groupby(["method", "student"], sort=False):
        row = {"method": "Teacher" if method == "teacher" else method_label(method), "student": student}
        row.update({r.column: pm(r.mean, r.std) for r in group.itertuples(index=False)})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["method", "student", *columns]).fillna(DASH)
    methods = sorted(set(overview["method"]) - {"teacher"}, key=tables.method_key)
    order = {label: i for i, label in enumerate(["Teacher", *map(method_label, methods)])}
    return table.sort_values(["student", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                             kind="stable").reset_index(drop=True)


def show_gain(gain: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "method": gain["method"].map(method_label), "student": gain["student"],
        "capacity ratio": gain["capacity_ratio"].map(num),
        "gain over CE (mean ± std)": [pm(m, s) for m, s in zip(gain["gain_mean"], gain["gain_std"])],
        "pairs": gain["n_pairs"].map(integer),
        "95% t-interval": [f"[{num(lo)}, {num(hi)}]" if pd.notna(lo) else DASH
                           for lo, hi in zip(gain["ci95_low"], gain["ci95_high"])]})


def show_ranking(rank: pd.DataFrame) -> pd.DataFrame:
    """Wide: one row per capacity level, one column per method, 'rank (mean)'."""
    rows = []
    for (ratio, student), group in rank.groupby(["capacity_ratio", "student"], sort=True):
        row = {"student": student, "capacity ratio": num(ratio)}
        for r in group.itertuples(index=False):
            row[method_label(r.method)] = f"{integer(r.rank)} ({num(r.test_mean)})"
        rows.append(row)
    order = [method_label(m) for m in sorted(rank["method"].unique(), key=tables.method_key)]
    return pd.DataFrame(rows, columns=["student", "capacity ratio", *order]).fillna(DASH)


def show_paper(paper: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({
        "method": paper["method"], "teacher → student": paper["teacher"] + " → " + paper["student"],
        "ours": [pm(m, s) for m, s in zip(paper["ours"], paper["ours_std"])],
        "published": paper["published"].map(num), "ours − published": paper["difference"].map(num),
        "published metric": paper["published_metric"], "published source": paper["published_source"],
        "protocol notes": paper["protocol_notes"]})
    if paper["dataset"].nunique() > 1:  # a study over several tasks: say which row is which
        shown.insert(0, "dataset", paper["dataset"])
    return shown


def show_best(best: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    unit = tasks.score_label(metric, "heading")
    return pd.DataFrame({
        "cell": best["cell"], "capacity ratio": best["capacity_ratio"].map(num),
        "best search trial": best["best_trial_id"], f"best val {unit}": best["best_val_acc"].map(num),
        "config": best["best_config"].map(short_config),
        f"re-run test {unit} (mean ± std)": [pm(m, s) for m, s in zip(best["test_mean"], best["test_std"])],
        "seeds": best["n_seeds"].map(integer)})


def show_pruning(audit: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "cell": audit["cell"], "trials": audit["trials"], "completed": audit["completed"],
        "pruned": audit["pruned"], "failed": audit["failed"], "running": audit["running"],
        "epochs run": audit["epochs_run"].map(integer),
        "epochs without pruning": audit["epochs_without_pruning"].map(integer),
        "epochs saved": audit["epochs_saved"].map(integer),
        "saved": audit["saved_ratio"].map(lambda r: f"{100 * r:.2f}%" if pd.notna(r) else DASH),
        "audited": audit["audited"], "audited beat best": audit["audited_beat_best"].map(integer)})


# ---------------------------------------------------------------------------- the report
def write_report(exp_dir, out_dir=None, compare=None, figures_too: bool = True) -> dict[str, Path]:
    """Figures, CSV tables, report.md and report.html for one experiment (and optionally a
    second one side by side). Raises ExperimentError when a directory cannot be read.
    figures_too=False leaves the figures out: drawing them is most of a report's time (a
    GLUE study's 40 take minutes on 2 cores)."""
    exp = load_experiment(exp_dir)
    other = load_experiment(compare) if compare is not None else None
    out = Path(out_dir) if out_dir is not None else exp.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def csv(name: str, df: pd.DataFrame) -> pd.DataFrame:
        paths[f"{name}.csv"] = out / f"{name}.csv"
        df.to_csv(paths[f"{name}.csv"], index=False)
        return df

    def png(name: str, draw, experiment: Experiment) -> Path | None:
        if not figures_too:
            return None
        paths[f"{name}.png"] = draw(experiment, out / f"{name}.png")
        return paths[f"{name}.png"]

    proto = protocol.protocol(exp)
    csv("protocol", pd.DataFrame(proto, columns=["label", "value"]))
    methods_run = csv("method_protocol", protocol.method_protocol(exp))
    # Once per report: the GLUE overview table and the paper comparison's GLUE average rows.
    overview = tasks.glue_overview(exp) if len(exp.tasks) > 1 else None
    paper = csv("paper_comparison", published.paper_comparison(exp, overview=overview))
    paper_blocks = [
        Block("h2", "Against the published numbers"),
        Block("p", "Every published row with the same dataset, teacher, student and method (CE matches on "
                   "the student alone, as it uses no teacher). Protocols differ, see the notes: ours selects "
                   "on a validation split and reports test accuracy, the official Annealing-KD and TAKD code "
                   "select the best epoch on the test set."
                   + (" GLUE: ours is scored on GLUE's dev set (our test split), the published rows too, "
                      "in the published metric." if tasks.is_text(exp.dataset) else "")),
        Block("table", show_paper(paper)) if len(paper) else
        Block("p", f"No published row matches dataset {exp.dataset or DASH} with these models."),
    ]

    blocks = []
    for task in exp.tasks if len(exp.tasks) > 1 else [None]:  # the verdict first: what the study found
        sub = exp.subset(task) if task else exp
        blocks += _verdict_blocks(sub, csv, f"{tasks.task_label(task)}: " if task else "", f"_{task}" if task else "")
    blocks += [Block("h2", "Protocol"), Block("kv", proto),
               Block("h2", "How each method was run"),
               Block("p", "Every method searches lr and weight decay over the same ranges, plus its own "
                          "parameters, with the same number of trials and the same epoch budget."),
               Block("table", methods_run)]
    if exp.missing:
        blocks += [Block("h2", "What is missing"), Block("missing", exp.missing)]
    if len(exp.tasks) > 1:
        csv("glue_overview", overview)
        blocks += [Block("h2", "GLUE overview"),
                   Block("p", "Test score (GLUE dev) of each task's primary metric ×100, mean ± std over the "
                              "re-run seeds; the average only where every task has a number. One section per "
                              "task follows."),
                   Block("table", show_overview(overview)), *paper_blocks]
        for task in exp.tasks:
            blocks += _task_blocks(exp.subset(task), csv, png, f"{tasks.task_label(task)}: ", f"_{task}")
    else:
        blocks += _task_blocks(exp, csv, png, "", "", paper_blocks)
    if other is not None:
        blocks += _comparison(exp, other, csv, png, paths.get("gap_curve.png"))
    blocks += [Block("h2", "Files"),
               Block("list", [f"`{name}`" for name in sorted(paths) if name.endswith(".csv")])]

    blocks = [b for b in blocks if b.kind != "figure" or b.content is not None]
    title = f"Annealing-KD study report: {exp.name}"
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(render_markdown(title, blocks, out), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(render_html(title, blocks), encoding="utf-8")
    return paths


def show_verdict(table: pd.DataFrame) -> pd.DataFrame:
    """Wide: one row per capacity level, one column per comparison, 'verdict (mean difference)'."""
    rows = []
    for (ratio, student), group in table.groupby(["capacity_ratio", "student"], sort=True):
        row = {"student": student, "capacity ratio": num(ratio)}
        for r in group.itertuples(index=False):
            text = f"{r.verdict} ({num(r.mean_diff)}" + (f", MDE {num(r.mde)})" if r.verdict == verdict.NO_DIFFERENCE
                                                          else ")")
            row[f"{method_label(r.method)} vs {method_label(r.baseline)}"] = text
        rows.append(row)
    order = [f"{method_label(m)} vs {method_label(b)}" for b, m in
             table[["baseline", "method"]].drop_duplicates().itertuples(index=False)]
    return pd.DataFrame(rows, columns=["student", "capacity ratio", *order]).fillna(DASH)


def _verdict_blocks(exp: Experiment, csv, title: str, suffix: str) -> list[Block]:
    table = csv(f"verdict{suffix}", verdict.verdicts(exp))
    tested = table.dropna(subset=["p"])
    blocks = [Block("h2", f"{title}Verdict")]
    if tested.empty:
        return blocks + [Block("p", "No verdict yet: it needs re-runs of CE (and Hinton KD) and of the other "
                                    "methods with the same seeds, at least two of them.")]
    pairs = tested["n_pairs"]
    blocks += [
        Block("p", verdict.gap_sentence(exp)),
        Block("table", show_verdict(table)),
        Block("p", f"Each method against CE and against Hinton KD at each capacity ratio: the mean test "
                   f"{tasks.score_label(exp.primary_metric)} difference (points), paired by seed "
                   f"({pairs.min()}–{pairs.max()} seed pairs), two-sided paired t-tests, Holm-corrected over all "
                   f"{len(tested)} comparisons at α {verdict.ALPHA}. `better` or `worse` only where the corrected "
                   f"test says so; otherwise `no detectable difference`, with the minimum detectable effect "
                   f"(MDE: the difference found with {verdict.POWER:.0%} power at the strictest Holm level, "
                   f"α/{len(tested)}; here {num(tested['mde'].min())}–{num(tested['mde'].max())} points). "
                   f"Every interval and p-value is in `verdict{suffix}.csv`. The seeds vary the training of "
                   f"each cell's selected configuration, not the search that selected it: a run of the study "
                   f"with another `--seed` may pick other configurations and differ by more than these "
                   f"intervals allow (README, \"Does its answer replicate?\")."),
    ]
    return blocks


def _task_blocks(exp: Experiment, csv, png, title: str, suffix: str,
                 paper_blocks: list[Block] | None = None) -> list[Block]:
    """The sections of one task (of the only task, for a single-task study): tables and
    figures written as <name><suffix>.csv/.png."""
    metric = exp.primary_metric
    label = tasks.score_label(metric)
    gap = csv(f"gap_table{suffix}", tables.gap_table(exp))
    gain = csv(f"gain_over_ce{suffix}", tables.gain_over_ce(exp))
    rank = csv(f"ranking{suffix}", tables.ranking(exp))
    best = csv(f"best_configs{suffix}", tables.best_configs(exp))
    audit = csv(f"pruning_audit{suffix}", tables.pruning_audit(exp))
    blocks = [
        Block("h2", f"{title}Teacher-student gap"),
        Block("p", f"Test {label} of the checkpoint selected on validation, mean ± sample std over the "
                   "re-run seeds of each cell's best search configuration. Source `search` means the cell "
                   "has no re-runs yet: the number is one search trial chosen on validation among many, "
                   "an optimistic single draw."),
        Block("table", show_gap(gap, metric)),
    ]
    if tasks.is_text(exp.dataset):
        metrics = csv(f"task_metrics{suffix}", tasks.task_metrics(exp))
        blocks += [Block("h2", f"{title}Task metrics" if title else f"Task metrics ({exp.dataset})"),
                   Block("p", "Every metric of the task, of the checkpoint selected on validation "
                              f"{label}, ×100, mean ± std over the re-run seeds."),
                   Block("table", show_task_metrics(metrics))]
    blocks += [
        Block("figure", png(f"gap_curve{suffix}", figures.gap_curve, exp),
              "Student score and gap to the teacher against the capacity ratio"),
        Block("h2", f"{title}Gain over CE"),
        Block("p", "Paired by seed: each re-run is compared with the CE re-run of the same student and seed. "
                   "The interval is a 95% t-interval of the paired differences (none with fewer than 2 pairs)."),
        Block("table", show_gain(gain)),
        Block("figure", png(f"gain_over_ce{suffix}", figures.gain_over_ce, exp), "Gain over CE with 95% intervals"),
        Block("h2", f"{title}Ranking per capacity level"),
        Block("p", f"Rank of each method at each capacity ratio (1 = best mean test {label}), mean in brackets."),
        Block("table", show_ranking(rank)),
        *(paper_blocks or []),
        Block("h2", f"{title}Annealing sensitivity"),
        Block("figure", png(f"annealing_sensitivity{suffix}", figures.annealing_sensitivity, exp),
              f"Validation {label} over τ_max × stage_epochs"),
        Block("h2", f"{title}Learning curves"),
        Block("figure", png(f"learning_curves{suffix}", figures.learning_curves, exp),
              f"Validation {label} per epoch of each cell's best search trial; T steps and phase switch marked"),
        Block("h2", f"{title}Best configurations"),
        Block("table", show_best(best, metric)),
        Block("h2", f"{title}Search and pruning"),
        Block("p", "Epochs saved count pruned trials only (budget − epochs run); failed and running trials "
                   "did not stop because of the pruner. Audited: pruned configurations re-run to completion; "
                   "`audited beat best` counts those whose final validation score exceeds the cell's best "
                   "completed search trial, i.e. configurations pruning wrongly discarded."),
        Block("table", show_pruning(audit)),
        Block("figure", png(f"search_pruning{suffix}", figures.search_pruning, exp),
              f"Validation {label} by trial order; pruned vs completed"),
    ]
    return blocks


def _gaps_by_task(exp: Experiment) -> pd.DataFrame:
    """The gap table of every task (cells of different tasks share names: never mixed)."""
    if len(exp.tasks) <= 1:
        return tables.gap_table(exp).assign(dataset=exp.dataset)
    return pd.concat([tables.gap_table(exp.subset(t)).assign(dataset=t) for t in exp.tasks], ignore_index=True)


def _comparison(exp: Experiment, other: Experiment, csv, png, gap_png: Path | None) -> list[Block]:
    a, b = exp.name, other.name if other.name != exp.name else f"{other.name} (2)"
    keep = ["dataset", "method", "student", "capacity_ratio", "test_mean", "test_std", "n_seeds", "source"]
    joined = _gaps_by_task(exp)[keep].merge(_gaps_by_task(other)[keep], on=["dataset", "method", "student"],
                                            how="outer", suffixes=(f"_{a}", f"_{b}"))
    joined[f"difference_{a}_minus_{b}"] = joined[f"test_mean_{a}"] - joined[f"test_mean_{b}"]
    joined["capacity_ratio"] = joined[f"capacity_ratio_{a}"].fillna(joined[f"capacity_ratio_{b}"])
    joined = tables.sort_rows(joined, "dataset", "capacity_ratio", "student", "method").drop(columns="capacity_ratio")
    csv("compare_gap_table", joined)
    unit = tasks.score_label(exp.primary_metric, "heading") if len(exp.tasks) <= 1 else "score ×100"
    shown = pd.DataFrame({
        **({"dataset": joined["dataset"]} if joined["dataset"].nunique() > 1 else {}),
        "method": joined["method"].map(method_label), "student": joined["student"],
        f"{a} test {unit}": [pm(m, s) for m, s in zip(joined[f"test_mean_{a}"], joined[f"test_std_{a}"])],
        f"{a} seeds": joined[f"n_seeds_{a}"].map(integer),
        f"{b} test {unit}": [pm(m, s) for m, s in zip(joined[f"test_mean_{b}"], joined[f"test_std_{b}"])],
        f"{b} seeds": joined[f"n_seeds_{b}"].map(integer),
        f"{a} − {b}": joined[f"difference_{a}_minus_{b}"].map(num)})
    # Joined on the label index, which keeps the protocol's reading order (a merge would sort it).
    protocols = pd.concat([pd.DataFrame(protocol.protocol(exp), columns=["label", a]).set_index("label"),
                           pd.DataFrame(protocol.protocol(other), columns=["label", b]).set_index("label")],
                          axis=1).reset_index()
    protocols["differs"] = (protocols[a] != protocols[b]).map({True: "yes", False: ""})
    blocks = [
        Block("h2", f"Comparison: {a} vs {b}"),
        Block("p", f"Gap tables joined on task, method and student; the second experiment is read from "
                   f"{other.path}."),
        Block("table", shown),
        Block("p", "Protocols side by side (rows marked `yes` differ; numbers are only comparable when the "
                   "protocol rows that matter agree):"),
        Block("table", protocols.fillna(DASH)),
    ]
    if gap_png is not None and len(other.tasks) <= 1:  # one gap curve per study (per task: see the sections)
        blocks += [Block("figure", gap_png, f"Gap curve of {a}"),
                   Block("figure", png("gap_curve_compare", figures.gap_curve, other), f"Gap curve of {b}")]
    if other.missing:
        blocks += [Block("p", f"What is missing in {b}:"), Block("missing", other.missing)]
    return blocks


# ---------------------------------------------------------------------------- renderers
def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in df.columns) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(title: str, blocks: list[Block], out: Path) -> str:
    parts = [f"# {title}"]
    for block in blocks:
        if block.kind == "h2":
            parts.append(f"## {block.content}")
        elif block.kind == "p":
            parts.append(str(block.content))
        elif block.kind in ("list", "missing"):
            parts.append("\n".join(f"- {_md_cell(item)}" for item in block.content))
        elif block.kind == "kv":
            parts.append(markdown_table(pd.DataFrame(block.content, columns=["", "protocol"])))
        elif block.kind == "table":
            parts.append(markdown_table(block.content) if len(block.content) else "_(no rows yet)_")
        elif block.kind == "figure":
            # Relative links: the report folder can be moved or browsed on GitHub as a whole.
            parts.append(f"![{block.caption}]({Path(block.content).relative_to(out).as_posix()})")
    return "\n\n".join(parts) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for value in row:
            text = str(value)
            cells.append(f"<td class=\"num\">{html.escape(text)}</td>" if NUMBER.match(text) else
                         f"<td>{_inline(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _inline(text: str) -> str:
    """Escape, then render the Markdown `code` spans the paragraphs use."""
    parts = html.escape(str(text)).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, blocks: list[Block]) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if block.kind == "h2":
            parts.append(f"<h2>{html.escape(str(block.content))}</h2>")
        elif block.kind == "p":
            parts.append(f"<p>{_inline(str(block.content))}</p>")
        elif block.kind in ("list", "missing"):
            items = "".join(f"<li>{_inline(item)}</li>" for item in block.content)
            parts.append(f"<ul class=\"missing\">{items}</ul>" if block.kind == "missing" else f"<ul>{items}</ul>")
        elif block.kind == "kv":
            parts.append(_html_table(pd.DataFrame(block.content, columns=["", "protocol"])))
        elif block.kind == "table":
            parts.append(_html_table(block.content) if len(block.content) else "<p><em>(no rows yet)</em></p>")
        elif block.kind == "figure":
            data = base64.b64encode(Path(block.content).read_bytes()).decode("ascii")
            parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(block.caption)}\">"
                         f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    # The empty data: icon stops browsers from requesting /favicon.ico (a console error offline).
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n"
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n")


def main_report(exp_dir, out=None, compare=None, figures_too: bool = True) -> int:
    """The `run_study.py report` command: print the written paths; exit code 2 when unreadable."""
    try:
        paths = write_report(exp_dir, out, compare, figures_too)
    except ExperimentError as exc:
        print(f"error: cannot build the report: {exc}", file=sys.stderr)
        return 2
    for name in sorted(paths, key=lambda n: (not n.startswith("report."), n)):
        print(paths[name])
    # last line: the one file to open
    print(f"report: {paths['report.html']} (also {paths['report.md'].name}, figures and CSV tables beside it)")
    return 0
