"""Atomic file writes: a reader never sees a half-written output, a crash leaves the old one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


def _umask() -> int:
    # The only way to read the umask is to set it; set it straight back.
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success.

    mkstemp creates 0600 files; the result gets the mode any other new file would (0666
    less the umask), so a colleague or a web server can read a shared project's outputs."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, payload: Any, *, sort_keys: bool = True) -> None:
    """Fixed indent, and sorted keys unless the payload's own order is the point (metrics
    files: `dvc exp show` shows their keys in file order): identical results give identical
    bytes either way (git and DVC compare them)."""
    atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n")


def atomic_write_yaml(target: Path, payload: Any) -> None:
    atomic_write_text(target, yaml.safe_dump(payload, sort_keys=True, default_flow_style=False))


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then swap it into place whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700, like atomic_path's 0600: the umask's
    try:
        yield staging
        backup = target.with_name(f".{target.name}.old")
        if backup.exists():
            shutil.rmtree(backup)
        if target.exists():
            os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a CI timeout, ``dvc queue kill``) stops like Ctrl-C: Python unwinds,
    so every ``finally`` above removes its temporary file or staging folder. By default
    SIGTERM ends the process on the spot and leaves them behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, _frame: object) -> None:
        nonlocal fired
        if not fired:  # one interrupt; a second signal must not cut the cleanup short
            fired = True
            raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
