"""The teacher stage, as Ray tasks that run beside the trials (no barrier before the search).

Each role (the teacher; TAKD's assistant, which distils from the teacher) is one task: it
trains the model once into the shared teacher store (or finds it there, or scores a given
checkpoint once), builds its logit bank into the storage, and last writes its row of
teachers.csv as `<experiment>/teachers/<role>.json`. That file is the signal that the role is
ready: the planner starts a cell's trials once the roles it needs have it, so CE cells
search from the first second while the teacher trains. Trials reach teachers and banks by
path on the shared storage, never through the object store.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from kd.bank import format_bytes
from kd.config import TrainConfig
from kd.models import build_model, count_parameters
from kd.store import TeacherStore, assistant_config, teacher_config
from study.config import StudyConfig

ROLES = ("teacher", "assistant")


def write_json(path: Path, data: dict[str, Any]) -> None:
    # a temporary name of this process's own: two studies sharing a storage may write the
    # same file (a given teacher's scores) at once, and must not move each other's file away
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def count_model(arch: str, cfg: TrainConfig) -> int:
    """Parameters of `arch` for cfg's data. A text model is built on the meta device: no
    memory, no weights downloaded (a Hugging Face model needs only its config); the others
    are small, and the meta device costs seconds of imports on first use."""
    from kd.data.text import model_kwargs_for

    kwargs = model_kwargs_for(cfg)
    if not kwargs:
        return count_parameters(build_model(arch, cfg.num_classes))
    with torch.device("meta"):
        return count_parameters(build_model(arch, cfg.num_classes, **kwargs, pretrained=False))


def roles_needed(method: str) -> tuple[str, ...]:
    """What a method's trials wait for: CE nothing, TAKD its assistant, the rest the teacher."""
    return () if method == "ce" else ("assistant",) if method == "takd" else ("teacher",)


def probe_config(config: StudyConfig) -> TrainConfig:
    """The training settings the teacher stage derives the teacher's (and assistant's)
    configuration from."""
    first = config.train_config(config.students[0], "ce")
    return first.replace(teacher=config.teacher,
                         assistant=config.assistant if "takd" in config.methods else None)


def given_teacher_config(probe: TrainConfig) -> TrainConfig:
    """The evaluation settings of a teacher given as train.teacher_checkpoint."""
    return teacher_config(probe).replace(teacher_checkpoint=None)


class TeacherStage:
    """Starts the role tasks and tells when a role is ready (its row file exists)."""

    def __init__(self, config: StudyConfig, exp_dir: Path, store: Path, log=print):
        self.config, self.exp_dir, self.store, self.log = config, exp_dir, store, log
        self.folder = exp_dir / "teachers"
        self.refs: dict[str, Any] = {}
        self.announced: set[str] = set()

    @property
    def roles(self) -> list[str]:
        return ["teacher"] + (["assistant"] if "takd" in self.config.methods else [])

    def row_file(self, role: str) -> Path:
        return self.folder / f"{role}.json"

    def start(self) -> None:
        import ray

        self.folder.mkdir(parents=True, exist_ok=True)
        for role in self.roles:  # rows of an earlier session are rewritten when their task ends
            self.row_file(role).unlink(missing_ok=True)
        # No CPU reserved (a GPU, if trials take one): Tune starts an actor for every trial slot
        # at once. A CPU freed later, when the task ends, would go to a new actor that the
        # running trials' actors, reused, beat to every pending trial while it imports torch;
        # one slot would then only ever start actors that Tune removes again.
        task = ray.remote(num_cpus=0, num_gpus=self.config.gpus_per_trial)(prepare_role).options(
            **off_trialless_nodes(self.config))
        values = self.config.to_dict()
        self.refs["teacher"] = task.remote(values, "teacher", str(self.store), str(self.row_file("teacher")))
        if "assistant" in self.roles:  # distils from the teacher: waits for its task
            self.refs["assistant"] = task.remote(values, "assistant", str(self.store),
                                                 str(self.row_file("assistant")), self.refs["teacher"])
        self.log(f"[teachers] training {', '.join(self.roles)} on the cluster; cells that need no teacher "
                 f"start now")

    def ready(self, role: str) -> bool:
        if role in self.announced:
            return True
        if not self.row_file(role).is_file():
            return False
        self.announced.add(role)
        row = self.row(role)
        self.log(f"[teachers] {row['role']} {row['arch']} ready: val {row['best_val_acc']:.2f} test "
                 f"{row['test_acc']:.2f} ({row['metric']})"
                 + (f"; logit bank {format_bytes(row['bank_bytes'])}" if row.get("bank_bytes") else ""))
        return True

    def row(self, role: str) -> dict[str, Any]:
        return json.loads(self.row_file(role).read_text())

    def check(self) -> None:
        """Raises the error of a role task that failed (its row never comes)."""
        import ray

        if not self.refs:
            return
        done, _ = ray.wait(list(self.refs.values()), num_returns=len(self.refs), timeout=0)
        for ref in done:
            ray.get(ref)

    def write_csv(self) -> None:
        """teachers.csv: the rows of the roles ready so far."""
        rows = [self.row(role) for role in self.roles if self.row_file(role).is_file()]
        if rows:
            pd.DataFrame(rows).to_csv(self.exp_dir / "teachers.csv", index=False)


