"""Every evaluation metric on a small case whose answer is known by hand, and the
acquisition shifts: deterministic, seeded, and stronger with each severity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_score, recall_score, roc_auc_score

from xray_hpo.evaluation.bootstrap import bootstrap_draws, percentile_interval
from xray_hpo.evaluation.calibration import (
    calibration_metrics,
    expected_calibration_error,
    reliability_bins,
    reliability_csv,
)
from xray_hpo.evaluation.classification import bootstrap_accuracy, rounded
from xray_hpo.evaluation.clinical import (
    clinical_metrics,
    draw_aucs,
    draw_confusions,
    pneumonia_metrics,
    roc_points,
)
from xray_hpo.evaluation.robustness import (
    SEVERITIES,
    SHIFTS,
    robustness_csv,
    robustness_metrics,
    shifted,
)
from xray_hpo.training import SplitData

CONF = 0.95


def draws_for(n: int, seed: int = 0, samples: int = 500) -> np.ndarray:
    return bootstrap_draws(n, samples=samples, seed=seed)


def one_hot_probs(y: np.ndarray, right: float = 0.8) -> np.ndarray:
    """The true class gets ``right``, the other two share the rest."""
    probs = np.full((len(y), 3), (1 - right) / 2)
    probs[np.arange(len(y)), y] = right
    return probs


def from_confusion(matrix: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(a, p) for a, row in enumerate(matrix) for p, n in enumerate(row) for _ in range(n)]
    y_true, y_pred = (np.array(v) for v in zip(*pairs, strict=True))
    return y_true, y_pred


# --- clinical: sensitivity, specificity, PPV, NPV, AUC --------------------------------------

MATRIX = [[8, 1, 1], [2, 6, 2], [0, 3, 7]]  # rows actual normal/bacterial/viral
# By hand, one class against the rest (30 images): (sensitivity, specificity, ppv, npv)
EXPECTED = {"normal": (8 / 10, 18 / 20, 8 / 10, 18 / 20),
            "bacterial": (6 / 10, 16 / 20, 6 / 10, 16 / 20),
            "viral": (7 / 10, 17 / 20, 7 / 10, 17 / 20)}


def test_known_confusion_gives_known_rates() -> None:
    y_true, y_pred = from_confusion(MATRIX)
    out = clinical_metrics(y_true, y_pred, one_hot_probs(y_pred), draws_for(30), CONF)
    for cls, (sens, spec, ppv, npv) in EXPECTED.items():
        got = out["per_class"][cls]
        assert (got["sensitivity"], got["specificity"], got["ppv"], got["npv"]) == \
            pytest.approx((sens, spec, ppv, npv)), cls
    recall = recall_score(y_true, y_pred, average=None)
    precision = precision_score(y_true, y_pred, average=None)
    for i, cls in enumerate(EXPECTED):
        assert out["per_class"][cls]["sensitivity"] == pytest.approx(recall[i])
        assert out["per_class"][cls]["ppv"] == pytest.approx(precision[i])


def test_perfect_classifier_has_auc_one_and_reversed_zero() -> None:
    y = np.repeat([0, 1, 2], 10)
    perfect = clinical_metrics(y, y, one_hot_probs(y, 0.8), draws_for(30), CONF)
    assert perfect["macro_auc"] == 1.0
    assert all(perfect["per_class"][c]["auc"] == 1.0 for c in EXPECTED)
    assert perfect["macro_auc_ci_low"] == perfect["macro_auc_ci_high"] == 1.0
    # The true class always gets the *lowest* probability: every ranking is backwards.
    worst = (y + 1) % 3
    reversed_ = clinical_metrics(y, worst, one_hot_probs(y, 0.1), draws_for(30), CONF)
    assert reversed_["macro_auc"] == 0.0
    assert all(reversed_["per_class"][c]["auc"] == 0.0 for c in EXPECTED)
    assert all(reversed_["per_class"][c]["sensitivity"] == 0.0 for c in EXPECTED)


def test_macro_auc_is_sklearn_one_vs_rest() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60) * 0.5 + one_hot_probs(y, 1.0) * 0.5
    out = clinical_metrics(y, probs.argmax(1), probs, draws_for(60), CONF)
    assert out["macro_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"),
                                             abs=1e-6)
    assert out["per_class"]["viral"]["auc"] == pytest.approx(
        roc_auc_score(y == 2, probs[:, 2]), abs=1e-6)


def test_resampled_statistics_equal_sklearn_on_each_resample() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 40)
    scores = np.round(rng.random(40), 1)  # many ties: the midrank rule must match sklearn
    pred = rng.integers(0, 3, 40)
    draws = draws_for(40, samples=30)
    aucs = draw_aucs(y == 1, scores, draws)
    matrices = draw_confusions(y, pred, draws, 3)
    for b, index in enumerate(draws):
        positive = y[index] == 1
        if positive.any() and not positive.all():
            assert aucs[b] == pytest.approx(roc_auc_score(positive, scores[index]), abs=1e-12)
        assert (matrices[b] == confusion_matrix(y[index], pred[index], labels=[0, 1, 2])).all()


def test_undefined_rates_are_null_not_zero() -> None:
    y_true, y_pred = np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1])  # viral never predicted
    out = clinical_metrics(y_true, y_pred, one_hot_probs(y_pred), draws_for(4), CONF)
    assert out["per_class"]["viral"]["ppv"] is None
    assert out["per_class"]["viral"]["sensitivity"] == 0.0


def test_bootstrap_intervals_hold_the_estimate_and_are_seeded() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 80)
    probs = 0.6 * rng.dirichlet([1, 1, 1], 80) + 0.4 * one_hot_probs(y, 1.0)
    pred = probs.argmax(1)
    one = clinical_metrics(y, pred, probs, draws_for(80, seed=0), CONF)
    again = clinical_metrics(y, pred, probs, draws_for(80, seed=0), CONF)
    other = clinical_metrics(y, pred, probs, draws_for(80, seed=1), CONF)
    assert one == again and one != other
    for name in ("sensitivity", "specificity", "ppv", "npv", "auc"):
        for cls in EXPECTED:
            entry = one["per_class"][cls]
            assert entry[f"{name}_ci_low"] <= entry[name] <= entry[f"{name}_ci_high"]
            assert entry[f"{name}_ci_low"] < entry[f"{name}_ci_high"], (cls, name)
    assert one["macro_auc_ci_low"] <= one["macro_auc"] <= one["macro_auc_ci_high"]
    pneu = pneumonia_metrics(y, probs, draws_for(80), CONF)
    for name in ("accuracy", "auc", "sensitivity", "specificity"):
        assert pneu[f"{name}_ci_low"] <= pneu[name] <= pneu[f"{name}_ci_high"]
    # The accuracy interval resamples the same draws as before the refactor.
    interval = bootstrap_accuracy(y, pred, samples=500, confidence=CONF, seed=0)
    correct = (y == pred).astype(float)[draws_for(80)].mean(axis=1)
    assert (interval.low, interval.high) == tuple(np.quantile(correct, [0.025, 0.975]))


def test_percentile_interval_skips_undefined_draws() -> None:
    interval = percentile_interval(np.array([np.nan, 0.5, 0.5, np.nan]), CONF)
    assert (interval.low, interval.high) == (0.5, 0.5)
    assert np.isnan(percentile_interval(np.array([np.nan]), CONF).low)


# --- normal vs pneumonia ----------------------------------------------------------------------

def test_pneumonia_collapses_bacterial_and_viral() -> None:
    y = np.array([0, 0, 1, 2, 1])
    probs = np.array([[0.9, 0.05, 0.05],   # normal, called normal
                      [0.4, 0.35, 0.25],   # normal, P(pneumonia) 0.6: called pneumonia
                      [0.4, 0.3, 0.3],     # bacterial; argmax says normal, collapsed: pneumonia
                      [0.1, 0.6, 0.3],     # viral called bacterial: still pneumonia, right
                      [0.7, 0.2, 0.1]])    # bacterial called normal
    out = pneumonia_metrics(y, probs, draws_for(5), CONF)
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] == pytest.approx(1 / 2)
    # AUC of P(pneumonia) = [0.1, 0.6, 0.6, 0.9, 0.3] for pneumonia [F, F, T, T, T]:
    # of the 6 (pneumonia, normal) pairs, 4 are ranked right, 1 tied, 1 wrong.
    assert out["auc"] == pytest.approx(4.5 / 6)
    assert out["auc"] == pytest.approx(roc_auc_score(y != 0, probs[:, 1] + probs[:, 2]))


def test_roc_points_run_from_corner_to_corner() -> None:
    y = np.repeat([0, 1, 2], 5)
    curves = roc_points(y, one_hot_probs(y, 0.7))
    assert set(curves) == {"normal", "bacterial", "viral", "pneumonia"}
    for points in curves.values():
        assert points[0] == (0.0, 0.0) and points[-1] == (1.0, 1.0)
        assert (0.0, 1.0) in points  # perfect: the curve passes the top-left corner


# --- calibration ------------------------------------------------------------------------------

def test_brier_by_hand_on_three_images() -> None:
    y = np.array([0, 1, 2])
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    # (0) + (0.25 + 0.25) + (0.04 + 0.09 + 0.25) = 0.88, over 3 images
    assert calibration_metrics(y, probs)["brier"] == pytest.approx(0.88 / 3, abs=1e-6)


def calibrated_toy() -> tuple[np.ndarray, np.ndarray]:
    """Confidence 0.8 right 8 of 10 times, 0.6 right 6 of 10 times: calibrated exactly."""
    y = np.zeros(20, dtype=int)
    probs = np.array([[0.8, 0.1, 0.1]] * 10 + [[0.6, 0.3, 0.1]] * 10)
    y[[8, 9]] = 1          # two of the 0.8 group wrong
    y[[16, 17, 18, 19]] = 2  # four of the 0.6 group wrong
    return y, probs


def test_calibrated_toy_has_zero_ece_and_overconfident_toy_does_not() -> None:
    y, probs = calibrated_toy()
    assert calibration_metrics(y, probs)["ece"] == pytest.approx(0.0, abs=1e-9)
    overconfident = np.array([[0.9, 0.05, 0.05]] * 10)
    y_half = np.array([0, 1] * 5)  # right half the time at 90% confidence
    assert calibration_metrics(y_half, overconfident)["ece"] == pytest.approx(0.4)


def test_reliability_bins_are_sklearn_calibration_curve() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet([0.5, 0.5, 0.5], 200)
    bins = reliability_bins(y, probs)
    correct = (probs.argmax(1) == y).astype(int)
    accuracy, confidence = calibration_curve(correct, probs.max(1), n_bins=10)
    assert [b.accuracy for b in bins] == pytest.approx(list(accuracy))
    assert [b.confidence for b in bins] == pytest.approx(list(confidence))
    assert sum(b.count for b in bins) == 200
    assert all(b.low < b.confidence <= b.high for b in bins)
    gaps = sum(b.count * abs(b.accuracy - b.confidence) for b in bins) / 200
    assert expected_calibration_error(bins) == pytest.approx(gaps)
    lines = reliability_csv(bins).splitlines()
    assert lines[0] == "bin_low,bin_high,confidence,accuracy,perfect,count"
    assert len(lines) == len(bins) + 1


def test_every_image_right_still_bins() -> None:
    y = np.array([0, 1, 2])
    out = calibration_metrics(y, one_hot_probs(y, 0.95))
    assert out["ece"] == pytest.approx(0.05)
    assert rounded(float("nan")) is None


# --- acquisition shifts -----------------------------------------------------------------------

def toy_images(n: int = 4, side: int = 32) -> torch.Tensor:
    """Off-centre discs on a gradient: no symmetry a rotation or zoom could hide behind."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    images = []
    for i in range(n):
        disc = ((yy - 10 - i) ** 2 + (xx - 12 - 2 * i) ** 2 < 36).float() * 0.5
        images.append((0.2 + 0.3 * xx / side + disc).clamp(0, 1))
    return torch.stack(images).unsqueeze(1)


