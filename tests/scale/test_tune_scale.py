"""The tune stage at scale: shared storage, parallel and remote workers, kills, interrupts.

Every test runs the real stage (and real ``xray-hpo tune-worker`` processes) on a tiny
project, once on the default journal file and once on the PostgreSQL server at
127.0.0.1:5432 (a fresh database per test, dropped afterwards).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from xray_hpo.tuning import storage as stores
from xray_hpo.tuning import study as studies
from xray_hpo.tuning.study import ATTR_SURPLUS, ATTR_TARGET

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# A learning rate that "diverges": params validation now rejects any lr large enough to
# blow the loss up for real (training's own non-finite guard has its unit test), so a
# sitecustomize hook in the stage's processes and its workers makes train() raise that
# guard's error for exactly this value. What is tested is how the study handles the failure.
DIVERGING_LR = 0.0999
DIVERGE_HOOK = f"""
import importlib.abc, importlib.machinery, sys

class _Diverge(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "xray_hpo.training":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            real_train = module.train

            def train(hparams, *args, **kwargs):
                if hparams.lr == {DIVERGING_LR!r}:
                    raise module.NonFiniteLossError(
                        "non-finite loss at epoch 1 (train nan, val nan)")
                return real_train(hparams, *args, **kwargs)
            module.train = train
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Diverge())
"""


def diverging_env(project: Any) -> dict[str, str]:
    """PYTHONPATH with the divergence hook first, for the stage and the workers it spawns."""
    hook = project.root / "diverge_hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(DIVERGE_HOOK)
    return {"PYTHONPATH": f"{hook}{os.pathsep}{project.root / 'src'}"}


@dataclass
class Storage:
    kind: str
    url: str | None  # None: the project's default journal file

    def env(self) -> dict[str, str]:
        return {"XRAY_HPO_STORAGE": self.url} if self.url else {}

    def spec(self, root: Path) -> str:
        return self.url or stores.resolve_storage(None, {}, root)


@pytest.fixture(params=["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest) -> Storage:
    if request.param == "journal":
        return Storage("journal", None)
    return Storage("postgres", request.getfixturevalue("pg_url"))  # conftest: a fresh database


@pytest.fixture
def pg_storage(pg_url: str) -> Storage:
    return Storage("postgres", pg_url)


# --- helpers ------------------------------------------------------------------------------

def load_study(storage: Storage, root: Path) -> optuna.Study:
    backend = stores.open_storage(storage.spec(root))
    names = optuna.get_all_study_names(backend)
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=backend)


def try_load_study(storage: Storage, root: Path) -> optuna.Study | None:
    try:
        return load_study(storage, root)
    except (AssertionError, OSError):
        return None


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if studies.is_counted(t)]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0,
             poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def running_mid_epoch(storage: Storage, root: Path) -> Callable[[], Any]:
    """A RUNNING, tagged trial that has reported at least one epoch (so it is mid-training)."""
    def check() -> optuna.trial.FrozenTrial | None:
        study = try_load_study(storage, root)
        if study is None:
            return None
        for trial in study.get_trials(states=(TrialState.RUNNING,)):
            if trial.intermediate_values and studies.ATTR_WORKER in trial.user_attrs:
                return trial
        return None
    return check


def start_stage(project: Any, storage: Storage, log: Path) -> subprocess.Popen[str]:
    """The tune stage in its own session (process group), as a terminal would run it: with
    SIGINT's default action, even when pytest itself runs in the background (where a shell
    hands it SIGINT ignored, and the stage and its workers then rightly ignore Ctrl-C)."""
    handle = log.open("w")
    return subprocess.Popen([sys.executable, "stages/tune.py"], cwd=project.root,
                            env=project.env(storage.env()), stdout=handle, stderr=handle,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def start_remote_worker(project: Any, storage: Storage, log: Path) -> subprocess.Popen[str]:
    """``xray-hpo tune-worker --storage URL`` as another machine would run it."""
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "xray_hpo.cli", "tune-worker", "--storage",
         storage.spec(project.root), "--prepared", "prepared"],
        cwd=project.root, env=project.env(), stdout=handle, stderr=handle, text=True)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def not_surplus(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that ran, or were meant to: a surplus one lost a race for the last place
    and stood down before sampling (see ``xray_hpo.tuning.study.within_budget``)."""
    return [t for t in study.get_trials() if not t.user_attrs.get(ATTR_SURPLUS)]


