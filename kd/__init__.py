"""kd: Annealing-KD and its baselines in plain PyTorch (no Ray here)."""
from kd.checkpoints import CorruptCheckpointError
from kd.config import ConfigError, TrainConfig
from kd.losses import (annealing_kd_loss, continuation_kd_loss, hinton_kd_loss, phi,
                       temperature_schedule)
from kd.methods import METHODS, build_method
from kd.models import MODELS, build_model, count_parameters
from kd.registry import UnknownNameError
from kd.runtime import FrozenTeacher
from kd.store import TeacherStore
from kd.train import DivergedError, train

__all__ = [
    "ConfigError", "CorruptCheckpointError", "DivergedError", "FrozenTeacher", "METHODS", "MODELS",
    "TeacherStore", "TrainConfig", "UnknownNameError", "annealing_kd_loss", "build_method",
    "build_model", "continuation_kd_loss", "count_parameters", "hinton_kd_loss", "phi",
    "temperature_schedule", "train",
]
