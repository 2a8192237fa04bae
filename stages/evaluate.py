"""DVC stage evaluate: the held-out test split, which tuning and model selection never saw."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from xray_hpo.atomic import atomic_write_json, atomic_write_text
from xray_hpo.config import load_config
from xray_hpo.dataset import load_prepared
from xray_hpo.evaluation import classification_metrics, confusion
from xray_hpo.manifest import CLASSES
from xray_hpo.model import load_model
from xray_hpo.stage_util import run_stage
from xray_hpo.training import SplitData, configure_torch, evaluate_split

MODEL = Path("models/model.pt")
METRICS = Path("metrics/eval.json")
PREDICTIONS = Path("plots/test_predictions.csv")


def predictions_csv(paths: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "actual", "predicted"])
    for path, actual, predicted in zip(paths.tolist(), y_true.tolist(), y_pred.tolist(),
                                       strict=True):
        writer.writerow([path, CLASSES[actual], CLASSES[predicted]])
    return buffer.getvalue()


def main() -> None:
    from xray_hpo.tracking import RunTracker

    config = load_config()
    device = configure_torch(config.train)
    test = load_prepared(Path(config.data.prepared_dir), "test")
    model = load_model(MODEL, map_location=device)
    _, _, probs = evaluate_split(model, SplitData.from_arrays(test.images, test.labels), device)
    y_pred = probs.argmax(dim=1).numpy()
    ev = config.evaluate
    metrics = classification_metrics(test.labels, y_pred, samples=ev.bootstrap_samples,
                                     confidence=ev.confidence, seed=ev.seed)
    matrix = confusion(test.labels, y_pred)
    with RunTracker("evaluate", "testing") as tracker:
        tracker.report_confusion(matrix, CLASSES)
        tracker.report_table("per-class report", [
            {"class": cls, **values} for cls, values in metrics["per_class"].items()])
        for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "macro_f1"):
            tracker.report_single(key, metrics[key])
    atomic_write_text(PREDICTIONS, predictions_csv(test.paths, test.labels, y_pred))
    atomic_write_json(METRICS, metrics)


if __name__ == "__main__":
    run_stage("evaluate", main)
