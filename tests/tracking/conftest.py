"""Fixtures of the tracking tests: the ClearML stand-in server (see clearml_standin.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clearml_standin import StandIn


@pytest.fixture
def clearml_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[StandIn]:
    """A recording stand-in for the ClearML API and files server on 127.0.0.1, with this
    process's (and its children's) ClearML settings pointing at it; no user config."""
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
    settings._server_problem.clear()
    with StandIn() as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server
    settings._server_problem.clear()
