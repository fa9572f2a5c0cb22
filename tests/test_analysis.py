"""analysis/: loading, tables, figures and the report, on synthetic experiment directories.

Expected values are recomputed here from the raw CSV files with plain pandas (never by
calling the module under test), so a table that drifts from summary.csv fails.
"""
import base64
import dataclasses
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from analysis import ExperimentError, load_experiment, write_report
from analysis import figures, protocol, published, tables
from analysis.report import main_report, pm
from analysis_fixtures import make_partial, write_synthetic_experiment
import run_study

PNG = b"\x89PNG\r\n\x1a\n"
STUDENTS = ("resnet8", "resnet20")
METHODS = ("ce", "kd", "annealing")


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory):
    return write_synthetic_experiment(tmp_path_factory.mktemp("exp") / "cifar100-synthetic",
                                      students=STUDENTS, methods=METHODS)


@pytest.fixture(scope="module")
def exp(exp_dir):
    return load_experiment(exp_dir)


@pytest.fixture(scope="module")
def raw(exp_dir):
    return pd.read_csv(exp_dir / "summary.csv")


@pytest.fixture(scope="module")
def report(exp_dir, tmp_path_factory):
    other = write_synthetic_experiment(tmp_path_factory.mktemp("other") / "other", name="other", seed=7,
                                       students=("resnet8", "resnet14"), methods=("ce", "kd", "annealing"))
    out = tmp_path_factory.mktemp("report")
    return write_report(exp_dir, out, compare=other), out


def reruns(raw):
    return raw[(raw["stage"] == "rerun") & (raw["status"] == "completed")]


# ---------------------------------------------------------------------------- loading
def test_loads_trials_epochs_and_teachers(exp, raw):
    assert len(exp.trials) == len(raw) == len(STUDENTS) * len(METHODS) * (4 + 3 + 1)
    assert exp.trials["audit"].sum() == (raw["stage"] == "audit").sum()
    assert exp.trials["seed"].dtype == "Int64"
    # One epoch row per epoch run, with the summary's keys joined in.
    assert len(exp.epochs) == raw["epochs_run"].sum()
    assert set(exp.epochs["cell"]) == set(raw["cell"])
    last = exp.epochs.sort_values("epoch").groupby("trial_id").last()
    ok = raw[raw["status"] != "failed"].set_index("trial_id")
    assert last.loc[ok.index, "best_val_acc"].to_numpy() == pytest.approx(ok["best_val_acc"].to_numpy())
    assert exp.epochs["stage_end"].dtype == bool and exp.epochs["T"].dtype == float
    assert exp.teachers.loc[0, "test_acc"] == pytest.approx(71.9)
    # A finished study: only the failed trial is worth a note.
    assert len(exp.missing) == 1 and "failed" in exp.missing[0] and "diverged" in exp.missing[0]


def test_duplicate_trial_rows_of_a_resumed_study_keep_the_last(exp_dir, tmp_path):
    copy = shutil.copytree(exp_dir, tmp_path / "resumed")
    summary = pd.read_csv(copy / "summary.csv")
    again = summary.iloc[[0]].assign(best_val_acc=99.0)
    pd.concat([summary, again]).to_csv(copy / "summary.csv", index=False)
    # A trial restored from its checkpoint at epoch 8 reports epochs 9.. again.
    progress_file = copy / summary.at[0, "trial_dir"] / "progress.csv"
    progress = pd.read_csv(progress_file)
    pd.concat([progress, progress.iloc[8:].assign(val_acc=1.0)]).to_csv(progress_file, index=False)
    loaded = load_experiment(copy)
    curve = loaded.epochs[loaded.epochs["trial_id"] == summary.at[0, "trial_id"]]
    assert list(curve["epoch"]) == list(progress["epoch"]) and (curve["val_acc"].iloc[8:] == 1.0).all()
    assert len(loaded.trials) == len(summary)
    assert loaded.trials.set_index("trial_id").at[summary.at[0, "trial_id"], "best_val_acc"] == 99.0
    assert any("more than once" in note for note in loaded.missing)


