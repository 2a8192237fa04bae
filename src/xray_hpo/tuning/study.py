"""What the Optuna study is called, how it samples and prunes, and which of its trials count.

The study is persistent (xray_hpo.tuning.storage: a journal file on one machine, or an RDB
URL shared by many machines). Its name is a fingerprint of everything that
changes results except ``n_trials``, so raising ``tune.n_trials`` continues a study and
changing the space, the data or the training settings starts a new one.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict

from xray_hpo.config import (
    RUNTIME_TRAIN_KEYS,
    Config,
    PrunerConfig,
    SamplerConfig,
    SearchSpace,
    TrainConfig,
    parse,
)
from xray_hpo.tuning.search_space import space_as_dict

# The objective tags its trial with its worker within milliseconds of creating it; on the
# journal (one machine, one clock) a RUNNING trial still untagged after this long was
# created by a worker killed in that window.
UNTAGGED_GRACE_S = 60
ATTR_WORKER = "worker"  # "host:pid" of the process running the trial
ATTR_WORKER_START = "worker_start"  # that process's start time (guards against PID reuse)
ATTR_LOST = "lost"  # set when a trial is failed because its worker died
ATTR_SPEC = "spec"  # study: the settings that define it (search space, data hashes, ...)
ATTR_TARGET = "n_trials_target"  # study: how many counted trials the coordinator wants
# Seconds in train() less the per-epoch reporting (complete trials): the rest of a trial's
# time is its fixed cost (storage, sampling, tracking).
ATTR_TRAIN_S = "train_s"
ATTR_SURPLUS = "surplus"  # a trial created past the budget by a race; failed, not counted


def study_spec(config: Config, data_hashes: Mapping[str, str]) -> dict[str, Any]:
    """Everything a worker needs to run trials, and everything that changes their results."""
    return {
        "image_size": config.prepare.image_size,
        "train": train_spec(config),
        "search_space": space_as_dict(config.tune.active_space),
        "sampler": config.tune.sampler.model_dump(),
        "pruner": config.tune.pruner.model_dump(),
        "data": dict(sorted(data_hashes.items())),
        "objective": "maximize best-epoch validation accuracy",
    }


def train_spec(config: Config) -> dict[str, Any]:
    """The training settings a study's trials share. Augmentation settings only where they
    act (a strength above 0, or a searched one), so the default study keeps its name."""
    train = config.train.model_dump()
    if config.train.augment.strength == 0 and "augment_strength" not in config.tune.active_space:
        del train["augment"]
    return train


def study_name(prefix: str, spec: Mapping[str, Any]) -> str:
    # num_threads and device do not change what is searched; they stay out of the name.
    relevant = {**spec, "train": {k: v for k, v in spec["train"].items()
                                  if k not in RUNTIME_TRAIN_KEYS}}
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return f"{prefix}-{digest[:12]}"


class StudySettings(BaseModel):
    """What a worker runs trials with, read back from the study's stored spec through the
    same models that validate params.yaml (the spec's other keys are not settings)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")
    train: TrainConfig
    sampler: SamplerConfig
    pruner: PrunerConfig
    search_space: SearchSpace


def settings_from_spec(spec: Mapping[str, Any], study: str,
                       num_threads: int | None = None) -> StudySettings:
    """The stored spec validated (a spec written by another version, or edited in storage,
    fails here in one line); ``num_threads``: this worker's own, in place of the stored."""
    raw = dict(spec)
    if num_threads is not None:
        raw["train"] = {**dict(spec.get("train") or {}), "num_threads": num_threads}
    settings: StudySettings = parse(StudySettings, raw, f"study {study}: stored spec")
    return settings


def sampler_seed(base: int, worker_index: int | None, n_existing: int) -> int | None:
    """Seed of one worker's sampler.

    Each local worker gets its own seed, so two workers never propose the same point; the
    number of trials already in the study is mixed in, so a resumed study (raised
    n_trials) does not replay the first run's random draws. A fresh study with one worker
    is reproducible. A remote worker (index None) draws from fresh entropy.
    """
    if worker_index is None:
        return None
    if worker_index == 0 and n_existing == 0:
        return base
    digest = hashlib.sha256(f"{base}:{worker_index}:{n_existing}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def make_sampler(config: SamplerConfig, worker_index: int | None,
                 n_existing: int = 0) -> optuna.samplers.BaseSampler:
    seed = sampler_seed(config.seed, worker_index, n_existing)
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials,
                                      constant_liar=True)