def assert_exact_budget(study: optuna.Study, n_trials: int) -> None:
    numbers = [t.number for t in study.get_trials()]
    assert numbers == list(range(len(numbers))), "trial numbers must be unique and dense"
    assert len(counted(study)) == n_trials
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def assert_outputs_match_storage(project: Any, study: optuna.Study, n_trials: int) -> None:
    """best_params.yaml names a completed trial of the budget, and its values are the ones
    in storage (whichever rule picks the winner among the trials)."""
    best_params = yaml.safe_load((project.root / "best_params.yaml").read_text())
    assert best_params["study"] == study.study_name
    budget = {t.number: t for t in studies.budget_trials(study, n_trials)}
    winner = budget[best_params["trial"]]
    assert winner.state == TrialState.COMPLETE
    assert best_params["val_accuracy"] == pytest.approx(winner.value, abs=1e-6)
    for name, value in winner.params.items():
        assert best_params["hparams"][name] == pytest.approx(value)
    metrics = json.loads((project.root / "metrics/tune.json").read_text())
    assert sum(metrics["trials"].values()) == n_trials
    complete = [t.value for t in budget.values() if t.state == TrialState.COMPLETE]
    assert metrics["best_val_accuracy"] == pytest.approx(max(complete), abs=1e-6)


def tiny(overrides: dict[str, Any]) -> dict[str, Any]:
    """Project overrides: one torch thread per process (on a busy 2-core machine 2 threads
    ran 10-30x slower), and any selection re-runs after the study cut to none (not what
    these tests are about; they would only add minutes)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    extra = {"select.seeds": 1, "select.top_k": 1} if "select" in params else {}
    return {"train.num_threads": 1, **extra, **overrides}


# --- tests --------------------------------------------------------------------------------

def test_three_workers_exact_count_then_resume_adds_only_new_trials(
        make_project: Any, storage: Storage, tmp_path: Path) -> None:
    project = make_project(tiny({"tune.n_trials": 5, "tune.n_workers": 3}))
    project.run("tune", env=storage.env())
    study = load_study(storage, project.root)
    assert_exact_budget(study, 5)
    assert len(not_surplus(study)) == 5, "no trial may be lost or run twice"
    assert study.user_attrs[ATTR_TARGET] == 5
    assert len({t.user_attrs["worker"] for t in study.get_trials()}) >= 2, "ran in parallel"
    assert_outputs_match_storage(project, study, 5)
    first = {t.number: (t.params, t.value) for t in study.get_trials()}

    # Resume: raise n_trials; the stage runs one local worker and a "remote" CLI worker
    # joins the same study through the storage. Only the 2 new trials run.
    project.set_params({"tune.n_trials": 7, "tune.n_workers": 1})
    stage = start_stage(project, storage, tmp_path / "stage.log")
    wait_for("the raised target", lambda: (s := try_load_study(storage, project.root))
             and s.user_attrs.get(ATTR_TARGET) == 7)
    remote = start_remote_worker(project, storage, tmp_path / "remote.log")
    assert stage.wait(timeout=120) == 0, (tmp_path / "stage.log").read_text()
    assert remote.wait(timeout=60) == 0, (tmp_path / "remote.log").read_text()
    study = load_study(storage, project.root)
    assert_exact_budget(study, 7)
    assert len(not_surplus(study)) == 7, "only the 2 new trials ran"
    assert {t.number: (t.params, t.value) for t in study.get_trials() if t.number in first} \
        == first
    assert_outputs_match_storage(project, study, 7)


@pytest.mark.parametrize("storage_kind, how", [
    ("journal", "ctrl-c"),  # SIGINT to the whole process group, as a terminal sends it
    pytest.param("postgres", "sigterm", marks=pytest.mark.postgres),  # to the stage only
])
def test_interrupt_then_kill_9_then_rerun_completes_the_count(
        make_project: Any, storage_kind: str, how: str, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    storage = Storage(storage_kind, request.getfixturevalue("pg_url")
                      if storage_kind == "postgres" else None)
    # Epochs of batch 2 last long enough to stop a trial in the middle. Two workers in
    # window mode: the first 3 trials have no earlier trial to be pruned against, and
    # without the stop at chance they complete, so the study always has a winner.
    project = make_project(tiny({
        "tune.n_trials": 4, "tune.n_workers": 2, "train.epochs": 3,
        "tune.pruner.stop_at_chance_after": 0,
        "tune.search_space.batch_size": {"type": "categorical", "choices": [2]}}))
    # 1. Ctrl-C / SIGTERM: a clean stop, the running trial marked, nothing written.
    stage = start_stage(project, storage, tmp_path / "stage1.log")
    running = wait_for("a trial mid-training", running_mid_epoch(storage, project.root))
    if how == "ctrl-c":
        os.killpg(stage.pid, signal.SIGINT)
    else:
        stage.send_signal(signal.SIGTERM)
    assert stage.wait(timeout=30) == 130
    assert "tune: interrupted" in (tmp_path / "stage1.log").read_text()
    wait_for("the stage's workers to exit", lambda: group_gone(stage.pid), timeout=30)
    assert_no_outputs(project)
    study = load_study(storage, project.root)
    marked = study.trials[running.number]
    assert marked.state == TrialState.FAIL
    assert marked.user_attrs.get("interrupted") is True
    assert "fail_reason" not in marked.user_attrs, "an interrupted trial is not a result"
    assert not study.get_trials(states=(TrialState.RUNNING,))

    # 2. kill -9 of a worker mid-trial, then of the stage itself: no cleanup at all.
    stage = start_stage(project, storage, tmp_path / "stage2.log")
    victim = wait_for("a trial mid-training", running_mid_epoch(storage, project.root))
    os.kill(int(victim.user_attrs[studies.ATTR_WORKER].rpartition(":")[2]), signal.SIGKILL)
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait(timeout=10)
    # The other worker notices its parent died (PDEATHSIG) and exits: no orphan trains on.
    # It marks its trial first: behind the journal's lock, which a process killed while
    # holding it leaves stale for up to the lock's 30 s grace period.
    wait_for("the stage's workers to exit", lambda: group_gone(stage.pid), timeout=60)
    assert_no_outputs(project)

    # 3. The rerun detects the dead worker's trial, fails it and completes the count.
    project.run("tune", env=storage.env())
    study = load_study(storage, project.root)
    assert_exact_budget(study, 4)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL
    assert "died" in killed.user_attrs[studies.ATTR_LOST]
    assert not studies.is_counted(killed), "a killed trial is replaced, not counted"
    assert not studies.is_counted(study.trials[running.number])
    assert_outputs_match_storage(project, study, 4)


def assert_no_outputs(project: Any) -> None:
    assert not (project.root / "best_params.yaml").exists()
    assert not (project.root / "metrics/tune.json").exists()


def test_a_diverging_configuration_fails_with_its_reason_and_the_study_completes(
        make_project: Any) -> None:
    project = make_project(tiny({
        "tune.n_trials": 4,
        "tune.sampler": {"name": "random", "seed": 0, "n_startup_trials": 1},
        "tune.search_space.lr": {"type": "categorical", "choices": [1.0e-3, DIVERGING_LR]},
        "tune.search_space.batch_size": {"type": "categorical", "choices": [8]},
    }))
    project.run("tune", env=diverging_env(project))
    study = load_study(Storage("journal", None), project.root)
    assert_exact_budget(study, 4)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert failed and complete, "seed 0 draws both learning rates in 4 trials"
    for trial in failed:
        assert trial.params["lr"] == DIVERGING_LR
        assert trial.user_attrs["fail_reason"].startswith("NonFiniteLossError: non-finite loss")
    assert all(t.params["lr"] == 1.0e-3 for t in complete)
    metrics = yaml.safe_load((project.root / "metrics/tune.json").read_text())
    assert metrics["trials"] == {"complete": len(complete), "pruned": 0, "failed": len(failed)}
    assert yaml.safe_load((project.root / "best_params.yaml").read_text())["hparams"]["lr"] \
        == 1.0e-3


def test_every_trial_failing_fails_the_stage_naming_the_first_reason(make_project: Any) -> None:
    project = make_project(tiny({
        "tune.search_space.lr": {"type": "categorical", "choices": [DIVERGING_LR]},
        "tune.search_space.batch_size": {"type": "categorical", "choices": [8]},
    }))
    proc = project.run("tune", check=False, env=diverging_env(project))
    assert proc.returncode == 2, proc.stderr
    assert "tune: error: study xray-hpo-" in proc.stderr
    assert "no trial completed; first failure: NonFiniteLossError: non-finite loss at epoch 1" \
        in proc.stderr
    assert_no_outputs(project)


@pytest.mark.postgres
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_remote_worker_that_stops_beating_is_failed_and_replaced(
        make_project: Any, pg_storage: Storage) -> None:
    """A trial held by a dead worker on another machine: only the heartbeat can tell.

    The budget (1) is entirely in flight, so the local worker waits rather than starting a
    trial; it must still fail the stale trial, or it would wait forever.
    """
    from xray_hpo.config import load_config
    from xray_hpo.tuning.coordinator import prepare_study

    project = make_project(tiny({"tune.n_trials": 1}))
    env = {**pg_storage.env(), stores.ENV_GRACE: "2"}
    config = load_config(project.root / "params.yaml")
    os.environ[stores.ENV_GRACE] = "2"
    try:
        study = prepare_study(config, pg_storage.spec(project.root), project.root / "prepared")
        remote = study.ask()
        remote.set_user_attr(studies.ATTR_WORKER, "another-machine:4242")
        study._storage.record_heartbeat(remote._trial_id)  # then never again
    finally:
        del os.environ[stores.ENV_GRACE]
    project.run("tune", env=env, timeout=90)
    study = load_study(pg_storage, project.root)
    assert study.trials[remote.number].state == TrialState.FAIL
    assert_exact_budget(study, 1)
