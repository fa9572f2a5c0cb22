"""Prints the `uv pip install` options that make uv read the package indexes pip reads.

`make install` installs with uv: the same pinned packages as pip, about ten times faster on
a fresh machine (most of the time goes into unpacking torch's CUDA wheels). pip's index
settings (files and PIP_* variables, as `pip config list` shows them) are passed on, so uv
sees the same local mirrors, wheel folders and constraints.
"""
from __future__ import annotations

import shlex
import subprocess
import sys

# pip setting -> uv option; a setting may hold several space-separated values
OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
           "find-links": "--find-links", "constraint": "--constraint"}


def uv_args(pip_config: str) -> list[str]:
    pairs: list[tuple[str, str]] = []  # (option, value) in pip's order, each once
    for line in pip_config.splitlines():
        key, _, value = line.partition("=")
        option = OPTIONS.get(key.rpartition(".")[2])
        for item in shlex.split(value) if option else []:
            pairs += [(option, part) for part in item.split() if (option, part) not in pairs]
    args = [word for pair in pairs for word in pair]
    if "--extra-index-url" in args:
        # pip picks the best version across every index; uv's default stops at the first
        # index that has the package at all
        args += ["--index-strategy", "unsafe-best-match"]
    return args


if __name__ == "__main__":
    found = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    print(shlex.join(uv_args(found.stdout)))