@pytest.mark.parametrize("damage, expected", [
    (lambda d: shutil.rmtree(d), "no such experiment directory"),
    (lambda d: (d / "summary.csv").unlink(), "summary.csv: missing"),
    (lambda d: (d / "study.json").unlink(), "study.json: missing"),
    (lambda d: (d / "study.json").write_text('{"name": "x", "config": '), "not valid JSON"),
    (lambda d: (d / "study.json").write_text("[1, 2]"), "expected a JSON object"),
    (lambda d: (d / "summary.csv").write_text(""), "empty file"),
    (lambda d: (d / "summary.csv").write_bytes(b"\xff\xfe\x00garbage\x00\x81"), "summary.csv"),
    (lambda d: (d / "summary.csv").write_text('a,b\n1,"unterminated\n'), "summary.csv"),
    (lambda d: (d / "summary.csv").write_text("name,value\nx,1\n"), "not a trial summary"),
])
def test_unreadable_experiments_raise_with_path(exp_dir, tmp_path, damage, expected):
    copy = shutil.copytree(exp_dir, tmp_path / "damaged")
    damage(copy)
    with pytest.raises(ExperimentError, match=re.escape(expected)) as info:
        load_experiment(copy)
    assert str(copy) in str(info.value)


def test_main_report_returns_2_with_a_clear_error(tmp_path, capsys):
    assert main_report(tmp_path / "nowhere", tmp_path / "out", None) == 2
    err = capsys.readouterr().err
    assert "error" in err and str(tmp_path / "nowhere") in err


# ---------------------------------------------------------------------------- tables
def test_best_configs_match_plain_pandas(exp, raw):
    table = tables.best_configs(exp).set_index("cell")
    search = raw[(raw["stage"] == "search") & (raw["status"] == "completed")]
    best = search.loc[search.groupby("cell")["best_val_acc"].idxmax()].set_index("cell")
    stats_ = reruns(raw).groupby("cell")["test_acc"].agg(["mean", "std", "count"])
    assert set(table.index) == set(raw["cell"])
    for cell in table.index:
        assert table.at[cell, "best_config"] == best.at[cell, "config"]
        assert table.at[cell, "best_val_acc"] == pytest.approx(best.at[cell, "best_val_acc"])
        assert table.at[cell, "test_mean"] == pytest.approx(stats_.at[cell, "mean"])
        assert table.at[cell, "test_std"] == pytest.approx(stats_.at[cell, "std"])
        assert table.at[cell, "n_seeds"] == stats_.at[cell, "count"] == 3


def test_gap_table_matches_plain_pandas(exp, raw, exp_dir):
    teacher = pd.read_csv(exp_dir / "teachers.csv").query("role == 'teacher'")["test_acc"].iloc[0]
    expected = reruns(raw).groupby(["method", "student"])["test_acc"].agg(["mean", "std", "count"])
    gap = tables.gap_table(exp).set_index(["method", "student"])
    assert len(gap) == len(expected) == len(STUDENTS) * len(METHODS)
    for key, row in expected.iterrows():
        assert gap.loc[key, "test_mean"] == pytest.approx(row["mean"])
        assert gap.loc[key, "test_std"] == pytest.approx(row["std"])
        assert gap.loc[key, "n_seeds"] == row["count"]
        assert gap.loc[key, "source"] == "rerun"
        assert gap.loc[key, "gap"] == pytest.approx(teacher - row["mean"])
    ratio = raw.groupby("student")["capacity_ratio"].first()
    for (method, student), row in gap.iterrows():
        assert row["capacity_ratio"] == pytest.approx(ratio[student])


