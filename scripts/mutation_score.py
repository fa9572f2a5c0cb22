"""`make mutation`'s score: mutmut's results, with the equivalent mutants set apart.

A mutant is equivalent when no input the code accepts can tell it from the original (e.g.
`squeeze(+1)` for `squeeze(-1)` on a [B, 1] tensor). scripts/equivalent_mutants.txt names
each one by its function and its mutated line, with the reason, so the list survives
mutmut renumbering its mutants. scripts/gpu_only_mutants.txt lists, the same way, survivors
that differ from the original only on a CUDA device (`.to(device)`, channels_last, bf16
autocast): explained, but not killed on a machine without one, so they count against the
score. Every other survivor is printed; exit code 1 when the score (killed / non-equivalent
mutants) is below --target.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

MUTMUT = Path(sys.executable).with_name("mutmut")
EQUIVALENTS = Path(__file__).with_name("equivalent_mutants.txt")
GPU_ONLY = Path(__file__).with_name("gpu_only_mutants.txt")
# a mutant whose tests hang (an endless loop) is found out by mutmut's timeout
DETECTED = ("killed", "timeout")
NAME = re.compile(r"^\s*(\S+__mutmut_\d+): (.+)$")


def results() -> dict[str, str]:
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], capture_output=True, text=True, check=True).stdout
    return {m.group(1): m.group(2).strip() for line in out.splitlines() if (m := NAME.match(line))}


def function_of(name: str) -> str:
    """kd.losses.x__check_temperature__mutmut_1 -> kd.losses._check_temperature (mutmut's x_
    prefix); methods: kd.methods.annealing.xǁAnnealingKDǁlosses__mutmut_3 -> ....AnnealingKD.losses."""
    module, _, rest = name.rpartition(".x")
    rest = rest.rsplit("__mutmut_", 1)[0]
    rest = rest.strip("ǁ").replace("ǁ", ".") if rest.startswith("ǁ") else rest[1:]
    return f"{module}.{rest}"


def mutated_lines(name: str) -> tuple[str, ...]:
    diff = subprocess.run([str(MUTMUT), "show", name], capture_output=True, text=True, check=True).stdout
    return tuple(line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))


def equivalents(path: Path = EQUIVALENTS) -> dict[tuple[str, str], str]:
    """(function, mutated line) -> reason, from lines `function | mutated line | reason`."""
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            function, mutated, reason = (part.strip() for part in line.split(" | ", 2))
            table[(function, mutated)] = reason
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=95.0, help="lowest score allowed (%% killed of the "
                                                                   "non-equivalent mutants)")
    args = parser.parse_args()
    everything = results()
    status = {name: state for name, state in everything.items() if state != "not checked"}
    unchecked = len(everything) - len(status)
    if not status:
        print("error: mutmut has no results; run `mutmut run` first", file=sys.stderr)
        return 2
    known, gpu_known = equivalents(), equivalents(GPU_ONLY)
    per_module: Counter = Counter()
    equivalent, gpu_only, unexplained = [], [], []
    for name, state in sorted(status.items()):
        module = name.rpartition(".x")[0]
        per_module[(module, state)] += 1
        if state in DETECTED:
            continue
        lines = mutated_lines(name)
        key = (function_of(name), lines[0] if lines else "")
        survived = state == "survived"
        group = equivalent if survived and key in known else gpu_only if survived and key in gpu_known else unexplained
        group.append((name, state, key))
    killed = sum(state in DETECTED for state in status.values())
    timeouts = sum(state == "timeout" for state in status.values())
    scored = len(status) - len(equivalent)
    score = 100.0 * killed / scored if scored else 100.0
    for module in sorted({m for m, _ in per_module}):
        states = {s: n for (m, s), n in per_module.items() if m == module}
        print(f"{module:22s} " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    print(f"\n{len(status)} mutants: {killed} killed ({timeouts} by a timeout), {len(equivalent)} equivalent "
          f"(scripts/{EQUIVALENTS.name}), {len(gpu_only)} not killed that differ only on a GPU "
          f"(scripts/{GPU_ONLY.name}), {len(unexplained)} not killed and not explained")
    if unchecked:
        print(f"{unchecked} mutants not checked (an interrupted run): `mutmut run` goes on with them")
    for name, state, (function, line) in unexplained:
        print(f"  {state:9s} {name}: {line}")
    print(f"mutation score: {score:.1f}% of {scored} non-equivalent mutants killed (target {args.target:.0f}%)")
    return 0 if score >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
