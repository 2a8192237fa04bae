"""Accuracy under simulated acquisition shift: the test images as another hospital's
scanner, exposure settings or positioning might deliver them.

Six shifts at three fixed severities each, applied with torchvision.transforms.v2
functional ops to the in-memory test tensors (pixels in [0, 1]). Everything is fixed in
code, not params: the point is a yardstick that compares across runs and commits. The only
random shift, noise, draws from a generator seeded by ``evaluate.seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from xray_hpo.evaluation.bootstrap import percentile_interval
from xray_hpo.evaluation.classification import rounded
from xray_hpo.training import SplitData, evaluate_split

SEVERITIES = (1, 2, 3)
MIDDLE = 2
# Blur is defined for 64 px images and scaled with the side, so a severity means the same
# anatomy-relative blur at any prepare.image_size.
REFERENCE_SIDE = 64


@dataclass(frozen=True)
class Shift:
    name: str
    parameter: str  # what ``values`` are, in words for the report
    values: tuple[float, float, float]  # severity 1, 2, 3
    apply: Callable[[torch.Tensor, float, int], torch.Tensor]  # (images, value, seed)


def _gamma(images: torch.Tensor, value: float, seed: int) -> torch.Tensor:
    return F.adjust_gamma(images, value)


def _contrast(images: torch.Tensor, value: float, seed: int) -> torch.Tensor:
    return F.adjust_contrast(images, value)  # blends each image toward its mean grey


def _blur(images: torch.Tensor, value: float, seed: int) -> torch.Tensor:
    sigma = value * images.shape[-1] / REFERENCE_SIDE
    kernel = 2 * math.ceil(3 * sigma) + 1
    return F.gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def _noise(images: torch.Tensor, value: float, seed: int) -> torch.Tensor:
    # F.gaussian_noise draws from torch's global generator: seed it inside a fork so the
    # caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return F.gaussian_noise(images, sigma=value, clip=True)


def _zoom(images: torch.Tensor, value: float, seed: int) -> torch.Tensor:
    side = images.shape[-1]
    crop = max(1, round(side * value))
    top = (side - crop) // 2
    return F.resized_crop(images, top, top, crop, crop, size=[side, side],
                          interpolation=InterpolationMode.BILINEAR, antialias=True)


def _rotation(images: torch.Tensor, value: float, seed: int) -> torch.Tensor:
    return F.rotate(images, value, interpolation=InterpolationMode.BILINEAR, fill=0.0)


SHIFTS: tuple[Shift, ...] = (
    Shift("gamma", "gamma (pixel ** gamma; > 1 darkens the mid-tones)", (1.25, 1.5, 2.0), _gamma),
    Shift("contrast", "contrast factor (1 = unchanged)", (0.8, 0.6, 0.4), _contrast),
    Shift("blur", "Gaussian sigma, px per 64 px of side", (0.5, 1.0, 2.0), _blur),
    Shift("noise", "Gaussian noise sigma (pixels in [0, 1])", (0.02, 0.05, 0.1), _noise),
    Shift("zoom", "share of the side kept by a centre crop, resized back", (0.9, 0.8, 0.7),
          _zoom),
    Shift("rotation", "degrees, counter-clockwise", (5.0, 10.0, 15.0), _rotation),
)


def shifted(images: torch.Tensor, shift: Shift, severity: int, seed: int) -> torch.Tensor:
    """``images`` (N, 1, S, S) float in [0, 1] under ``shift`` at ``severity`` (1-3), on the
    CPU in float32 so every device sees the same pixels; clamped to [0, 1]."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity}: expected one of {SEVERITIES}")
    value = shift.values[severity - 1]
    # One seed per (shift, severity), so a severity's noise does not depend on the others.
    out = shift.apply(images.detach().cpu().float(), value,
                      seed * 1000 + SHIFTS.index(shift) * 10 + severity)
    return out.clamp_(0.0, 1.0)


def robustness_metrics(model: torch.nn.Module, test: SplitData, device: torch.device,
                       draws: np.ndarray, confidence: float,
                       seed: int) -> tuple[dict[str, Any], str]:
    """Accuracy of ``model`` on every shift and severity, with the change from unshifted and
    its paired bootstrap interval (the same images resampled for both). Returns the
    ``metrics/robustness.json`` payload and the ``plots/robustness.csv`` text."""
    labels = test.labels.numpy()

    def correct(images: torch.Tensor) -> np.ndarray:
        _, _, probs = evaluate_split(model, SplitData(images, test.labels), device)
        return probs.argmax(dim=1).numpy() == labels

    base = correct(test.images)
    base_accuracy = float(base.mean())
    shifts: dict[str, Any] = {}
    for shift in SHIFTS:
        entry: dict[str, Any] = {"parameter": shift.parameter}
        for severity in SEVERITIES:
            hit = correct(shifted(test.images, shift, severity, seed))
            change = percentile_interval(
                (hit.astype(np.float64) - base)[draws].mean(axis=1), confidence)
            entry[str(severity)] = {
                "value": shift.values[severity - 1], "accuracy": rounded(hit.mean()),
                "change": rounded(hit.mean() - base_accuracy),
                "change_ci_low": rounded(change.low), "change_ci_high": rounded(change.high)}
        shifts[shift.name] = entry
    middle = {name: e[str(MIDDLE)]["accuracy"] for name, e in shifts.items()}
    worst = min(middle, key=lambda name: (middle[name], name))
    payload = {
        "unshifted_accuracy": rounded(base_accuracy),
        "middle_severity": {
            "mean_accuracy": rounded(float(np.mean(list(middle.values())))),
            "worst_shift": worst, "worst_accuracy": middle[worst],
            "worst_change": shifts[worst][str(MIDDLE)]["change"]},
        "confidence": confidence, "n_test": len(test), "seed": seed,
        "shifts": shifts,
    }
    return payload, robustness_csv(payload)


def robustness_csv(payload: dict[str, Any]) -> str:
    """The DVC plot: one column per shift, accuracy against severity (0 = unshifted)."""
    names = list(payload["shifts"])
    rows = [["0", *([f"{payload['unshifted_accuracy']:.6f}"] * len(names))]]
    rows += [[str(s), *(f"{payload['shifts'][n][str(s)]['accuracy']:.6f}" for n in names)]
             for s in SEVERITIES]
    return "\n".join(",".join(r) for r in [["severity", *names], *rows]) + "\n"
