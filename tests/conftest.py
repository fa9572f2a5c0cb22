import contextlib
import io
import os

import pytest
import torch

# One intra-op thread: on 2 cores a second busy process turns OpenMP spin-waits into 10-100x slowdowns.
torch.set_num_threads(int(os.environ.get("KD_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A small stored MNIST-1D teacher, trained once for the whole session."""
    from kd import TeacherStore, TrainConfig
    from kd.store import teacher_config

    store = TeacherStore(tmp_path_factory.mktemp("teachers"))
    cfg = TrainConfig(model="mlp1d_8", teacher="cnn1d_16", num_samples=1200, val_size=200,
                      teacher_epochs=8)
    path = store.get_or_train(teacher_config(cfg))
    return store, cfg, path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the in-process study tests (SPEC §6: address='local'
    never attaches to a stale cluster). Its metrics export port is known, for the metrics test."""
    import ray

    os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")  # see metrics within seconds
    metrics_port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=metrics_port)
    yield {"metrics_port": metrics_port}
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(ray_session, tmp_path_factory):
    """The smoke preset run end to end once: its experiment folder and what its driver printed
    (stdout is not a terminal here, so the progress display prints plain lines)."""
    from study.config import StudyConfig
    from study.runner import Study

    storage = tmp_path_factory.mktemp("storage")
    study = Study(StudyConfig.preset("smoke"), storage, "smoke", preset="smoke")
    study.prepare(resume=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        study.run()
    return study.exp_dir, printed.getvalue()


@pytest.fixture(scope="session")
def smoke_experiment(smoke_run):
    """The smoke experiment; shared by the study and the analysis tests."""
    return smoke_run[0]
