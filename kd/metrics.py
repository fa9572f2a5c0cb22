"""What a dataset's predictions are scored with: accuracy for images, the GLUE metrics for text.

A `Task` says whether the labels are classes or real numbers and which metrics score the
predictions; the first metric is the primary one (checkpoint selection, pruning, the
headline numbers). The metric functions are pure numpy and follow scikit-learn's and
SciPy's definitions (tests check them against both), so kd needs neither at run time.
Every value is returned x100, like accuracy in percent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

TASK_KINDS = ("classification", "regression")


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean())


def f1_binary(pred: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class 1 (sklearn.metrics.f1_score, binary; 0 when undefined)."""
    tp = float(((pred == 1) & (labels == 1)).sum())
    wrong = float((pred != labels).sum())
    return tp / (tp + wrong / 2) if tp + wrong > 0 else 0.0


def matthews_corrcoef(pred: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass MCC from the confusion matrix (sklearn's formula; 0 when undefined)."""
    classes = np.union1d(pred, labels)
    t = np.array([(labels == c).sum() for c in classes], dtype=np.float64)
    p = np.array([(pred == c).sum() for c in classes], dtype=np.float64)
    correct, n = float((pred == labels).sum()), float(len(labels))
    denominator = np.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((correct * n - t @ p) / denominator) if denominator > 0 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r (scipy.stats.pearsonr); 0 when either side is constant, where r is
    undefined: an untrained regressor's constant output must not break checkpoint selection."""
    x, y = x.astype(np.float64) - x.mean(), y.astype(np.float64) - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2  # mean of the ranks start+1 .. end
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks (scipy.stats.spearmanr)."""
    return pearson(average_ranks(x), average_ranks(y))


METRICS = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef,
           "pearson": pearson, "spearman": spearman}


@dataclass(frozen=True)
class Task:
    kind: str = "classification"
    metrics: tuple[str, ...] = ("accuracy",)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"kind: {self.kind!r} is not allowed; allowed: {', '.join(TASK_KINDS)}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if not self.metrics or unknown:
            raise ValueError(f"metrics: {list(self.metrics)!r} is not allowed; name one or more of "
                             f"{', '.join(METRICS)}")

    @property
    def primary(self) -> str:
        return self.metrics[0]

    @property
    def regression(self) -> bool:
        return self.kind == "regression"

    def predictions(self, logits: torch.Tensor) -> np.ndarray:
        out = logits.detach().float().cpu()
        return (out[:, 0] if self.regression else out.argmax(1)).numpy()

    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Every metric of the task (x100) of logits [N, C] (regression: C = 1) against labels."""
        pred, y = self.predictions(logits), labels.detach().cpu().numpy()
        return {name: 100.0 * METRICS[name](pred, y) for name in self.metrics}


CLASSIFICATION = Task()
