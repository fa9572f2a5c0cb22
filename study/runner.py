"""The study, start to finish: teachers once, one concurrent search over all cells, then
seed re-runs of each cell's best configuration; resumable at every point.

Experiment layout (<storage>/<name>/): study.json (resolved config, versions, git
revision, hardware, status), teachers.csv, optuna.db (one Optuna study per cell),
search/ and rerun/ (Tune experiments), summary.csv (one row per trial). Teachers live in
<storage>/teachers/, shared by every study in that storage.

A GLUE study over several tasks runs one such study per task, in turn, in
<storage>/<name>/glue-<task>/; the experiment's own summary.csv and teachers.csv join the
tasks' (their `dataset` column tells them apart), so the report reads one directory.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

import torch

from kd.bank import format_bytes
from kd.config import ConfigError, TrainConfig
from kd.models import build_model, count_parameters
from kd.store import TeacherStore, assistant_config, is_hf_reference, teacher_config
from study.config import StudyConfig, check_storage_writable
from study.summary import COLUMNS, build_summary

TRAINABLE_NAME = "run_trial"


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("torch", "torchvision", "ray", "optuna", "pandas", "numpy", "mnist1d", "transformers")
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # a temporary name of this process's own: two studies sharing a storage may write the
    # same file (a given teacher's scores) at once, and must not move each other's file away
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def count_model(arch: str, cfg: TrainConfig) -> int:
    """Parameters of `arch` for cfg's data, built on the meta device: no memory, no weights
    downloaded (a Hugging Face model needs only its config)."""
    from kd.data.text import model_kwargs_for

    kwargs = model_kwargs_for(cfg)
    if kwargs:
        kwargs["pretrained"] = False
    with torch.device("meta"):
        return count_parameters(build_model(arch, cfg.num_classes, **kwargs))


class Study:
    def __init__(self, config: StudyConfig, storage: str | Path, name: str, preset: str | None = None,
                 log: Callable[[str], None] = print, teachers: str | Path | None = None):
        self.config = config
        self.storage = check_storage_writable(storage)
        self.name = name
        self.preset = preset
        self.exp_dir = self.storage / name
        self.log = log
        # Teachers are shared by every study in a storage, the tasks of a GLUE study included.
        self.teachers = Path(teachers) if teachers is not None else self.storage / "teachers"

    # ------------------------------------------------------------------ checks before Ray
    def prepare(self, resume: bool) -> None:
        if self.exp_dir.exists() and not resume:
            raise ConfigError(f"name: {self.name!r} is not allowed; experiment {self.exp_dir} already "
                              f"exists (pass --resume to continue it, or choose another --name)")
        if resume and not (self.exp_dir / "study.json").is_file():
            raise ConfigError(f"name: {self.name!r} cannot be resumed; {self.exp_dir} holds no study")
        if resume:
            saved = json.loads((self.exp_dir / "study.json").read_text())["config"]
            if saved != self.config.to_dict():
                changed = sorted(k for k in saved if saved[k] != self.config.to_dict().get(k))
                raise ConfigError(f"--resume: the configuration differs from the saved one in {changed}")
        self.exp_dir.mkdir(parents=True, exist_ok=True)

    def write_info(self, status: str, **extra: Any) -> None:
        path = self.exp_dir / "study.json"
        info = json.loads(path.read_text()) if path.is_file() else {
            "name": self.name, "preset": self.preset, "config": self.config.to_dict(),
            "versions": package_versions(), "git_revision": git_revision(),
            "started": dt.datetime.now().isoformat(timespec="seconds"), "finished": None,
            "command": sys.argv}
        info.update(status=status, **extra)
        if status == "finished":
            info["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        _write_json(path, info)

    @contextlib.contextmanager
    def wall_clock(self):
        """Adds this session's wall time to study.json's wall_seconds however the session
        ends, so a study interrupted and resumed reports the time of all its sessions."""
        path = self.exp_dir / "study.json"
        previous = json.loads(path.read_text()).get("wall_seconds", 0.0)
        started = time.time()
        try:
            yield
        finally:
            info = json.loads(path.read_text())
            info["wall_seconds"] = previous + time.time() - started
            _write_json(path, info)

    # ------------------------------------------------------------------ the stages
    def task_study(self, task: str) -> "Study":
        return Study(self.config.for_task(task), self.exp_dir, f"glue-{task}", preset=self.preset,
                     log=self.log, teachers=self.teachers)

    def run_tasks(self) -> Path:
        """A GLUE study over several tasks: each task's study in turn, then the joined files."""
        self.write_info("running")
        with self.wall_clock():
            for task in self.config.tasks:
                sub = self.task_study(task)
                self.log(f"=== task {task}: {sub.exp_dir}")
                sub.prepare(resume=(sub.exp_dir / "study.json").is_file())
                try:
                    sub.run()
                finally:
                    self.write_summary()
            self.write_info("finished", hardware=cluster_hardware())
        self.log(f"study {self.name} finished: {len(self.config.tasks)} tasks; summary in "
                 f"{self.exp_dir / 'summary.csv'}")
        return self.exp_dir

    def run(self) -> Path:
        """Run (or continue) the study; call prepare() first, before Ray starts."""
        if self.config.multi_task:
            return self.run_tasks()
        self.write_info("running")
        with self.wall_clock():
            self.check_shared_storage()
            hardware = cluster_hardware()
            self.write_info("running", hardware=hardware)
            self.log(f"study {self.name}: {len(self.config.cells)} cells x {self.config.trials_per_cell} "
                     f"trials, {self.config.epochs} epochs each; cluster {hardware}")
            teacher_files = self.train_teachers()
            for stage in ("search", "rerun"):
                done_marker = self.exp_dir / f"{stage}.done"
                if done_marker.is_file():
                    self.log(f"[{stage}] already finished; skipped")
                    continue
                tuner, expected = self.make_tuner(stage, teacher_files)
                if tuner is not None:
                    self.log(f"[{stage}] running {expected} trials; progress in {self.exp_dir / stage}")
                    grid = tuner.fit()
                    # Tune returns normally after Ctrl+C (SIGINT/SIGUSR1) with trials unfinished.
                    if len(grid) < expected or grid.num_terminated + grid.num_errors < len(grid):
                        self.write_summary()
                        raise KeyboardInterrupt(f"{stage} interrupted")
                self.write_summary()
                done_marker.write_text(dt.datetime.now().isoformat())
            summary = self.write_summary()
            self.write_info("finished")
        counts = summary.groupby(["stage", "status"]).size().to_dict()
        self.log(f"study {self.name} finished: {counts}; summary in {self.exp_dir / 'summary.csv'}")
        return self.exp_dir

    def check_shared_storage(self) -> None:
        """On a multi-node cluster every node must see the storage (NFS); refuse otherwise."""
        import ray

        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) < 2:
            return
        marker = self.exp_dir / ".shared-storage-probe"
        marker.write_text(self.name)

        @ray.remote(num_cpus=0)
        def sees(path: str) -> bool:
            return Path(path).is_file()

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probes = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                  .remote(str(marker)) for n in nodes]
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, ray.get(probes)) if not ok]
        if blind:
            raise ConfigError(f"storage: {str(self.storage)!r} is not allowed on this {len(nodes)}-node "
                              f"cluster; nodes {blind} cannot see it. Use a shared path (NFS/EFS mount) "
                              f"present on every node")

    def train_teachers(self) -> dict[str, bytes | str]:
        """Train the teacher (and TAKD assistant) once on a worker; reuse across studies. A
        teacher given as train.teacher_checkpoint (a stored file or a fine-tuned `hf:`
        checkpoint) is used as it is: only evaluated, for teachers.csv."""
        import ray

        store = TeacherStore(self.teachers)
        probe = self.teacher_probe()

        @ray.remote(num_cpus=self.config.cpus_per_trial, num_gpus=self.config.gpus_per_trial)
        def train_remote(cfg_values: dict, teacher_blob: bytes | str | None, evaluate_only: bool) -> dict:
            import torch

            from kd.config import TrainConfig
            from kd.train import evaluate_teacher, train
            from study.trainable import materialize

            torch.set_num_threads(max(1, int(self.config.cpus_per_trial)))
            cfg = TrainConfig.from_dict(cfg_values)
            if teacher_blob is not None:
                cfg = cfg.replace(teacher_checkpoint=materialize(teacher_blob))
            if evaluate_only:
                return evaluate_teacher(cfg)
            result = train(cfg)
            result["state_dict"] = {k: v.cpu() for k, v in result["state_dict"].items()}
            return result

        def blob_of(reference: str) -> bytes | str:
            return reference if is_hf_reference(reference) else Path(reference).read_bytes()

        def remote_trainer(cfg, report):
            self.log(f"[teachers] training {cfg.model} ({cfg.method}, {cfg.epochs} epochs) on a worker")
            blob = blob_of(cfg.teacher_checkpoint) if cfg.teacher_checkpoint else None
            return ray.get(train_remote.remote(cfg.to_dict(), blob, False))

        rows, files = [], {}
        if probe.teacher_checkpoint:  # given, not trained here
            teacher_path = probe.teacher_checkpoint
            files["teacher"] = blob_of(teacher_path)
            given = self.given_teacher_config(probe)

            def evaluate() -> dict:
                self.log(f"[teachers] evaluating the given teacher {teacher_path} on a worker")
                return ray.get(train_remote.remote(given.to_dict(), files["teacher"], True))

            metrics = self.given_teacher_scores(teacher_path, given, evaluate)
            rows.append(self._teacher_row("teacher", given, metrics, teacher_path))
        else:
            teacher_cfg = teacher_config(probe)
            teacher_path = str(store.get_or_train(teacher_cfg, trainer=remote_trainer))
            files["teacher"] = Path(teacher_path).read_bytes()
            rows.append(self._teacher_row("teacher", teacher_cfg, store.metrics(teacher_cfg), teacher_path))
        if probe.assistant:
            assistant_cfg = assistant_config(probe, teacher_path)
            assistant_path = store.get_or_train(assistant_cfg, trainer=remote_trainer)
            files["assistant"] = assistant_path.read_bytes()
            rows.append(self._teacher_row("assistant", assistant_cfg, store.metrics(assistant_cfg),
                                          str(assistant_path)))
        for row in rows:
            self.log(f"[teachers] {row['role']} {row['arch']}: val {row['best_val_acc']:.2f} "
                     f"test {row['test_acc']:.2f} ({row['metric']})")
        banks = self.build_banks(store.root, probe, files)
        for row in rows:
            row.update(banks.get(row["role"], {"bank_bytes": 0, "bank_build_seconds": 0.0}))
        pd.DataFrame(rows).to_csv(self.exp_dir / "teachers.csv", index=False)
        return files

    def teacher_probe(self) -> TrainConfig:
        """The training settings the teacher stage derives the teacher's (and assistant's)
        configuration from."""
        first = self.config.train_config(self.config.students[0], "ce")
        return first.replace(teacher=self.config.teacher,
                             assistant=self.config.assistant if "takd" in self.config.methods else None)

    @staticmethod
    def given_teacher_config(probe: TrainConfig) -> TrainConfig:
        """The evaluation settings of a teacher given as train.teacher_checkpoint: the teacher
        stage's configuration without the checkpoint (the worker sets its own copy's path)."""
        return teacher_config(probe).replace(teacher_checkpoint=None)

    def given_teacher_scores(self, teacher_path: str, cfg: TrainConfig, evaluate: Callable[[], dict]) -> dict:
        """A given teacher's scores, computed once per (weights, evaluation settings) and kept
        beside the trained teachers, as their metrics are: scoring RoBERTa-large over MNLI dev
        again on every run and resume would cost minutes of GPU time."""
        from kd.bank import teacher_fingerprint

        key = hashlib.sha256(json.dumps([teacher_fingerprint(teacher_path), cfg.to_dict()], sort_keys=True,
                                        default=str).encode()).hexdigest()
        path = self.teachers / "given" / f"{key[:24]}.json"
        if path.is_file():
            self.log(f"[teachers] the given teacher {teacher_path} was scored before: {path}")
            return json.loads(path.read_text())
        scores = evaluate()
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, scores)
        return scores

    def _teacher_row(self, role: str, cfg: TrainConfig, metrics: dict[str, Any], path: str) -> dict[str, Any]:
        return {"role": role, "dataset": cfg.dataset, "arch": cfg.model, "params": count_model(cfg.model, cfg),
                "metric": metrics.get("primary_metric", "accuracy"),
                "best_val_acc": metrics["best_val_acc"], "test_acc": metrics["test_acc"],
                **{k: v for k, v in (metrics.get("metrics") or {}).items()},
                "epochs": metrics["epochs_run"], "seconds": metrics["seconds"], "path": path}

    def build_banks(self, root: Path, probe, files: dict[str, bytes]) -> dict[str, dict[str, float]]:
        """The teacher's (and assistant's) logits for every (training example, view), computed
        once on a worker into the shared storage; every trial memory-maps the file."""
        import ray

        roles = sorted({"assistant" if m == "takd" else "teacher" for m in self.config.methods if m != "ce"})
        if not probe.teacher_bank or not roles:
            return {}

        @ray.remote(num_cpus=self.config.cpus_per_trial, num_gpus=self.config.gpus_per_trial)
        def bank_remote(cfg_values: dict, blob: bytes) -> dict | None:
            import torch

            from kd.bank import estimate_bank_bytes, get_or_build_bank
            from kd.config import TrainConfig
            from kd.data import load_data
            from kd.train import select_device
            from study.trainable import materialize

            torch.set_num_threads(max(1, int(self.config.cpus_per_trial)))
            cfg = TrainConfig.from_dict(cfg_values)
            data = load_data(cfg)
            need = estimate_bank_bytes(len(data.train_x), data.num_views, data.num_classes)
            if need > cfg.bank_memory_gb * 2**30:
                return {"bank_bytes": 0, "bank_build_seconds": 0.0, "over_cap": need}
            bank = get_or_build_bank(root, materialize(blob), cfg, data=data, device=select_device(cfg.device))
            return {"bank_bytes": bank.nbytes, "bank_build_seconds": bank.build_seconds}

        stats = dict(zip(roles, ray.get([bank_remote.remote(probe.to_dict(), files[r]) for r in roles])))
        for role, info in stats.items():
            if info.pop("over_cap", None):
                self.log(f"[teachers] {role} bank would exceed bank_memory_gb={probe.bank_memory_gb:g}: "
                         f"trials run the {role} live")
            else:
                self.log(f"[teachers] {role} logit bank: {format_bytes(info['bank_bytes'])}, "
                         f"built in {info['bank_build_seconds']:.1f} s (shared by every trial)")
        return stats

    # ------------------------------------------------------------------ Tune
    def make_tuner(self, stage: str, teacher_files: dict[str, bytes]):
        import optuna
        from ray import tune

        from study.metrics import StudyMetrics
        from study.search import CellPruner, CellSearcher
        from study.trainable import run_trial, trial_dirname

        # Trials checkpoint at every temperature stage; on small data that is every few
        # seconds, and Tune would warn about each experiment snapshot it triggers.
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        cfg = self.config
        trainable = tune.with_parameters(run_trial, study_values=cfg.to_dict(),
                                         teacher_files=teacher_files, study_name=self.name,
                                         exp_dir=str(self.exp_dir), bank_root=str(self.storage / "teachers"))
        trainable = tune.with_resources(trainable, {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
        stage_dir = self.exp_dir / stage
        runs = self.rerun_plan() if stage == "rerun" else []
        expected = len(cfg.cells) * cfg.trials_per_cell if stage == "search" else len(runs)
        if tune.Tuner.can_restore(str(stage_dir)):
            self.log(f"[{stage}] resuming from {stage_dir}")
            return tune.Tuner.restore(str(stage_dir), trainable=trainable, resume_unfinished=True,
                                      resume_errored=True), expected
        run_config = tune.RunConfig(
            name=stage, storage_path=str(self.exp_dir),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[StudyMetrics(self.name)], verbose=1)
        if stage == "search":
            storage = optuna.storages.RDBStorage(f"sqlite:///{self.exp_dir / 'optuna.db'}")
            searcher = CellSearcher(cfg, storage, self.name)
            tune_config = tune.TuneConfig(
                search_alg=searcher, scheduler=CellPruner(searcher, cfg.grace_epochs),
                num_samples=len(cfg.cells) * cfg.trials_per_cell,
                max_concurrent_trials=cfg.max_concurrent, reuse_actors=True,
                trial_dirname_creator=trial_dirname)
            return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config), expected
        if not runs:
            return None, 0
        return tune.Tuner(trainable, param_space={"run": tune.grid_search(runs)},
                          tune_config=tune.TuneConfig(max_concurrent_trials=cfg.max_concurrent,
                                                      reuse_actors=True, trial_dirname_creator=trial_dirname),
                          run_config=run_config), expected

    def rerun_plan(self) -> list[dict[str, Any]]:
        """Each cell's best completed search configuration with `rerun_seeds` new seeds, plus
        (audit) a sample of pruned configurations re-run to completion with the search seed."""
        summary = self.write_summary()
        search = summary[summary.stage == "search"]
        cfg = self.config
        runs = []
        rng = random.Random(cfg.seed)
        for cell, rows in search.groupby("cell", sort=True):
            base = {"cell": cell, "student": rows.student.iloc[0], "method": rows.method.iloc[0]}
            completed = rows[rows.status == "completed"]
            if len(completed):
                best = completed.loc[completed.best_val_acc.idxmax()]
                for i in range(cfg.rerun_seeds):
                    runs.append({**base, "stage": "rerun", "seed": cfg.seed + 1 + i,
                                 "params": json.loads(best.config)})
            else:
                self.log(f"[rerun] cell {cell} has no completed search trial; no re-runs")
            pruned = rows[rows.status == "pruned"]
            for index in rng.sample(range(len(pruned)), min(cfg.audit_pruned, len(pruned))):
                runs.append({**base, "stage": "audit", "seed": cfg.seed,
                             "params": json.loads(pruned.iloc[index].config)})
        return runs

    def param_counts(self) -> dict[str, int]:
        cfg = self.config.train_config(self.config.students[0], "ce")
        archs = {self.config.teacher, *self.config.students} | ({self.config.assistant} - {None})
        return {a: count_model(a, cfg) for a in archs}

    def write_summary(self) -> pd.DataFrame:
        if self.config.multi_task:
            return self.join_tasks()
        teachers_csv = self.exp_dir / "teachers.csv"
        teachers = pd.read_csv(teachers_csv) if teachers_csv.is_file() else pd.DataFrame(columns=["role"])
        summary = build_summary(self.exp_dir, self.config, self.name, teachers, self.param_counts())
        tmp = self.exp_dir / "summary.csv.tmp"
        summary.to_csv(tmp, index=False)
        tmp.replace(self.exp_dir / "summary.csv")
        return summary


    def join_tasks(self) -> pd.DataFrame:
        """summary.csv and teachers.csv of every task so far, joined (trial folders relative
        to this experiment)."""
        summaries, teachers = [], []
        for task in self.config.tasks:
            folder = self.exp_dir / f"glue-{task}"
            if (folder / "summary.csv").is_file():
                summary = pd.read_csv(folder / "summary.csv")
                summary["trial_dir"] = folder.name + "/" + summary["trial_dir"].astype(str)
                summaries.append(summary)
            if (folder / "teachers.csv").is_file():
                teachers.append(pd.read_csv(folder / "teachers.csv"))

        summary = pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame(columns=COLUMNS)
        summary.to_csv(self.exp_dir / "summary.csv", index=False)
        if teachers:
            pd.concat(teachers, ignore_index=True).to_csv(self.exp_dir / "teachers.csv", index=False)
        return summary


def cluster_hardware() -> dict[str, Any]:
    import ray

    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    gpu_names = sorted({k for n in nodes for k in n["Resources"] if k.startswith("accelerator_type:")})
    return {"cpus": int(resources.get("CPU", 0)), "gpus": int(resources.get("GPU", 0)),
            "gpu_names": [g.split(":", 1)[1] for g in gpu_names], "nodes": len(nodes),
            "driver_host": platform.node()}
