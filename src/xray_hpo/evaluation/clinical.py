"""The numbers a radiology reviewer asks for, per class and for normal vs pneumonia.

Point estimates come from scikit-learn (``multilabel_confusion_matrix``, ``roc_auc_score``,
``roc_curve``). Their bootstrap intervals resample the shared draws; refitting sklearn on
each of 2,000 resamples would cost ~2.3 ms per AUC call (about 20 s per run on 150 images,
measured), so each resample is scored by the same statistics in vectorized form: one-vs-rest
rates from a per-draw confusion matrix, and the AUC as the Mann-Whitney U statistic (midranks,
so ties count a half, exactly as the ROC area does). tests/unit/test_evaluation.py checks
both against sklearn on resamples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    multilabel_confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from xray_hpo.data.manifest import CLASSES
from xray_hpo.evaluation.bootstrap import bootstrap_mean, percentile_interval
from xray_hpo.evaluation.classification import rounded

RATES = ("sensitivity", "specificity", "ppv", "npv")
NORMAL = CLASSES.index("normal")
# Collapsed to the binary question most papers answer: P(pneumonia) = p_bacterial + p_viral,
# called pneumonia at >= 0.5 (what a binary normal/pneumonia classifier would do).
PNEUMONIA_THRESHOLD = 0.5


def ovr_rates(tn: np.ndarray, fp: np.ndarray, fn: np.ndarray,
              tp: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest rates from counts (any shape); 0/0 is NaN: undefined, not zero."""
    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    return {"sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn)}


def draw_confusions(y_true: np.ndarray, y_pred: np.ndarray, draws: np.ndarray,
                    k: int) -> np.ndarray:
    """(samples, k, k) confusion matrix of every resample (rows actual, columns predicted)."""
    codes = y_true.astype(np.int64) * k + y_pred.astype(np.int64)
    offsets = (np.arange(draws.shape[0], dtype=np.int64) * k * k)[:, None]
    flat = np.bincount((codes[draws] + offsets).ravel(), minlength=draws.shape[0] * k * k)
    return flat.reshape(draws.shape[0], k, k)


def draw_aucs(positive: np.ndarray, scores: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """ROC-AUC of each resample (Mann-Whitney U / (n_pos n_neg)); NaN lacking a side."""
    pos = positive.astype(bool)[draws]
    ranks = rankdata(scores.astype(np.float64)[draws], axis=1)
    n_pos = pos.sum(axis=1).astype(np.float64)
    n_neg = draws.shape[1] - n_pos
    u = (ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """sklearn's ROC-AUC; NaN when only one side is present (undefined, not an error)."""
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def _with_interval(point: float, values: np.ndarray, confidence: float,
                   name: str) -> dict[str, float | None]:
    interval = percentile_interval(values, confidence)
    return {name: rounded(point), f"{name}_ci_low": rounded(interval.low),
            f"{name}_ci_high": rounded(interval.high)}


def clinical_metrics(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray,
                     draws: np.ndarray, confidence: float) -> dict[str, Any]:
    """Per class: sensitivity, specificity, PPV, NPV and one-vs-rest AUC; macro AUC; each
    with its bootstrap interval. ``probs`` (N, classes) are the model's probabilities."""
    k = len(CLASSES)
    labels = list(range(k))
    (tn, fp), (fn, tp) = np.moveaxis(multilabel_confusion_matrix(y_true, y_pred, labels=labels),
                                     (1, 2), (0, 1))
    point = ovr_rates(tn, fp, fn, tp)
    matrices = draw_confusions(y_true, y_pred, draws, k)
    diag = np.diagonal(matrices, axis1=1, axis2=2)
    d_fn = matrices.sum(axis=2) - diag
    d_fp = matrices.sum(axis=1) - diag
    d_tn = draws.shape[1] - diag - d_fn - d_fp
    resampled = ovr_rates(d_tn, d_fp, d_fn, diag)
    per_class: dict[str, dict[str, Any]] = {}
    class_aucs = []
    for i, cls in enumerate(CLASSES):
        entry: dict[str, Any] = {}
        for rate in RATES:
            entry.update(_with_interval(point[rate][i], resampled[rate][:, i], confidence, rate))
        positive = y_true == i
        aucs = draw_aucs(positive, probs[:, i], draws)
        class_aucs.append(aucs)
        entry.update(_with_interval(auc(positive, probs[:, i]), aucs, confidence, "auc"))
        per_class[cls] = entry
    present = [i for i in labels if (y_true == i).any() and not (y_true == i).all()]
    macro = (float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro",
                                 labels=labels))
             if len(present) == k else float("nan"))
    with np.errstate(invalid="ignore"):
        macro_draws = np.stack(class_aucs).mean(axis=0)  # NaN where a class was missing
    return {"per_class": per_class,
            **_with_interval(macro, macro_draws, confidence, "macro_auc")}


def pneumonia_probability(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs[:, NORMAL]  # = p_bacterial + p_viral, without float drift of a sum


def pneumonia_metrics(y_true: np.ndarray, probs: np.ndarray, draws: np.ndarray,
                      confidence: float) -> dict[str, Any]:
    """Normal vs pneumonia (bacterial + viral): accuracy, AUC, sensitivity, specificity."""
    actual = y_true != NORMAL
    score = pneumonia_probability(probs)
    called = score >= PNEUMONIA_THRESHOLD
    tn, fp, fn, tp = confusion_matrix(actual, called, labels=[False, True]).ravel()
    rates = ovr_rates(tn, fp, fn, tp)
    matrices = draw_confusions(actual, called, draws, 2)
    resampled = ovr_rates(matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 1, 0],
                          matrices[:, 1, 1])
    accuracy = bootstrap_mean(actual == called, draws, confidence)
    out: dict[str, Any] = {"threshold": PNEUMONIA_THRESHOLD,
                           "accuracy": rounded(accuracy_score(actual, called)),
                           "accuracy_ci_low": rounded(accuracy.low),
                           "accuracy_ci_high": rounded(accuracy.high)}
    out.update(_with_interval(auc(actual, score), draw_aucs(actual, score, draws),
                              confidence, "auc"))
    for rate in ("sensitivity", "specificity"):
        out.update(_with_interval(rates[rate], resampled[rate], confidence, rate))
    return out


def roc_points(y_true: np.ndarray, probs: np.ndarray) -> dict[str, list[tuple[float, float]]]:
    """(fpr, tpr) of each class's one-vs-rest ROC curve and of normal vs pneumonia."""
    curves = {}
    targets = [(cls, y_true == i, probs[:, i]) for i, cls in enumerate(CLASSES)]
    targets.append(("pneumonia", y_true != NORMAL, pneumonia_probability(probs)))
    for name, positive, scores in targets:
        if positive.all() or not positive.any():
            continue  # no curve without both sides
        fpr, tpr, _ = roc_curve(positive, scores)
        curves[name] = [(round(float(f), 6), round(float(t), 6)) for f, t in zip(fpr, tpr,
                                                                                   strict=True)]
    return curves