def off_trialless_nodes(config: StudyConfig) -> dict[str, Any]:
    """Task options that keep a role task off the nodes no trial fits on, such as a cluster's
    head started with CPU 0 (cluster.yaml): a task that asks for no CPU goes to the driver's
    node when it can, and under Ray Jobs that is the head, which has the GCS, the dashboard and
    the driver to serve. A node that joins later is allowed unless it is as small."""
    import ray

    small = [node["NodeID"] for node in ray.nodes() if node["Alive"] and (
        node["Resources"].get("CPU", 0) < config.cpus_per_trial
        or node["Resources"].get("GPU", 0) < config.gpus_per_trial)]
    if not small:
        return {}
    return {"label_selector": {"ray.io/node-id": f"!in({','.join(small)})"}}


def prepare_role(values: dict[str, Any], role: str, store_root: str, row_file: str,
                 teacher_row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of a role task (runs on a worker): the model in the store, its bank, its row."""
    from kd.train import evaluate_teacher

    config = StudyConfig(**values)
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    store = TeacherStore(store_root)
    probe = probe_config(config)
    if role == "assistant":
        cfg = assistant_config(probe, teacher_row["path"])
        path, metrics = str(store.get_or_train(cfg)), store.metrics(cfg)
    elif probe.teacher_checkpoint:  # given, not trained here: scored once per weights
        cfg, path = given_teacher_config(probe), probe.teacher_checkpoint
        metrics = given_teacher_scores(store.root / "given", path, cfg,
                                       lambda: evaluate_teacher(cfg.replace(teacher_checkpoint=path)))
    else:
        cfg = teacher_config(probe)
        path, metrics = str(store.get_or_train(cfg)), store.metrics(cfg)
    row = teacher_row_of(role, cfg, metrics, path)
    # the role's bank, if a method distils from it (TAKD from the assistant, the others from the teacher)
    distilled = {"assistant" if m == "takd" else "teacher" for m in config.methods if m != "ce"}
    if probe.teacher_bank and role in distilled:
        row.update(build_bank(store.root, path, probe))
    write_json(Path(row_file), row)
    return row


def given_teacher_scores(folder: Path, teacher_path: str, cfg: TrainConfig, evaluate) -> dict:
    """A given teacher's scores, computed once per (weights, evaluation settings) and kept
    beside the trained teachers, as their metrics are: scoring RoBERTa-large over MNLI dev
    again on every run and resume would cost minutes of GPU time."""
    from kd.bank import teacher_fingerprint

    key = hashlib.sha256(json.dumps([teacher_fingerprint(teacher_path), cfg.to_dict()], sort_keys=True,
                                    default=str).encode()).hexdigest()
    path = folder / f"{key[:24]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    scores = evaluate()
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, scores)
    return scores


def teacher_row_of(role: str, cfg: TrainConfig, metrics: dict[str, Any], path: str) -> dict[str, Any]:
    # how it was trained, for the report's protocol (a given teacher was not trained here)
    training = {"method": cfg.method, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                **({"temperature": cfg.temperature, "alpha": cfg.alpha} if cfg.method == "kd" else {})
                } if metrics["epochs_run"] else {}
    return {"role": role, "dataset": cfg.dataset, "arch": cfg.model, "params": count_model(cfg.model, cfg),
            "metric": metrics.get("primary_metric", "accuracy"),
            "best_val_acc": metrics["best_val_acc"], "test_acc": metrics["test_acc"],
            **{k: v for k, v in (metrics.get("metrics") or {}).items()},
            "epochs": metrics["epochs_run"], "seconds": metrics["seconds"], "path": path, **training,
            "bank_bytes": 0, "bank_build_seconds": 0.0}


def build_bank(root: Path, path: str, probe: TrainConfig) -> dict[str, Any]:
    """The model's logits for every (training example, view), computed once into the shared
    storage; every trial memory-maps the file. Over bank_memory_gb trials run the model live."""
    from kd.bank import estimate_bank_bytes, get_or_build_bank
    from kd.data import load_data
    from kd.runtime import select_device

    data = load_data(probe)
    if estimate_bank_bytes(len(data.train_x), data.num_views, data.num_classes) > probe.bank_memory_gb * 2**30:
        return {"bank_bytes": 0, "bank_build_seconds": 0.0}
    bank = get_or_build_bank(root, path, probe, data=data, device=select_device(probe.device))
    return {"bank_bytes": bank.nbytes, "bank_build_seconds": bank.build_seconds}
