"""Every bad input is refused before Ray starts, with an error that names the field, the
value and what is allowed: the table of bad inputs (issue: at least 40), each row a test.

Each row runs `run_study.py run` in this process on the smoke preset with one change (or a
broken file), and asserts exit code 2, the message, no experiment written, and Ray not
initialised (the refusal came before `ray.init`)."""
import json
from pathlib import Path

import pytest
import ray
import yaml

import run_study
from study.config import StudyConfig
from study.runner import Study

SMOKE = yaml.safe_load(Path("study/presets/smoke.yaml").read_text())

# (id, changes to the smoke preset, the message's start or core)
BAD_CONFIGS = [
    ("type-int", {"trials_per_cell": "many"}, "trials_per_cell: 'many' is not allowed; it must be an integer"),
    ("type-int-float", {"epochs": 20.5}, "epochs: 20.5 is not allowed; it must be an integer"),
    ("type-list", {"students": "mlp1d_8"}, "students: 'mlp1d_8' is not allowed; it must be a list"),
    ("type-seed", {"seed": "zero"}, "seed: 'zero' is not allowed; it must be an integer"),
    ("type-bool-number", {"cpus_per_trial": True}, "cpus_per_trial: True is not allowed; it must be a number"),
    ("epochs", {"epochs": 0}, "epochs: 0 is not allowed; it must be >= 1"),
    ("trials", {"trials_per_cell": 0}, "trials_per_cell: 0 is not allowed; it must be >= 1"),
    ("rerun-seeds", {"rerun_seeds": -1}, "rerun_seeds: -1 is not allowed; it must be >= 0"),
    ("rerun-max-seeds", {"rerun_max_seeds": 1}, "rerun_max_seeds: 1 is not allowed; it must be >= rerun_seeds (2)"),
    ("rerun-target", {"rerun_target": 0}, "rerun_target: 0 is not allowed; it must be > 0"),
    ("audit", {"audit_pruned": -1}, "audit_pruned: -1 is not allowed; it must be >= 0"),
    ("confirm-top", {"confirm_top": -1}, "confirm_top: -1 is not allowed; it must be >= 0"),
    ("confirm-top-trials", {"confirm_top": 9}, "confirm_top: 9 is not allowed; it must be <= trials_per_cell (4)"),
    ("confirm-seeds", {"confirm_top": 2, "confirm_seeds": 0}, "confirm_seeds: 0 is not allowed; it must be >= 1"),
    ("reduction-factor", {"reduction_factor": 1}, "reduction_factor: 1 is not allowed; it must be >= 2"),
    ("grace", {"grace_epochs": 0}, "grace_epochs: 0 is not allowed; it must be >= 1"),
    ("max-concurrent", {"max_concurrent": 0}, "max_concurrent: 0 is not allowed; it must be >= 1"),
    ("cpus", {"cpus_per_trial": 0}, "cpus_per_trial: 0 is not allowed; it must be >= 1"),
    ("gpus", {"gpus_per_trial": -1}, "gpus_per_trial: -1 is not allowed; it must be >= 0"),
    ("checkpoint-every", {"checkpoint_every": 0}, "checkpoint_every: 0 is not allowed; it must be >= 1"),
    ("pruner", {"pruner": "hyperband"}, "pruner: 'hyperband' is not allowed; allowed: asha, median, none"),
    ("unknown-key", {"colour": "blue"}, "unknown key(s) ['colour']"),
    ("no-students", {"students": []}, "students: [] is not allowed; list at least one student architecture"),
    ("no-methods", {"methods": []}, "methods: [] is not allowed; list at least one method"),
    ("unknown-student", {"students": ["resnet999"]}, "model: unknown model 'resnet999'"),
    ("wrong-kind-student", {"students": ["resnet8"]}, "model: 'resnet8' is not allowed; dataset mnist1d needs a signal model"),
    ("wrong-kind-teacher", {"teacher": "resnet20"}, "teacher: 'resnet20' is not allowed; dataset mnist1d needs a signal model"),
    ("unknown-method", {"methods": ["ce", "fitnets"]}, "methods: unknown method 'fitnets'"),
    ("takd-no-assistant", {"methods": ["takd"]}, "assistant: None is not allowed; method takd needs an assistant"),
    ("dataset", {"dataset": "imagenet"}, "dataset: 'imagenet' is not allowed"),
    ("tasks-not-glue", {"tasks": ["cola"]}, "tasks: ['cola'] is not allowed; a list of tasks needs dataset: glue"),
    ("glue-no-tasks", {"dataset": "glue"}, "tasks: [] is not allowed; dataset glue needs a list of tasks"),
    ("search-unknown-method", {"search": {"fitnets": {"beta": [1, 8]}}}, "search: unknown key(s) ['fitnets']"),
    ("search-unknown-param", {"search": {"annealing": {"gamma": [1, 2]}}},
     "search.annealing: unknown parameter(s) ['gamma']"),
    ("search-per-method-lr", {"search": {"annealing": {"lr": [0.01, 0.1]}}},
     "search.annealing: ['lr'] is not allowed; every method searches lr and weight_decay over the same ranges"),
    ("search-lr-zero", {"search": {"shared": {"lr": 0.0}}}, "lr: 0.0 is not allowed; it must be > 0"),
    ("search-lr-negative", {"search": {"shared": {"lr": [-0.1, 0.1]}}}, "lr: -0.1 is not allowed"),
    ("search-tau-range", {"search": {"annealing": {"tau_max": [0, 3]}}}, "tau_max: 0 is not allowed"),
    ("search-wd-negative", {"search": {"shared": {"weight_decay": [-1.0, 0.001]}}},
     "weight_decay: -1.0 is not allowed; it must be >= 0"),
    ("search-tau", {"search": {"annealing": {"tau_max": 0, "stage_epochs": 1}}}, "tau_max: 0 is not allowed"),
    ("search-stage", {"search": {"annealing": {"stage_epochs": 0}}}, "stage_epochs: 0 is not allowed"),
    ("search-schedule-too-long", {"epochs": 5, "search": {"annealing": {"tau_max": [2, 3], "stage_epochs": [1, 2]}}},
     "epochs: 5 is not allowed; the annealing search can ask for tau_max 3 x stage_epochs 2"),
    ("search-temperature", {"methods": ["kd"], "search": {"kd": {"temperature": [0, 2]}}},
     "temperature: 0 is not allowed; it must be > 0"),
    ("train-lr", {"methods": ["kd"], "train": {"lr": -1.0}}, "lr: -1.0 is not allowed"),
    ("train-type", {"train": {"num_samples": "lots"}}, "num_samples: 'lots' is not allowed; it must be an integer"),
    ("train-unknown-key", {"train": {"colour": "blue"}}, "unknown config key(s) ['colour']"),
    ("train-batch", {"train": {"batch_size": 0}}, "batch_size: 0 is not allowed; it must be >= 1"),
    ("train-alpha", {"methods": ["kd"], "train": {"alpha": 1.5}}, "alpha: 1.5 is not allowed; it must lie in [0, 1]"),
    ("train-grad-clip", {"train": {"grad_clip": 0}}, "grad_clip: 0 is not allowed; it must be > 0"),
    ("train-schedule", {"train": {"lr_schedule": "exp"}}, "lr_schedule: 'exp' is not allowed; allowed: step, cosine, linear"),
    ("train-device", {"train": {"device": "tpu"}}, "device: 'tpu' is not allowed; allowed: auto, cpu, cuda"),
    ("train-cuda-no-gpus", {"train": {"device": "cuda"}}, "train.device: 'cuda' is not allowed with gpus_per_trial 0"),
    ("train-val-size", {"train": {"num_samples": 2000, "val_size": 1600}},
     "val_size: 1600 is not allowed; it must be < 1600, the training examples of num_samples 2000"),
    ("train-teacher-file", {"methods": ["kd"], "train": {"teacher_checkpoint": "/nonexistent/teacher.pt"}},
     "train.teacher_checkpoint: '/nonexistent/teacher.pt' is not allowed; there is no such file"),
    ("train-assistant-file", {"methods": ["takd"], "assistant": "cnn1d_16",
                              "train": {"assistant_checkpoint": "/nonexistent/assistant.pt"}},
     "train.assistant_checkpoint: '/nonexistent/assistant.pt' is not allowed; there is no such file"),
    ("data-dir", {"dataset": "cifar10", "students": ["resnet8"], "teacher": "resnet20", "data_dir": "/nonexistent/cifar"},
     "data_dir: '/nonexistent/cifar' is not allowed; the folder does not exist"),
]