def test_gain_over_ce_is_paired_by_seed(exp, raw):
    wide = reruns(raw).pivot_table(index=["student", "seed"], columns="method", values="test_acc")
    gain = tables.gain_over_ce(exp).set_index(["method", "student"])
    assert set(gain.index) == {(m, s) for m in METHODS if m != "ce" for s in STUDENTS}
    for (method, student), row in gain.iterrows():
        diff = (wide[method] - wide["ce"]).loc[student]
        n, mean, sd = len(diff), diff.mean(), diff.std()
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        assert row["n_pairs"] == n == 3
        assert row["gain_mean"] == pytest.approx(mean)
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((mean - half, mean + half))


def test_single_seed_gives_no_interval_and_search_fallback(tmp_path):
    one = load_experiment(write_synthetic_experiment(tmp_path / "one", students=("resnet8",), rerun_seeds=1))
    gain = tables.gain_over_ce(one)
    assert (gain["n_pairs"] == 1).all()
    assert gain[["gain_std", "ci95_low", "ci95_high"]].isna().all().all()
    assert gain["gain_mean"].notna().all()
    # Without re-runs a cell falls back to its best completed search trial, flagged.
    summary = pd.read_csv(tmp_path / "one" / "summary.csv")
    summary[summary["stage"] != "rerun"].to_csv(tmp_path / "one" / "summary.csv", index=False)
    gap = tables.gap_table(load_experiment(tmp_path / "one"))
    search = summary[(summary["stage"] == "search") & (summary["status"] == "completed")]
    best = search.loc[search.groupby("cell")["best_val_acc"].idxmax()].set_index("method")
    assert (gap["source"] == "search").all()
    assert gap.set_index("method")["test_mean"].to_dict() == pytest.approx(best["test_acc"].to_dict())


def test_ranking_puts_the_best_mean_first(exp, raw):
    means = reruns(raw).groupby(["student", "method"])["test_acc"].mean()
    rank = tables.ranking(exp)
    for student in STUDENTS:
        mine = rank[rank["student"] == student].set_index("method")["rank"]
        expected = means[student].rank(ascending=False).astype(int)
        assert mine.to_dict() == expected.to_dict()


def test_pruning_audit_counts_and_epochs_saved(exp, raw):
    audit = tables.pruning_audit(exp).set_index("cell")
    search = raw[raw["stage"] == "search"]
    for cell, group in search.groupby("cell"):
        row = audit.loc[cell]
        counts = group["status"].value_counts()
        assert row["trials"] == len(group) == 4
        assert (row["completed"], row["pruned"], row["failed"]) == (
            counts.get("completed", 0), counts.get("pruned", 0), counts.get("failed", 0))
        assert row["epochs_run"] == group["epochs_run"].sum()
        # Savings are budget x trials - epochs run, over the trials the pruner could stop:
        # a failed trial stopped for another reason and saves nothing.
        prunable = group[group["status"].isin(["completed", "pruned"])]
        assert row["epochs_saved"] == len(prunable) * 12 - prunable["epochs_run"].sum()
        assert row["epochs_without_pruning"] == row["epochs_run"] + row["epochs_saved"]
        assert row["saved_ratio"] == pytest.approx(row["epochs_saved"] / row["epochs_without_pruning"])
        audits = raw[(raw["cell"] == cell) & (raw["stage"] == "audit")]
        best = group[group["status"] == "completed"]["best_val_acc"].max()
        assert row["audited"] == len(audits) == 1
        assert row["audited_beat_best"] == (audits["best_val_acc"] > best).sum()
    assert audit["failed"].sum() == 1
    assert 0 < audit["audited_beat_best"].sum() < len(audit)  # the fixture has both outcomes


