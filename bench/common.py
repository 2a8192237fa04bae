"""What the benchmarks share, and tests/conftest.py with them: the machine line each
RESULTS file records, a scratch PostgreSQL database, and a project copy under git + DVC
in which commands run as a user would run them (tracking off).

Benchmarks run as ``python bench/<name>.py`` (this folder is then on ``sys.path``);
tests/conftest.py puts this folder on ``sys.path`` to import the same functions.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
# What a project copy needs; data/ comes from the caller (generated, imported or linked).
PROJECT_FILES = ("params.yaml", "dvc.yaml", "stages", "src", ".dvcignore", ".gitignore")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
# The shared 64 px copy of the Kermany training split: read-only, never copied into a repo.
SHARED_REAL_DATA = REPO.parent / "shared" / "data" / "chest_xray_64"


# --- the machine ---------------------------------------------------------------------------

def machine(*versions: str) -> str:
    """Cores, CPU, RAM, kernel and Python, then ``versions`` (e.g. "torch 2.14.1 (CPU)")."""
    cpuinfo = _read("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    found = re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo"))
    memory = f"{int(found.group(1)) / 2**20:.1f} GiB RAM" if found else "unknown RAM"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "; ".join([f"{usable} usable cores ({os.cpu_count()} online), {cpu}, {memory}",
                      f"{platform.system()} {platform.release()}",
                      ", ".join([f"Python {platform.python_version()}", *versions])])


def load_average() -> str:
    """1 / 5 / 15 minute load: other jobs on the cores make wall times noisy."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def recorded(path: Path, mark: str, empty: Any) -> Any:
    """What a RESULTS file recorded after ``mark`` (an HTML comment the page hides), or
    ``empty`` when the file or the record is missing: benchmarks append to it."""
    text = path.read_text() if path.is_file() else ""
    if mark not in text:
        return empty
    return json.loads(text.split(mark, 1)[1].split(" -->", 1)[0])


def record(mark: str, rows: Any) -> str:
    """The line :func:`recorded` reads back."""
    return f"{mark}{json.dumps(rows)} -->"


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# --- PostgreSQL ----------------------------------------------------------------------------

class DatabaseUnavailable(RuntimeError):
    """No PostgreSQL server (or no psycopg2) at 127.0.0.1:5432; .ci/run starts one."""


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A fresh, uniquely named database on the local server, dropped afterwards (so
    parallel tests and benchmarks never share one); yields its URL."""
    try:
        import psycopg2

        admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except Exception as exc:  # ImportError or OperationalError: nothing to run against
        raise DatabaseUnavailable(f"PostgreSQL at 127.0.0.1:5432 unreachable: {exc}") from exc
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


# --- project copies ------------------------------------------------------------------------

def set_dotted(params: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(p, "tune.n_trials", 3)``: p["tune"]["n_trials"] = 3."""
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def make_config(**overrides: Any) -> Any:
    """This checkout's params.yaml with dotted overrides, validated into the typed Config."""
    from xray_hpo.config import config_from_dict

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        set_dotted(params, dotted, value)
    return config_from_dict(params)


def override_params(path: Path, overrides: Mapping[str, Any]) -> None:
    params = yaml.safe_load(path.read_text())
    for key, value in overrides.items():
        set_dotted(params, key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def user_env(cwd: Path) -> dict[str, str]:
    """The environment of a user in the project at ``cwd``: this venv first on PATH, the
    project's own code, ClearML off and no inherited ClearML or storage settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update(XRAY_HPO_CLEARML="off", XRAY_HPO_STORAGE="", PYTHONPATH=str(cwd / "src"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def run_command(cwd: Path, *cmd: str, timeout: float | None = 3600) -> str:
    """Run a command as a user would in the project at ``cwd``; its stdout. A failure
    raises with the command's whole output."""
    proc = subprocess.run(cmd, cwd=cwd, env=user_env(cwd), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n"
                           f"{proc.stderr}")
    return proc.stdout


def copy_project(root: Path, names: tuple[str, ...] = PROJECT_FILES) -> None:
    """This checkout's code and configuration into ``root`` (no data, no outputs)."""
    for name in names:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif source.exists():
            shutil.copy2(source, root / name)


def prepared_real_data(root: Path, *import_args: str) -> Path:
    """A project at ``root`` holding the shared real images imported (``import-kermany
    --all`` unless ``import_args`` say otherwise) and decoded by the real prepare stage;
    returns its prepared/ folder."""
    root.mkdir(parents=True, exist_ok=True)
    copy_project(root)
    run_command(root, sys.executable, "-m", "xray_hpo.cli", "import-kermany",
                str(SHARED_REAL_DATA), "--out", "data", *(import_args or ("--all",)))
    run_command(root, sys.executable, "stages/prepare.py")
    return root / "prepared"


def init_dvc_project(root: Path, overrides: Mapping[str, Any]) -> None:
    """A git + DVC repository at ``root`` with this checkout's code and overridden params."""
    root.mkdir(parents=True, exist_ok=True)
    copy_project(root)
    override_params(root / "params.yaml", overrides)
    run_command(root, "git", "init", "-q")
    run_command(root, "dvc", "init", "-q")
    run_command(root, "dvc", "config", "core.analytics", "false")


def committed_project(root: Path, overrides: Mapping[str, Any], data: Path) -> Path:
    """A project at ``root`` whose pipeline ran once on a copy of ``data`` and was
    committed: the baseline that module fixtures share."""
    init_dvc_project(root, overrides)
    shutil.copytree(data, root / "data")
    run_command(root, "dvc", "add", "-q", "data")
    run_command(root, "dvc", "repro")
    run_command(root, "git", "add", "-A")
    run_command(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
                "baseline")
    return root