def make_pruner(config: PrunerConfig, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner of ``tune.pruner``; steps are 1-based epochs, values validation accuracy."""
    if config.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_resource, reduction_factor=config.reduction_factor)
    if config.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=config.min_resource,
                                              max_resource=epochs,
                                              reduction_factor=config.reduction_factor)
    if config.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials,
                                           n_warmup_steps=config.n_warmup_steps)
    return optuna.pruners.NopPruner()


# --- which trials count ------------------------------------------------------------------

def worker_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def tag_trial(trial: optuna.Trial) -> None:
    """Name the process running ``trial``, so a dead one can be detected exactly."""
    trial.set_user_attr(ATTR_WORKER, worker_tag())
    start = process_start(os.getpid())
    if start is not None:
        trial.set_user_attr(ATTR_WORKER_START, start)


def is_counted(trial: FrozenTrial) -> bool:
    """Complete, pruned, and failed *by the objective* (with a reason) count toward n_trials.

    A trial whose worker was interrupted, killed or lost its heartbeat carries no
    ``fail_reason``: it says nothing about its configuration, so a replacement is run.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def holds_slot(trial: FrozenTrial) -> bool:
    """Counted, or running and so on its way to being counted."""
    return trial.state == TrialState.RUNNING or is_counted(trial)


def budget_trials(study: optuna.Study, n_trials: int) -> list[FrozenTrial]:
    """The first ``n_trials`` counted trials: lowering n_trials reproduces a shorter study."""
    counted = [t for t in study.get_trials(deepcopy=False) if is_counted(t)]
    return sorted(counted, key=lambda t: t.number)[:n_trials]


def within_budget(trials: list[FrozenTrial], number: int, n_trials: int) -> bool:
    """Whether the new trial ``number`` has a place among the study's ``n_trials``.

    Workers check "counted + running < n_trials" before they create a trial, but two of
    them can pass that check at the same moment. Trial numbers are unique and ordered
    (assigned under a lock by every storage), so they arbitrate: a trial keeps its place
    only if fewer than ``n_trials`` trials numbered before it are counted or running.
    """
    ahead = sum(1 for t in trials if t.number < number and holds_slot(t))
    return ahead < n_trials


def fail_lost_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker is gone; returns their numbers.

    Local workers (this host) are checked exactly by PID; workers on other machines by the
    RDB heartbeat (Optuna's ``fail_stale_trials``, which ``study.optimize`` only runs
    before it starts a trial, so workers waiting for the end of the budget must call it).
    """
    failed = fail_dead_local_trials(study)
    # study._storage is the RDBStorage wrapped in Optuna's cache (which forwards the
    # heartbeat), so ask for the interval rather than test for RDBStorage.
    interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
    if interval is not None:
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        failed += sorted(after - before)
    return failed


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker process on this host no longer exists.

    The journal file storage has no heartbeat; on one machine a dead PID is exact evidence
    (with the process start time, so a reused PID does not keep a dead trial alive).
    """
    host = socket.gethostname()
    journal = isinstance(study._storage, JournalStorage)
    now = datetime.datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = trial.user_attrs.get(ATTR_WORKER)
        if tag is None:
            started = trial.datetime_start
            if (journal and started is not None
                    and (now - started).total_seconds() > UNTAGGED_GRACE_S):
                reason = "its worker died before tagging it"
            else:
                continue
        else:
            tag_host, _, pid = str(tag).rpartition(":")
            if tag_host != host or not pid.isdigit():
                continue
            if _pid_alive(int(pid), trial.user_attrs.get(ATTR_WORKER_START)):
                continue
            reason = f"worker {tag} died"
        if _fail_trial(study, trial, reason):
            failed.append(trial.number)
    return failed


def _fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Mark a trial failed without a ``fail_reason`` (so it is replaced); False if another
    process got there first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, ATTR_LOST, reason)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    # The journal ignores a second process's write to a finished trial instead of raising.
    final = storage.get_trial(trial._trial_id)
    return final.state == TrialState.FAIL and final.user_attrs.get(ATTR_LOST) == reason


def _pid_alive(pid: int, start: object = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        # A zombie child still answers kill(0); treat it as dead.
        if "\nState:\tZ" in status.read_text():
            return False
    # Same PID, different start time: the worker died and the PID was reused.
    return start is None or process_start(pid) in (None, str(start))


def file_sha256(path: Path) -> str:
    """The content hash that ties a study to the prepared data it was tuned on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
