"""The default MNIST-1D ladder spans a real capacity gap (issue 2's acceptance check)."""
import pytest

from kd import TeacherStore, TrainConfig, build_model, count_parameters, train
from kd.store import teacher_config


@pytest.mark.slow  # two 60-epoch trainings: a minute on 2 cores
def test_default_teacher_and_smallest_student(tmp_path):
    cfg = TrainConfig(model="mlp1d_8", teacher="cnn1d_64", method="ce", epochs=60)  # the defaults
    store = TeacherStore(tmp_path)
    store.get_or_train(teacher_config(cfg))
    teacher = store.metrics(teacher_config(cfg))
    student = train(cfg)
    # published CNN figure: 94%; ours must reach at least 92% on the held-out test set
    assert teacher["test_acc"] >= 92.0
    assert student["test_acc"] <= teacher["test_acc"] - 15.0
    ratio = count_parameters(build_model("cnn1d_64", 10)) / count_parameters(build_model("mlp1d_8", 10))
    assert ratio >= 50
