"""The one typed, frozen configuration of a training run (teacher, assistant or student).

Every field has a help text (it becomes a `python -m kd` option) and every value is
validated before any data is loaded or model built, with an error that names the field,
the value and what is allowed. The hyperparameters of the methods are fields too, declared
by the methods themselves (kd/methods, `Param`) and looked up in the registry whenever a
config is built: a method brings its own, a plugin loaded later included.
"""
from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

from kd.errors import ConfigError


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


def check_types(config: Any) -> None:
    """Every field of a config dataclass holds a value of its declared type (YAML and CLI
    values arrive untyped): the error names the field, the value and the type allowed,
    before any comparison could fail with a TypeError. An int is a float; a bool is not a
    number; `X | None` also allows None."""
    for name, hint in typing.get_type_hints(type(config)).items():
        check_type(name, getattr(config, name), hint)


def check_type(name: str, value: Any, hint: Any) -> None:
    allowed = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    if value is None and type(None) in typing.get_args(hint):
        return
    kind = allowed[0]
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float) if kind is float else kind) and not isinstance(value, bool)
    if not ok:
        words = _TYPE_WORDS.get(kind, kind.__name__) + (" (or left out)" if type(None) in typing.get_args(hint) else "")
        raise ConfigError(f"{name}: {value!r} is not allowed; it must be {words}")


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


LR_SCHEDULES = ("step", "cosine", "linear")
OPTIMIZERS = ("sgd", "adamw")
DEVICES = ("auto", "cpu", "cuda")
# Method parameters that were TrainConfig fields before the methods declared their own: every
# stored teacher's key (kd/store.py names teachers by it), saved training state and given
# teacher's score file holds them, so every record keeps them. Any other method parameter is
# recorded only where it differs from its default: adding a method changes no existing key.
ALWAYS_RECORDED = ("tau_max", "stage_epochs", "temperature", "alpha", "psi_epochs", "margin")


@dataclass(frozen=True)
class Option:
    """One `python -m kd train` option: a field of TrainConfig or a method's parameter."""
    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None


def method_params() -> dict[str, tuple[Any, list[str]]]:
    """Every registered method's parameters by name: its Param and the methods that declare it
    (in the papers' order). A parameter named like a TrainConfig field would hide it: refused."""
    # local: kd.methods loads the KD_METHOD_PLUGINS plugins, which may import this module
    from kd.methods import METHODS, ordered

    core = {f.name for f in fields(TrainConfig)}
    found: dict[str, tuple[Any, list[str]]] = {}
    for method in ordered():
        for param in METHODS.get(method).params:
            if param.name in core:
                raise ConfigError(f"method {method!r}: parameter {param.name!r} is a TrainConfig field already; "
                                  f"choose another name")
            found.setdefault(param.name, (param, []))[1].append(method)
    return found


