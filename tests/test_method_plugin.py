"""A method is one file: a throw-away method, written by this test into a folder outside the
project and named as a plugin, runs through kd.train, `python -m kd`, a real Ray study and a
report. No project file names it; Ray's trial and teacher workers load it from the study's
`plugins`, a fresh report process from study.json."""
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from kd import METHODS, TrainConfig, train
from kd.methods import PLUGINS_ENV, load_plugins

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''"""Logit matching (Ba and Caruana 2014): CE plus the squared distance of the logits."""
import torch.nn.functional as F

from kd.methods.base import METHODS, Method, Param


@METHODS.register("logit_match")
class LogitMatch(Method):
    label = "Logit matching"
    reference = "Ba and Caruana, Do Deep Nets Really Need to be Deep? (NeurIPS 2014)"
    rule = "CE + logit_weight MSE(z_s, z_t)"
    colour, marker, order = "#F0E442", "*", 50
    needs_teacher = True
    params = (Param("logit_weight", float, 0.5, "weight of the logit MSE", low=0.0),)
    search = {"logit_weight": [0.1, 2.0]}

    def losses(self, student_logits, teacher_logits, labels, ctx):
        mse = F.mse_loss(student_logits.float(), teacher_logits.detach().float())
        return {"ce": self.label_loss(student_logits, labels), "logit_mse": self.cfg.logit_weight * mse}
'''


@pytest.fixture(scope="module")
def plugin() -> Path:
    # One folder per user rather than pytest's per-session one: a process that runs the tests
    # twice (mutmut's) then names the same file again, which registers nothing new, where a
    # second file registering "logit_match" is refused
    path = Path(tempfile.gettempdir()) / f"kd-plugin-test-{os.getuid()}" / "my_methods" / "logit_match.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PLUGIN)
    assert ROOT not in path.parents
    load_plugins([str(path)])
    load_plugins([str(path)])  # named twice (a study and the environment): registered once
    return path


def test_the_plugin_is_a_method_like_the_others(plugin, tiny_teacher):
    _, base, teacher_path = tiny_teacher
    assert METHODS.get("logit_match").label == "Logit matching"
    cfg = TrainConfig.from_dict({**base.to_dict(), "method": "logit_match", "epochs": 2,
                                 "teacher_checkpoint": str(teacher_path)})
    assert cfg.logit_weight == 0.5 and "logit_weight" not in cfg.to_dict()
    assert cfg.key() == cfg.replace(logit_weight=0.5).key() != cfg.replace(logit_weight=1.0).key()
    epochs = {}
    for weight in (0.5, 1.0, 0.0):
        reported = []
        train(cfg.replace(logit_weight=weight), report=lambda metrics, save_state: reported.append(metrics))
        epochs[weight] = reported
    first = {w: rows[0]["loss_logit_mse"] for w, rows in epochs.items()}
    # same seed, same first epoch's starting point: the term scales with its weight
    assert first[0.0] == 0.0 and first[0.5] > 0
    assert math.isfinite(first[1.0]) and first[1.0] > first[0.5]
    assert [r["epoch"] for r in epochs[0.5]] == [1, 2] and 0 <= epochs[0.5][-1]["val_acc"] <= 100


def test_its_parameter_is_an_option_of_the_cli_through_the_environment(plugin):
    env = {**os.environ, PLUGINS_ENV: str(plugin)}
    out = subprocess.run([sys.executable, "-m", "kd", "train", "--help"], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout
    assert "--logit-weight LOGIT_WEIGHT" in out and "logit_match: weight of the logit MSE" in " ".join(out.split())
    listed = subprocess.run([sys.executable, "-m", "kd", "methods"], capture_output=True, text=True, env=env,
                            cwd=ROOT, check=True).stdout
    assert "logit_match (Logit matching): needs a teacher; Ba and Caruana" in listed


@pytest.mark.slow
def test_a_study_and_its_report_run_the_plugin(plugin, ray_session, tmp_path):
    from study.config import StudyConfig
    from study.runner import Study

    config = StudyConfig.from_dict({
        "dataset": "mnist1d", "teacher": "cnn1d_16", "students": ["mlp1d_8"], "methods": ["ce", "logit_match"],
        "epochs": 3, "trials_per_cell": 3, "rerun_seeds": 2, "startup_trials": 2, "grace_epochs": 1,
        "plugins": [str(plugin)], "train": {"num_samples": 1200, "val_size": 200, "teacher_epochs": 3}})
    study = Study(config, tmp_path, "plugin")
    study.prepare(resume=False)
    with contextlib.redirect_stdout(io.StringIO()):
        exp_dir = study.run()

    info = json.loads((exp_dir / "study.json").read_text())
    assert info["config"]["plugins"] == [str(plugin)]
    assert info["search_spaces"]["logit_match"]["logit_weight"] == [0.1, 2.0]
    summary = pd.read_csv(exp_dir / "summary.csv")
    mine = summary[summary["method"] == "logit_match"]
    assert (summary["status"] == "completed").sum() >= 6, summary[["cell", "stage", "status", "reason"]]
    search = mine[mine["stage"] == "search"]
    assert len(search) == 3 and search["logit_weight"].between(0.1, 2.0).all()
    assert search["logit_weight"].nunique() == 3  # searched, not fixed
    reruns = mine[(mine["stage"] == "rerun") & (mine["status"] == "completed")]
    assert len(reruns) == 2 and reruns["logit_weight"].nunique() == 1
    assert reruns["logit_weight"].iloc[0] in set(search["logit_weight"])
    assert summary.loc[summary["method"] == "ce", "logit_weight"].isna().all()
    assert mine["test_acc"].dropna().between(0, 100).all() and len(mine["test_acc"].dropna()) >= 2

    # a fresh process knows the method only from study.json's plugins
    report = subprocess.run(
        [sys.executable, "-c", "import sys; from analysis.report import main_report; "
                               "sys.exit(main_report(sys.argv[1], figures_too=False))", str(exp_dir)],
        capture_output=True, text=True, cwd=ROOT)
    assert report.returncode == 0, report.stderr
    text = (exp_dir / "report" / "report.md").read_text()
    method_rows = [line for line in text.splitlines() if line.startswith("| logit_match |")]
    assert len(method_rows) == 1
    assert "logit_weight [0.1, 2]" in method_rows[0] and "CE + logit_weight MSE(z_s, z_t)" in method_rows[0]
    assert "| Logit matching | mlp1d_8 |" in text  # its label in the gap table
    assert "Logit matching vs CE (no teacher)" in text  # and in the verdict
    assert "could not be loaded" not in text
