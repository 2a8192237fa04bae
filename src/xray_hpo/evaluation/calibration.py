"""Are the model's probabilities honest? Brier score, expected calibration error (ECE) and
the reliability diagram behind it.

The diagram bins each image's *confidence* (its highest class probability) into equal-width
bins and compares it with how often that top class was right. Bins and per-bin values are
scikit-learn's ``calibration_curve``; ECE is the image-weighted mean gap |accuracy -
confidence| over those bins (Guo et al., 2017), which sklearn does not ship.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from xray_hpo.data.manifest import CLASSES
from xray_hpo.evaluation.classification import rounded

N_BINS = 10


@dataclass(frozen=True)
class ReliabilityBin:
    low: float  # bin edges on the confidence axis, (low, high]
    high: float
    confidence: float  # mean top-class probability of the images in the bin
    accuracy: float  # share of them whose top class was right
    count: int


def reliability_bins(y_true: np.ndarray, probs: np.ndarray,
                     n_bins: int = N_BINS) -> list[ReliabilityBin]:
    """Non-empty confidence bins, lowest first."""
    confidence = probs.max(axis=1).astype(np.float64)
    correct = (probs.argmax(axis=1) == y_true).astype(np.int64)
    # pos_label=1 keeps sklearn happy when every image is right (or every one wrong).
    accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=n_bins,
                                            strategy="uniform", pos_label=1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # The same bin rule calibration_curve applies, to get the counts it does not return.
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=n_bins)
    filled = np.flatnonzero(counts)
    return [ReliabilityBin(float(edges[b]), float(edges[b + 1]), float(c), float(a),
                           int(counts[b]))
            for b, c, a in zip(filled, mean_conf, accuracy, strict=True)]


def expected_calibration_error(bins: list[ReliabilityBin]) -> float:
    total = sum(b.count for b in bins)
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in bins) if total else 0.0


def calibration_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Brier score (multi-class: the squared distance of the probability vector to the
    one-hot truth, summed over classes; 0 is perfect, 2 the worst) and top-label ECE."""
    bins = reliability_bins(y_true, probs)
    # float32 softmax rows sum to 1 only within ~1e-7, which sklearn warns about: renormalize.
    exact = probs.astype(np.float64)
    exact /= exact.sum(axis=1, keepdims=True)
    brier = brier_score_loss(y_true, exact, labels=list(range(len(CLASSES))))
    return {"brier": rounded(brier), "ece": rounded(expected_calibration_error(bins)),
            "ece_bins": N_BINS, "mean_confidence": rounded(float(probs.max(axis=1).mean()))}


def reliability_csv(bins: list[ReliabilityBin]) -> str:
    """The DVC plot: observed accuracy against confidence, with the diagonal as ``perfect``."""
    lines = ["bin_low,bin_high,confidence,accuracy,perfect,count"]
    lines += [f"{b.low:.1f},{b.high:.1f},{b.confidence:.6f},{b.accuracy:.6f},"
              f"{b.confidence:.6f},{b.count}" for b in bins]
    return "\n".join(lines) + "\n"
