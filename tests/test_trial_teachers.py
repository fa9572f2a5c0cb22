"""A trial started before its teacher is ready waits for the role's row file (study/trainable.py)."""
import json

from study import trainable
from study.config import StudyConfig
from study.trainable import run_config


def test_a_trial_waits_for_its_teachers_row_and_takes_the_path_from_it(tmp_path, monkeypatch):
    study = StudyConfig.preset("smoke")
    row_file = tmp_path / "teachers" / "teacher.json"
    run = {"student": study.students[0], "method": "kd", "seed": 3, "params": {},
           "teacher_rows": {"teacher_checkpoint": str(row_file)}}
    sleeps = []

    def teacher_becomes_ready_after_two_polls(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            row_file.parent.mkdir()
            row_file.write_text(json.dumps({"path": "/store/teacher/model.pt"}))

    monkeypatch.setattr(trainable.time, "sleep", teacher_becomes_ready_after_two_polls)
    cfg, _ = run_config(study, run, poll_seconds=0.05)
    assert cfg.teacher_checkpoint == "/store/teacher/model.pt" and cfg.seed == 3
    assert sleeps == [0.05, 0.05]  # polled until the row existed, then not again
    # a CE run needs no teacher and does not wait
    cfg, _ = run_config(study, {**run, "method": "ce", "teacher_rows": {}})
    assert cfg.teacher_checkpoint is None and sleeps == [0.05, 0.05]
