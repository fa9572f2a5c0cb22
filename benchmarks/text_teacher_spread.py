"""How reliably the text-smoke preset's teacher learns: its test accuracy over seeds and
thread counts (a float path changes with the thread count, and a chaotic run with it).

    python benchmarks/text_teacher_spread.py                 # seeds 0-4, 1 and 2 threads
    python benchmarks/text_teacher_spread.py --seeds 10 --threads 2 --set teacher_lr=5e-3

Prints one line per run and the spread, and the margin to the threshold that
tests/test_text_study.py asserts (THRESHOLD below): the test is only as honest as that margin.
"""
from __future__ import annotations

import argparse
import statistics

import yaml

from _common import machine_line, setup_device  # first: it puts the repository on the import path

from kd import train
from kd.store import teacher_config
from study.config import StudyConfig
from study.teachers import probe_config

THRESHOLD = 60.0  # tests/test_text_study.py::test_text_smoke_preset_through_ray_and_report


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
    parser.add_argument("--preset", default="text-smoke")
    parser.add_argument("--seeds", type=int, default=5, help="teacher seeds 0 .. N-1")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="override the preset's train settings (teacher_lr, teacher_epochs, ...)")
    args = parser.parse_args()
    study = StudyConfig.preset(args.preset)
    changes = dict(item.split("=", 1) for item in args.set)
    study = study.replace(train={**study.train, **{k: parse(v) for k, v in changes.items()}})
    base = teacher_config(probe_config(study))
    print(f"{args.preset} teacher {base.model}: {base.epochs} epochs, lr {base.lr}, {base.optimizer}, "
          f"{base.num_samples} examples")
    values = []
    for threads in args.threads:
        device = setup_device("cpu", threads)
        print(machine_line(device))
        for seed in range(args.seeds):
            result = train(base.replace(seed=seed, device=device.type))
            values.append(result["test_acc"])
            print(f"threads {threads} seed {seed}: test {result['test_acc']:.2f} (val {result['best_val_acc']:.2f}, "
                  f"selected epoch {result['selected_epoch']} of {result['epochs_run']})", flush=True)
    print(f"\n{len(values)} runs: test min {min(values):.2f}, mean {statistics.mean(values):.2f}, "
          f"max {max(values):.2f}, sd {statistics.stdev(values) if len(values) > 1 else 0:.2f}; "
          f"the test asserts > {THRESHOLD:.0f}: margin {min(values) - THRESHOLD:+.2f} points")


if __name__ == "__main__":
    main()
