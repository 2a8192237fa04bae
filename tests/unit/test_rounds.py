"""The reproducible modes' pieces (window, rounds) on an in-memory study: what is enqueued
when, and what the pruner sees."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from xray_hpo.config import load_config
from xray_hpo.tuning.rounds import (
    ATTR_ROUND,
    ATTR_SLOT,
    EarlierSlotsPruner,
    EnqueuedTrialsOnly,
    NoEnqueuedTrial,
    feed_rounds,
    feed_window,
)
from xray_hpo.tuning.search_space import suggest_hparams

CONFIG = load_config()
SPACE, SAMPLER = CONFIG.tune.search_space, CONFIG.tune.sampler


def new_study() -> tuple[optuna.Study, EnqueuedTrialsOnly]:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, direction="maximize", study_name="s")
    return study, EnqueuedTrialsOnly("s", storage, pruner=optuna.pruners.NopPruner())


def score(params: dict[str, Any]) -> float:
    return round(params["lr"] * 10 + params["p_dropout"], 6)


def ask(worker: EnqueuedTrialsOnly) -> optuna.Trial:
    """What a worker's objective does first: suggest (the enqueued values come back)."""
    trial = worker.ask()
    suggest_hparams(trial, SPACE)
    return trial


def run_round(worker: EnqueuedTrialsOnly, order: list[int]) -> None:
    """Run the waiting trials, finishing them in ``order`` (positions in the round)."""
    asked = []
    while True:
        try:
            asked.append(ask(worker))
        except NoEnqueuedTrial:
            break
    for position in order:
        trial = asked[position]
        worker.tell(trial, score(trial.params))


def params_by_slot(study: optuna.Study) -> dict[int, dict[str, Any]]:
    return {t.user_attrs[ATTR_SLOT]: t.params for t in study.get_trials()
            if t.state == TrialState.COMPLETE}


def test_each_round_is_sampled_from_earlier_rounds_whatever_the_finishing_order() -> None:
    studies = []
    for order in ([0, 1], [1, 0]):
        study, worker = new_study()
        for expected in ([0, 1], [2, 3], [4, 5], [6, 7]):
            assert feed_rounds(study, 8, 2, SPACE, SAMPLER) == expected
            assert feed_rounds(study, 8, 2, SPACE, SAMPLER) == []  # the round is pending
            run_round(worker, order)
        assert feed_rounds(study, 8, 2, SPACE, SAMPLER) == []  # the budget is full
        studies.append(study)
    first, second = (params_by_slot(s) for s in studies)
    assert first == second and len(first) == 8
    assert len({tuple(p.values()) for p in first.values()}) == 8  # slots are seeded apart
    rounds = [t.user_attrs[ATTR_ROUND] for t in studies[0].get_trials()]
    assert rounds == [0, 0, 2, 2, 4, 4, 6, 6]


def test_a_lost_trial_is_enqueued_again_with_its_parameters() -> None:
    study, worker = new_study()
    feed_rounds(study, 4, 2, SPACE, SAMPLER)
    lost, kept = ask(worker), ask(worker)
    worker.tell(kept, 0.5)
    worker.tell(lost, state=TrialState.FAIL)  # no fail_reason: its worker died
    assert feed_rounds(study, 4, 2, SPACE, SAMPLER) == [0]
    replacement = ask(worker)
    assert replacement.params == lost.params and len(lost.params) == 5
    assert replacement.user_attrs[ATTR_SLOT] == 0 and replacement.user_attrs[ATTR_ROUND] == 0


class Recorder(optuna.pruners.BasePruner):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.seen = [t.number for t in study.get_trials(deepcopy=False)]
        return False


@pytest.mark.parametrize("finished_in_round", [False, True])
def test_the_pruner_compares_only_with_counted_trials_of_earlier_rounds(
        finished_in_round: bool) -> None:
    study, worker = new_study()
    feed_rounds(study, 4, 2, SPACE, SAMPLER)
    run_round(worker, [0, 1])
    feed_rounds(study, 4, 2, SPACE, SAMPLER)
    mine, other = ask(worker), ask(worker)
    if finished_in_round:  # the other trial of the round finishing first changes nothing
        worker.tell(other, 0.9)
    inner = Recorder()
    frozen = study._storage.get_trial(mine._trial_id)
    assert EarlierSlotsPruner(inner).prune(study, frozen) is False
    assert inner.seen == [0, 1, mine.number]


def test_window_enqueues_each_slot_once_the_slots_below_its_bound_are_counted() -> None:
    study, worker = new_study()
    # Bound = slot - 2: slots 0, 1 (bound 0) and 2 (bound 0) at once, nothing counted yet.
    assert feed_window(study, 6, 2, SPACE, SAMPLER) == [0, 1, 2]
    assert feed_window(study, 6, 2, SPACE, SAMPLER) == []
    zero, one = ask(worker), ask(worker)
    worker.tell(one, score(one.params))  # slot 1 first: slot 3 (bound 1) waits for slot 0
    assert feed_window(study, 6, 2, SPACE, SAMPLER) == []
    worker.tell(zero, score(zero.params))
    assert feed_window(study, 6, 2, SPACE, SAMPLER) == [3, 4]  # bounds 1 and 2
    bounds = {t.user_attrs[ATTR_SLOT]: t.user_attrs[ATTR_ROUND] for t in study.get_trials()}
    assert bounds == {0: 0, 1: 0, 2: 0, 3: 1, 4: 2}


def run_window(order: str) -> dict[int, dict[str, Any]]:
    """Six slots with two workers, finishing the two oldest running trials newest first
    (``order`` "new") or oldest first ("old")."""
    study, worker = new_study()
    running: list[optuna.Trial] = []
    while True:
        feed_window(study, 6, 2, SPACE, SAMPLER)
        while len(running) < 2:
            try:
                running.append(ask(worker))
            except NoEnqueuedTrial:
                break
        if not running:
            break
        trial = running.pop(-1 if order == "new" and len(running) > 1 else 0)
        worker.tell(trial, score(trial.params))
    return params_by_slot(study)


def test_window_gives_the_same_trials_whatever_the_finishing_order() -> None:
    oldest_first, newest_first = run_window("old"), run_window("new")
    assert oldest_first == newest_first and sorted(oldest_first) == list(range(6))


@pytest.mark.parametrize("other_finished", [False, True])
def test_the_window_pruner_sees_only_the_slots_below_the_bound(other_finished: bool) -> None:
    study, worker = new_study()
    feed_window(study, 6, 2, SPACE, SAMPLER)
    for trial in (ask(worker), ask(worker), ask(worker)):  # slots 0, 1, 2 (bounds 0)
        worker.tell(trial, score(trial.params))
    assert feed_window(study, 6, 2, SPACE, SAMPLER) == [3, 4, 5]
    three, four = ask(worker), ask(worker)  # bounds 1 and 2
    if other_finished:  # slot 3 finishing before slot 4 is pruned changes nothing
        worker.tell(three, 0.9)
    inner = Recorder()
    frozen = study._storage.get_trial(four._trial_id)
    assert EarlierSlotsPruner(inner).prune(study, frozen) is False
    assert inner.seen == [0, 1, four.number]