def test_paper_comparison_matches_published_rows(exp):
    ref = pd.read_csv(Path(tables.__file__).parent / "reference" / "published_results.csv")
    ref = ref[ref["dataset"] == "cifar100"]
    students = ref["student"].isin(STUDENTS) & ref["method"].isin(METHODS)
    expected = ref[(students & (ref["teacher"] == "resnet110"))            # distilled from our teacher
                   | (students & (ref["method"] == "ce"))                  # CE uses no teacher
                   | ((ref["method"] == "teacher") & (ref["teacher"] == "resnet110"))]
    paper = published.paper_comparison(exp)
    assert len(paper) == len(expected) == 10
    assert sorted(paper["published"]) == sorted(expected["value"])
    assert set(paper["method"]) == {"teacher", *METHODS}
    headline = paper[(paper["student"] == "resnet8") & (paper["method"] == "annealing")].iloc[0]
    assert headline["published"] == 63.1
    ours = tables.gap_table(exp).set_index(["method", "student"]).loc[("annealing", "resnet8"), "test_mean"]
    assert headline["ours"] == pytest.approx(ours)
    assert headline["difference"] == pytest.approx(ours - 63.1)
    assert "validation" in headline["protocol_notes"] and "3 seed" in headline["protocol_notes"]
    assert (paper["protocol_notes"].str.len() > 0).all()


def test_paper_comparison_is_empty_when_nothing_matches(tmp_path):
    other = load_experiment(write_synthetic_experiment(tmp_path / "m1d", dataset="mnist1d", teacher="cnn1d_64",
                                                       students=("mlp1d_8",), methods=("ce", "kd")))
    assert published.paper_comparison(other).empty


def test_protocol_block(exp):
    block = dict(protocol.protocol(exp))
    assert block["Selection rule"] == ("checkpoint with best validation accuracy; "
                                       "test accuracy reported for that checkpoint")
    assert "45,000 train / 5,000 validation" in block["Splits"] and "10,000 test" in block["Splits"]
    assert "12 epochs" in block["Epoch budget"]
    fixed = exp.config.get("train") or {}
    assert all(f"{k} {v}" in block["Fixed for every run"] for k, v in fixed.items()) and fixed
    assert "4 trials per cell" in block["Search"] and "TPE" in block["Search"]
    assert "asha (never before epoch 2)" in block["Search"] and "audit" in block["Search"]
    assert "3 re-run seeds" in block["Seeds"] and "1, 2, 3" in block["Seeds"]
    assert "ray 2.60.0" in block["Versions"] and "optuna 5.0.0" in block["Versions"]
    assert block["Git revision"].startswith("0123456789abcdef")
    assert "2 CPUs" in block["Hardware"]
    hours = exp.trials["seconds"].sum() / 3600
    assert f"{hours:.2f} CPU-hours" in block["Compute"]
    assert "utilisation" not in block["Compute"]  # not recorded by this (older) experiment


def test_protocol_states_the_pruning_rule_and_utilisation_the_study_recorded(exp):
    recorded = dataclasses.replace(exp, info={**exp.info, "utilisation": 0.864,
                                              "pruning": {"decision_steps": [2, 4, 8]},
                                              "config": {**exp.config, "rerun_max_seeds": 9, "rerun_target": 1.5}})
    block = dict(protocol.protocol(recorded))
    assert "3 re-run seeds per cell, up to 9 for a student" in block["Seeds"] and "±1.5 points" in block["Seeds"]
    assert "utilisation 0.86" in block["Compute"]
    assert "same epoch of their final phase" in block["Search"] and "final-phase epochs 2, 4, 8" in block["Search"]


def test_protocol_says_where_each_studied_methods_final_phase_starts(exp):
    """Read from the methods' declarations, for the methods of this study only."""
    methods = ["continuation", "dkd", "ce", "annealing", "kd", "no_such_plugin"]
    recorded = dataclasses.replace(exp, info={**exp.info, "pruning": {"decision_steps": [2, 4]},
                                              "config": {**exp.config, "methods": methods}})
    search = dict(protocol.protocol(recorded))["Search"]
    assert ("(every epoch for CE (no teacher), Hinton KD and DKD; from phase 2 on for Annealing-KD; "
            "once psi = 1 for Continuation-KD; as its method declares (not loadable here) for no_such_plugin)"
            in search)
    recorded = dataclasses.replace(recorded, info={**recorded.info, "config": {**exp.config, "methods": ["ce"]}})
    assert "(every epoch for CE (no teacher))" in dict(protocol.protocol(recorded))["Search"]


