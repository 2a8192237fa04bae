"""Shared fixtures: the real pipeline, shrunk to seconds, in temporary project copies."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# One OpenMP thread per test process (torch in it, and the stages it starts, unless set):
# pytest-xdist already runs one process per core, and with more threads than free cores
# the in-process training tests ran 10-50x slower (measured: 32 s against 0.7 s).
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # the helpers tests share with the benchmarks

import common  # noqa: E402  (bench/common.py)
from common import SHARED_REAL_DATA, init_dvc_project, set_dotted, user_env  # noqa: E402, F401

PROJECT_FILES = ("params.yaml", "dvc.yaml", "stages", "src")
# Small enough for seconds per stage, large enough that tune, pruning, workers and robust
# selection (each of the 2 trials re-run with a second seed) all act.
# One tune worker: the tests written for a serial study keep it (params.yaml's default
# runs 2 workers in window mode; tests/scale/test_parallel_rounds.py tests those).
TINY = {"tune.n_trials": 2, "train.epochs": 2, "evaluate.bootstrap_samples": 200,
        "select.top_k": 2, "select.seeds": 2, "tune.n_workers": 1}
# Run a command as a user would in a project copy (tracking off); its stdout.
run_command = functools.partial(common.run_command, timeout=600)


@dataclass
class Project:
    root: Path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**user_env(self.root), **(extra or {})}

    def run(self, stage: str, *args: str, env: Mapping[str, str] | None = None,
            check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run ``stages/<stage>.py`` as DVC would, in this project."""
        proc = subprocess.run([sys.executable, f"stages/{stage}.py", *args], cwd=self.root,
                              env=self.env(env), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"stage {stage} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def params(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def set_params(self, overrides: Mapping[str, Any]) -> None:
        common.override_params(self.root / "params.yaml", overrides)


def _built_once(factory: pytest.TempPathFactory, name: str,
                build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per test run, also when pytest-xdist runs it in several
    processes: the first to take the lock builds into the run's shared temporary folder,
    the others wait and reuse it (read-only). A build cut short is redone."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # .../pytest-N, shared by this run's workers
    folder, done = base / name, base / f"{name}.done"
    with (base / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in dataset, generated once per test run."""
    from xray_hpo.data.phantoms.generate import PhantomSpec, generate_dataset

    root = _built_once(tmp_path_factory, "phantoms",
                       lambda folder: generate_dataset(folder / "data", PhantomSpec()))
    return root / "data"


@pytest.fixture(scope="session")
def prepared_template(tmp_path_factory: pytest.TempPathFactory, phantom_data: Path) -> Path:
    """A project whose prepare stage has run once; copies start from its arrays."""
    root = _built_once(tmp_path_factory, "template",
                       lambda folder: _copy_project(folder, phantom_data).run("prepare"))
    return root / "prepared"


@pytest.fixture(scope="session")
def committed_baseline(tmp_path_factory: pytest.TempPathFactory, phantom_data: Path) -> Path:
    """The TINY project as git + DVC repository whose whole `dvc repro` ran once and was
    committed: built once per test run (35 s) for every module that needs the real
    pipeline's outputs. Read-only: take a ``copy_of(committed_baseline, ...)`` to change it."""
    root = _built_once(tmp_path_factory, "baseline", lambda folder: common.committed_project(
        folder / "project", TINY, phantom_data))
    return root / "project"


def copy_of(baseline: Path, parent: Path) -> Path:
    """A private copy of the committed baseline (git, DVC cache and outputs) in ``parent``."""
    root = parent / "project"
    shutil.copytree(baseline, root, symlinks=True)
    return root


def _copy_project(root: Path, data: Path) -> Project:
    common.copy_project(root, PROJECT_FILES)
    (root / "data").symlink_to(data, target_is_directory=True)
    return Project(root)


@pytest.fixture
def make_project(tmp_path: Path, phantom_data: Path,
                 prepared_template: Path) -> Callable[..., Project]:
    """``make_project(overrides, prepared=True)``: a tiny project copy in tmp_path."""
    counter = iter(range(1000))

    def factory(overrides: Mapping[str, Any] | None = None, prepared: bool = True) -> Project:
        root = tmp_path / f"project{next(counter)}"
        root.mkdir()
        project = _copy_project(root, phantom_data)
        project.set_params({**TINY, **(overrides or {})})
        if prepared:
            shutil.copytree(prepared_template, root / "prepared")
        return project

    return factory


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (skipped without the server)."""
    try:
        with common.scratch_database("xray_hpo_test") as url:
            yield url
    except common.DatabaseUnavailable as exc:
        pytest.skip(f"{exc} (.ci/run starts it)")


GROUPS = ("unit", "pipeline", "scale", "tracking")
# The longest test files, longest first (seconds of one process, `pytest --durations=0`,
# 2026-12-03): `make test` hands files to its 2 processes in this order (longest first
# balances them best), then the rest in collection order. The baseline's users come after
# test_pipeline_e2e.py, so that one process builds it while the other runs something else
# instead of waiting for it. tests/unit/test_architecture.py checks these files exist.
LONGEST_FIRST = (
    "tracking/test_clearml_server.py",  # ~105
    "scale/test_tune_scale.py",  # ~100
    "pipeline/test_pipeline_e2e.py",  # ~85, with building the committed baseline
    "scale/test_parallel_rounds.py",  # ~65
    "pipeline/test_pruning.py",  # ~30
    "pipeline/test_real_data_e2e.py",  # ~25
    "pipeline/test_official_split_e2e.py",
    "tracking/test_tracking.py",
    "tracking/test_tracking_e2e.py",
    "pipeline/test_faults_pipeline.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's group, so ``-m unit`` (or ``-m 'not scale'``) works;
    and put the longest files first (``LONGEST_FIRST``; the Makefile's
    ``--no-loadscope-reorder`` keeps this order), so that under pytest-xdist the short ones
    fill the end of the run instead of one long file keeping one process busy alone. The
    sort is stable: a file's tests keep their order (module fixtures rely on it)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    tests = Path(__file__).resolve().parent
    for item in items:
        group = Path(str(item.path)).parent.name
        if group in GROUPS:
            item.add_marker(getattr(pytest.mark, group))

    def position(item: pytest.Item) -> int:
        path = Path(str(item.path))
        name = path.relative_to(tests).as_posix() if path.is_relative_to(tests) else ""
        return rank.get(name, len(LONGEST_FIRST))

    items.sort(key=position)


# The ClearML stand-in server (tests/tracking/clearml_standin.py), for the online tests.
@pytest.fixture
def clearml_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A recording stand-in for the ClearML API and files server on 127.0.0.1, with this
    process's (and its children's) ClearML settings pointing at it; no user config."""
    sys.path.insert(0, str(REPO / "tests" / "tracking"))
    from clearml_standin import StandIn

    from xray_hpo.tracking import settings

    names = [k for k in os.environ if k.startswith(("CLEARML_", "TRAINS_", "XRAY_HPO_CLEARML"))]
    names += [*settings.PROCESS_VARS, settings.ENV_PARENT, "CLEARML_PROC_MASTER_ID",
              "TRAINS_PROC_MASTER_ID", "CLEARML_TASK_ID"]
    for name in names:
        monkeypatch.setenv(name, "x")  # records the original value for restoration
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(settings.ENV_BASE_DIR, str(tmp_path / "runs"))
    # The SDK reads its configuration once per process: should this test's in-process code
    # (an upload) be the first to load it, give it the fast settings every run's generated
    # file has, or later trackers in this process close through a reporting subprocess
    # (measured: 20 s more for two trial trackers).
    fast = tmp_path / "clearml-fast.conf"
    fast.write_text(settings.FAST_CONFIG.format(include=""), encoding="utf-8")
    monkeypatch.setenv("CLEARML_CONFIG_FILE", str(fast))
    settings._server_problem.clear()
    with StandIn() as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server
    settings._server_problem.clear()
