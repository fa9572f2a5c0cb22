"""The report on a REAL smoke-study directory (the session fixture shared with the study
tests): its numbers against independent pandas computations from summary.csv, its gap
curve, and its HTML opened in headless Chromium."""
import re
import shutil
import subprocess

import pandas as pd
import pytest

from analysis import figures, load_experiment, tables, write_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_report(smoke_experiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke-report")
    return write_report(smoke_experiment, out), out


def test_gap_table_equals_pandas_on_summary(smoke_experiment):
    raw = pd.read_csv(smoke_experiment / "summary.csv")
    rerun = raw[(raw.stage == "rerun") & (raw.status == "completed")]
    expected = rerun.groupby(["method", "student"]).test_acc.agg(["mean", "std", "count"])
    gap = tables.gap_table(load_experiment(smoke_experiment)).set_index(["method", "student"])
    assert len(gap) == len(expected) == 6
    for key, row in expected.iterrows():
        assert gap.loc[key, "test_mean"] == pytest.approx(row["mean"])
        assert gap.loc[key, "test_std"] == pytest.approx(row["std"])
        assert gap.loc[key, "n_seeds"] == row["count"]
        teacher = pd.read_csv(smoke_experiment / "teachers.csv").test_acc[0]
        assert gap.loc[key, "gap"] == pytest.approx(teacher - row["mean"])
    # paired gain over CE, seed by seed
    gain = tables.gain_over_ce(load_experiment(smoke_experiment)).set_index(["method", "student"])
    ce = rerun[rerun.method == "ce"].set_index(["student", "seed"]).test_acc
    for (method, student), rows in rerun[rerun.method != "ce"].groupby(["method", "student"]):
        diffs = [r.test_acc - ce[(student, r.seed)] for r in rows.itertuples()]
        assert gain.loc[(method, student), "gain_mean"] == pytest.approx(sum(diffs) / len(diffs))


def test_pruning_audit_equals_pandas(smoke_experiment):
    raw = pd.read_csv(smoke_experiment / "summary.csv")
    search = raw[raw.stage == "search"]
    audit = tables.pruning_audit(load_experiment(smoke_experiment)).set_index("cell")
    for cell, rows in search.groupby("cell"):
        pruned = rows[rows.status == "pruned"]
        assert audit.loc[cell, "pruned"] == len(pruned)
        assert audit.loc[cell, "epochs_saved"] == (pruned.epochs_budget - pruned.epochs_run).sum()


def test_every_method_and_cell_has_its_gap_curve_point(smoke_experiment):
    exp = load_experiment(smoke_experiment)
    fig = figures.gap_curve_figure(exp)
    plotted = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}
    raw = pd.read_csv(smoke_experiment / "summary.csv")
    for method in raw.method.unique():
        line = plotted[figures.style(method)[2]]
        assert len(line.get_xdata()) == raw.student.nunique()


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium; apt-get was not available)")


def test_html_opens_in_chromium_without_console_errors(smoke_report, tmp_path):
    paths, out = smoke_report
    html = paths["report.html"].read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    browser = _chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=3000"]
    page = f"file://{paths['report.html']}"
    run = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert run.stdout.count("<img") == len(images) and "Teacher-student gap" in run.stdout
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,2400", page],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