# ---------------------------------------------------------------------------- figures
def test_gap_curve_has_a_point_per_method_and_student(exp, raw):
    fig = figures.gap_curve_figure(exp)
    acc_ax = fig.axes[0]
    means = reruns(raw).groupby(["method", "student"])["test_acc"].mean()
    ratio = raw.groupby("student")["capacity_ratio"].first()
    plotted = {c.get_label(): c.lines[0] for c in acc_ax.containers}
    for method in METHODS:
        line = plotted[figures.style(method)[2]]
        order = ratio.sort_values().index
        assert len(line.get_xdata()) == len(STUDENTS)
        assert list(line.get_ydata()) == pytest.approx([means[(method, s)] for s in order])
        # x is the capacity ratio, dodged by a few percent at most (log axis).
        assert list(line.get_xdata()) == pytest.approx(list(ratio[order]), rel=0.05)
    assert acc_ax.get_xscale() == "log"
    assert any(line.get_label().startswith("teacher") for line in acc_ax.lines)
    assert len(fig.axes[1].containers) == len(METHODS)  # the gap panel


def test_every_figure_is_a_png(report):
    paths, out = report
    for name in ("gap_curve", "gain_over_ce", "annealing_sensitivity", "learning_curves", "search_pruning",
                 "gap_curve_compare"):
        data = paths[f"{name}.png"].read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name


def test_figures_without_data_still_render(tmp_path):
    empty = load_experiment(write_synthetic_experiment(tmp_path / "ce-only", students=("resnet8",),
                                                       methods=("ce",)))
    path = figures.annealing_sensitivity(empty, tmp_path / "s.png")
    assert path.read_bytes().startswith(PNG)
    path = figures.gain_over_ce(empty, tmp_path / "g.png")
    assert path.read_bytes().startswith(PNG)


# ---------------------------------------------------------------------------- report
class _Tags(HTMLParser):
    VOID = {"meta", "link", "img", "br", "hr", "input"}

    def __init__(self):
        super().__init__()
        self.urls, self.stack, self.errors, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [value for name, value in attrs if name in ("src", "href")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_html_is_self_contained(report):
    paths, _ = report
    text = paths["report.html"].read_text(encoding="utf-8")
    parser = _Tags()
    parser.feed(text)
    assert not parser.errors and not parser.stack  # balanced tags
    assert "script" not in parser.tags and "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text
    assert parser.urls and all(url.startswith("data:") for url in parser.urls)
    images = [url for url in parser.urls if url.startswith("data:image/png;base64,")]
    assert len(images) == parser.tags.count("img") == 7  # 5 figures + both gap curves in the comparison
    assert all(base64.b64decode(url.split(",", 1)[1]).startswith(PNG) for url in images)


def test_markdown_links_pngs_relatively(report):
    paths, out = report
    md = paths["report.md"].read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 7
    for link in links:
        assert not link.startswith(("/", "http")) and link.endswith(".png")
        assert (out / link).is_file()
    # The protocol block comes first, then the headline table with "mean ± std" to 2 decimals.
    assert md.index("## Protocol") < md.index("## Teacher-student gap")
    assert "What is missing" in md  # the failed trial
    for row in pd.read_csv(paths["gap_table.csv"]).itertuples():
        assert f"| {row.test_mean:.2f} ± {row.test_std:.2f} |" in md
    # the verdict says what its intervals leave out: the search's own variation
    assert "not the search that selected it" in md.split("## Verdict", 1)[1].split("\n## ", 1)[0]


def test_report_writes_every_table_as_csv(report, exp):
    paths, _ = report
    for name, build in (("gap_table", tables.gap_table), ("gain_over_ce", tables.gain_over_ce),
                        ("ranking", tables.ranking), ("best_configs", tables.best_configs),
                        ("pruning_audit", tables.pruning_audit), ("paper_comparison", published.paper_comparison)):
        written = pd.read_csv(paths[f"{name}.csv"])
        assert list(written.columns) == list(build(exp).columns) and len(written) == len(build(exp)), name
    assert pd.read_csv(paths["protocol.csv"])["label"].iloc[0] == "Study"


def test_compare_joins_gap_tables(report, raw):
    paths, _ = report
    joined = pd.read_csv(paths["compare_gap_table.csv"])
    assert {"test_mean_synthetic", "test_mean_other", "difference_synthetic_minus_other"} <= set(joined.columns)
    # Outer join: resnet20 only in the first experiment, resnet14 only in the second.
    assert set(joined["student"]) == {"resnet8", "resnet20", "resnet14"}
    r8 = joined[(joined["student"] == "resnet8") & (joined["method"] == "kd")].iloc[0]
    assert r8["test_mean_synthetic"] == pytest.approx(
        reruns(raw).query("student == 'resnet8' and method == 'kd'")["test_acc"].mean())
    assert r8["difference_synthetic_minus_other"] == pytest.approx(r8["test_mean_synthetic"] - r8["test_mean_other"])
    md = paths["report.md"].read_text(encoding="utf-8")
    assert "Comparison: synthetic vs other" in md and "gap_curve_compare.png" in md


def test_partial_experiment_loads_and_reports_what_is_missing(exp_dir, tmp_path, capsys):
    copy = shutil.copytree(exp_dir, tmp_path / "partial")
    make_partial(copy)
    partial = load_experiment(copy)
    notes = "\n".join(partial.missing)
    assert "study status is 'running'" in notes
    assert "2 trial(s) have no per-epoch file" in notes
    assert "still have status 'running'" in notes
    assert "cell resnet20-annealing has no completed re-runs" in notes
    gap = tables.gap_table(partial).set_index(["method", "student"])
    assert gap.loc[("annealing", "resnet20"), "source"] == "search"
    assert (gap.drop(index=("annealing", "resnet20"))["source"] == "rerun").all()

    assert main_report(copy, tmp_path / "out", None) == 0
    assert (tmp_path / "out" / "learning_curves.png").read_bytes().startswith(PNG)  # a partial study draws too
    printed = capsys.readouterr().out
    assert str(tmp_path / "out" / "report.md") in printed
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    section = md.split("## What is missing", 1)[1].split("\n## ", 1)[0]
    for note in partial.missing:
        assert note in section.replace("\\|", "|")
    html_text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "What is missing" in html_text and "not finished" in html_text


def test_a_study_without_trials_yet_still_reports(exp_dir, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(exp_dir / "study.json", fresh / "study.json")
    (fresh / "summary.csv").write_text((exp_dir / "summary.csv").read_text().splitlines()[0] + "\n")
    loaded = load_experiment(fresh)
    assert loaded.trials.empty and loaded.epochs.empty
    assert any("no trials yet" in n for n in loaded.missing) and any("teachers.csv" in n for n in loaded.missing)
    paths = write_report(fresh, tmp_path / "out")
    assert "_(no rows yet)_" in paths["report.md"].read_text(encoding="utf-8")
    assert all(p.is_file() for p in paths.values())


def test_default_out_dir_is_inside_the_experiment_and_figures_can_be_left_out(exp_dir, tmp_path, capsys):
    copy = shutil.copytree(exp_dir, tmp_path / "defaults")
    assert run_study.main(["report", str(copy), "--no-figures"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"report: {copy / 'report' / 'report.html'}")
    md = (copy / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Verdict" in md and "![" not in md and not list((copy / "report").glob("*.png"))


def test_mean_std_format():
    assert pm(63.1, 0.45) == "63.10 ± 0.45"
    assert pm(63.1, float("nan")) == "63.10"
    assert pm(float("nan"), 1.0) == "–"


def test_first_value_skips_empty_and_missing_entries():
    assert tables.first_value(pd.Series(["", None, "cnn1d_32", "resnet56"])) == "cnn1d_32"
    assert tables.first_value(pd.Series([float("nan"), 7])) == "7.0"
    assert tables.first_value(pd.Series(["", None], dtype=object)) == ""
    assert tables.first_value(pd.Series([], dtype=object)) == ""
