"""Tests for kd.models: parameter counts, shapes, gradients, registry errors."""
from __future__ import annotations

import pytest
import torch

from kd.models import (INPUT_SHAPES, MODELS, build_model, count_parameters, model_input)
from kd.models.cifar_resnet import BasicBlock
from kd.registry import UnknownNameError

# SPEC.md section 3, copied by hand: depth -> (CIFAR-10, CIFAR-100) parameter counts.
RESNET_PARAMS = {
    8: (78_042, 83_892),
    14: (175_258, 181_108),
    20: (272_474, 278_324),
    32: (466_906, 472_756),
    56: (855_770, 861_620),
    110: (1_730_714, 1_736_564),
}


@pytest.mark.parametrize("depth", sorted(RESNET_PARAMS))
@pytest.mark.parametrize("column,num_classes", [(0, 10), (1, 100)])
def test_resnet_parameter_counts_match_spec(depth, column, num_classes):
    model = build_model(f"resnet{depth}", num_classes)
    assert count_parameters(model) == RESNET_PARAMS[depth][column]


@pytest.mark.parametrize("depth,blocks", [(14, 6), (26, 12), (44, 21)])
def test_resnet_depth_is_6n_plus_2(depth, blocks):
    # n = (depth - 2) / 6 BasicBlocks per stage, three stages.
    model = build_model(f"resnet{depth}", 10)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == blocks


def test_count_parameters_ignores_frozen():
    model = build_model("mlp1d_8", 10)
    total = count_parameters(model)
    model.net[1].weight.requires_grad_(False)  # Linear(40, 8).weight
    assert count_parameters(model) == total - 40 * 8


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_backward_every_model(name):
    torch.manual_seed(0)
    num_classes = 10
    model = build_model(name, num_classes)
    model.train()
    x = torch.randn(2, *INPUT_SHAPES[model_input(name)])
    out = model(x)
    assert out.shape == (2, num_classes)
    out.logsumexp(dim=1).sum().backward()  # depends on every output logit
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", ["plain2", "plain4", "plain6", "plain8", "plain10"])
@pytest.mark.parametrize("num_classes", [100, 7])
def test_plain_cnn_other_class_counts(name, num_classes):
    model = build_model(name, num_classes).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, num_classes)


def test_plain2_cifar10_parameter_count_by_hand():
    # plain2, 10 classes: [Conv16, MaxPool, Conv16, MaxPool, FC10]; convs carry a bias.
    # Conv 3->16:  3*16*9 + 16  =    448;  BN(16): 2*16 = 32
    # Conv 16->16: 16*16*9 + 16 =  2,320;  BN(16): 2*16 = 32
    # two max pools: 32 -> 16 -> 8, so FC input = 16*8*8 = 1,024
    # FC 1024->10: 1024*10 + 10 = 10,250
    # total: 448 + 32 + 2,320 + 32 + 10,250 = 13,082
    assert count_parameters(build_model("plain2", 10)) == 13_082


def test_input_kinds():
    assert model_input("resnet8") == "image"
    assert model_input("plain10") == "image"
    assert model_input("cnn1d_64") == "signal"
    assert model_input("mlp1d_8") == "signal"
    for name in MODELS.names():
        assert model_input(name) in ("image", "signal")


@pytest.mark.parametrize("call", [lambda: build_model("resnet9", 10), lambda: model_input("resnet9"),
                                  lambda: MODELS.get("resnet9", field="model")])
def test_unknown_name_lists_allowed(call):
    with pytest.raises(UnknownNameError) as info:
        call()
    message = str(info.value)
    assert message.startswith("model:")
    assert "'resnet9'" in message
    for allowed in ("resnet8", "resnet110", "plain2", "cnn1d_64", "mlp1d_8"):
        assert allowed in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)


@pytest.mark.parametrize("bad", [0, 1, -3, 2.5, True])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError):
        build_model("resnet8", bad)


MNIST1D_LADDER = ["cnn1d_64", "cnn1d_32", "cnn1d_16", "cnn1d_8", "mlp1d_64", "cnn1d_4", "mlp1d_32", "mlp1d_16",
                  "mlp1d_8"]


def test_mnist1d_ladder_order_and_ratio():
    from kd.models.mnist1d import LADDER

    assert list(LADDER) == MNIST1D_LADDER
    counts = [count_parameters(build_model(name, 10)) for name in MNIST1D_LADDER]
    assert all(a > b for a, b in zip(counts, counts[1:])), dict(zip(MNIST1D_LADDER, counts))
    assert counts[0] >= 50 * counts[-1]


def test_mlp1d_8_parameter_count_by_hand():
    # Linear(40, 8): 40*8 + 8 = 328; Linear(8, 10): 8*10 + 10 = 90; total 418
    assert count_parameters(build_model("mlp1d_8", 10)) == 418
