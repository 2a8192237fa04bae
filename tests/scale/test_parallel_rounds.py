"""Reproducible parallel tuning (``tune.parallel: window`` and ``rounds``): two workers give
the same study, byte for byte, whatever the timing; and robust selection on a pool equals
serial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from xray_hpo.config import HParams, TrainConfig
from xray_hpo.tuning import storage as stores
from xray_hpo.tuning.lifetime import ENV_TEST_DELAY
from xray_hpo.tuning.pool import train_many
from xray_hpo.tuning.rounds import ATTR_ROUND, ATTR_SLOT

pytestmark = pytest.mark.slow

OUTPUTS = ("best_params.yaml", "metrics/tune.json", "metrics/selection.json",
           "plots/tune_trials.csv")
# Enough trials that TPE (2 random start-up trials here) decides the last slots in both
# modes (window: slot 4 sees slots 0-1), and successive halving with min_resource 1 at
# epoch 1 of every trial (and at epoch 3, the last, which is never pruned).
ROUNDS = {"tune.n_trials": 6, "tune.n_workers": 2, "tune.sampler.n_startup_trials": 2,
          "train.epochs": 3, "train.num_threads": 1, "tune.pruner.min_resource": 1,
          "select.top_k": 2, "select.seeds": 2}


def trials_by_number(root: Path) -> list[tuple[Any, ...]]:
    backend = stores.open_storage(stores.resolve_storage(None, {}, root))
    (name,) = optuna.get_all_study_names(backend)
    study = optuna.load_study(study_name=name, storage=backend)
    return [(t.number, t.state.name, t.params, t.value, dict(t.intermediate_values),
             t.user_attrs.get(ATTR_SLOT), t.user_attrs.get(ATTR_ROUND))
            for t in study.get_trials()]


def run_tune(make_project: Any, mode: str,
             env: dict[str, str]) -> tuple[dict[str, bytes], list[Any]]:
    project = make_project({**ROUNDS, "tune.parallel": mode})
    project.run("tune", env=env)
    outputs = {name: (project.root / name).read_bytes() for name in OUTPUTS}
    return outputs, trials_by_number(project.root)


# Each slot's bound: the slots below it are what it was sampled from and pruned against.
BOUNDS = {"window": [0, 0, 0, 1, 2, 3], "rounds": [0, 0, 2, 2, 4, 4]}


@pytest.mark.parametrize("mode", ["window", "rounds"])
def test_two_workers_give_the_same_study_whatever_the_timing(make_project: Any,
                                                             mode: str) -> None:
    first, first_trials = run_tune(make_project, mode, {})
    # Worker 0 sleeps after every epoch: the other one runs more of the trials, and trials
    # running side by side finish in the other order. (Two runs at the same timing are the
    # easier case of this one.)
    slow, slow_trials = run_tune(make_project, mode, {ENV_TEST_DELAY: "0:0.4"})
    assert [t[5] for t in first_trials] == list(range(6))  # one trial per slot, in order
    assert [t[6] for t in first_trials] == BOUNDS[mode]
    assert first_trials == slow_trials
    for name in OUTPUTS:
        assert first[name] == slow[name], name


def test_selection_re_runs_on_a_pool_equal_serial_ones(prepared_template: Path) -> None:
    jobs = [(HParams(lin1_size=64, lin2_size=32, p_dropout=0.1, lr=0.003, batch_size=8), 43),
            (HParams(lin1_size=100, lin2_size=50, p_dropout=0.2, lr=0.01, batch_size=4), 44),
            (HParams(lin1_size=64, lin2_size=32, p_dropout=0.1, lr=0.003, batch_size=8), 44)]
    config = TrainConfig(epochs=2, num_threads=1)
    serial = list(train_many(jobs, config, prepared_template, workers=1, threads=1))
    pooled = list(train_many(jobs, config, prepared_template, workers=2, threads=1))
    assert pooled == serial
    assert serial[0] != serial[2]  # the seed matters, so equal lists say something
