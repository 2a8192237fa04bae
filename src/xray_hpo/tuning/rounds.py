"""Reproducible parallel tuning: trials in fixed rounds, each seeing only earlier rounds.

With free-running workers what TPE and the pruner see depends on which trial finished
first. In rounds mode (``tune.parallel: rounds``) the coordinator alone samples: once
every trial of the previous round is counted, it proposes the next ``n_workers`` trials
(slots ``start .. start + n_workers - 1``), each from the counted trials of earlier rounds
with a sampler seeded by its slot, and enqueues them in slot order. Workers only run
enqueued trials (:class:`EnqueuedTrialsOnly`), and the pruner compares a trial only with
the counted trials of earlier rounds (:class:`EarlierRoundsPruner`). So a trial's
parameters and pruning decisions depend on the commit, the params and the round width,
never on timing. The cost is the wait for each round's slowest trial.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from xray_hpo.config import ParamSpec, PrunerConfig, SamplerConfig
from xray_hpo.tuning.search_space import suggest_hparams
from xray_hpo.tuning.study import (
    ATTR_SURPLUS,
    holds_slot,
    is_counted,
    make_pruner,
    make_sampler,
)

ATTR_PARALLEL = "parallel"  # study: "rounds" or "free", set by the coordinator
ATTR_SLOT = "slot"  # trial: its place among the counted trials (0-based)
ATTR_ROUND = "round"  # trial: the first slot of its round
FIXED_PARAMS = "fixed_params"  # Optuna's system attr of an enqueued trial


class NoEnqueuedTrial(Exception):
    """A rounds-mode worker found nothing to run: the next round is not enqueued yet."""


class EnqueuedTrialsOnly(optuna.Study):
    """A study whose ``ask`` only hands out enqueued (WAITING) trials, never samples one.

    ``study.optimize`` asks outside its objective, so the exception leaves ``optimize``
    before any trial is created: two workers racing for one enqueued trial cannot make a
    surplus trial, and trial numbers are those the coordinator enqueued.
    """

    def ask(self, fixed_distributions: Any = None) -> optuna.Trial:
        trial_id = self._pop_waiting_trial_id()
        if trial_id is None:
            raise NoEnqueuedTrial("no enqueued trial")
        return optuna.Trial(self, trial_id)


def worker_study(probe: optuna.Study, sampler: SamplerConfig, pruner: PrunerConfig,
                 epochs: int, worker_index: int | None) -> optuna.Study:
    """The study as a worker runs it: in rounds mode it runs only the coordinator's trials
    and prunes against earlier rounds; free, it samples with a seed of its own."""
    base = make_pruner(pruner, epochs)
    storage = probe._storage
    if probe.user_attrs.get(ATTR_PARALLEL) == "rounds":
        return EnqueuedTrialsOnly(probe.study_name, storage, pruner=EarlierRoundsPruner(base),
                                  sampler=optuna.samplers.RandomSampler(seed=0))  # unused
    return optuna.load_study(
        study_name=probe.study_name, storage=storage, pruner=base,
        sampler=make_sampler(sampler, worker_index,
                             n_existing=len(probe.get_trials(deepcopy=False))))


def slot_seed(base: int, slot: int) -> int:
    """The sampler seed of one slot: independent of the worker and of the asking order."""
    digest = hashlib.sha256(f"{base}:slot:{slot}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def round_sampler(config: SamplerConfig, slot: int) -> optuna.samplers.BaseSampler:
    seed = slot_seed(config.seed, slot)
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # No constant liar: a round's trials are proposed from finished trials only.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials,
                                      constant_liar=False)


def propose(history: list[FrozenTrial], slot: int, space: Mapping[str, ParamSpec],
            sampler: SamplerConfig) -> dict[str, Any]:
    """Parameters for ``slot`` from ``history`` (the counted trials of earlier rounds,
    by trial number), sampled in a scratch in-memory study."""
    scratch = optuna.create_study(direction="maximize", sampler=round_sampler(sampler, slot))
    scratch.add_trials(history)
    trial = scratch.ask()
    suggest_hparams(trial, space)
    return dict(trial.params)


def feed_rounds(study: optuna.Study, target: int, width: int, space: Mapping[str, ParamSpec],
                sampler: SamplerConfig) -> list[int]:
    """Enqueue what the study needs next; returns the slots enqueued (for logging).

    A trial of this mode that was lost (its worker died or was interrupted: failed
    without a reason) is enqueued again with the same parameters and slot. When no trial
    is waiting or running, the next round is proposed from every counted trial.
    """
    trials = study.get_trials(deepcopy=False)
    counted = sorted((t for t in trials if is_counted(t)), key=lambda t: t.number)
    if len(counted) >= target:
        return []
    ours = [t for t in trials if ATTR_SLOT in t.user_attrs]
    filled = {t.user_attrs[ATTR_SLOT] for t in ours
              if holds_slot(t) or t.state == TrialState.WAITING}
    replaced: list[int] = []
    for trial in sorted(ours, key=lambda t: t.number):
        slot = trial.user_attrs[ATTR_SLOT]
        if (trial.state == TrialState.FAIL and not is_counted(trial) and slot not in filled
                and ATTR_SURPLUS not in trial.user_attrs):
            study.enqueue_trial(dict(trial.system_attrs[FIXED_PARAMS]),
                                user_attrs={ATTR_SLOT: slot,
                                            ATTR_ROUND: trial.user_attrs[ATTR_ROUND]})
            filled.add(slot)
            replaced.append(slot)
    if replaced or any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
        return replaced
    start = len(counted)
    slots = list(range(start, min(start + width, target)))
    proposals = [propose(counted, slot, space, sampler) for slot in slots]
    for slot, params in zip(slots, proposals, strict=True):
        study.enqueue_trial(params, user_attrs={ATTR_SLOT: slot, ATTR_ROUND: start})
    return slots


class _EarlierRoundsStorage:
    """A read view of a storage that lists only the trials ``keep`` accepts."""

    def __init__(self, inner: Any, keep: Callable[[FrozenTrial], bool]) -> None:
        self._inner = inner
        self._keep = keep

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Any = None) -> list[FrozenTrial]:
        return [t for t in self._inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)
                if self._keep(t)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class EarlierRoundsPruner(optuna.pruners.BasePruner):
    """``inner`` deciding on a trial against the counted trials of earlier rounds only.

    Those are finished before the trial's round starts, so the decision at each epoch is
    the same whatever the other trials of the round are doing. A trial of no round (free
    mode) is decided against the whole study, as ``inner`` alone would.
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self._inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        round_start = trial.user_attrs.get(ATTR_ROUND)
        if round_start is None:
            return self._inner.prune(study, trial)

        def keep(other: FrozenTrial) -> bool:
            return other.number == trial.number or (
                is_counted(other) and other.user_attrs.get(ATTR_ROUND, -1) < round_start)

        view = optuna.Study(study.study_name, _EarlierRoundsStorage(study._storage, keep),
                            sampler=study.sampler, pruner=self._inner)
        return self._inner.prune(view, trial)
