"""The study, start to finish, in one Tune experiment; resumable from any point.

Teachers train as Ray tasks (study/teachers.py) while cells that need none already search;
the planner (study/search.py) queues every cell's re-runs as soon as its search is complete.
The Optuna storage is the record of what has run (study/ledger.py): a new session of an
interrupted or killed study builds a new Tuner and the planner continues from the ledger.

Experiment layout (<storage>/<name>/): study.json (resolved config, versions, git
revision, hardware, status, wall time, utilisation), teachers.csv, optuna-journal.log (the ledger),
trials/ (the Tune experiment: one folder per trial), summary.csv (one row per trial).
Teachers live in <storage>/teachers/, shared by every study in that storage.

A GLUE study over several tasks runs one such study per task, in turn, in
<storage>/<name>/glue-<task>/; the experiment's own summary.csv and teachers.csv join the
tasks' (their `dataset` column tells them apart), so the report reads one directory.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd


from kd.config import ConfigError
from study.config import StudyConfig, check_storage_writable
from study.ledger import LEDGER_FILE, check_ledger_readable
from study.summary import COLUMNS, build_summary
from study.teachers import count_model, write_json

TRAINABLE_NAME = "run_trial"
TEXT_ONLY = ("description", "cost")  # StudyConfig keys a resume may see changed


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


class Study:
    def __init__(self, config: StudyConfig, storage: str | Path, name: str, preset: str | None = None,
                 log: Callable[[str], None] = print, teachers: str | Path | None = None, verbose: bool = False):
        self.config = config
        self.verbose = verbose  # Tune's status block too, beside the progress display (study/progress.py)
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
            try:
                saved = json.loads((self.exp_dir / "study.json").read_text())["config"]
            except (ValueError, KeyError) as error:
                raise ConfigError(f"--resume: {self.exp_dir / 'study.json'} is not a study record "
                                  f"({type(error).__name__}: {error})") from None
            # a preset's one-line description and cost estimate are text: rewording them changes no run
            current = self.config.to_dict()
            changed = sorted(k for k in {*saved, *current} - set(TEXT_ONLY) if saved.get(k) != current.get(k))
            if changed:
                raise ConfigError(f"--resume: the configuration differs from the saved one in {changed}")
            check_ledger_readable(self.exp_dir / LEDGER_FILE)
        self.exp_dir.mkdir(parents=True, exist_ok=True)

    def write_info(self, status: str, **extra: Any) -> None:
        path = self.exp_dir / "study.json"
        info = json.loads(path.read_text()) if path.is_file() else {
            "name": self.name, "preset": self.preset, "config": self.config.to_dict(),
            # the ranges each method's cell searched, defaults included (the report states them)
            "search_spaces": {m: self.config.search_space(m) for m in self.config.methods},
            "pruning": {"compared_at": "final-phase epoch", "decision_steps": self.config.decision_steps},
            "versions": package_versions(), "git_revision": git_revision(),
            "started": dt.datetime.now().isoformat(timespec="seconds"), "finished": None,
            "command": sys.argv}
        info.update(status=status, **extra)
        if status == "finished":
            info["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        write_json(path, info)

    @contextlib.contextmanager
    def wall_clock(self):
        """Adds this session's wall time to study.json's wall_seconds however the session
        ends, so a study interrupted and resumed reports the time of all its sessions. While
        it runs, `record_wall` (called by Tune's loop) keeps the figure current: a killed
        driver loses at most WALL_EVERY seconds of it, and the utilisation of a study that was
        killed and resumed stays a fraction of the time it really took."""
        path = self.exp_dir / "study.json"
        self._wall = (json.loads(path.read_text()).get("wall_seconds", 0.0), time.time())
        try:
            yield
        finally:
            self.record_wall()

    def record_wall(self) -> None:
        path = self.exp_dir / "study.json"
        previous, started = self._wall
        info = json.loads(path.read_text())
        info["wall_seconds"] = previous + time.time() - started
        write_json(path, info)

    # ------------------------------------------------------------------ the stages
    def task_study(self, task: str) -> "Study":
        return Study(self.config.for_task(task), self.exp_dir, f"glue-{task}", preset=self.preset,
                     log=self.log, teachers=self.teachers, verbose=self.verbose)

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
        from study.ledger import Ledger
        from study.search import StudyPlanner
        from study.teachers import TeacherStage

        if self.config.multi_task:
            return self.run_tasks()
        self.write_info("running")
        with self.wall_clock():
            self.check_shared_storage()
            hardware = cluster_hardware()
            self.write_info("running", hardware=hardware)
            self.log(f"study {self.name}: {len(self.config.cells)} cells x {self.config.trials_per_cell} "
                     f"trials, {self.config.epochs} epochs each; cluster {hardware}")
            teachers = TeacherStage(self.config, self.exp_dir, self.teachers, self.log)
            teachers.start()
            planner = StudyPlanner(self.config, Ledger(self.config, self.exp_dir, self.name),
                                   self.exp_dir, teachers)
            # Trials Tune asks the planner for ahead of free resources: the cluster's trial slots
            # (with a custom searcher Tune keeps one pending, and an autoscaler grows by one node)
            os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(self.config.max_concurrent or trial_slots(hardware,
                                                                                                    self.config))
            try:
                self.make_tuner(planner).fit()
            finally:
                teachers.write_csv()
                summary = self.write_summary()
            if not planner.everything_planned():  # Tune returns normally after SIGINT, trials unfinished
                raise KeyboardInterrupt("interrupted")
        self.write_info("finished", utilisation=self.utilisation(summary, hardware))
        counts = summary.groupby(["stage", "status"]).size().to_dict()
        self.log(f"study {self.name} finished: {counts}; utilisation "
                 f"{json.loads((self.exp_dir / 'study.json').read_text())['utilisation']:.2f}; "
                 f"summary in {self.exp_dir / 'summary.csv'}")
        return self.exp_dir

    def utilisation(self, summary: pd.DataFrame, hardware: dict[str, Any]) -> float:
        """Busy trial- and teacher-seconds over what the cluster's trial slots could have
        done in the study's wall time (all sessions)."""
        info = json.loads((self.exp_dir / "study.json").read_text())
        teachers = pd.read_csv(self.exp_dir / "teachers.csv") if (self.exp_dir / "teachers.csv").is_file() \
            else pd.DataFrame({"seconds": []})
        busy = summary["seconds"].fillna(0).sum() + teachers["seconds"].fillna(0).sum()
        return float(busy / (info["wall_seconds"] * trial_slots(hardware, self.config)))

    def check_shared_storage(self) -> None:
        """Every node alive now must see the experiment folder; refuse to start otherwise. A node
        that joins later (an autoscaler's) is checked by each trial it runs (study/trainable.py)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from study.trainable import StorageNotShared, check_storage_here

        @ray.remote(num_cpus=0)
        def blind_here(exp_dir: str) -> str | None:
            try:
                check_storage_here(exp_dir)
            except StorageNotShared as error:
                return str(error)
            return None

        nodes = [n for n in ray.nodes() if n["Alive"]]
        if len(nodes) < 2:  # the driver's own node: it has just written study.json there
            return
        probes = [blind_here.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                  .remote(str(self.exp_dir)) for n in nodes]
        blind = [message for message in ray.get(probes) if message]
        if blind:
            raise ConfigError(f"storage: {str(self.storage)!r} is not allowed on this {len(nodes)}-node cluster; "
                              + "; ".join(blind))

    # ------------------------------------------------------------------ Tune
    def make_tuner(self, planner):
        from ray import tune
        from ray.tune.logger import JsonLoggerCallback

        from study.metrics import StudyMetrics, WallClock
        from study.progress import Progress
        from study.search import CellPruner
        from study.trainable import TRIALS_FOLDER, run_trial, trial_dirname

        cfg = self.config
        trainable = tune.with_parameters(run_trial, study_values=cfg.to_dict(),
                                         exp_dir=str(self.exp_dir), bank_root=str(self.teachers))
        trainable = tune.with_resources(trainable, {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
        run_config = tune.RunConfig(
            name=TRIALS_FOLDER, storage_path=str(self.exp_dir),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            # result.json only: the trials write their own per-epoch file and state
            callbacks=[JsonLoggerCallback(),
                       StudyMetrics(self.name, trial_slots(cluster_hardware(), cfg), planner.best_on_record()),
                       WallClock(self.record_wall), Progress(planner)],
            verbose=1 if self.verbose else 0)
        tune_config = tune.TuneConfig(
            search_alg=planner, scheduler=CellPruner(planner, set(cfg.decision_steps)),
            num_samples=planner.max_trials(), max_concurrent_trials=cfg.max_concurrent,
            reuse_actors=True, trial_dirname_creator=trial_dirname)
        return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)

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
        tmp = self.exp_dir / f"summary.csv.{os.getpid()}.tmp"
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


def trial_slots(hardware: dict[str, Any], config: StudyConfig) -> int:
    """Trials the cluster runs at once with the study's resources per trial."""
    slots = hardware["cpus"] / config.cpus_per_trial
    if config.gpus_per_trial:
        slots = min(slots, hardware["gpus"] / config.gpus_per_trial)
    return max(1, int(slots))


def cluster_hardware() -> dict[str, Any]:
    import ray

    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    gpu_names = sorted({k for n in nodes for k in n["Resources"] if k.startswith("accelerator_type:")})
    return {"cpus": int(resources.get("CPU", 0)), "gpus": int(resources.get("GPU", 0)),
            "gpu_names": [g.split(":", 1)[1] for g in gpu_names], "nodes": len(nodes),
            "driver_host": platform.node()}
