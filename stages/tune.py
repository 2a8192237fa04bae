"""DVC stage tune: an Optuna study over the model's hyperparameters (validation split only)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from xray_hpo.atomic import atomic_write_json, atomic_write_yaml
from xray_hpo.config import load_config
from xray_hpo.stage_util import run_stage
from xray_hpo.study import resolve_storage
from xray_hpo.tuning import run_study

BEST_PARAMS = Path("best_params.yaml")
METRICS = Path("metrics/tune.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", help="Optuna storage URL or journal:PATH "
                        "(default $XRAY_HPO_STORAGE, else .optuna/journal.log)")
    args = parser.parse_args()
    config = load_config()
    summary = run_study(config, resolve_storage(args.storage), Path(config.data.prepared_dir))
    # Written only now that the study holds its n_trials, each file atomically.
    atomic_write_yaml(BEST_PARAMS, {
        "hparams": asdict(summary.best_hparams),
        "study": summary.study_name,
        "trial": summary.best_trial,
        "val_accuracy": round(summary.best_value, 6),
    })
    atomic_write_json(METRICS, summary.metrics())


if __name__ == "__main__":
    run_stage("tune", main)
