"""A trial started before its teacher is ready waits for the role's row file (study/trainable.py)."""
import json
import threading

from study.config import StudyConfig
from study.trainable import run_config


def test_a_trial_waits_for_its_teachers_row_and_takes_the_path_from_it(tmp_path):
    study = StudyConfig.preset("smoke")
    row_file = tmp_path / "teachers" / "teacher.json"
    run = {"student": study.students[0], "method": "kd", "seed": 3, "params": {},
           "teacher_rows": {"teacher_checkpoint": str(row_file)}}

    def teacher_becomes_ready():
        row_file.parent.mkdir()
        row_file.write_text(json.dumps({"path": "/store/teacher/model.pt"}))

    timer = threading.Timer(0.3, teacher_becomes_ready)
    timer.start()
    cfg, waited = run_config(study, run, poll_seconds=0.05)
    timer.join()
    assert cfg.teacher_checkpoint == "/store/teacher/model.pt" and cfg.seed == 3
    assert waited >= 0.25
    # a CE run needs no teacher and does not wait
    cfg, waited = run_config(study, {**run, "method": "ce", "teacher_rows": {}})
    assert cfg.teacher_checkpoint is None and waited < 0.05
