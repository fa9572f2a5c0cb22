"""The eight GLUE tasks used by Annealing-KD, through Hugging Face `datasets`.

Sources: without ``data_dir``, ``datasets.load_dataset("nyu-mll/glue", task)`` (network or
a filled HF cache). With ``data_dir``, local files in ``<data_dir>/<Folder>/`` (GLUE's own
folder names: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE; the lower-case task name
works too), read by `datasets`' csv and json builders:

* TSV as distributed by GLUE (``train.tsv``, ``dev.tsv``; MNLI ``dev_matched.tsv`` and
  ``dev_mismatched.tsv``; CoLA without a header line; MRPC also as the original
  ``msr_paraphrase_train.txt`` / ``msr_paraphrase_test.txt``, with ``dev_ids.tsv`` carving
  GLUE's dev set out of train exactly like GLUE's download script);
* CSV, JSON or JSON lines with the Hugging Face column names (``train.csv``,
  ``validation.jsonl``, MNLI ``validation_matched.json``, ...), labels as ids or names.

GLUE's test labels are hidden, so the dev set plays "test" (the reported, never selected
on, split) and validation is held out of train (10%, at most 5,000 examples, unless
``val_size`` says otherwise). MNLI's mismatched dev set is a further test set ("mm").
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kd.data import Data, DatasetInfo, register
from kd.metrics import Task

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str                      # GLUE's folder name
    text: tuple[str, ...]            # Hugging Face column names of the one or two texts
    labels: tuple[str, ...] | None   # label names in id order; None: a regression score
    metrics: tuple[str, ...]         # the primary metric first
    tsv: dict[str, str]              # Hugging Face column -> GLUE TSV header
    headerless: tuple[str, ...] = () # GLUE TSV without a header line: its columns in order
    hub_test: str = "validation"
    hub_extra: tuple[tuple[str, str], ...] = ()  # (suffix, Hub split) of further test sets

    @property
    def num_classes(self) -> int:
        return len(self.labels) if self.labels else 1

    @property
    def task(self) -> Task:
        return Task("regression" if self.labels is None else "classification", self.metrics)


TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ("mcc", "accuracy"),
             {"sentence": "sentence", "label": "label"},
             headerless=("source", "label", "original_label", "sentence")),
    GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",),
             {"sentence": "sentence", "label": "label"}),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy"),
             {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), None, ("pearson", "spearman"),
             {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}),
    GlueTask("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"),
             {"question1": "question1", "question2": "question2", "label": "is_duplicate"}),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             ("accuracy",), {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
             hub_test="validation_matched", hub_extra=(("mm", "validation_mismatched"),)),
    GlueTask("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",),
             {"question": "question", "sentence": "sentence", "label": "label"}),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",),
             {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
)}

EXTENSIONS = (".tsv", ".csv", ".jsonl", ".json")
# Local file stems per split, in order of preference.
STEMS = {"train": ("train",), "test": ("dev", "validation"),
         "mm": ("dev_mismatched", "validation_mismatched")}
MNLI_TEST_STEMS = ("dev_matched", "validation_matched")


class GlueFilesError(FileNotFoundError):
    """Local GLUE files that are missing or unreadable; the message says where they must be."""


# ---------------------------------------------------------------------------- local files
def task_folder(task: GlueTask, data_dir: str | Path) -> Path:
    root = Path(data_dir).expanduser()
    for name in (task.folder, task.name, task.folder.lower()):
        if (root / name).is_dir():
            return root / name
    raise GlueFilesError(
        f"data_dir: no {task.folder} folder in {str(root)!r}; put the task's files in "
        f"{root / task.folder}/ (GLUE TSV: train.tsv and {_test_names(task)}; or train/validation "
        f".csv/.json/.jsonl with Hugging Face columns), or leave data_dir empty to use the Hub")


def _test_names(task: GlueTask) -> str:
    return "dev_matched.tsv, dev_mismatched.tsv" if task.name == "mnli" else "dev.tsv"


def _find(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for ext in EXTENSIONS:
            if (folder / f"{stem}{ext}").is_file():
                return folder / f"{stem}{ext}"
    return None


def local_files(task: GlueTask, data_dir: str | Path) -> dict[str, Path]:
    """split -> file for train, test (GLUE dev) and MNLI's mm; MRPC's MS release as fallback."""
    folder = task_folder(task, data_dir)
    files = {"train": _find(folder, STEMS["train"]),
             "test": _find(folder, MNLI_TEST_STEMS if task.name == "mnli" else STEMS["test"])}
    if task.name == "mnli":
        files["mm"] = _find(folder, STEMS["mm"])
    if task.name == "mrpc" and files["train"] is None and (folder / "msr_paraphrase_train.txt").is_file():
        files["train"] = folder / "msr_paraphrase_train.txt"
        if files["test"] is None:
            files["test"] = folder / ("dev_ids.tsv" if (folder / "dev_ids.tsv").is_file()
                                      else "msr_paraphrase_test.txt")
    missing = [split for split, path in files.items() if path is None or not path.is_file()]
    if missing:
        raise GlueFilesError(
            f"data_dir: {folder} lacks the {', '.join(missing)} file(s) of {task.name}; expected "
            f"train.tsv and {_test_names(task)} (GLUE), or train/validation with the extensions "
            f"{', '.join(EXTENSIONS)} (Hugging Face columns {', '.join(task.text)}, label)")
    return files


def _read_file(path: Path, task: GlueTask, cache_dir: Path):
    """One local file as a datasets.Dataset with the Hugging Face column names."""
    import datasets

    kwargs: dict[str, Any] = {"cache_dir": str(cache_dir / "hf-datasets")}
    if path.suffix in (".json", ".jsonl"):
        dataset = datasets.load_dataset("json", data_files=str(path), split="train", **kwargs)
        return _rename(dataset, task, path, tsv=False)
    if path.suffix == ".csv":
        dataset = datasets.load_dataset("csv", data_files=str(path), split="train", **kwargs)
        return _rename(dataset, task, path, tsv=False)
    # GLUE's TSV: no quoting (texts contain bare quotes), a BOM on MRPC's header, a few
    # malformed QQP lines (skipped, as the Hugging Face GLUE script does)
    first = path.read_text(encoding="utf-8-sig", errors="replace").split("\n", 1)[0].split("\t")
    tsv_options = dict(delimiter="\t", quoting=csv.QUOTE_NONE, encoding="utf-8-sig", on_bad_lines="skip")
    known = set(task.tsv.values()) | set(task.tsv)
    if task.headerless and not known & set(first):
        tsv_options.update(header=None, column_names=list(task.headerless))
    dataset = datasets.load_dataset("csv", data_files=str(path), split="train", **tsv_options, **kwargs)
    return _rename(dataset, task, path, tsv=True)


def _rename(dataset, task: GlueTask, path: Path, tsv: bool):
    columns = set(dataset.column_names)
    mapping = {}
    for hf_name, tsv_name in task.tsv.items():
        source = hf_name if hf_name in columns else (tsv_name if tsv and tsv_name in columns else None)
        if source is None:
            raise GlueFilesError(f"{path}: no column {hf_name!r}" + (f" or {tsv_name!r}" if tsv else "")
                                 + f" for {task.name}; found {sorted(columns)}")
        mapping[source] = hf_name
    return dataset.select_columns(list(mapping)).rename_columns(
        {k: v for k, v in mapping.items() if k != v})


def _mrpc_dev_ids(path: Path) -> set[tuple[str, str]]:
    rows = path.read_text(encoding="utf-8-sig").splitlines()
    return {tuple(line.split("\t")[:2]) for line in rows if line.strip()}


def _label_ids(values: list[Any], task: GlueTask, where: str) -> torch.Tensor:
    if task.labels is None:
        try:
            return torch.tensor([float(v) for v in values], dtype=torch.float32)
        except (TypeError, ValueError) as error:
            raise GlueFilesError(f"{where}: a {task.name} score is not a number ({error})") from None
    ids = []
    for value in values:
        text = str(value).strip()
        if isinstance(value, float) and value.is_integer():  # pandas reads 0/1 columns with gaps as floats
            text = str(int(value))
        if text in task.labels:
            ids.append(task.labels.index(text))
        elif text.isdigit() and int(text) < len(task.labels):
            ids.append(int(text))
        else:
            raise GlueFilesError(f"{where}: label {value!r} is not allowed for {task.name}; allowed: "
                                 f"{', '.join(task.labels)} or 0..{len(task.labels) - 1} (test files "
                                 f"without labels cannot be used; GLUE's dev set is the test split here)")
    return torch.tensor(ids, dtype=torch.int64)


def read_splits(task: GlueTask, cfg, cache_dir: Path) -> dict[str, dict[str, list]]:
    """split -> {column: values} for train, test (GLUE dev) and extra test sets."""
    if not cfg.data_dir:
        import datasets

        hub = datasets.load_dataset(HUB_DATASET, task.name)
        splits = {"train": hub["train"], "test": hub[task.hub_test],
                  **{suffix: hub[split] for suffix, split in task.hub_extra}}
        return {name: split.to_dict() for name, split in splits.items()}
    files = local_files(task, cfg.data_dir)
    out = {split: _read_file(path, task, cache_dir).to_dict() for split, path in files.items()
           if path.name != "dev_ids.tsv"}
    if files["test"].name == "dev_ids.tsv":  # GLUE's MRPC dev: these pairs of the MS train file
        raw = _read_raw_mrpc(files["train"])
        dev = _mrpc_dev_ids(files["test"])
        is_dev = [(a, b) in dev for a, b in zip(raw["#1 ID"], raw["#2 ID"])]
        train = out["train"]
        out["test"] = {k: [v for v, d in zip(values, is_dev) if d] for k, values in train.items()}
        out["train"] = {k: [v for v, d in zip(values, is_dev) if not d] for k, values in train.items()}
    return out


def _read_raw_mrpc(path: Path) -> dict[str, list[str]]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(header)}


def _source_key(task: GlueTask, cfg) -> Any:
    """What identifies the source files (their sizes and times), or the Hub."""
    if not cfg.data_dir:
        return HUB_DATASET
    return {split: [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
            for split, p in sorted(local_files(task, cfg.data_dir).items())}


def load_glue(cfg) -> Data:
    from kd.data.text import cache_root, cached_tensors, encode, load_tokenizer, text_data

    task = TASKS[cfg.dataset.removeprefix("glue-")]
    name = cfg.resolved_tokenizer
    tokenizer = load_tokenizer(name)
    root = cache_root(cfg.data_dir)

    def build() -> dict[str, torch.Tensor]:
        tensors = {}
        for split, columns in read_splits(task, cfg, root).items():
            keep = [i for i, values in enumerate(zip(*(columns[c] for c in task.text)))
                    if all(isinstance(v, str) and v for v in values) and columns["label"][i] is not None]
            texts = [[columns[c][i] for i in keep] for c in task.text]
            tensors[f"{split}_x"] = encode(tokenizer, texts[0], texts[1] if len(texts) > 1 else None,
                                           cfg.max_length)
            tensors[f"{split}_y"] = _label_ids([columns["label"][i] for i in keep], task,
                                               f"{cfg.dataset} {split}")
        return tensors

    payload = {"dataset": cfg.dataset, "source": _source_key(task, cfg), "tokenizer": name,
               "vocab": len(tokenizer), "max_length": cfg.max_length}
    tensors = cached_tensors(root, payload, build)
    n = len(tensors["train_x"])
    val_size = cfg.val_size if cfg.val_size is not None else min(5000, max(1, n // 10))
    return text_data(cfg, tokenizer, tensors, val_size)


for _task in TASKS.values():
    register(DatasetInfo(f"glue-{_task.name}", "text", _task.num_classes, _task.task, load_glue, None,
                         tokenizer=lambda cfg: cfg.resolved_tokenizer, needs_tokenizer=True))
