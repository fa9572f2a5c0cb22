import os

import pytest
import torch

# Two cores: one intra-op thread per process keeps parallel Ray workers from oversubscribing.
torch.set_num_threads(int(os.environ.get("KD_TEST_THREADS", "2")))


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
