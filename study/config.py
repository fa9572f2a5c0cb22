"""The study configuration: typed, frozen, validated in full before Ray starts.

A study is a grid of cells, one per (student, method); each cell gets the same number of
search trials, every trial the same epoch budget. Presets are small YAML files in
study/presets/; a user file has the same keys. Unknown keys are errors.

A GLUE study over several tasks (`dataset: glue`, `tasks: [cola, sst2, ...]`) is one study
per task, run one after another into <experiment>/glue-<task>/ (each task needs its own
teacher); `for_task` builds a task's config, substituting `{task}` in the teacher names
and the fixed `train:` values (e.g. a per-task fine-tuned teacher checkpoint).
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kd.checkpoints import is_hf_reference
from kd.config import ConfigError, TrainConfig, check_types
from kd.data import dataset_info
from kd.methods import METHODS, is_plugin_file, load_plugins
from study.space import corner_params

PRESET_DIR = Path(__file__).parent / "presets"

# What every method searches alike (SPEC §4b): the optimiser's lr and weight decay, over the
# same ranges, so no method is handicapped by a fixed setting while others are tuned. Set
# them for a study under `search: {shared: {...}}`, never per method.
SHARED_SEARCH: dict[str, Any] = {"lr": [0.02, 0.5], "weight_decay": [1e-5, 1e-3]}
# Each method's own parameters on top, as the method declares them (kd/methods: `search`); a
# study overrides any of them per method under `search: {<method>: {...}}`; a single value
# instead of a range fixes the parameter.
SHARED = "shared"
# Confirmation runs use seeds from study seed + CONFIRM_SEED_OFFSET + 1: the headline seeds
# (study seed + 1, + 2, ...) never take part in choosing a configuration.
CONFIRM_SEED_OFFSET = 1000
PRUNERS = ("asha", "median", "none")


def method_search(method: str) -> dict[str, Any]:
    """A method's default search over its own parameters (a copy: a study must not change it)."""
    return copy.deepcopy(METHODS.get(method, field="methods").search)


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class StudyConfig:
    description: str = _f("", "one line shown by `run_study.py presets`")
    cost: str = _f("", "rough cost estimate shown by `run_study.py presets`")
    dataset: str = _f("mnist1d", "mnist1d | cifar10 | cifar100 | glue-<task> | template-text | glue "
                                 "(with tasks)")
    tasks: list = _f([], "dataset glue: the GLUE tasks (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte), "
                         "one study each")
    data_dir: str | None = _f(None, "folder with the CIFAR or GLUE files (GLUE: empty means the Hub)")
    teacher: str = _f("cnn1d_64", "teacher architecture, trained once per study storage (or named: "
                                  "train.teacher_checkpoint is a fine-tuned teacher used as is)")
    assistant: str | None = _f(None, "TAKD assistant architecture")
    students: list = _f(["cnn1d_8", "mlp1d_8"], "student architectures, one cell row each")
    methods: list = _f(["ce", "kd", "annealing"], "methods, one cell column each")
    epochs: int = _f(30, "epoch budget of every trial (all phases included)")
    trials_per_cell: int = _f(8, "search trials per (student, method) cell")
    rerun_seeds: int = _f(5, "seeds the best configuration of each cell is re-run with (at least)")
    rerun_max_seeds: int | None = _f(None, "more seeds, up to this many, for a student while a cell's 95% "
                                           "interval of the validation score is wider than rerun_target "
                                           "(default: rerun_seeds, no more)")
    rerun_target: float = _f(1.5, "half-width (points) of the 95% interval of a cell's validation score "
                                  "that stops adding seeds")
    audit_pruned: int = _f(0, "pruned configurations per cell re-run to completion (pruning audit)")
    confirm_top: int = _f(0, "the best completed search configurations of a cell that are run with "
                             "confirm_seeds more seeds; the one with the best mean validation score is "
                             "re-run (0: the best search trial, on its one seed)")
    confirm_seeds: int = _f(2, "extra seeds of each confirm_top configuration (study seed + 1001, + 1002, "
                               "...: never a headline seed)")
    search: dict = _f({}, "per-method overrides of the search ranges")
    plugins: list = _f([], "method plugins: .py files (at the same path on every node) or modules every node can "
                           "import, that register methods (kd/methods); every process of the study loads them")
    pruner: str = _f("asha", "asha | median | none (Optuna pruner, compared within a cell)")
    reduction_factor: int = _f(2, "asha: a trial goes on past each rung if it is in the top 1/reduction_factor")
    grace_epochs: int = _f(3, "the pruner's first decision, in epochs of a trial's final phase (ASHA's min "
                              "resource; README, Pruning)")
    startup_trials: int = _f(4, "random trials per cell before TPE takes over (and before pruning)")
    train: dict = _f({}, "fixed TrainConfig values for every run (teacher_epochs, batch_size, ...)")
    cpus_per_trial: float = _f(1, "CPUs reserved per trial")
    gpus_per_trial: float = _f(0, "GPUs per trial; fractions pack several trials on one GPU")
    max_concurrent: int | None = _f(None, "trials running at once (default: what the cluster fits)")
    max_failures: int = _f(2, "retries of a trial whose worker died (from its last checkpoint)")
    checkpoint_every: int = _f(10, "epochs between a trial's checkpoints (also at every temperature stage "
                                   "and phase end): a lost node costs at most this many epochs")
    seed: int = _f(0, "seed of the samplers and of the search trials")

    def __post_init__(self) -> None:
        # Every process that builds this config (the driver, each trial and teacher worker, the
        # report) must know the methods it names before any TrainConfig is built. A plugin file
        # is kept by its absolute path: trials run in folders of their own.
        if isinstance(self.plugins, list) and all(isinstance(p, str) for p in self.plugins):
            absolute = [str(Path(p).expanduser().resolve()) if is_plugin_file(p) else p for p in self.plugins]
            object.__setattr__(self, "plugins", absolute)
            load_plugins(absolute, field="plugins")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> "StudyConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**values).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> "StudyConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config: {str(path)!r} is not a file")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config: {path} is not valid YAML ({error})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config: {path} must hold a mapping of keys to values")
        return cls.from_dict(values, where=str(path))

    @classmethod
    def preset(cls, name: str) -> "StudyConfig":
        path = PRESET_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"preset: unknown preset {name!r}; allowed: {', '.join(preset_names())}")
        return cls.from_file(path)

    def replace(self, **changes: Any) -> "StudyConfig":
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if not values["plugins"]:  # the record of a study without plugins stays as it always was (--resume)
            del values["plugins"]
        return values

    # ------------------------------------------------------------------ derived
    @property
    def multi_task(self) -> bool:
        return bool(self.tasks)

    def for_task(self, task: str) -> "StudyConfig":
        """The single-task study of one GLUE task, `{task}` substituted."""
        fill = lambda v: v.format(task=task) if isinstance(v, str) else v
        return self.replace(dataset=f"glue-{task}", tasks=[], teacher=fill(self.teacher),
                            assistant=fill(self.assistant), train={k: fill(v) for k, v in self.train.items()})

    @property
    def cells(self) -> list[tuple[str, str]]:
        return [(student, method) for student in self.students for method in self.methods]

    @property
    def max_seeds(self) -> int:
        return self.rerun_max_seeds if self.rerun_max_seeds is not None else self.rerun_seeds

    @property
    def confirm_seed_list(self) -> list[int]:
        if not self.confirm_top:
            return []
        start = self.seed + CONFIRM_SEED_OFFSET + 1
        return list(range(start, start + self.confirm_seeds))

    @property
    def decision_steps(self) -> list[int]:
        """The final-phase epochs at which the pruner decides (study/search.py): ASHA's rungs
        grace_epochs x reduction_factor^k within the budget, where the median pruner decides
        too; none without a pruner."""
        steps, step = [], self.grace_epochs
        while self.pruner != "none" and step <= self.epochs:
            steps.append(step)
            step *= self.reduction_factor
        return steps

    def search_space(self, method: str) -> dict[str, Any]:
        """The ranges a method's cell searches: the shared optimiser ranges, then its own."""
        return {**SHARED_SEARCH, **self.search.get(SHARED, {}), **method_search(method),
                **self.search.get(method, {})}

    def train_config(self, student: str, method: str, **params: Any) -> TrainConfig:
        """The TrainConfig of one run of this study (params: the tuned values)."""
        values = {"dataset": self.dataset, "data_dir": self.data_dir, "teacher": self.teacher,
                  "model": student, "method": method, "epochs": self.epochs, "seed": self.seed,
                  **self.train, **params}
        if METHODS.get(method, field="methods").needs_assistant:
            values["assistant"] = self.assistant
        return TrainConfig.from_dict(values)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "StudyConfig":
        def fail(name: str, rule: str) -> None:
            raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; {rule}")

        check_types(self)
        if self.tasks or self.dataset == "glue":
            return self._validate_tasks(fail)
        if not self.students:
            fail("students", "list at least one student architecture")
        if not all(isinstance(p, str) for p in self.plugins):
            fail("plugins", "list .py files or module names")
        if not self.methods:
            fail("methods", "list at least one method")
        for method in self.methods:
            METHODS.get(method, field="methods")
        for method in self.methods:
            if METHODS.get(method).needs_assistant and not self.assistant:
                fail("assistant", f"method {method} needs an assistant architecture")
        for name in ("epochs", "trials_per_cell", "rerun_seeds", "grace_epochs", "cpus_per_trial",
                     "checkpoint_every"):
            if getattr(self, name) < (0 if name == "rerun_seeds" else 1):
                fail(name, "it must be >= 1" if name != "rerun_seeds" else "it must be >= 0")
        if self.audit_pruned < 0:
            fail("audit_pruned", "it must be >= 0")
        if self.confirm_top < 0:
            fail("confirm_top", "it must be >= 0")
        if self.confirm_top > self.trials_per_cell:
            fail("confirm_top", f"it must be <= trials_per_cell ({self.trials_per_cell})")
        if self.confirm_top and self.confirm_seeds < 1:
            fail("confirm_seeds", "it must be >= 1 when confirm_top is set")
        if self.max_seeds >= CONFIRM_SEED_OFFSET:
            fail("rerun_max_seeds" if self.rerun_max_seeds is not None else "rerun_seeds",
                 f"it must be < {CONFIRM_SEED_OFFSET} (from study seed + {CONFIRM_SEED_OFFSET + 1} on, "
                 f"seeds confirm configurations)")
        if self.rerun_max_seeds is not None and self.rerun_max_seeds < self.rerun_seeds:
            fail("rerun_max_seeds", f"it must be >= rerun_seeds ({self.rerun_seeds})")
        if not self.rerun_target > 0:
            fail("rerun_target", "it must be > 0")
        if self.gpus_per_trial < 0:
            fail("gpus_per_trial", "it must be >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            fail("max_concurrent", "it must be >= 1")
        if self.reduction_factor < 2:
            fail("reduction_factor", "it must be >= 2")
        if self.pruner not in PRUNERS:
            fail("pruner", f"allowed: {', '.join(PRUNERS)}")
        self._validate_search()
        self._validate_runs()
        return self

    def _validate_search(self) -> None:
        allowed = {SHARED: SHARED_SEARCH, **{method: method_search(method) for method in METHODS.names()}}
        unknown_keys = sorted(set(self.search) - set(allowed))
        if unknown_keys:
            raise ConfigError(f"search: unknown key(s) {unknown_keys}; allowed: {SHARED} (lr, weight_decay "
                              f"for every method) and the methods {METHODS.names()}")
        for key, ranges in self.search.items():
            if not isinstance(ranges, dict):
                raise ConfigError(f"search.{key}: {ranges!r} is not allowed; give a mapping of parameter "
                                  f"names to ranges")
            shared_here = sorted(set(ranges) & set(SHARED_SEARCH)) if key != SHARED else []
            if shared_here:
                raise ConfigError(f"search.{key}: {shared_here} is not allowed; every method searches "
                                  f"{' and '.join(SHARED_SEARCH)} over the same ranges: set them under "
                                  f"search.{SHARED}")
            unknown = sorted(set(ranges) - set(allowed[key]))
            if unknown:
                raise ConfigError(f"search.{key}: unknown parameter(s) {unknown}; "
                                  f"allowed: {sorted(allowed[key])}")

    def _validate_tasks(self, fail) -> "StudyConfig":
        from kd.data.glue import TASKS

        if self.dataset != "glue":
            fail("tasks", "a list of tasks needs dataset: glue")
        if not self.tasks:
            fail("tasks", f"dataset glue needs a list of tasks; allowed: {', '.join(TASKS)}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or len(set(self.tasks)) != len(self.tasks):
            fail("tasks", f"list each GLUE task once; allowed: {', '.join(TASKS)}")
        for task in self.tasks:
            try:
                self.for_task(task)
            except ConfigError as error:
                raise ConfigError(f"task {task}: {error}") from None
        return self

    def _validate_runs(self) -> None:
        """Build the most demanding run of every cell so TrainConfig checks each value."""
        for student, method in self.cells:
            try:
                for pick in (max, min):
                    self.train_config(student, method, **corner_params(self, method, pick))
            except ConfigError as error:
                raise ConfigError(f"cell {student}-{method}: {error}") from None
        info = dataset_info(self.dataset)
        if info.needs_tokenizer and not self.train.get("tokenizer"):
            raise ConfigError("train: a GLUE study needs train.tokenizer (a Hub name or folder): teacher "
                              "and students must read the same token ids")
        for key in ("teacher_checkpoint", "assistant_checkpoint"):
            path = self.train.get(key)
            if path and not is_hf_reference(path) and not Path(path).expanduser().is_file():
                raise ConfigError(f"train.{key}: {path!r} is not allowed; there is no such file (a model "
                                  f"saved by kd.checkpoints.save_model, or hf:<name>)")
        if self.train.get("device") == "cuda" and not self.gpus_per_trial:
            raise ConfigError("train.device: 'cuda' is not allowed with gpus_per_trial 0 (trials get no GPU); "
                              "set gpus_per_trial, or device auto")
        # The teacher and the assistant must be valid models for the dataset, too.
        self.train_config(self.teacher, "ce")
        if self.assistant:
            self.train_config(self.assistant, "ce")
        if not info.generated:
            data_dir = self.train.get("data_dir", self.data_dir)
            if data_dir and not Path(data_dir).is_dir() and not self.train.get("download", False):
                hint = ("put GLUE's task folders there, or leave data_dir empty to use the Hub"
                        if self.dataset.startswith("glue") else
                        f"put the {self.dataset} files there, or set train.download: true")
                raise ConfigError(f"data_dir: {data_dir!r} is not allowed; the folder does not exist ({hint})")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def check_storage_writable(path: str | os.PathLike) -> Path:
    """Create the storage folder and write a probe file there (os.access lies for root)."""
    if "://" in str(path):
        raise ConfigError(f"storage: {str(path)!r} is not allowed; give a local or NFS path that "
                          f"every node mounts (object-store URIs are not supported yet)")
    path = Path(path).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"storage: {str(path)!r} is not allowed; it is not a writable folder "
                          f"({error.strerror})") from None
    return path
