"""The progress display (study/progress.py): what it says at each point of a study, read from
a real planner over a real ledger (no Ray, results told by hand as Tune reports them), its
plain lines and its live table; and the plain lines of a real smoke study's driver."""
import io
import re
from types import SimpleNamespace

import pandas as pd
import pytest

from study.config import StudyConfig
from study.ledger import Ledger
from study.progress import Progress, clock
from study.search import StudyPlanner
from study.teachers import TeacherStage

from planner_helpers import finish, teacher_trained

STATUS = re.compile(r"^progress (\d\d:\d\d) elapsed, (about \d\d:\d\d left|time left unknown yet) \| "
                    r"stage (teacher|search|confirm|re-runs|done) \| cells: (.+) \| trials (\d+) of (\d+): "
                    r"(\d+) completed, (\d+) pruned, (\d+) failed, (\d+) running$")


@pytest.fixture
def cell_study(tmp_path):
    """mlp1d_8 x ce, kd: 2 search trials per cell, the best re-run with 2 seeds."""
    study = StudyConfig.preset("smoke").replace(students=["mlp1d_8"], methods=["ce", "kd"], trials_per_cell=2,
                                                rerun_seeds=2, rerun_max_seeds=2, confirm_top=0, audit_pruned=0,
                                                pruner="none", epochs=8)
    teachers = TeacherStage(study, tmp_path, tmp_path / "teachers")
    teachers.folder.mkdir(parents=True)
    planner = StudyPlanner(study, Ledger(study, tmp_path, "progress"), tmp_path, teachers)
    out = io.StringIO()
    return planner, teachers, Progress(planner, out=out, interval=3600.0, live=False), out


def shown(out):
    text = out.getvalue().splitlines()
    out.seek(0), out.truncate()
    return text


def test_plain_lines_follow_the_study_from_teacher_to_done(cell_study):
    planner, teachers, progress, out = cell_study
    assert planner.suggest("c0")["cell"] == "mlp1d_8-ce"
    progress.show()
    status, best = shown(out)
    assert STATUS.match(status).groups()[2:] == ("teacher", "1 teacher, 1 search", "0", "8", "0", "0", "0", "1")
    assert best == "best val mlp1d_8: ce -, kd -"
    progress.show()
    assert shown(out) == []  # the same stage, and the interval has not passed

    teacher_trained(teachers)
    finish(planner, "c0", 61.5)
    assert [planner.suggest(t)["cell"] for t in ("k0", "c1", "k1")] == ["mlp1d_8-kd", "mlp1d_8-ce", "mlp1d_8-kd"]
    finish(planner, "c1", 64.25)
    progress.on_trial_complete(0, [], SimpleNamespace(last_result={"epoch": 8}, config={"stage": "search"}))
    progress.last_checked -= 2.0  # a second later: the display looks at the stage again
    progress.show()  # the teacher is ready: a new stage, shown at once
    status, best = shown(out)
    # the planned total counts the re-runs the plan holds for the finished CE cell
    assert STATUS.match(status).groups()[2:] == ("search", "1 search, 1 re-runs", "2", "8", "2", "0", "0", "2")
    assert best == "best val mlp1d_8: ce 64.2, kd -"

    finish(planner, "k0", 70.0)
    planner.on_trial_complete("k1", {"best_val_acc": 12.0, "diverged": True})
    for trial_id in ("r0", "r1", "r2", "r3"):
        assert planner.suggest(trial_id)["stage"] == "rerun"
        finish(planner, trial_id, 60.0)
    progress.on_experiment_end([])
    status, best = shown(out)
    assert STATUS.match(status).groups()[2:] == ("done", "2 done", "8", "8", "7", "0", "1", "0")
    assert best == "best val mlp1d_8: ce 64.2, kd 70.0"
    progress.on_experiment_end([])
    assert shown(out) == []  # the end is shown once


def test_the_time_left_comes_from_the_epochs_trained_so_far(cell_study, monkeypatch):
    planner, teachers, progress, _ = cell_study
    teacher_trained(teachers)
    progress.started -= 100.0  # 100 s in, 40 epochs trained: 0.4 epochs per second
    progress.epochs_done = 40
    # 4 search trials and 4 re-runs of 8 epochs left: 64 epochs, 160 s
    assert progress.time_left(progress.snapshot()["left_epochs"]) == "about 02:40 left"
    assert clock(3725) == "1:02:05" and clock(59.6) == "01:00"


def test_a_terminal_gets_a_live_table_with_a_row_per_cell(cell_study):
    planner, teachers, _, _ = cell_study
    out = io.StringIO()
    progress = Progress(planner, out=out, live=True)
    teacher_trained(teachers)
    planner.suggest("c0")
    finish(planner, "c0", 61.5)
    progress.show()
    progress.on_experiment_end([])
    text = out.getvalue()
    words = " ".join(text.split())  # the title and caption wrap at the table's width
    assert "stage search |" in words and "trials 1 of 8: 1 completed, 0 pruned, 0 failed, 0 running" in words
    rows = [line for line in text.splitlines() if "mlp1d_8" in line]
    assert [r.split("│")[1:5] for r in rows][-2:] == [[" mlp1d_8 ", " ce     ", " search ", "    61.50 "],
                                                       [" mlp1d_8 ", " kd     ", " search ", "        - "]]


@pytest.mark.slow
def test_a_smoke_studys_driver_prints_plain_progress_lines(smoke_run):
    exp_dir, stdout = smoke_run
    lines = stdout.splitlines()
    statuses = [STATUS.match(line) for line in lines if line.startswith("progress ")]
    assert statuses and all(statuses)
    assert "== Status ==" not in stdout and "A new study created" not in stdout
    stages = [m.group(3) for m in statuses]
    assert stages[-1] == "done" and stages.index("done") == len(stages) - 1
    summary = pd.read_csv(exp_dir / "summary.csv")
    counts = summary["status"].value_counts()
    last = statuses[-1].groups()
    assert last[4:] == (str(len(summary)), str(len(summary)), str(counts.get("completed", 0)),
                        str(counts.get("pruned", 0)), str(counts.get("failed", 0)), "0")
    search = summary[(summary["stage"] == "search") & (summary["status"] == "completed")]
    for student, rows in search.groupby("student"):
        best = rows.groupby("method")["best_val_acc"].max()
        expected = ", ".join(f"{m} {best[m]:.1f}" for m in StudyConfig.preset("smoke").methods)
        assert f"best val {student}: {expected}" in lines
