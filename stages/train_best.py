"""DVC stage train_best: retrain the winning configuration with the same train() as tune."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from xray_hpo.atomic import atomic_write_json, atomic_write_text
from xray_hpo.config import load_config, load_hparams
from xray_hpo.model import save_model
from xray_hpo.stage_util import run_stage
from xray_hpo.training import EpochStats, configure_torch, load_splits, train

MODEL = Path("models/model.pt")
HISTORY = Path("plots/train_history.csv")
METRICS = Path("metrics/train.json")


def history_csv(history: list[EpochStats]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"])
    for s in history:
        writer.writerow([s.epoch, f"{s.train_loss:.6f}", f"{s.val_loss:.6f}",
                         f"{s.train_acc:.6f}", f"{s.val_acc:.6f}", f"{s.lr:.6g}"])
    return buffer.getvalue()


def main() -> None:
    from xray_hpo.tracking.trackers import RunTracker

    config = load_config()
    hparams = load_hparams()
    device = configure_torch(config.train)
    data = load_splits(Path(config.data.prepared_dir), "train", "val")
    with RunTracker("train_best", "training", hparams=hparams.as_dict()) as tracker:
        result = train(hparams, config.train, data["train"], data["val"], device=device,
                       on_epoch=tracker.log_epoch)
        save_model(result.model.cpu(), MODEL)
        tracker.register_model(MODEL)
    atomic_write_text(HISTORY, history_csv(result.history))
    atomic_write_json(METRICS, {
        "val_accuracy": round(result.best_val_acc, 6),
        "val_loss": round(result.best_val_loss, 6),
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
    }, sort_keys=False)


if __name__ == "__main__":
    run_stage("train_best", main)
