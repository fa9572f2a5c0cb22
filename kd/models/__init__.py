"""Architectures, registered by name (plain PyTorch; never imports Ray).

Registration convention
-----------------------
Every architecture module registers a *factory* ``f(num_classes) -> nn.Module`` with
``@MODELS.register("name")`` (families such as ``bert_L<layers>_H<hidden>`` and
``hf:<name>`` register a pattern instead, see kd/models/text.py).  Each factory also declares the input it expects by
carrying an ``input_kind`` attribute, set with the :func:`takes` decorator placed
*below* the registration decorator::

    @MODELS.register("cnn1d_64")
    @takes("signal")
    def cnn1d_64(num_classes: int) -> nn.Module: ...

Input kinds (see :data:`INPUT_SHAPES`):

* ``"image"``  -- float tensor ``[B, 3, 32, 32]`` (CIFAR-10/100)
* ``"signal"`` -- float tensor ``[B, 1, 40]`` (MNIST-1D)
* ``"text"``   -- int64 tensor ``[B, 2, L]``: token ids and token type ids, ``L <= max_length``
  (GLUE, template-text). Text factories also take the keyword arguments of
  ``Data.model_kwargs`` (vocabulary size, padding id, max_length) and ``pretrained``.

Importing ``kd.models`` imports the architecture modules so that they register.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from kd.registry import Registry, UnknownNameError

ModelFactory = Callable[[int], nn.Module]

#: name -> factory(num_classes); each factory carries an ``input_kind`` attribute.
MODELS: Registry[ModelFactory] = Registry("model")

#: Per-example input shape of each input kind (batch dimension excluded).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "image": (3, 32, 32),
    "signal": (1, 40),
    "text": (2, 128),  # L varies per batch (dynamic padding); 128 is the GLUE maximum
}


def takes(kind: str) -> Callable[[ModelFactory], ModelFactory]:
    """Mark a model factory with the input kind it expects ("image", "signal" or "text")."""
    if kind not in INPUT_SHAPES:
        raise ValueError(f"unknown input kind {kind!r}; allowed: {', '.join(sorted(INPUT_SHAPES))}")

    def decorator(factory: ModelFactory) -> ModelFactory:
        factory.input_kind = kind  # type: ignore[attr-defined]
        return factory

    return decorator


def model_input(name: str) -> str:
    """The input kind ("image", "signal" or "text") the registered model ``name`` expects."""
    factory = MODELS.get(name, field="model")
    kind = getattr(factory, "input_kind", None)
    if kind not in INPUT_SHAPES:  # a registration mistake, not a user error
        raise TypeError(f"model {name!r} was registered without a valid input kind (use @takes)")
    return kind


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Instantiate the registered model ``name`` with ``num_classes`` outputs.

    Text models take ``Data.model_kwargs`` and ``pretrained`` (False: the architecture
    without downloading weights) as keyword arguments and allow ``num_classes = 1``
    (a regression score); other models take none.
    """
    factory = MODELS.get(name, field="model")
    text = model_input(name) == "text"
    lowest = 1 if text else 2
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < lowest:
        raise ValueError(f"num_classes must be an integer >= {lowest}, got {num_classes!r}")
    return factory(num_classes, **kwargs) if text else factory(num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Import the architecture modules so that they register (must stay after MODELS/takes).
from kd.models import cifar_resnet, mnist1d, plain_cnn, text  # noqa: E402,F401

__all__ = [
    "INPUT_SHAPES",
    "MODELS",
    "UnknownNameError",
    "build_model",
    "count_parameters",
    "model_input",
    "takes",
]
