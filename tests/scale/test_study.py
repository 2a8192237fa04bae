"""Fast checks of the study rules: the budget, lost trials, seeds, storage URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from xray_hpo.tuning import storage as stores
from xray_hpo.tuning import study as studies
from xray_hpo.tuning import worker as tune_worker
from xray_hpo.tuning.study import ATTR_SURPLUS, ATTR_TARGET

optuna.logging.set_verbosity(optuna.logging.ERROR)


def journal_study(tmp_path: Path, target: int = 3) -> optuna.Study:
    storage = stores.open_storage(f"journal:{tmp_path / 'journal.log'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr(ATTR_TARGET, target)
    return study


def finish(study: optuna.Study, state: TrialState, **attrs: object) -> None:
    trial = study.ask()
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)


def test_counted_trials_and_budget_places(tmp_path: Path) -> None:
    study = journal_study(tmp_path)
    finish(study, TrialState.COMPLETE)                     # 0 counted
    study.ask()                                            # 1 running
    finish(study, TrialState.FAIL, interrupted=True)       # 2 replaced
    finish(study, TrialState.FAIL, fail_reason="boom")     # 3 counted
    finish(study, TrialState.PRUNED)                       # 4 counted
    trials = study.get_trials()
    assert [studies.is_counted(t) for t in trials] == [True, False, False, True, True]
    assert [t.number for t in studies.budget_trials(study, 2)] == [0, 3]
    # 3 places: trials 0, 1 (running) and 3 take them; a trial numbered 4 or later has none.
    assert studies.within_budget(trials, 3, 3)
    assert not studies.within_budget(trials, 4, 3)
    assert studies.within_budget(trials, 4, 4)


def test_a_trial_created_past_the_budget_is_failed_as_surplus(tmp_path: Path) -> None:
    """Two workers passed the "budget not full" check at once: the later trial stands down."""
    study = journal_study(tmp_path, target=1)
    study.ask()  # another worker's trial holds the only place
    ctx = tune_worker.WorkerContext(study, None, {}, None, None, None)  # type: ignore[arg-type]
    study.optimize(lambda t: tune_worker.objective(t, ctx), n_trials=1, catch=(Exception,))
    surplus = study.trials[-1]
    assert ctx.surplus
    assert surplus.state == TrialState.FAIL
    assert surplus.user_attrs[ATTR_SURPLUS] is True
    assert not studies.is_counted(surplus)
    assert surplus.params == {}, "stood down before sampling or training"


def test_trials_of_dead_local_workers_are_failed_once(tmp_path: Path) -> None:
    study = journal_study(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = studies.socket.gethostname()
    me = str(os.getpid())
    cases = {
        "dead pid": {studies.ATTR_WORKER: f"{host}:{dead.pid}"},
        "alive": {studies.ATTR_WORKER: f"{host}:{me}",
                  studies.ATTR_WORKER_START: studies.process_start(os.getpid())},
        "pid reused": {studies.ATTR_WORKER: f"{host}:{me}", studies.ATTR_WORKER_START: "1"},
        "other host": {studies.ATTR_WORKER: f"elsewhere:{dead.pid}"},
        "untagged, just created": {},
    }
    for attrs in cases.values():
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    assert studies.fail_lost_trials(study) == [0, 2]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL,
                      TrialState.RUNNING, TrialState.RUNNING]
    assert "died" in study.trials[0].user_attrs[studies.ATTR_LOST]
    assert not any(studies.is_counted(t) for t in study.get_trials())
    assert studies.fail_lost_trials(study) == []  # a second pass (or process) is a no-op


def test_an_untagged_running_trial_on_the_journal_is_failed_after_its_grace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = journal_study(tmp_path)
    study.ask()  # a worker killed between creating the trial and tagging it
    assert studies.fail_lost_trials(study) == []
    monkeypatch.setattr(studies, "UNTAGGED_GRACE_S", -1)
    assert studies.fail_lost_trials(study) == [0]


def test_sampler_seeds_differ_per_worker_and_on_resume() -> None:
    assert studies.sampler_seed(42, 0, 0) == 42  # a fresh one-worker study is reproducible
    seeds = {studies.sampler_seed(42, w, n) for w in range(3) for n in (0, 5, 10)}
    assert len(seeds) == 9
    assert studies.sampler_seed(42, 0, 5) == studies.sampler_seed(42, 0, 5)
    assert studies.sampler_seed(42, None, 0) is None


def test_storage_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    have_psycopg3 = importlib.util.find_spec("psycopg") is not None
    url = stores.database_url("postgresql://u@db:5432/optuna")
    assert url == ("postgresql://u@db:5432/optuna" if have_psycopg3
                   else "postgresql+psycopg2://u@db:5432/optuna")
    assert stores.database_url("postgresql+psycopg2://u@db/x") == "postgresql+psycopg2://u@db/x"
    assert stores.database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert stores.redact("postgresql://me:s3cret@db/x") == "postgresql://me:***@db/x"
    env = {stores.ENV_STORAGE: "postgresql://db/x"}
    assert stores.resolve_storage(None, env) == "postgresql://db/x"
    assert stores.resolve_storage("journal:/j", env) == "journal:/j"
    assert stores.resolve_storage(None, {}, Path("/p")) == "journal:/p/.optuna/journal.log"
    assert stores.heartbeat_settings({}) == (5, 20)
    assert stores.heartbeat_settings({stores.ENV_GRACE: "8"}) == (2, 8)
    with pytest.raises(ValueError, match="whole seconds"):
        stores.heartbeat_settings({stores.ENV_GRACE: "soon"})


def test_worker_exits_when_its_parent_is_already_gone() -> None:
    """A worker whose tune stage died before it started must not train on."""
    code = ("import os, signal\nfrom xray_hpo.tuning import lifetime\n"
            "signal.signal(signal.SIGTERM, lifetime.raise_interrupt)\n"
            "try:\n    lifetime.die_with_parent(1)\nexcept KeyboardInterrupt:\n"
            "    raise SystemExit(130)\nraise SystemExit(0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 130, proc.stderr


def test_summary_error_names_the_first_failure(tmp_path: Path) -> None:
    from xray_hpo.tuning.coordinator import TuneError, summarize

    study = journal_study(tmp_path, target=2)
    finish(study, TrialState.FAIL, interrupted=True)
    finish(study, TrialState.FAIL, fail_reason="NonFiniteLossError: first")
    finish(study, TrialState.FAIL, fail_reason="ValueError: second")
    with pytest.raises(TuneError, match="first failure: NonFiniteLossError: first"):
        summarize(study, 2)


OPEN_AT = """
import sys, time
import optuna.storages._rdb.models, psycopg2, sqlalchemy  # imported before the race starts
from xray_hpo.tuning.storage import open_storage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all open at the same instant
open_storage(sys.argv[1])
"""


@pytest.mark.postgres
def test_workers_opening_a_fresh_database_at_once_all_succeed(pg_url: str) -> None:
    """PostgreSQL's CREATE TABLE IF NOT EXISTS races with itself: without the schema lock,
    4 processes opening a fresh database together failed 5 times in 5 ('duplicate key value
    violates unique constraint "pg_type_typname_nsp_index"')."""
    import time

    start = time.time() + 5.0  # past every process's imports
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_AT, pg_url, str(start)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(4)]
    outputs = [worker.communicate(timeout=60)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0] * 4, "\n".join(outputs)
    assert len(optuna.get_all_study_names(stores.open_storage(pg_url))) == 0
