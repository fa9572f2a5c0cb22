"""The margin of every test that asserts on a trained model's accuracy: the model trained
over seeds and thread counts (a float path changes with the thread count, and a chaotic run
with it), against the test's threshold.

    python benchmarks/threshold_spread.py                          # every check, seeds 0-4, 1 and 2 threads
    python benchmarks/threshold_spread.py --check text-smoke-teacher --seeds 10 --set teacher_lr=5e-3

Prints one line per run, then per check the spread and the margin to the threshold the test
asserts: a test is only as honest as that margin.
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Callable

import torch
import yaml

from _common import machine_line, setup_device  # first: it puts the repository on the import path

from kd import TrainConfig, train
from kd.store import teacher_config
from study.config import StudyConfig
from study.teachers import probe_config


def preset_teacher(name: str, changes: dict) -> TrainConfig:
    study = StudyConfig.preset(name)
    return teacher_config(probe_config(study.replace(train={**study.train, **changes})))


_results: dict[tuple[str, int], dict] = {}


def train_once(cfg: TrainConfig) -> dict:
    """train(cfg), once per configuration and thread count (two checks share the default teacher)."""
    key = (repr(cfg), torch.get_num_threads())
    if key not in _results:
        _results[key] = train(cfg)
    return _results[key]


def default_ladder(changes: dict) -> TrainConfig:
    return TrainConfig(model="mlp1d_8", teacher="cnn1d_64", method="ce", epochs=60).replace(**changes)


def default_gap(seed: int, changes: dict) -> float:
    """Teacher minus student test accuracy of the default ladder's ends, one seed for both."""
    cfg = default_ladder(changes)
    return train_once(teacher_config(cfg).replace(seed=seed))["test_acc"] - train_once(cfg.replace(seed=seed))["test_acc"]


def trained(config: Callable[[dict], TrainConfig], *scores: str) -> Callable[[int, dict], float]:
    """The lowest of the given scores (test_acc by default) of config trained with that seed."""
    def run(seed: int, changes: dict) -> float:
        result = train_once(config(changes).replace(seed=seed))
        return min(result[s] for s in scores or ("test_acc",))
    return run


@dataclass(frozen=True)
class Check:
    test: str
    what: str
    threshold: float  # the test asserts value > threshold (or >= for `inclusive`)
    run: Callable[[int, dict], float]
    inclusive: bool = False


TINY = dict(model="mlp1d_8", teacher="cnn1d_16", num_samples=1200, val_size=200, teacher_epochs=8)
CHECKS = {
    "text-smoke-teacher": Check("tests/test_text_study.py::test_text_smoke_preset_through_ray_and_report",
                                "text-smoke teacher bert_L2_H64, test accuracy", 60.0,
                                trained(lambda c: preset_teacher("text-smoke", c))),
    "smoke-teacher": Check("tests/test_study_ray.py::test_experiment_records_config_versions_and_teachers",
                           "smoke teacher cnn1d_32, test accuracy", 60.0,
                           trained(lambda c: preset_teacher("smoke", c))),
    "conftest-teacher": Check("tests/test_study_teacher_cache.py::"
                              "test_given_teacher_scores_are_reused_until_weights_or_evaluation_change",
                              "conftest teacher cnn1d_16, the lower of its validation and test accuracy",
                              30.0, trained(lambda c: teacher_config(TrainConfig(**{**TINY, **c})),
                                            "best_val_acc", "test_acc")),
    "default-teacher": Check("tests/test_mnist1d_gap.py::test_default_teacher_and_smallest_student",
                             "default teacher cnn1d_64 (60 epochs), test accuracy", 92.0,
                             trained(lambda c: teacher_config(default_ladder(c))), inclusive=True),
    "default-gap": Check("tests/test_mnist1d_gap.py::test_default_teacher_and_smallest_student",
                         "teacher cnn1d_64 minus student mlp1d_8 (60 epochs CE), test accuracy points", 15.0,
                         default_gap, inclusive=True),
}


def parse(text: str):
    """A --set value: a number (YAML reads 5e-3 as a string), else whatever YAML makes of it."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="change the training settings (teacher_lr, teacher_epochs, ...)")
    args = parser.parse_args()
    changes = {k: parse(v) for k, v in (item.split("=", 1) for item in args.set)}
    summary = []
    for name in args.check:
        check = CHECKS[name]
        print(f"\n== {name}: {check.what}; {check.test} asserts {'>=' if check.inclusive else '>'} "
              f"{check.threshold:g}", flush=True)
        values = []
        for threads in args.threads:
            print(machine_line(setup_device("cpu", threads)))
            for seed in range(args.seeds):
                values.append(check.run(seed, changes))
                print(f"threads {threads} seed {seed}: {values[-1]:.2f}", flush=True)
        summary.append(f"{name}: {len(values)} runs, min {min(values):.2f}, mean {statistics.mean(values):.2f}, "
                       f"max {max(values):.2f}, sd {statistics.stdev(values) if len(values) > 1 else 0:.2f}; "
                       f"margin {min(values) - check.threshold:+.2f} points")
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
