"""Text to tensors: tokenizers, tokenisation into [N, 2, L] ids, a disk cache, the Data.

Every example becomes two rows of ``L`` int64 values: token ids and token type ids
(segment A / B of a sentence pair), right-padded with the tokenizer's padding id to the
longest example of its split, ``L <= max_length`` (truncation: the longest of the two
texts first, as Hugging Face's ``longest_first``). Batches are trimmed further by
``Data.inputs`` (dynamic padding); the model derives the attention mask (ids != pad).

Tokenising QQP or MNLI (~400k pairs) takes minutes, so the tensors are cached on disk
under a key of everything that fixes them; trials on a node then read one file.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch

from kd.data import Data, dataset_info, split_validation

CACHE_FORMAT = 1
_CHUNK = 10_000  # examples per tokenizer call: bounded memory on 400k-pair tasks


@lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str):
    """AutoTokenizer.from_pretrained(name_or_path): a Hub name or a saved folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"tokenizer: {name_or_path!r} cannot be loaded ({error}); give a Hub "
                                f"name (with network or a filled HF cache) or a folder written by "
                                f"save_pretrained") from error


def model_kwargs(tokenizer, max_length: int) -> dict[str, int]:
    """What a text model built from a config needs to match the tokenizer."""
    return {"vocab_size": len(tokenizer), "pad_token_id": int(tokenizer.pad_token_id),
            "max_length": int(max_length)}


def run_tokenizer(cfg):
    """The tokenizer a run of cfg reads its text with."""
    return load_tokenizer(dataset_info(cfg.dataset).tokenizer(cfg))


def model_kwargs_for(cfg) -> dict[str, int]:
    """Data.model_kwargs of cfg's data without loading the data (only the tokenizer): what
    parameter counts and stored text models need. Empty for image and signal datasets."""
    if dataset_info(cfg.dataset).tokenizer is None:
        return {}
    return model_kwargs(run_tokenizer(cfg), cfg.max_length)


def encode(tokenizer, first: Sequence[str], second: Sequence[str] | None, max_length: int) -> torch.Tensor:
    """int64 [N, 2, L]: token ids and token type ids, right-padded to the longest example."""
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer: it has no padding token; text batches need one")
    ids: list[list[int]] = []
    types: list[list[int]] = []
    for start in range(0, len(first), _CHUNK):
        a = list(first[start:start + _CHUNK])
        b = list(second[start:start + _CHUNK]) if second is not None else None
        out = tokenizer(a, b, truncation=True, max_length=max_length, return_token_type_ids=True,
                        return_attention_mask=False)
        ids += out["input_ids"]
        types += out["token_type_ids"]
    length = max((len(row) for row in ids), default=1)
    x = torch.full((len(ids), 2, length), tokenizer.pad_token_id, dtype=torch.int64)
    x[:, 1] = 0
    for i, (row, typ) in enumerate(zip(ids, types)):
        x[i, 0, :len(row)] = torch.tensor(row)
        x[i, 1, :len(typ)] = torch.tensor(typ)
    return x


def cache_root(data_dir: str | None) -> Path:
    """<data_dir>/.kd-cache when the data is local, else $KD_CACHE or ~/.cache/kd."""
    if data_dir:
        return Path(data_dir).expanduser().resolve() / ".kd-cache"
    return Path(os.environ.get("KD_CACHE", Path.home() / ".cache" / "kd")).expanduser()


def cached_tensors(root: Path, key_payload: dict[str, Any], build) -> dict[str, torch.Tensor]:
    """build() -> dict of tensors, stored under a hash of key_payload; written atomically, so
    concurrent trials at worst build it twice, never read half a file."""
    key = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **key_payload}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:24]
    path = root / f"{key_payload.get('dataset', 'text')}-{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            pass
    tensors = build()
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(tensors, tmp)
    tmp.replace(path)
    return tensors


def text_data(cfg, tokenizer, tensors: dict[str, torch.Tensor], val_size: int) -> Data:
    """Data from cached splits: train_x/train_y, test_x/test_y and optional extra test sets
    (<suffix>_x/<suffix>_y); validation is held out of train with cfg.data_seed."""
    info = dataset_info(cfg.dataset)
    train_idx, val_idx = split_validation(len(tensors["train_x"]), val_size, cfg.data_seed)
    x, y = tensors["train_x"], tensors["train_y"]
    extra = {k[:-2]: (tensors[k], tensors[k[:-2] + "_y"]) for k in tensors
             if k.endswith("_x") and k not in ("train_x", "test_x")}
    return Data(cfg.dataset, info.num_classes, x[train_idx], y[train_idx], x[val_idx], y[val_idx],
                tensors["test_x"], tensors["test_y"], task=info.task, pad_id=int(tokenizer.pad_token_id),
                extra_test=extra, model_kwargs=model_kwargs(tokenizer, cfg.max_length))