@pytest.mark.parametrize("shift", SHIFTS, ids=lambda s: s.name)
def test_shift_is_deterministic_bounded_and_stronger_with_severity(shift) -> None:
    images = toy_images()
    distances = []
    for severity in SEVERITIES:
        out = shifted(images, shift, severity, seed=0)
        assert out.shape == images.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.equal(out, shifted(images, shift, severity, seed=0))
        distances.append(float((out - images).abs().mean()))
    assert 0 < distances[0] < distances[1] < distances[2], distances
    assert torch.equal(images, toy_images())  # the input is never modified in place


def test_noise_depends_on_the_seed_and_leaves_global_rng_alone() -> None:
    noise = next(s for s in SHIFTS if s.name == "noise")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = shifted(toy_images(), noise, 2, seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.equal(a, shifted(toy_images(), noise, 2, seed=1))
    with pytest.raises(ValueError, match="severity 4"):
        shifted(toy_images(), noise, 4, seed=0)


class BrightnessModel(torch.nn.Module):
    """Class = how bright the image is on average: dark 0, middle 1, bright 2."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean(dim=(1, 2, 3))
        return torch.stack([-(mean - c).abs() * 50 for c in (0.2, 0.5, 0.8)], dim=1)


def test_robustness_scores_each_shift_against_unshifted() -> None:
    levels = torch.tensor([0.2, 0.5, 0.8]).repeat(4)
    images = levels.view(-1, 1, 1, 1).expand(-1, 1, 16, 16).clone()
    data = SplitData(images, torch.arange(3).repeat(4))
    payload, csv_text = robustness_metrics(BrightnessModel(), data, torch.device("cpu"),
                                           draws_for(12, samples=200), CONF, seed=0)
    assert payload["unshifted_accuracy"] == 1.0
    assert set(payload["shifts"]) == {s.name for s in SHIFTS}
    gamma = payload["shifts"]["gamma"]
    assert gamma["3"]["value"] == 2.0 and gamma["3"]["accuracy"] < 1.0  # 0.5 ** 2 -> "dark"
    assert gamma["3"]["change"] == pytest.approx(gamma["3"]["accuracy"] - 1.0)
    assert gamma["3"]["change_ci_low"] <= gamma["3"]["change"] <= gamma["3"]["change_ci_high"]
    # A flat image keeps its mean under blur: nothing changes, the interval is exactly 0.
    assert payload["shifts"]["blur"]["3"]["change"] == 0.0
    assert payload["shifts"]["blur"]["3"]["change_ci_high"] == 0.0
    middle = payload["middle_severity"]
    assert middle["worst_accuracy"] == min(e["2"]["accuracy"] for e in payload["shifts"].values())
    lines = csv_text.splitlines()
    assert lines[0] == "severity,gamma,contrast,blur,noise,zoom,rotation"
    assert lines[1] == "0," + ",".join(["1.000000"] * 6) and len(lines) == 5
    assert robustness_csv(payload) == csv_text
