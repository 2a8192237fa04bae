"""Shared fixtures: the real pipeline, shrunk to seconds, in temporary project copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL_DATA = REPO.parent / "shared" / "data" / "chest_xray_64"
PROJECT_FILES = ("params.yaml", "dvc.yaml", "stages", "src")
# Small enough for seconds per stage, large enough that tune, pruning and workers all act.
TINY = {"tune.n_trials": 2, "train.epochs": 2, "evaluate.bootstrap_samples": 200}


def set_dotted(params: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


@dataclass
class Project:
    root: Path

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
        env.update({"PYTHONPATH": str(self.root / "src"), "XRAY_HPO_CLEARML": "off",
                    "XRAY_HPO_STORAGE": ""})
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra or {})
        return env

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
        params = self.params()
        for key, value in overrides.items():
            set_dotted(params, key, value)
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in dataset, generated once per test session."""
    from xray_hpo.data.phantoms.generate import PhantomSpec, generate_dataset

    root = tmp_path_factory.mktemp("phantoms") / "data"
    generate_dataset(root, PhantomSpec())
    return root


@pytest.fixture(scope="session")
def prepared_template(tmp_path_factory: pytest.TempPathFactory, phantom_data: Path) -> Path:
    """A project whose prepare stage has run once; copies start from its arrays."""
    root = tmp_path_factory.mktemp("template")
    project = _copy_project(root, phantom_data)
    project.run("prepare")
    return root / "prepared"


def _copy_project(root: Path, data: Path) -> Project:
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, root / name)
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


def run_command(cwd: Path, *cmd: str) -> str:
    """Run a command as a user would in the project at ``cwd`` (tracking off); its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update(XRAY_HPO_CLEARML="off", XRAY_HPO_STORAGE="", PYTHONPATH=str(cwd / "src"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def init_dvc_project(root: Path, overrides: Mapping[str, Any]) -> None:
    """A git + DVC repository at ``root`` with this checkout's code and overridden params."""
    for name in (*PROJECT_FILES, ".dvcignore", ".gitignore"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, root / name)
    Project(root).set_params(overrides)
    run_command(root, "git", "init", "-q")
    run_command(root, "dvc", "init", "-q")
    run_command(root, "dvc", "config", "core.analytics", "false")


GROUPS = ("unit", "pipeline", "scale", "tracking")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's group, so ``-m unit`` (or ``-m 'not scale'``) works."""
    for item in items:
        group = Path(str(item.path)).parent.name
        if group in GROUPS:
            item.add_marker(getattr(pytest.mark, group))
