"""A teacher given as train.teacher_checkpoint is scored once per (weights, evaluation
settings) and its scores kept in <storage>/teachers/given/: a resume or a second study reads
them instead of evaluating the teacher again (on GLUE, RoBERTa-large over MNLI dev).

The teacher stage's caching (study.teachers.given_teacher_scores) runs here without a Ray cluster,
with the real evaluation (kd.train.evaluate_teacher) of a real stored MNIST-1D teacher; the
last test goes through a real local Ray instance, a finished study resumed."""
import json
import shutil

import pandas as pd
import pytest
import torch

from kd.checkpoints import save_model
from kd.train import evaluate_teacher
from study import teachers
from study.config import StudyConfig
from study.runner import Study


def study_config(teacher_file, **train) -> StudyConfig:
    """A one-cell MNIST-1D study distilling from the conftest teacher (cnn1d_16) given as a file."""
    cfg = StudyConfig.preset("smoke").replace(teacher="cnn1d_16", students=["mlp1d_8"], methods=["kd"],
                                              trials_per_cell=1, rerun_seeds=0)
    return cfg.replace(train={**cfg.train, "num_samples": 1200, "val_size": 200,
                              "teacher_checkpoint": str(teacher_file), **train})


def score(study: Study, evaluations: list[str]) -> dict:
    """The teacher stage's scoring of the given teacher, with the real evaluation counted."""
    probe = teachers.probe_config(study.config)
    given = teachers.given_teacher_config(probe)

    def evaluate() -> dict:
        evaluations.append(probe.teacher_checkpoint)
        return evaluate_teacher(given.replace(teacher_checkpoint=probe.teacher_checkpoint))

    return teachers.given_teacher_scores(study.teachers / "given", probe.teacher_checkpoint, given, evaluate)


def test_given_teacher_scores_are_reused_until_weights_or_evaluation_change(tiny_teacher, tmp_path):
    _, _, stored = tiny_teacher
    given = tmp_path / "given.pt"
    shutil.copy(stored, given)
    storage = tmp_path / "runs"
    evaluations: list[str] = []

    first = score(Study(study_config(given), storage, "first"), evaluations)
    assert evaluations == [str(given)]
    # learned (chance: 10); over seeds 0-4 and 1-2 threads its lowest score was 45 (benchmarks/threshold_spread.py)
    assert 30 < first["test_acc"] <= 100 and 30 < first["best_val_acc"] <= 100
    assert first["primary_metric"] == "accuracy" and first["epochs_run"] == 0
    kept = sorted((storage / "teachers" / "given").glob("*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == first

    # the same study again (what a resume does), a fresh Study object: read, not evaluated
    assert score(Study(study_config(given), storage, "first"), evaluations) == first
    # another study of the same storage, the same weights copied elsewhere: read too
    copy = tmp_path / "elsewhere" / "teacher.pt"
    copy.parent.mkdir()
    shutil.copy(given, copy)
    assert score(Study(study_config(copy), storage, "second"), evaluations) == first
    # student-side settings (another student, other methods) do not touch the teacher's scores
    other = study_config(given).replace(students=["cnn1d_8"], methods=["ce", "annealing"])
    assert score(Study(other, storage, "third"), evaluations) == first
    assert evaluations == [str(given)]

    # other evaluation data (another validation split): evaluated again, kept beside the first
    resplit = score(Study(study_config(given, val_size=300, data_seed=7), storage, "resplit"), evaluations)
    assert evaluations == [str(given)] * 2
    assert 30 < resplit["best_val_acc"] <= 100
    assert len(list((storage / "teachers" / "given").glob("*.json"))) == 2

    # other weights in the same file: evaluated again, and the scores are the new weights'
    payload = torch.load(given, weights_only=True)
    zeros = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    save_model(given, payload["arch"], payload["num_classes"], zeros)
    changed = score(Study(study_config(given), storage, "first"), evaluations)
    assert evaluations == [str(given)] * 3
    # all-zero weights give every input the same logits: one class, about a tenth of the test set
    assert changed["test_acc"] < 25 and changed["test_acc"] != first["test_acc"]
    assert len(list((storage / "teachers" / "given").glob("*.json"))) == 3
    # and the original weights are still known: putting them back reads their scores
    shutil.copy(stored, given)
    assert score(Study(study_config(given), storage, "first"), evaluations) == first
    assert evaluations == [str(given)] * 3


@pytest.mark.slow
def test_resumed_study_does_not_evaluate_the_given_teacher_again(ray_session, tiny_teacher, tmp_path):
    _, _, stored = tiny_teacher
    given = tmp_path / "given.pt"
    shutil.copy(stored, given)
    cfg = study_config(given)
    storage = tmp_path / "runs"

    def run(resume: bool):
        study = Study(cfg, storage, "given")
        study.prepare(resume=resume)
        study.run()
        row = pd.read_csv(study.exp_dir / "teachers.csv").iloc[0]
        kept = sorted((storage / "teachers" / "given").glob("*.json"))
        return (row.arch, row.best_val_acc, row.test_acc, row.seconds), [(p, p.stat().st_mtime_ns) for p in kept]

    first, kept = run(resume=False)
    assert first[0] == "cnn1d_16" and 40 < first[2] <= 100 and len(kept) == 1
    # the same teacher evaluated in this process gives the numbers the worker reported
    direct = evaluate_teacher(teachers.given_teacher_config(teachers.probe_config(cfg))
                              .replace(teacher_checkpoint=str(given)))
    assert (direct["best_val_acc"], direct["test_acc"]) == pytest.approx(first[1:3])

    again, kept_again = run(resume=True)
    # the stored scores, the original evaluation time included; the file was read, not rewritten
    assert again == first and kept_again == kept
    info = json.loads((storage / "given" / "study.json").read_text())
    assert info["status"] == "finished" and info["wall_seconds"] > 0
