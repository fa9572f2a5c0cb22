"""What the Ray-free planner tests share: the teacher stage's row, as it writes it once the
teacher is ready, and a trial's last result, as Tune reports it to the planner."""
from study.teachers import write_json


def teacher_trained(teachers):
    write_json(teachers.row_file("teacher"), {"role": "teacher", "arch": "cnn1d_32", "path": "teacher.pt",
                                              "best_val_acc": 90.0, "test_acc": 90.0, "metric": "accuracy"})


def finish(planner, trial_id, value, **outcome):
    planner.on_trial_complete(trial_id, {"best_val_acc": value, "finished": True}, **outcome)
