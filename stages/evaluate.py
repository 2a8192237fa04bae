"""DVC stage evaluate: the held-out test split, which tuning and model selection never saw."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from xray_hpo.atomic import atomic_write_json, atomic_write_text
from xray_hpo.config import load_config
from xray_hpo.data.dataset import load_prepared
from xray_hpo.data.manifest import CLASSES
from xray_hpo.evaluation.bootstrap import bootstrap_draws
from xray_hpo.evaluation.calibration import (
    calibration_metrics,
    reliability_bins,
    reliability_csv,
)
from xray_hpo.evaluation.classification import classification_metrics, confusion
from xray_hpo.evaluation.clinical import clinical_metrics, pneumonia_metrics, roc_points
from xray_hpo.evaluation.robustness import robustness_metrics
from xray_hpo.model import load_model
from xray_hpo.stage_util import run_stage
from xray_hpo.training import SplitData, configure_torch, evaluate_split

MODEL = Path("models/model.pt")
METRICS = Path("metrics/eval.json")
PREDICTIONS = Path("plots/test_predictions.csv")
BEST_PARAMS = Path("best_params.yaml")
ROBUSTNESS = Path("metrics/robustness.json")
ROC_DIR = Path("plots/roc")  # one fpr,tpr file per class and for normal vs pneumonia
RELIABILITY = Path("plots/reliability.csv")
ROBUSTNESS_PLOT = Path("plots/robustness.csv")


def val_test_gap(val_accuracy: float, test_accuracy: float,
                 selection: dict[str, Any] | None) -> dict[str, float]:
    """Validation minus test accuracy: how optimistic the (selected-on) validation score was.

    ``val_accuracy`` is the saved model's own val score; ``val_accuracy_seed_mean`` is the
    chosen configuration's mean over the robust-selection seeds, the score it won by.
    """
    gap = {"val_accuracy": round(val_accuracy, 6),
           "val_minus_test": round(val_accuracy - test_accuracy, 6)}
    if selection and "val_accuracy_mean" in selection:
        mean = float(selection["val_accuracy_mean"])
        gap["val_accuracy_seed_mean"] = round(mean, 6)
        gap["seed_mean_minus_test"] = round(mean - test_accuracy, 6)
    return gap


def predictions_csv(paths: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "actual", "predicted"])
    for path, actual, predicted in zip(paths.tolist(), y_true.tolist(), y_pred.tolist(),
                                       strict=True):
        writer.writerow([path, CLASSES[actual], CLASSES[predicted]])
    return buffer.getvalue()


def roc_csv(points: list[tuple[float, float]]) -> str:
    return "fpr,tpr\n" + "".join(f"{f:.6f},{t:.6f}\n" for f, t in points)


def main() -> None:
    from xray_hpo.tracking.runs import RunTracker

    config = load_config()
    device = configure_torch(config.train)
    test = load_prepared(Path(config.data.prepared_dir), "test")
    val = load_prepared(Path(config.data.prepared_dir), "val")
    model = load_model(MODEL, map_location=device)
    test_data = SplitData.from_arrays(test.images, test.labels)
    _, _, probs = evaluate_split(model, test_data, device)
    _, val_accuracy, _ = evaluate_split(model, SplitData.from_arrays(val.images, val.labels),
                                        device)
    y_pred = probs.argmax(dim=1).numpy()
    ev = config.evaluate
    metrics = classification_metrics(test.labels, y_pred, samples=ev.bootstrap_samples,
                                     confidence=ev.confidence, seed=ev.seed)
    best = yaml.safe_load(BEST_PARAMS.read_text()) if BEST_PARAMS.is_file() else {}
    metrics["generalization"] = val_test_gap(val_accuracy, metrics["accuracy"],
                                             (best or {}).get("selection"))
    # New keys sort after the accuracy ones (the file is written with sorted keys), so
    # `dvc exp show` still leads with test accuracy and its interval.
    p = probs.numpy().astype(np.float64)
    draws = bootstrap_draws(len(test.labels), samples=ev.bootstrap_samples, seed=ev.seed)
    metrics["clinical"] = clinical_metrics(test.labels, y_pred, p, draws, ev.confidence)
    metrics["pneumonia"] = pneumonia_metrics(test.labels, p, draws, ev.confidence)
    metrics["calibration"] = calibration_metrics(test.labels, p)
    robustness, robustness_plot = robustness_metrics(model, test_data, device, draws,
                                                     ev.confidence, ev.seed)
    matrix = confusion(test.labels, y_pred)
    with RunTracker("evaluate", "testing", best=best) as tracker:
        tracker.report_confusion(matrix, CLASSES)
        tracker.report_table("per-class report", [
            {"class": cls, **values} for cls, values in metrics["per_class"].items()])
        for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "macro_f1"):
            tracker.report_single(key, metrics[key])
        for key, value in metrics["generalization"].items():
            tracker.report_single(key, value)
        tracker.report_table("clinical metrics (one-vs-rest)", [
            {"class": cls, **values} for cls, values in metrics["clinical"]["per_class"].items()])
        for key, value in (("macro_auc", metrics["clinical"]["macro_auc"]),
                           ("pneumonia_accuracy", metrics["pneumonia"]["accuracy"]),
                           ("pneumonia_auc", metrics["pneumonia"]["auc"]),
                           ("brier", metrics["calibration"]["brier"]),
                           ("ece", metrics["calibration"]["ece"])):
            if value is not None:
                tracker.report_single(key, value)
        tracker.report_table("robustness: accuracy under shift", [
            {"shift": name, **{f"severity {s}": v[s]["accuracy"] for s in ("1", "2", "3")}}
            for name, v in robustness["shifts"].items()])
    atomic_write_text(PREDICTIONS, predictions_csv(test.paths, test.labels, y_pred))
    for name, points in roc_points(test.labels, p).items():
        atomic_write_text(ROC_DIR / f"{name}.csv", roc_csv(points))
    atomic_write_text(RELIABILITY, reliability_csv(reliability_bins(test.labels, p)))
    atomic_write_text(ROBUSTNESS_PLOT, robustness_plot)
    atomic_write_json(ROBUSTNESS, robustness)
    atomic_write_json(METRICS, metrics, sort_keys=False)  # accuracy and its interval first


if __name__ == "__main__":
    run_stage("evaluate", main)
