"""The study, start to finish: teachers once, one concurrent search over all cells, then
seed re-runs of each cell's best configuration; resumable at every point.

Experiment layout (<storage>/<name>/): study.json (resolved config, versions, git
revision, hardware, status), teachers.csv, optuna.db (one Optuna study per cell),
search/ and rerun/ (Tune experiments), summary.csv (one row per trial). Teachers live in
<storage>/teachers/, shared by every study in that storage.
"""
from __future__ import annotations

import datetime as dt
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

from kd.bank import format_bytes
from kd.config import ConfigError
from kd.models import build_model, count_parameters
from kd.store import TeacherStore, assistant_config, teacher_config
from study.config import StudyConfig, check_storage_writable
from study.summary import build_summary

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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


class Study:
    def __init__(self, config: StudyConfig, storage: str | Path, name: str, preset: str | None = None,
                 log: Callable[[str], None] = print):
        self.config = config
        self.storage = check_storage_writable(storage)
        self.name = name
        self.preset = preset
        self.exp_dir = self.storage / name
        self.log = log

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

    # ------------------------------------------------------------------ the stages
    def run(self) -> Path:
        """Run (or continue) the study; call prepare() first, before Ray starts."""
        self.write_info("running")
        # wall time accumulates over interruptions and resumes
        previous_wall = json.loads((self.exp_dir / "study.json").read_text()).get("wall_seconds", 0.0)
        started = time.time()
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
        self.write_info("finished", wall_seconds=previous_wall + time.time() - started)
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

    def train_teachers(self) -> dict[str, bytes]:
        """Train the teacher (and TAKD assistant) once on a worker; reuse across studies."""
        import ray

        store = TeacherStore(self.storage / "teachers")
        first = self.config.train_config(self.config.students[0], "ce")
        probe = first.replace(teacher=self.config.teacher,
                              assistant=self.config.assistant if "takd" in self.config.methods else None)

        @ray.remote(num_cpus=self.config.cpus_per_trial, num_gpus=self.config.gpus_per_trial)
        def train_remote(cfg_values: dict, teacher_blob: bytes | None) -> dict:
            import torch

            from kd.config import TrainConfig
            from kd.train import train
            from study.trainable import materialize

            torch.set_num_threads(max(1, int(self.config.cpus_per_trial)))
            cfg = TrainConfig.from_dict(cfg_values)
            if teacher_blob is not None:
                cfg = cfg.replace(teacher_checkpoint=materialize(teacher_blob))
            result = train(cfg)
            result["state_dict"] = {k: v.cpu() for k, v in result["state_dict"].items()}
            return result

        def remote_trainer(cfg, report):
            self.log(f"[teachers] training {cfg.model} ({cfg.method}, {cfg.epochs} epochs) on a worker")
            blob = Path(cfg.teacher_checkpoint).read_bytes() if cfg.teacher_checkpoint else None
            return ray.get(train_remote.remote(cfg.to_dict(), blob))

        rows, files = [], {}
        roles = [("teacher", teacher_config(probe))]
        teacher_path = store.get_or_train(roles[0][1], trainer=remote_trainer)
        files["teacher"] = teacher_path.read_bytes()
        if probe.assistant:
            assistant_cfg = assistant_config(probe, str(teacher_path))
            roles.append(("assistant", assistant_cfg))
            files["assistant"] = store.get_or_train(assistant_cfg, trainer=remote_trainer).read_bytes()
        for role, cfg in roles:
            metrics = store.metrics(cfg)
            rows.append({"role": role, "arch": cfg.model, "params": count_parameters(build_model(cfg.model, cfg.num_classes)),
                         "best_val_acc": metrics["best_val_acc"], "test_acc": metrics["test_acc"],
                         "epochs": metrics["epochs_run"], "seconds": metrics["seconds"],
                         "path": str(store.path_for(cfg))})
            self.log(f"[teachers] {role} {cfg.model}: val {metrics['best_val_acc']:.2f}% "
                     f"test {metrics['test_acc']:.2f}%")
        banks = self.build_banks(store.root, probe, files)
        for row in rows:
            row.update(banks.get(row["role"], {"bank_bytes": 0, "bank_build_seconds": 0.0}))
        pd.DataFrame(rows).to_csv(self.exp_dir / "teachers.csv", index=False)
        return files

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
        num_classes = self.config.train_config(self.config.students[0], "ce").num_classes
        archs = {self.config.teacher, *self.config.students} | ({self.config.assistant} - {None})
        return {a: count_parameters(build_model(a, num_classes)) for a in archs}

    def write_summary(self) -> pd.DataFrame:
        teachers_csv = self.exp_dir / "teachers.csv"
        teachers = pd.read_csv(teachers_csv) if teachers_csv.is_file() else pd.DataFrame(columns=["role"])
        summary = build_summary(self.exp_dir, self.config, self.name, teachers, self.param_counts())
        tmp = self.exp_dir / "summary.csv.tmp"
        summary.to_csv(tmp, index=False)
        tmp.replace(self.exp_dir / "summary.csv")
        return summary


def cluster_hardware() -> dict[str, Any]:
    import ray

    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    gpu_names = sorted({k for n in nodes for k in n["Resources"] if k.startswith("accelerator_type:")})
    return {"cpus": int(resources.get("CPU", 0)), "gpus": int(resources.get("GPU", 0)),
            "gpu_names": [g.split(":", 1)[1] for g in gpu_names], "nodes": len(nodes),
            "driver_host": platform.node()}