def smoke_with(changes: dict) -> dict:
    values = json.loads(json.dumps(SMOKE))
    for method, ranges in changes.get("search", {}).items():  # merged: the preset's other ranges stay
        values["search"][method] = {**values["search"].get(method, {}), **ranges}
    values.update({k: v for k, v in changes.items() if k != "search"})
    return values


def refuse(args: list[str], capsys) -> str:
    code = run_study.main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert not ray.is_initialized()
    return err


@pytest.mark.parametrize("changes, message", [row[1:] for row in BAD_CONFIGS], ids=[row[0] for row in BAD_CONFIGS])
def test_a_bad_study_file_is_refused_before_ray(tmp_path, capsys, changes, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(smoke_with(changes)))
    storage = tmp_path / "runs"
    err = refuse(["run", "--config", str(path), "--storage", str(storage)], capsys)
    assert message in err
    assert not storage.exists() or not any(storage.iterdir())


def interrupted_study(storage: Path) -> StudyConfig:
    """An experiment as a killed session leaves it, without running anything."""
    cfg = StudyConfig.preset("smoke")
    study = Study(cfg, storage, "smoke", preset="smoke")
    study.prepare(resume=False)
    study.write_info("interrupted")
    return cfg


def broken_files(case: str, tmp_path: Path) -> list[str]:
    """The command line of one bad-file case."""
    storage = str(tmp_path / "runs")
    if case == "yaml-invalid":
        (tmp_path / "s.yaml").write_text("students: [mlp1d_8\nmethods: ce")
        return ["run", "--config", str(tmp_path / "s.yaml"), "--storage", storage]
    if case == "yaml-not-a-mapping":
        (tmp_path / "s.yaml").write_text("- ce\n- kd\n")
        return ["run", "--config", str(tmp_path / "s.yaml"), "--storage", storage]
    if case == "config-missing":
        return ["run", "--config", str(tmp_path / "nope.yaml"), "--storage", storage]
    if case == "cli-trials":
        return ["run", "--preset", "smoke", "--storage", storage, "--num-samples", "0"]
    interrupted_study(Path(storage))
    exp = Path(storage) / "smoke"
    if case == "resume-changed":
        return ["run", "--preset", "smoke", "--storage", storage, "--resume", "--seed", "5"]
    if case == "resume-study-json":
        (exp / "study.json").write_text('{"name": "smoke", "conf')
    if case == "resume-ledger":
        (exp / "optuna-journal.log").write_text('{"op_code": 0, "worker_id": "x"}\nnot json at all\n')
    return ["run", "--preset", "smoke", "--storage", storage, "--resume"]


BAD_FILES = [
    ("yaml-invalid", "is not valid YAML"),
    ("yaml-not-a-mapping", "must hold a mapping of keys to values"),
    ("config-missing", "config: '"),
    ("cli-trials", "trials_per_cell: 0 is not allowed; it must be >= 1"),
    ("resume-changed", "--resume: the configuration differs from the saved one in ['seed']"),
    ("resume-study-json", "study.json is not a study record"),
    ("resume-ledger", "optuna-journal.log is not a readable Optuna journal"),
]


@pytest.mark.parametrize("case, message", BAD_FILES, ids=[row[0] for row in BAD_FILES])
def test_a_bad_file_or_resume_is_refused_before_ray(tmp_path, capsys, case, message):
    err = refuse(broken_files(case, tmp_path), capsys)
    assert message in err


def test_the_table_holds_at_least_40_bad_inputs():
    assert len(BAD_CONFIGS) + len(BAD_FILES) >= 40
    assert len({row[0] for row in BAD_CONFIGS + BAD_FILES}) == len(BAD_CONFIGS) + len(BAD_FILES)
