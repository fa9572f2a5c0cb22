"""Tiny GLUE files in GLUE's own layouts (TSV, MRPC's MS release) and in Hugging Face's
(CSV, JSON lines), a word-level tokenizer saved like a Hub one, and a tiny saved BERT.

Sentences are drawn from a small word pool with a seeded RNG; labels follow a simple rule
("good" in the first text: positive / equivalent / entailment) so training has a signal.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

WORDS = ("the", "a", "film", "plot", "cast", "was", "is", "good", "bad", "great", "awful", "not",
         "very", "cat", "dog", "runs", "sits", "\"quoted\"", "it's")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The GLUE tasks and each one's primary metric, written out as the expectation the kd/
# registry must meet (not read from it).
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
GLUE_PRIMARY = {"cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "stsb": "pearson", "qqp": "accuracy",
                "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy"}


def save_tokenizer(folder: Path) -> Path:
    """A BertTokenizerFast over WORDS, saved with save_pretrained (AutoTokenizer loads it)."""
    from transformers import BertTokenizerFast

    words = sorted({w.strip('"') for w in WORDS} | {"'", "s", "it", '"', "quoted"})
    vocab = {w: i for i, w in enumerate([*SPECIAL, *words])}
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(str(folder))
    return folder


def sentence(rng: random.Random, positive: bool | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 7))]
    if positive is not None:
        words.append("good" if positive else "bad")
    return " ".join(words)


def rows(task: str, n: int, seed: int) -> list[dict]:
    """n examples with Hugging Face column names; label ids (float scores for stsb)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = i % 2 if task != "mnli" else i % 3
        if task in ("cola", "sst2"):
            out.append({"sentence": sentence(rng, y == 1), "label": y})
        elif task == "stsb":
            out.append({"sentence1": sentence(rng), "sentence2": sentence(rng), "label": round(rng.uniform(0, 5), 2)})
        else:
            first, second = {"mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2"),
                             "qqp": ("question1", "question2"), "qnli": ("question", "sentence"),
                             "mnli": ("premise", "hypothesis")}[task]
            out.append({first: sentence(rng, y == 0 if task in ("rte", "qnli", "mnli") else y == 1),
                        second: sentence(rng), "label": y})
    return out


LABEL_NAMES = {"mnli": ("entailment", "neutral", "contradiction"), "qnli": ("entailment", "not_entailment"),
               "rte": ("entailment", "not_entailment")}


def _tsv(path: Path, header: list[str] | None, lines: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("\t".join(header) + "\n" if header else "") + "".join("\t".join(map(str, line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")


def write_glue_tsv(root: Path, task: str, n_train: int = 40, n_dev: int = 12) -> Path:
    """GLUE's TSV layout of one task under root/<Folder>/ (as GLUE's download script writes it)."""
    folder = root / {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
                     "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE"}[task]
    splits = {"train": rows(task, n_train, 1)}
    if task == "mnli":
        splits.update(dev_matched=rows(task, n_dev, 2), dev_mismatched=rows(task, n_dev + 3, 3))
    else:
        splits["dev"] = rows(task, n_dev, 2)
    for split, examples in splits.items():
        path = folder / f"{split}.tsv"
        names = LABEL_NAMES.get(task)
        label = lambda r: names[r["label"]] if names else r["label"]
        if task == "cola":  # no header: source, label, original label, sentence
            _tsv(path, None, [["gj04", r["label"], "" if r["label"] else "*", r["sentence"]] for r in examples])
        elif task == "sst2":
            _tsv(path, ["sentence", "label"], [[r["sentence"], r["label"]] for r in examples])
        elif task == "mrpc":  # with the byte-order mark GLUE's file carries
            _tsv(path, ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                 [[r["label"], 2 * i, 2 * i + 1, r["sentence1"], r["sentence2"]] for i, r in enumerate(examples)])
        elif task == "stsb":
            _tsv(path, ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                        "sentence2", "score"],
                 [[i, "main", "f", "2012", i, "none", "none", r["sentence1"], r["sentence2"], r["label"]]
                  for i, r in enumerate(examples)])
        elif task == "qqp":
            lines = [[i, 2 * i, 2 * i + 1, r["question1"], r["question2"], r["label"]] for i, r in enumerate(examples)]
            if split == "train":
                lines.insert(3, [999, 1, 2, "a line cut short"])  # as GLUE's QQP has a few
            _tsv(path, ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], lines)
        elif task == "mnli":
            header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                      "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
            _tsv(path, header, [[i, i, f"{i}e", "fiction", "(", "(", "(", "(", r["premise"], r["hypothesis"],
                                 label(r), label(r)] for i, r in enumerate(examples)])
        elif task == "qnli":
            _tsv(path, ["index", "question", "sentence", "label"],
                 [[i, r["question"], r["sentence"], label(r)] for i, r in enumerate(examples)])
        elif task == "rte":
            _tsv(path, ["index", "sentence1", "sentence2", "label"],
                 [[i, r["sentence1"], r["sentence2"], label(r)] for i, r in enumerate(examples)])
    return folder


def write_mrpc_ms_release(root: Path, n_train: int = 40, n_dev: int = 10, n_test: int = 12) -> Path:
    """MRPC as Microsoft distributes it (msr_paraphrase_*.txt) plus GLUE's dev_ids.tsv."""
    folder = root / "MRPC"
    header = ["\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    train = rows("mrpc", n_train, 1)
    _tsv(folder / "msr_paraphrase_train.txt", header,
         [[r["label"], 100 + i, 200 + i, r["sentence1"], r["sentence2"]] for i, r in enumerate(train)])
    _tsv(folder / "msr_paraphrase_test.txt", header,
         [[r["label"], 900 + i, 950 + i, r["sentence1"], r["sentence2"]]
          for i, r in enumerate(rows("mrpc", n_test, 2))])
    _tsv(folder / "dev_ids.tsv", None, [[100 + i, 200 + i] for i in range(0, 2 * n_dev, 2)])
    return folder


def write_glue_hf(root: Path, task: str, fmt: str, n_train: int = 40, n_dev: int = 12,
                  label_names: bool = False) -> Path:
    """Hugging Face column names as .csv, .jsonl or .json (JSON lines), train + validation."""
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": rows(task, n_train, 1)}
    if task == "mnli":
        splits.update(validation_matched=rows(task, n_dev, 2), validation_mismatched=rows(task, n_dev, 3))
    else:
        splits["validation"] = rows(task, n_dev, 2)
    for split, examples in splits.items():
        if label_names and task in LABEL_NAMES:
            examples = [{**r, "label": LABEL_NAMES[task][r["label"]]} for r in examples]
        path = folder / f"{split}.{fmt}"
        if fmt == "csv":
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(examples[0]))
                writer.writeheader()
                writer.writerows(examples)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in examples), encoding="utf-8")
    return folder


def save_tiny_bert(folder: Path, num_labels: int = 2) -> Path:
    """A tiny BertForSequenceClassification written with save_pretrained (an `hf:` model),
    with the tokenizer of save_tokenizer beside it, as on the Hub."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    vocab = len(AutoTokenizer.from_pretrained(str(save_tokenizer(folder))))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder
