"""template-text: a small sentiment set generated offline, the text test bed.

Each sentence is built from templates, e.g. "maria said the soup was not very good ,
although the service was awful". Its label follows a rule a model has to learn: the
polarity of the main clause's adjective, flipped by a negation ("not", "never", "hardly")
in that clause; the "although ..." clause is a distractor with its own adjective. A
bag of words cannot solve it (negation and clause order matter), a two-layer transformer
can, and smaller ones learn part of it: a teacher-student gap within seconds on a CPU.

The vocabulary is closed, so the tokenizer is a word-level BertTokenizerFast built from
it, saved with save_pretrained and loaded back through AutoTokenizer (the same path a Hub
tokenizer takes). Examples: ``num_samples`` (80% train with validation held out, 20% test).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from functools import lru_cache
from pathlib import Path

import torch

from kd.data import Data, DatasetInfo, register
from kd.metrics import Task

NAMES = ("maria", "john", "the critic", "my friend", "the chef", "anna", "the guests", "tom")
VERBS = ("said", "thought", "felt", "wrote", "claimed", "agreed")
NOUNS = ("soup", "movie", "service", "hotel", "book", "concert", "meal", "room", "show", "game")
POSITIVE = ("good", "great", "excellent", "lovely", "superb", "pleasant", "fine", "wonderful")
NEGATIVE = ("bad", "awful", "terrible", "poor", "boring", "dreadful", "weak", "horrible")
NEGATIONS = ("not", "never", "hardly")
INTENSIFIERS = ("very", "quite", "really", "rather", "so")
CONNECTORS = ("although", "while", "even though")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GENERATOR_SEED = 1234
TASK = Task("classification", ("accuracy", "f1", "mcc"))


def vocabulary() -> list[str]:
    words = {w for group in (NAMES, VERBS, NOUNS, POSITIVE, NEGATIVE, NEGATIONS, INTENSIFIERS, CONNECTORS)
             for phrase in group for w in phrase.split()}
    return [*SPECIAL, *sorted(words | {"the", "was", ",", "it"})]


def sentence(rng: random.Random) -> tuple[str, int]:
    positive = rng.random() < 0.5
    negated = rng.random() < 0.4
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    words = [rng.choice(NAMES), rng.choice(VERBS), "the", rng.choice(NOUNS), "was"]
    if negated:
        words.append(rng.choice(NEGATIONS))
    if rng.random() < 0.5:
        words.append(rng.choice(INTENSIFIERS))
    words.append(adjective)
    if rng.random() < 0.6:  # the distractor clause, with an adjective of either polarity
        clause = [rng.choice(CONNECTORS), "the", rng.choice(NOUNS), "was", rng.choice(POSITIVE + NEGATIVE)]
        words = [*words, ",", *clause] if rng.random() < 0.5 else [*clause, ",", *words]
    return " ".join(words), int(positive != negated)


@lru_cache(maxsize=4)
def generate(num_samples: int, seed: int = GENERATOR_SEED) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    pairs = [sentence(rng) for _ in range(num_samples)]
    return [s for s, _ in pairs], [y for _, y in pairs]


def tokenizer_folder(root: Path) -> Path:
    """The word-level tokenizer of the closed vocabulary, saved once per vocabulary."""
    from transformers import BertTokenizerFast

    vocab = vocabulary()
    folder = root / f"template-text-tokenizer-{hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:12]}"
    if not (folder / "tokenizer_config.json").is_file():
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        tokenizer.save_pretrained(str(tmp))
        try:
            tmp.rename(folder)
        except OSError:  # another process saved the same files first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def tokenizer_name(cfg) -> str:
    from kd.data.text import cache_root

    return cfg.tokenizer or str(tokenizer_folder(cache_root(cfg.data_dir)))


def load_template_text(cfg) -> Data:
    from kd.data.text import encode, run_tokenizer, text_data

    tokenizer = run_tokenizer(cfg)
    sentences, labels = generate(cfg.num_samples)
    x, y = encode(tokenizer, sentences, None, cfg.max_length), torch.tensor(labels)
    n_train = int(0.8 * len(x))
    tensors = {"train_x": x[:n_train], "train_y": y[:n_train], "test_x": x[n_train:], "test_y": y[n_train:]}
    return text_data(cfg, tokenizer, tensors, cfg.resolved_val_size)


register(DatasetInfo("template-text", "text", 2, TASK, load_template_text, 500, tokenizer=tokenizer_name,
                     generated=True))
