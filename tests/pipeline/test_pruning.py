"""Pruning: each pruner of params.yaml on scripted learning curves, and the stop at chance
level on real training runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from xray_hpo.config import PrunerConfig
from xray_hpo.training import EpochStats
from xray_hpo.tuning import storage as stores
from xray_hpo.tuning import study as studies
from xray_hpo.tuning.worker import stuck_at_chance

optuna.logging.set_verbosity(optuna.logging.ERROR)


def epochs_run(pruner: optuna.pruners.BasePruner, curves: Sequence[Sequence[float]]) -> list[int]:
    """Run one trial per curve (validation accuracy per epoch) in order, pruning as the
    objective does; how many epochs each trial ran (its curve's length: not pruned)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    ran = []
    for curve in curves:
        trial = study.ask()
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
            if epoch < len(curve) and trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, max(curve))
        ran.append(epoch)
    return ran


def curve(start: float, step: float = 0.02, epochs: int = 10) -> list[float]:
    return [start + step * e for e in range(epochs)]


def test_successive_halving_keeps_the_best_third_at_each_rung() -> None:
    pruner = studies.make_pruner(PrunerConfig(name="successive_halving", min_resource=2,
                                              reduction_factor=3), epochs=10)
    # Rungs at epochs 2 and 6. The first trial always goes on; after it a trial must be the
    # best among fewer than 3 at a rung, then in the best third.
    ran = epochs_run(pruner, [curve(0.50), curve(0.40), curve(0.60), curve(0.55),
                              curve(0.70), curve(0.30)])
    assert ran == [10, 2, 10, 2, 10, 2]


def test_median_waits_for_startup_trials_and_warmup_epochs() -> None:
    pruner = studies.make_pruner(PrunerConfig(name="median", n_startup_trials=2,
                                              n_warmup_steps=3), epochs=10)
    ran = epochs_run(pruner, [curve(0.50), curve(0.30),  # startup: never pruned
                              curve(0.20), curve(0.60), curve(0.49, step=0.0)])
    # Below the completed trials' median from epoch 1 on, a trial still runs 3 epochs; the
    # median counts completed trials only (at epoch 3: 0.44, then 0.54 with the 0.60 run).
    assert ran == [10, 10, 3, 10, 3]


def test_no_pruner_runs_every_epoch() -> None:
    pruner = studies.make_pruner(PrunerConfig(name="none"), epochs=10)
    assert epochs_run(pruner, [curve(0.5), curve(0.1), curve(0.0, step=0.0)]) == [10] * 3


def test_hyperband_gets_the_configured_resources() -> None:
    pruner = studies.make_pruner(PrunerConfig(name="hyperband", min_resource=2,
                                              reduction_factor=4), epochs=12)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, 12, 4)


def stats(*accuracies: float) -> list[EpochStats]:
    return [EpochStats(epoch, 1.0, 0.4, 1.1, acc, 1e-3)
            for epoch, acc in enumerate(accuracies, start=1)]


def test_stuck_at_chance_needs_every_epoch_so_far_at_or_below_chance() -> None:
    chance = 1 / 3
    assert not stuck_at_chance(stats(chance), after=2, chance_acc=chance)  # too early
    assert stuck_at_chance(stats(chance, chance), after=2, chance_acc=chance)
    assert stuck_at_chance(stats(0.2, chance), after=2, chance_acc=chance)
    assert not stuck_at_chance(stats(0.6, chance), after=2, chance_acc=chance)  # it learnt once
    assert not stuck_at_chance(stats(chance, 0.36), after=2, chance_acc=chance)
    assert not stuck_at_chance(stats(chance, chance, chance), after=0, chance_acc=chance)


# A learning rate that collapses this CNN to one class (measured: every trial with Adam at
# lr >= 0.0126 sat at 1/3 from epoch 1 to 10), and one that learns.
COLLAPSING_LR, LEARNING_LR = 0.1, 1.0e-3


def _diverging_project(make_project: Any, pruner: dict[str, Any], epochs: int) -> Any:
    return make_project({
        "train.num_threads": 1, "train.epochs": epochs, "tune.n_trials": 4,
        "select.top_k": 1, "select.seeds": 1,
        "tune.sampler": {"name": "random", "seed": 0, "n_startup_trials": 1},
        "tune.pruner": pruner,
        "tune.search_space.lr": {"type": "categorical", "choices": [LEARNING_LR, COLLAPSING_LR]},
        "tune.search_space.batch_size": {"type": "categorical", "choices": [8]},
    })


def _trials(project: Any) -> list[optuna.trial.FrozenTrial]:
    storage = stores.open_storage(stores.resolve_storage(None, {}, project.root))
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()


@pytest.mark.slow
def test_a_collapsed_run_is_stopped_at_chance_and_counted_as_pruned(make_project: Any) -> None:
    # A median pruner that never acts (100 startup trials): only the chance rule can prune.
    project = _diverging_project(make_project, {"name": "median", "n_startup_trials": 100,
                                                "stop_at_chance_after": 2}, epochs=4)
    project.run("tune")
    trials = _trials(project)
    collapsed = [t for t in trials if t.params["lr"] == COLLAPSING_LR]
    learning = [t for t in trials if t.params["lr"] == LEARNING_LR]
    assert collapsed and learning, "seed 0 draws both learning rates in 4 trials"
    for trial in collapsed:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["prune_reason"] == "no better than chance (0.333) after epoch 2"
        assert trial.user_attrs["epochs_run"] == 2
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["epochs_run"] == 4
               for t in learning)
    metrics = yaml.safe_load((project.root / "metrics/tune.json").read_text())
    assert metrics["trials"] == {"complete": len(learning), "pruned": len(collapsed),
                                 "failed": 0}


@pytest.mark.slow
@pytest.mark.parametrize("pruner, epochs", [({"name": "none"}, 3),
                                            ({"name": "successive_halving"}, 2)])
def test_no_pruning_without_a_pruner_or_at_the_last_epoch(
        make_project: Any, pruner: dict[str, Any], epochs: int, tmp_path: Path) -> None:
    # none: the collapsed runs train to the end. At the last epoch (here 2, the chance rule's
    # and the first rung's epoch) stopping saves nothing: the finished run is kept.
    project = _diverging_project(make_project, pruner, epochs=epochs)
    project.run("tune")
    trials = _trials(project)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert {t.value for t in trials if t.params["lr"] == COLLAPSING_LR} == {1 / 3}
