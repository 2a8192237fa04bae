"""DVC stage tune: an Optuna study over the model's hyperparameters (validation split only),
then importances with uncertainty (tuning.assessment) and robust selection of the winner
(top-k re-run with several seeds)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from xray_hpo.atomic import atomic_write_json, atomic_write_text, atomic_write_yaml
from xray_hpo.config import Config, HParams, load_config
from xray_hpo.stage_util import run_stage
from xray_hpo.tracking.settings import TRIAL_ATTR_TASK
from xray_hpo.tuning.coordinator import TuneSummary, run_study
from xray_hpo.tuning.selection import Candidate, Selection
from xray_hpo.tuning.storage import resolve_storage

BEST_PARAMS = Path("best_params.yaml")
METRICS = Path("metrics/tune.json")
IMPORTANCE = Path("metrics/importance.json")
IMPORTANCE_PLOT = Path("plots/importance.csv")
SELECTION = Path("metrics/selection.json")
TRIALS = Path("plots/tune_trials.csv")
CURVES = Path("plots/tune_curves.csv")


def analyse(config: Config, storage_spec: str, study_name: str
            ) -> tuple[list[FrozenTrial], Selection]:
    """The counted trials, and the re-seeded top-k selection among them."""
    import optuna

    from xray_hpo.tuning.coordinator import worker_count, worker_threads
    from xray_hpo.tuning.pool import train_many
    from xray_hpo.tuning.selection import robust_select, top_candidates
    from xray_hpo.tuning.storage import open_storage
    from xray_hpo.tuning.study import budget_trials

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_spec))
    trials = budget_trials(study, config.tune.n_trials)

    def run_many(jobs: Sequence[tuple[HParams, int]]) -> Iterator[float]:
        # The re-runs are independent: on the tune workers' share of the cores each.
        return train_many(jobs, config.train, Path(config.data.prepared_dir),
                          worker_count(config), worker_threads(config))

    def say(candidate: Candidate, seed: int, accuracy: float) -> None:
        print(f"select: trial {candidate.trial} seed {seed}: val accuracy {accuracy:.3f}",
              file=sys.stderr, flush=True)

    sel = config.select
    selection = robust_select(top_candidates(trials, sel.top_k), sel.seeds, config.train.seed,
                              top_k=sel.top_k, on_run=say, run_many=run_many)
    return trials, selection


def main() -> None:
    from xray_hpo.tuning.importance import importance_csv
    from xray_hpo.tuning.trials import curves_csv, trials_csv

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", help="Optuna storage URL or journal:PATH "
                        "(default $XRAY_HPO_STORAGE, else .optuna/journal.log)")
    args = parser.parse_args()
    config = load_config()
    storage = resolve_storage(args.storage)
    analysed: list[tuple[list[FrozenTrial], Selection]] = []

    def select(summary: TuneSummary, tracker: Any) -> None:
        # While the optimizer task is open: it shows the choice beside the best single run.
        started = time.perf_counter()
        trials, selection = analyse(config, storage, summary.study_name)
        analysed.append((trials, selection))
        print(f"select: {len(selection.results)} x {config.select.seeds - 1} "
              f"re-runs took {time.perf_counter() - started:.1f} s", file=sys.stderr)
        chosen = selection.chosen
        task_id = next((t.user_attrs.get(TRIAL_ATTR_TASK) for t in trials
                        if t.number == chosen.candidate.trial), None)
        tracker.report_selection({"study": summary.study_name,
                                  "trial": chosen.candidate.trial,
                                  **selection.best_params_entry()}, task_id)

    summary = run_study(config, storage, Path(config.data.prepared_dir), after=select)
    trials, selection = analysed[0]
    importances = summary.importances
    chosen = selection.chosen
    if chosen.candidate.trial != summary.best_trial:
        print(f"select: trial {chosen.candidate.trial} (mean {chosen.mean:.3f} over "
              f"{len(chosen.seeds)} seeds) replaces the single best run, trial "
              f"{summary.best_trial} ({summary.best_value:.3f})", file=sys.stderr)
    # Written only now that the study holds its n_trials, each file atomically.
    atomic_write_yaml(BEST_PARAMS, {
        "hparams": chosen.candidate.hparams.as_dict(),
        "study": summary.study_name,
        "trial": chosen.candidate.trial,
        "val_accuracy": round(chosen.candidate.tune_value, 6),
        "selection": selection.best_params_entry(),
    })
    # Metrics files keep their keys in the order built (`dvc exp show` shows them so).
    assert summary.assessment is not None  # run_study always assesses
    atomic_write_json(IMPORTANCE, summary.assessment.metrics(), sort_keys=False)
    atomic_write_text(IMPORTANCE_PLOT, importance_csv(importances))
    atomic_write_json(SELECTION, selection.metrics(), sort_keys=False)
    atomic_write_text(TRIALS, trials_csv(trials))
    atomic_write_text(CURVES, curves_csv(trials))
    atomic_write_json(METRICS, summary.metrics(), sort_keys=False)


if __name__ == "__main__":
    run_stage("tune", main)
