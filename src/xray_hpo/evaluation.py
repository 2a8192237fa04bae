"""Test-split metrics: accuracy with a bootstrap interval, macro F1, per-class report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from xray_hpo.data.manifest import CLASSES


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_accuracy(y_true: np.ndarray, y_pred: np.ndarray, *, samples: int,
                       confidence: float, seed: int) -> Interval:
    """Percentile bootstrap over test images: how much the accuracy could move by luck."""
    rng = np.random.default_rng(seed)
    correct = (y_true == y_pred).astype(np.float64)
    draws = rng.integers(0, len(correct), size=(samples, len(correct)))
    accuracies = correct[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(accuracies, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, samples: int,
                           confidence: float, seed: int) -> dict[str, Any]:
    labels = list(range(len(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    interval = bootstrap_accuracy(y_true, y_pred, samples=samples, confidence=confidence,
                                  seed=seed)
    return {
        "accuracy": _r(accuracy_score(y_true, y_pred)),
        "accuracy_ci_low": _r(interval.low),
        "accuracy_ci_high": _r(interval.high),
        "confidence": confidence,
        "macro_f1": _r(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "n_test": len(y_true),
        "per_class": {
            cls: {"precision": _r(precision[i]), "recall": _r(recall[i]), "f1": _r(f1[i]),
                  "support": int(support[i])}
            for i, cls in enumerate(CLASSES)
        },
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> list[list[int]]:
    return confusion_matrix(y_true, y_pred, labels=list(range(len(CLASSES)))).tolist()


def _r(value: float) -> float:
    # Rounded so the JSON is stable and readable; 6 places is far below one test image.
    return round(float(value), 6)
