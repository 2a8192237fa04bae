"""Reproducible parallel tuning: each trial sees a fixed set of earlier trials, never
whichever happened to finish first.

With free-running workers what TPE and the pruner see depends on which trial finished
first. In the reproducible modes the coordinator alone samples, and every trial (its
*slot*, 0-based among the counted trials) has a *bound*: it is proposed from, and pruned
against, the counted trials of the slots below its bound, all finished before it starts.

- ``window`` (the default): slot ``s`` has bound ``s - n_workers``, so it sees every trial
  but the ``n_workers`` just before it, and is enqueued as soon as those below its bound
  are counted. A worker waits only when a trial outlasts the ``n_workers`` after it.
- ``rounds``: trials in rounds of ``n_workers`` slots, each bounded by its round's first
  slot; the next round is enqueued once the last is counted, so every round waits for its
  slowest trial (1.3-1.6x the wall time of free workers, bench/RESULTS_parallel.md).

Workers only run enqueued trials (:class:`EnqueuedTrialsOnly`), each proposed with a
sampler seeded by its slot, and the pruner sees only the trials below the bound
(:class:`EarlierSlotsPruner`). So a trial's parameters and pruning decisions depend on the
commit, the params and ``n_workers``, never on timing.
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

ATTR_PARALLEL = "parallel"  # study: "window", "rounds" or "free", set by the coordinator
REPRODUCIBLE_MODES = ("window", "rounds")
ATTR_SLOT = "slot"  # trial: its place among the counted trials (0-based)
# trial: its bound, the slots it sees are those below (in rounds mode its round's first
# slot, hence the name, kept so that stored studies read the same)
ATTR_ROUND = "round"
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
    """The study as a worker runs it: in a reproducible mode it runs only the coordinator's
    trials and prunes against the slots below each one's bound; free, it samples with a
    seed of its own."""
    base = make_pruner(pruner, epochs)
    storage = probe._storage
    if probe.user_attrs.get(ATTR_PARALLEL) in REPRODUCIBLE_MODES:
        return EnqueuedTrialsOnly(probe.study_name, storage, pruner=EarlierSlotsPruner(base),
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
    """Parameters for ``slot`` from ``history`` (the counted trials below its bound, by
    trial number), sampled in a scratch in-memory study."""
    scratch = optuna.create_study(direction="maximize", sampler=round_sampler(sampler, slot))
    scratch.add_trials(history)
    trial = scratch.ask()
    suggest_hparams(trial, space)
    return dict(trial.params)


def position(trial: FrozenTrial) -> int:
    """A trial's slot; -1 for one of no slot (run free, or by one worker, before the study
    went parallel), which every later trial sees."""
    return int(trial.user_attrs.get(ATTR_SLOT, -1))


def _replace_lost(study: optuna.Study, trials: list[FrozenTrial]) -> list[int]:
    """Enqueue again, with the same parameters, slot and bound, each trial of ours that was
    lost (its worker died or was interrupted: failed without a reason); their slots."""
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
    return replaced


def _open_study(study: optuna.Study,
                target: int) -> tuple[list[FrozenTrial], list[FrozenTrial], list[int]] | None:
    """What both feeds start from: the study's trials, its counted ones by trial number,
    and the slots of the lost trials enqueued again; None once ``target`` are counted."""
    trials = study.get_trials(deepcopy=False)
    counted = sorted((t for t in trials if is_counted(t)), key=lambda t: t.number)
    if len(counted) >= target:
        return None
    return trials, counted, _replace_lost(study, trials)


def feed_rounds(study: optuna.Study, target: int, width: int, space: Mapping[str, ParamSpec],
                sampler: SamplerConfig) -> list[int]:
    """Rounds mode: enqueue what the study needs next; returns the slots enqueued.

    Lost trials are enqueued again first. When no trial is waiting or running, the next
    round is proposed from every counted trial.
    """
    opened = _open_study(study, target)
    if opened is None:
        return []
    trials, counted, replaced = opened
    if replaced or any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
        return replaced
    start = len(counted)
    slots = list(range(start, min(start + width, target)))
    proposals = [propose(counted, slot, space, sampler) for slot in slots]
    for slot, params in zip(slots, proposals, strict=True):
        study.enqueue_trial(params, user_attrs={ATTR_SLOT: slot, ATTR_ROUND: start})
    return slots


def feed_window(study: optuna.Study, target: int, width: int, space: Mapping[str, ParamSpec],
                sampler: SamplerConfig) -> list[int]:
    """Window mode: enqueue every next slot whose bound (``slot - width``) is reached, i.e.
    whose slots below the bound are all counted; returns the slots enqueued.

    Slots continue after the study's counted trials of no slot, if any. Several slots may
    wait in the queue: a worker that frees up takes the next at once.
    """
    opened = _open_study(study, target)
    if opened is None:
        return []
    trials, counted, enqueued = opened
    ours = [t for t in trials if ATTR_SLOT in t.user_attrs]
    first = min((position(t) for t in ours), default=len(counted))
    taken = {position(t) for t in ours}
    done = {position(t) for t in counted if ATTR_SLOT in t.user_attrs}
    slot = max(taken, default=first - 1) + 1
    while slot < target:
        bound = max(first, slot - width)
        if any(below not in done for below in range(first, bound)):
            break  # a trial below the bound still runs: propose this slot once it is counted
        history = [t for t in counted if position(t) < bound]
        params = propose(history, slot, space, sampler)
        study.enqueue_trial(params, user_attrs={ATTR_SLOT: slot, ATTR_ROUND: bound})
        enqueued.append(slot)
        slot += 1
    return enqueued


class _EarlierSlotsStorage:
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


class EarlierSlotsPruner(optuna.pruners.BasePruner):
    """``inner`` deciding on a trial against the counted trials below its bound only.

    Those are finished before the trial starts, so the decision at each epoch is the same
    whatever the trials running beside it are doing. A trial of no slot (free mode) is
    decided against the whole study, as ``inner`` alone would.
    """

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self._inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        bound = trial.user_attrs.get(ATTR_ROUND)
        if bound is None:
            return self._inner.prune(study, trial)

        # By slot, not round: in rounds mode the two are the same rule (a slot below its
        # round's first slot is of an earlier round, and the converse).
        def keep(other: FrozenTrial) -> bool:
            return other.number == trial.number or (is_counted(other)
                                                    and position(other) < bound)

        view = optuna.Study(study.study_name, _EarlierSlotsStorage(study._storage, keep),
                            sampler=study.sampler, pruner=self._inner)
        return self._inner.prune(view, trial)
