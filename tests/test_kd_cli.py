"""`python -m kd train --help`: every TrainConfig field is an option, its default said once."""
import re
from dataclasses import fields

from kd.__main__ import build_parser
from kd.config import TrainConfig


def train_help() -> str:
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    return " ".join(train.format_help().split())


def test_every_field_is_an_option_with_its_default_given_once():
    text = train_help()
    for f in fields(TrainConfig):
        option = "--" + f.name.replace("_", "-")
        assert option in text, option
    assert "(default: mnist1d)" in text and "(default: 5000)" in text  # num_samples
    assert not re.search(r"\(default:[^()]*\)[^-]*\(default:", text)
    # a help text that explains its default keeps it and gets no "(default: None)" after it
    assert "(default: 500 for MNIST-1D" in text and "GLUE) (default: None)" not in text
