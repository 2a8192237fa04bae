"""The study's storage: its URL (with a password) reaches the tune workers through their
environment, never their command line (``ps`` shows that to every user); an unreachable
database is one line naming it, password hidden, and the previous outputs stay."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from xray_hpo.tuning import coordinator
from xray_hpo.tuning.storage import StorageError, open_storage

URL = "postgresql://xray:s3cret-pw@127.0.0.1:1/optuna"  # port 1: nothing listens there
SHOWN = "postgresql://xray:***@127.0.0.1:1/optuna"
REFUSED = (f'{SHOWN}: cannot open the Optuna storage: connection to server at "127.0.0.1", '
           "port 1 failed: Connection refused")


def test_workers_get_the_storage_url_in_their_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started: list[dict[str, Any]] = []

    def popen(args: list[str], env: dict[str, str]) -> object:
        started.append({"args": args, "env": env})
        return object()

    monkeypatch.setattr(subprocess, "Popen", popen)
    config = SimpleNamespace(train=SimpleNamespace(num_threads=1),
                             tune=SimpleNamespace(n_workers=2))
    coordinator._spawn_workers(config, URL, "study-x", tmp_path, {"PATH": "/usr/bin"})  # type: ignore[arg-type]
    assert len(started) == 2
    for worker in started:
        assert not any("s3cret" in arg for arg in worker["args"]), worker["args"]
        assert "--storage" not in worker["args"]
        assert worker["env"]["XRAY_HPO_STORAGE"] == URL and worker["env"]["PATH"] == "/usr/bin"


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    with pytest.raises(StorageError) as caught:
        open_storage(URL)
    assert str(caught.value) == REFUSED
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.slow
def test_tune_with_the_database_down_keeps_the_previous_outputs(
        make_project: Any) -> None:
    project = make_project()
    previous = {"best_params.yaml": "hparams: previous\n", "metrics/tune.json": "{}\n"}
    for name, text in previous.items():
        (project.root / name).parent.mkdir(parents=True, exist_ok=True)
        (project.root / name).write_text(text)
    proc = project.run("tune", env={"XRAY_HPO_STORAGE": URL}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"tune: error: {REFUSED}"]
    for name, text in previous.items():
        assert (project.root / name).read_text() == text


def test_tune_worker_with_the_database_down_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xray_hpo.cli import main

    assert main(["tune-worker", "--storage", URL, "--study", "s"]) == 2
    assert capsys.readouterr().err.strip() == f"xray-hpo tune-worker: error: {REFUSED}"
