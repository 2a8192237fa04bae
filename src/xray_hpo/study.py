"""Where the Optuna study lives, what it is called, and which of its trials count.

The study is persistent: a journal file on one machine by default, or any RDB URL
(PostgreSQL) shared by many machines. Its name is a fingerprint of everything that
changes results except ``n_trials``, so raising ``tune.n_trials`` continues a study and
changing the space, the data or the training settings starts a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from xray_hpo.config import Config, ParamSpec, PrunerConfig, SamplerConfig
from xray_hpo.search_space import space_as_dict

ENV_STORAGE = "XRAY_HPO_STORAGE"
DEFAULT_JOURNAL = ".optuna/journal.log"
# A worker that stops beating for GRACE seconds is dead: its trial is failed and replaced.
HEARTBEAT_INTERVAL_S = 5
HEARTBEAT_GRACE_S = 20


def resolve_storage(cli_value: str | None = None, environ: Mapping[str, str] = os.environ,
                    project_root: Path = Path(".")) -> str:
    """CLI option, then $XRAY_HPO_STORAGE, then the project's journal file."""
    value = cli_value or environ.get(ENV_STORAGE)
    if value:
        return value
    return f"journal:{(project_root / DEFAULT_JOURNAL).resolve()}"


def open_storage(spec: str) -> BaseStorage:
    if spec.startswith("journal:"):
        path = Path(spec.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return RDBStorage(
        spec,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        grace_period=HEARTBEAT_GRACE_S,
        engine_kwargs={"pool_pre_ping": True},
    )


def redact(spec: str) -> str:
    """A storage URL safe to print or log: the password is replaced."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", spec)


def study_spec(config: Config, data_hashes: Mapping[str, str]) -> dict[str, Any]:
    """Everything a worker needs to run trials, and everything that changes their results."""
    return {
        "image_size": config.prepare.image_size,
        "train": asdict(config.train),
        "search_space": space_as_dict(config.tune.search_space),
        "sampler": asdict(config.tune.sampler),
        "pruner": asdict(config.tune.pruner),
        "data": dict(sorted(data_hashes.items())),
        "objective": "maximize best-epoch validation accuracy",
    }


def study_name(prefix: str, spec: Mapping[str, Any]) -> str:
    # num_threads and device do not change what is searched; they stay out of the name.
    relevant = {**spec, "train": {k: v for k, v in spec["train"].items()
                                  if k not in ("num_threads", "device")}}
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
    return f"{prefix}-{digest[:12]}"


def space_from_spec(spec: Mapping[str, Any]) -> dict[str, ParamSpec]:
    return {name: ParamSpec(**{k: (tuple(v) if k == "choices" else v) for k, v in item.items()})
            for name, item in spec["search_space"].items()}


def make_sampler(config: SamplerConfig, worker_index: int | None) -> optuna.samplers.BaseSampler:
    # Each local worker gets its own seed so two workers never propose the same point;
    # a remote worker (index None) draws from fresh entropy.
    seed = None if worker_index is None else config.seed + worker_index
    if config.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.n_startup_trials,
                                      constant_liar=True)


def make_pruner(config: PrunerConfig, epochs: int) -> optuna.pruners.BasePruner:
    if config.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials,
                                           n_warmup_steps=config.n_warmup_steps)
    if config.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, config.n_warmup_steps),
                                              max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


# --- which trials count ------------------------------------------------------------------

def worker_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_counted(trial: FrozenTrial) -> bool:
    """Complete, pruned, and failed *by the objective* (with a reason) count toward n_trials.

    A trial whose worker was interrupted, killed or lost its heartbeat carries no
    ``fail_reason``: it says nothing about its configuration, so a replacement is run.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def budget_trials(study: optuna.Study, n_trials: int) -> list[FrozenTrial]:
    """The first ``n_trials`` counted trials: lowering n_trials reproduces a shorter study."""
    counted = [t for t in study.get_trials(deepcopy=False) if is_counted(t)]
    return sorted(counted, key=lambda t: t.number)[:n_trials]


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker process on this host no longer exists.

    The journal file storage has no heartbeat; on one machine a dead PID is exact evidence.
    """
    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tag = trial.user_attrs.get("worker", "")
        tag_host, _, pid = tag.rpartition(":")
        if tag_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            study._storage.set_trial_user_attr(trial._trial_id, "lost", f"worker {tag} died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    return failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())
