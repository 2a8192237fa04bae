"""One seeded percentile bootstrap over test images, shared by every interval.

Every metric resamples the *same* draws (``evaluate.seed``, ``evaluate.bootstrap_samples``),
so intervals are reproducible and paired: a difference between two metrics is resampled
image by image, not as two independent noises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def bootstrap_draws(n: int, *, samples: int, seed: int) -> np.ndarray:
    """(samples, n) image indices drawn with replacement; the accuracy interval's draws."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(samples, n))


def percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """Percentile interval of bootstrap values; draws where a metric is undefined (a class
    absent from the resample: NaN) are left out. All undefined: (NaN, NaN)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Interval(float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def bootstrap_mean(values: np.ndarray, draws: np.ndarray, confidence: float) -> Interval:
    """Interval of the mean of per-image ``values`` (1 = correct: accuracy)."""
    return percentile_interval(values.astype(np.float64)[draws].mean(axis=1), confidence)
