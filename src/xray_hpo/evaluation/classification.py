"""Test-split metrics: accuracy with a bootstrap interval, macro F1, per-class report."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from xray_hpo.data.manifest import CLASSES
from xray_hpo.evaluation.bootstrap import Interval, bootstrap_draws, bootstrap_mean


def bootstrap_accuracy(y_true: np.ndarray, y_pred: np.ndarray, *, samples: int,
                       confidence: float, seed: int) -> Interval:
    """Percentile bootstrap over test images: how much the accuracy could move by luck."""
    draws = bootstrap_draws(len(y_true), samples=samples, seed=seed)
    return bootstrap_mean(y_true == y_pred, draws, confidence)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, samples: int,
                           confidence: float, seed: int) -> dict[str, Any]:
    labels = list(range(len(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    interval = bootstrap_accuracy(y_true, y_pred, samples=samples, confidence=confidence,
                                  seed=seed)
    return {
        "accuracy": rounded(accuracy_score(y_true, y_pred)),
        "accuracy_ci_low": rounded(interval.low),
        "accuracy_ci_high": rounded(interval.high),
        "confidence": confidence,
        "macro_f1": rounded(f1_score(y_true, y_pred, labels=labels, average="macro",
                                     zero_division=0)),
        "n_test": len(y_true),
        "per_class": {
            cls: {"precision": rounded(precision[i]), "recall": rounded(recall[i]),
                  "f1": rounded(f1[i]), "support": int(support[i])}
            for i, cls in enumerate(CLASSES)
        },
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> list[list[int]]:
    return confusion_matrix(y_true, y_pred, labels=list(range(len(CLASSES)))).tolist()


def rounded(value: float) -> float | None:
    """6 places, so the JSON is stable and readable (far below one test image); an undefined
    metric (NaN: e.g. PPV of a class never predicted) is null, which JSON can hold."""
    value = float(value)
    return None if not np.isfinite(value) else round(value, 6)
