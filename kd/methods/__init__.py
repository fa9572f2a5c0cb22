"""Distillation methods, one small class each, registered by name in METHODS."""
from kd.methods.base import METHODS, EpochContext, Method, Phase
from kd.methods import annealing, ce, continuation, kd, takd  # noqa: F401  (they register)


def build_method(cfg) -> Method:
    return METHODS.get(cfg.method, field="method")(cfg)


__all__ = ["METHODS", "EpochContext", "Method", "Phase", "build_method"]
