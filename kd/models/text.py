"""Text classifiers: BERT-family encoders through `transformers`, behind one wrapper.

Two name families (registry patterns, so any member works without a list):

* ``bert_L<layers>_H<hidden>``: a BertForSequenceClassification built from a BertConfig,
  randomly initialised: hidden size H, H/64 attention heads (at least 1; H must divide
  by them), feed-forward 4H, vocabulary and padding id from the run's tokenizer, as many
  positions as the run's max_length. A capacity ladder that exists offline.
* ``hf:<name or path>``: AutoModelForSequenceClassification.from_pretrained: pretrained
  encoders (``hf:distilroberta-base``, the BERT miniatures
  ``hf:google/bert_uncased_L-4_H-256_A-4``, ...) get a new classification head; a folder
  written by save_pretrained works the same way. A fine-tuned teacher is loaded with
  ``keep_head=True``: its head must already fit the task.

The wrapper takes the trainer's text batches, int64 ``[B, 2, L]`` (token ids, token type
ids), builds the attention mask from the ids (ids != padding id) and returns the logits
``[B, num_classes]`` (``num_classes = 1``: a regression score, STS-B).
"""
from __future__ import annotations

import inspect
import re

import torch
from torch import nn

from kd.errors import ConfigError
from kd.models import MODELS, takes

FEED_FORWARD_FACTOR = 4
HEAD_SIZE = 64


class TextClassifier(nn.Module):
    def __init__(self, model: nn.Module, pad_token_id: int):
        super().__init__()
        self.model = model
        self.pad_token_id = int(pad_token_id)
        # DistilBERT-style models have no segment embeddings and refuse token_type_ids.
        self.uses_token_types = "token_type_ids" in inspect.signature(model.forward).parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, 0]
        extra = {"token_type_ids": x[:, 1]} if self.uses_token_types else {}
        out = self.model(input_ids=ids, attention_mask=(ids != self.pad_token_id).long(), **extra)
        return out.logits


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()  # "newly initialized head" notices on every student


def _num_heads(hidden: int) -> int:
    heads = max(1, hidden // HEAD_SIZE)
    if hidden % heads:
        raise ConfigError(f"model: hidden size {hidden} is not allowed; it must be divisible by its "
                         f"{heads} attention heads (H/64)")
    return heads


def check_tokenizer_fits(name: str, vocab_size: int, pad_token_id: int, kwargs: dict) -> None:
    """A pretrained model must read the run's token ids: same padding id, no id past its vocabulary."""
    if "pad_token_id" in kwargs and int(kwargs["pad_token_id"]) != int(pad_token_id):
        raise ConfigError(f"tokenizer: its padding id {kwargs['pad_token_id']} is not allowed with model "
                          f"{name!r}, which pads with {pad_token_id}; use the model's own tokenizer")
    if int(kwargs.get("vocab_size", 0)) > vocab_size:
        raise ConfigError(f"tokenizer: its {kwargs['vocab_size']} tokens are not allowed with model {name!r}, "
                          f"whose vocabulary has {vocab_size}; use the model's own tokenizer")


def bert_config(layers: int, hidden: int, num_classes: int, vocab_size: int, pad_token_id: int,
                max_length: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=_num_heads(hidden), intermediate_size=FEED_FORWARD_FACTOR * hidden,
                      max_position_embeddings=max_length, pad_token_id=pad_token_id, num_labels=num_classes)


def _text_kwargs(name: str, kwargs: dict) -> tuple[int, int, int]:
    missing = [k for k in ("vocab_size", "pad_token_id", "max_length") if k not in kwargs]
    if missing:
        raise ValueError(f"model: {name!r} needs {', '.join(missing)} (from the run's tokenizer); "
                         f"build it with kd.models.build_model(name, num_classes, **data.model_kwargs)")
    return int(kwargs["vocab_size"]), int(kwargs["pad_token_id"]), int(kwargs["max_length"])


@MODELS.register_pattern(r"bert_L([1-9]\d*)_H([1-9]\d*)", "bert_L<layers>_H<hidden>")
def _bert_family(match: re.Match):
    layers, hidden = int(match.group(1)), int(match.group(2))
    _num_heads(hidden)

    @takes("text")
    def factory(num_classes: int, pretrained: bool = True, **kwargs) -> nn.Module:
        from transformers import BertForSequenceClassification

        _quiet_transformers()
        vocab_size, pad_token_id, max_length = _text_kwargs(match.group(0), kwargs)
        config = bert_config(layers, hidden, num_classes, vocab_size, pad_token_id, max_length)
        return TextClassifier(BertForSequenceClassification(config), pad_token_id)

    return factory


@MODELS.register_pattern(r"hf:(.+)", "hf:<Hugging Face name or folder>")
def _hugging_face(match: re.Match):
    source = match.group(1)

    @takes("text")
    def factory(num_classes: int, pretrained: bool = True, keep_head: bool = False, **kwargs) -> nn.Module:
        from transformers import AutoConfig, AutoModelForSequenceClassification

        _quiet_transformers()
        try:
            if pretrained:
                # A student gets a new head when the checkpoint's has another size; a fine-tuned
                # teacher (keep_head) must fit as it is.
                model = AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=num_classes, ignore_mismatched_sizes=not keep_head)
            else:  # the architecture only (parameter counts, or weights loaded next from a store)
                config = AutoConfig.from_pretrained(source, num_labels=num_classes)
                model = AutoModelForSequenceClassification.from_config(config)
        except OSError as error:
            raise FileNotFoundError(f"model: {match.group(0)!r} cannot be loaded ({error}); give a Hub "
                                    f"name (with network or a filled HF cache) or a save_pretrained "
                                    f"folder") from error
        pad = model.config.pad_token_id
        if pad is None:
            pad = kwargs.get("pad_token_id", 0)
        check_tokenizer_fits(match.group(0), model.get_input_embeddings().num_embeddings, pad, kwargs)
        return TextClassifier(model, pad)

    return factory