# init, eq and repr are written below: the method parameters are fields no dataclass declares.
@dataclass(frozen=True, init=False, eq=False, repr=False)
class TrainConfig:
    """Besides the fields below, every parameter a registered method declares is a field
    (`TrainConfig(method="annealing", tau_max=5)`), looked up in the registry when a config
    is built: a plugin loaded later brings its own."""

    # --- data
    dataset: str = _opt("mnist1d", "mnist1d | cifar10 | cifar100 | glue-<task> (cola, sst2, mrpc, stsb, "
                                   "qqp, mnli, qnli, rte) | template-text")
    data_dir: str | None = _opt(None, "folder holding the dataset files: CIFAR (cifar-10-batches-py/ or "
                                      "cifar-100-python/) or GLUE (CoLA/, SST-2/, ...; empty: the Hub)")
    download: bool = _opt(False, "allow torchvision to download CIFAR into data_dir")
    num_samples: int = _opt(5000, "MNIST-1D and template-text: examples generated (80%% train, 20%% test)")
    val_size: int | None = _opt(None, "examples held out of the training set for validation "
                                      "(default: 500 for MNIST-1D and template-text, 5000 for CIFAR, "
                                      "10%% of train up to 5000 for GLUE)")
    data_seed: int = _opt(0, "seed of the validation split")
    tokenizer: str | None = _opt(None, "text: AutoTokenizer name or folder (default: the student's hf: "
                                       "name; template-text builds its own)")
    max_length: int = _opt(128, "text: longest tokenised example (longer pairs are truncated)")
    # --- model and method
    model: str = _opt("cnn1d_8", "student architecture (see `python -m kd models`)")
    method: str = _opt("ce", "the distillation method (`python -m kd methods` lists them)")
    epochs: int = _opt(60, "total epoch budget of the run, all phases included")
    # (each method's own parameters follow here: method_params)
    # --- optimisation
    batch_size: int = _opt(128, "mini-batch size")
    optimizer: str = _opt("sgd", "sgd (momentum) or adamw; a fresh one in every phase", choices=OPTIMIZERS)
    lr: float = _opt(0.1, "initial learning rate of every phase")
    momentum: float = _opt(0.9, "SGD momentum")
    weight_decay: float = _opt(5e-4, "weight decay (SGD: L2 term; AdamW: decoupled)")
    lr_schedule: str = _opt("step", "step (x0.1 at 50%% and 75%% of each phase), cosine (per epoch), or "
                                    "linear (warmup then decay to 0, per batch)", choices=LR_SCHEDULES)
    warmup_ratio: float = _opt(0.0, "linear schedule: fraction of each phase's steps spent warming up")
    grad_clip: float | None = _opt(None, "clip the gradient's global L2 norm to this before every step "
                                         "(default: no clipping)")
    # --- teacher / assistant
    teacher: str | None = _opt(None, "teacher architecture (every method that distils)")
    teacher_checkpoint: str | None = _opt(None, "stored teacher file; trained into --store when absent")
    teacher_epochs: int = _opt(60, "epochs when the teacher (and assistant) is trained here")
    teacher_lr: float = _opt(0.1, "learning rate when the teacher (and assistant) is trained here")
    teacher_weight_decay: float = _opt(5e-4, "weight decay when the teacher (and assistant) is trained here")
    teacher_seed: int = _opt(0, "seed when the teacher is trained here")
    assistant: str | None = _opt(None, "takd: teacher-assistant architecture")
    assistant_checkpoint: str | None = _opt(None, "takd: stored assistant file")
    teacher_bank: bool = _opt(True, "precompute teacher logits once for every (example, view); falls back "
                                    "to the live teacher above bank_memory_gb")
    bank_memory_gb: float = _opt(8.0, "largest teacher bank (GiB, float16 logits) built in memory")
    # --- run
    seed: int = _opt(0, "seed of initialisation, shuffling and augmentation")
    device: str = _opt("auto", "auto | cpu | cuda", choices=DEVICES)
    amp: bool = _opt(True, "bf16 autocast on CUDA (ignored on CPU)")
    compile: bool = _opt(False, "wrap the student in torch.compile")
    paper_protocol: bool = _opt(False, "select checkpoints on TEST accuracy like the official code "
                                       "(for comparison only; default selects on validation)")

    def __init__(self, **values: Any) -> None:
        params = method_params()
        core = fields(TrainConfig)
        unknown = sorted(set(values) - {f.name for f in core} - set(params))
        if unknown:
            raise TypeError(f"TrainConfig got unknown field(s) {unknown}")
        for f in core:
            object.__setattr__(self, f.name, values.get(f.name, f.default))
        for name, (param, _) in params.items():
            object.__setattr__(self, name, values.get(name, param.default))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    # ------------------------------------------------------------------ derived values
    @property
    def num_classes(self) -> int:
        """Outputs of the model: classes, or 1 for a regression score (STS-B)."""
        from kd.data import dataset_info

        return dataset_info(self.dataset).num_classes

    @property
    def resolved_val_size(self) -> int | None:
        """The validation size; None where the loader decides (GLUE: 10% of train, <= 5,000)."""
        from kd.data import dataset_info

        return self.val_size if self.val_size is not None else dataset_info(self.dataset).default_val_size

    @property
    def resolved_tokenizer(self) -> str | None:
        """The text tokenizer: the tokenizer field, else the student's own (hf: models)."""
        if self.tokenizer:
            return self.tokenizer
        return self.model.removeprefix("hf:") if self.model.startswith("hf:") else None

    @property
    def phase1_epochs(self) -> int:
        return self.tau_max * self.stage_epochs

    # ------------------------------------------------------------------ construction
    @classmethod
    def options(cls) -> list[Option]:
        """Every field as an option: the method parameters after the epoch budget (where the
        first ones always stood), each saying which methods use it."""
        hints = typing.get_type_hints(cls)
        core = []
        for f in fields(cls):
            kind = hints[f.name]
            if isinstance(kind, types.UnionType):  # "str | None" -> str
                kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
            core.append(Option(f.name, kind, f.default, f.metadata.get("help", ""), f.metadata.get("choices")))
        params = [Option(name, param.type, param.default, f"{', '.join(users)}: {param.help}")
                  for name, (param, users) in method_params().items()]
        after = next(i for i, option in enumerate(core) if option.name == "epochs") + 1
        return core[:after] + params + core[after:]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)} | set(method_params())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; allowed: {sorted(known)}")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def replace(self, **changes: Any) -> "TrainConfig":
        cfg = TrainConfig(**{**vars(self), **changes})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The record of this config (config.json, saved states, key): every field, and each
        method parameter outside ALWAYS_RECORDED only where it differs from its default."""
        params = method_params()
        return {k: v for k, v in vars(self).items()
                if k not in params or k in ALWAYS_RECORDED or v != params[k][0].default}

    def key(self, ignore: tuple[str, ...] = ("device", "amp", "compile", "teacher_bank",
                                             "bank_memory_gb")) -> str:
        """Content hash of everything that changes what is learned (not where it runs)."""
        payload = {k: v for k, v in self.to_dict().items() if k not in ignore}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        from kd.methods import METHODS  # local: see method_params
        from kd.models import MODELS, model_input

        def fail(name: str, rule: str) -> None:
            raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; {rule}")

        from kd.data import DATASETS

        check_types(self)
        params = method_params()
        for name, (param, _) in params.items():
            check_type(name, getattr(self, name), param.type)

        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                fail(f.name, f"allowed: {', '.join(choices)}")
        if self.dataset not in DATASETS:
            fail("dataset", f"allowed: {', '.join(DATASETS.names())}")
        info = DATASETS.get(self.dataset)
        method = METHODS.get(self.method, field="method")
        MODELS.get(self.model, field="model")
        expected_input = info.input_kind
        if model_input(self.model) != expected_input:
            fail("model", f"dataset {self.dataset} needs a{'n' if expected_input == 'image' else ''} "
                          f"{expected_input} model")

        for name in ("epochs", "batch_size", "teacher_epochs", "num_samples"):
            if getattr(self, name) < 1:
                fail(name, "it must be >= 1")
        for name in ("lr", "teacher_lr"):
            if not getattr(self, name) > 0:
                fail(name, "it must be > 0")
        for name in ("weight_decay", "teacher_weight_decay", "momentum", "bank_memory_gb"):
            if getattr(self, name) < 0:
                fail(name, "it must be >= 0")
        for name, (param, _) in params.items():  # every method's, whichever method runs
            if not param.allows(getattr(self, name)):
                fail(name, param.rule())
        if not 0.0 <= self.warmup_ratio < 1.0:
            fail("warmup_ratio", "it must lie in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            fail("grad_clip", "it must be > 0 (or left out: no clipping)")
        if self.val_size is not None and self.val_size < 1:
            fail("val_size", "it must be >= 1")
        train_size = int(0.8 * self.num_samples)  # the generators keep 80% for training
        if info.generated and self.resolved_val_size >= train_size:
            raise ConfigError(f"val_size: {self.resolved_val_size} is not allowed; it must be < {train_size}, the "
                              f"training examples of num_samples {self.num_samples}")
        if info.needs_data_dir and not self.data_dir:
            fail("data_dir", f"dataset {self.dataset} needs a data_dir (the folder holding its files)")
        if expected_input == "text":
            if self.max_length < 4:
                fail("max_length", "it must be >= 4 (special tokens plus some text)")
            if info.needs_tokenizer and self.resolved_tokenizer is None:
                fail("tokenizer", f"dataset {self.dataset} with model {self.model} needs a tokenizer (a Hub "
                                  f"name or a save_pretrained folder; hf: students default to their own)")

        for role in ("teacher", "assistant"):
            arch = getattr(self, role)
            if arch is not None:
                MODELS.get(arch, field=role)
                if model_input(arch) != expected_input:
                    fail(role, f"dataset {self.dataset} needs a {expected_input} model")
        if method.needs_teacher and self.teacher is None and self.teacher_checkpoint is None:
            fail("teacher", f"method {self.method} needs a teacher architecture or teacher_checkpoint")
        if method.needs_assistant and self.assistant is None and self.assistant_checkpoint is None:
            fail("assistant", f"method {self.method} needs an assistant architecture or assistant_checkpoint")
        method.validate(self, fail)
        return self
