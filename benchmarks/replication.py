"""Does a study's answer replicate? Compares finished runs of the same preset made with other
`--seed`s, pair by pair (analysis/verdict.py `replication` and `verdict_agreement`).

    python benchmarks/replication.py runs/rep-s11 runs/rep-s23 [runs/rep-s5 runs/rep-s7 ...]

Experiments are taken two at a time, in the order given. For each pair it prints every
cell's headline test means, their difference and the 95% Welch interval of that difference
(with independent runs a cell lies outside it 1 time in 20: with 20 cells, more than 3
outside is more than chance allows), then every verdict of the two reports side by side.
The last lines give, per pair, the cells outside their interval, the verdicts that differ
(better against worse; or a difference one run found although its effect reached that run's
minimum detectable effect, which the other run should have found 4 times in 5), the paired
effects (method minus baseline) whose difference between the runs lies outside its 95% Welch
interval, and the widest headline interval (the study's target: at most +-2 points).
"""
from __future__ import annotations

import argparse
import math

from scipy import stats

from _common import ROOT  # noqa: F401  (puts the repository on the import path)

from analysis import tables
from analysis.load import load_experiment
from analysis.verdict import replication, verdict_agreement


def headline_half_width(exp) -> float:
    table = tables.gap_table(exp)
    widths = [stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
              for sd, n in zip(table["test_std"], table["n_seeds"]) if n > 1]
    return max(widths) if widths else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="experiment directories, two per pair")
    args = parser.parse_args()
    if len(args.experiments) % 2:
        parser.error(f"experiments: {len(args.experiments)} given; give them in pairs")
    lines = []
    for first, second in zip(args.experiments[::2], args.experiments[1::2]):
        a, b = load_experiment(first), load_experiment(second)
        seeds = f"seed {a.config.get('seed')} vs {b.config.get('seed')}"
        rep = replication(a, b)
        agree = verdict_agreement(a, b)
        print(f"\n== {a.name} vs {b.name} ({seeds})")
        print(f"{'student':<10}{'ratio':>7} {'method':<13}{'A mean':>8}{'n':>4}{'B mean':>8}{'n':>4}"
              f"{'A - B':>7}{'±95%':>6}  within")
        for _, row in rep.iterrows():
            print(f"{row['student']:<10}{row['capacity_ratio']:>7.1f} {row['method']:<13}{row['test_mean_a']:>8.2f}"
                  f"{int(row['n_seeds_a']):>4}{row['test_mean_b']:>8.2f}{int(row['n_seeds_b']):>4}"
                  f"{row['difference']:>+7.2f}{row['ci95_half_width']:>6.2f}  {'yes' if row['within'] else 'NO'}")
        print(f"{'student':<10}{'method':<13}{'vs':<4}{'A: diff (MDE), verdict':<42}{'B: diff (MDE), verdict':<42}"
              f"agree  effects within")
        for _, row in agree.iterrows():
            how = ("yes" if row["agree"] else "CONTRADICT" if row["contradict"] else
                   "NO, beyond MDE" if row["beyond_mde"] else "NO, near MDE")
            print(f"{row['student']:<10}{row['method']:<13}{row['baseline']:<4}"
                  f"{row['mean_diff_a']:+6.2f} ({row['mde_a']:4.2f}) {row['verdict_a']:<28}"
                  f"{row['mean_diff_b']:+6.2f} ({row['mde_b']:4.2f}) {row['verdict_b']:<28}"
                  f"{how:<16}{'yes' if row['effect_within'] else 'NO'}")
        outside = int((~rep["within"]).sum())
        differ = int((~agree["agree"]).sum())
        widest = max(headline_half_width(a), headline_half_width(b))
        lines.append(f"{seeds}: {outside} of {len(rep)} cells outside their 95% interval; "
                     f"{differ} of {len(agree)} verdicts differ ({int(agree['contradict'].sum())} contradict, "
                     f"{int(agree['beyond_mde'].sum())} beyond the detecting run's MDE); "
                     f"{int((~agree['effect_within']).sum())} of {len(agree)} paired effects outside their 95% "
                     f"interval; widest headline interval ±{widest:.2f}")
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
