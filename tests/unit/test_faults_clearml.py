"""ClearML set up wrongly in any way ends in one warning that names the cause (the user's
own file, the host and what it answered) and offline logging; a bad $XRAY_HPO_CLEARML is
one line and no traceback. The servers here are tiny local sockets: no ClearML exists."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

KEY, SECRET = "AKIAFAKEFAKEFAKEFAKE1234", "FAKESECRETFAKESECRETFAKESECRET"
TRACK = textwrap.dedent("""
    from xray_hpo.tracking import settings, trackers
    with trackers.OptimizerTracker("study-f", {"n_trials": 1}) as o:
        env = settings.worker_environment(o.id)
        print(o.mode, env["XRAY_HPO_CLEARML"], o.run_dir)
    """)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def _track(tmp_path: Path, home: Path, **extra: str) -> tuple[str, Path, list[str]]:
    """Open and close one optimizer task as a stage would: (mode, run folder, stderr lines)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLEARML_", "TRAINS_", "XRAY_HPO_CLEARML"))}
    env.update(HOME=str(home), XRAY_HPO_CLEARML_DIR=str(tmp_path / "runs"), **extra)
    proc = subprocess.run([sys.executable, "-c", TRACK], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mode, worker_mode, run_dir = proc.stdout.split()
    assert mode == worker_mode  # the workers follow the stage's mode
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert KEY not in proc.stderr and SECRET not in proc.stderr
    return mode, Path(run_dir), lines


def _one_offline_warning(mode: str, run_dir: Path, lines: list[str], cause: str) -> None:
    assert mode == "offline"
    assert lines == [f"ClearML: {cause}; logging offline instead: session files in {run_dir}, "
                     f"upload later with `xray-hpo clearml-upload {run_dir}`"]
    assert len(list((run_dir / "offline").glob("offline-*.zip"))) == 1  # the task is kept


BROKEN = 'api {\n  api_server: "http://10.0.0.1:8008\n  credentials {{{ = =\n'
PARSE_CAUSE = "not a valid ClearML configuration (ParseSyntaxException at line 2, column 15)"


@pytest.mark.parametrize("mode", ["auto", "online", "offline"])
def test_unparsable_user_config_is_named_and_left_out(
        tmp_path: Path, home: Path, mode: str) -> None:
    (home / "clearml.conf").write_text(BROKEN)
    result = _track(tmp_path, home, XRAY_HPO_CLEARML=mode)
    _one_offline_warning(*result, f"{home / 'clearml.conf'}: {PARSE_CAUSE}")


def test_unparsable_clearml_config_file_is_named(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "team.conf"
    config.write_text(BROKEN)
    result = _track(tmp_path, home, CLEARML_CONFIG_FILE=str(config))
    _one_offline_warning(*result, f"{config}: {PARSE_CAUSE}")


def test_non_utf8_user_config_is_named(tmp_path: Path, home: Path) -> None:
    (home / "clearml.conf").write_bytes(b'api { api_server: "http://caf\xe9:8008" }\n')
    result = _track(tmp_path, home)
    _one_offline_warning(*result, f"{home / 'clearml.conf'}: not UTF-8 text (byte 0xe9 at "
                                  "offset 29)")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A local socket that answers every connection with the given bytes, then closes."""
    answer: bytes = request.param
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def _http(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            .encode() + body)


@pytest.mark.parametrize(("server", "cause"), [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "{host} does not answer in HTTP (BadStatusLine); not a "
                                 "ClearML API server"),
    (_http("404 Not Found", b"<h1>nginx</h1>"), "{host} answered HTTP 404 to auth.login; not "
                                                "a working ClearML API server"),
    (_http("502 Bad Gateway", b""), "{host} answered HTTP 502 to auth.login; not a working "
                                    "ClearML API server"),
    (_http("200 OK", b"<html>welcome</html>"), "{host} answers HTTP but is no ClearML API "
                                               "server"),
], indirect=["server"], ids=["not-http", "404", "502", "web-page"])
def test_a_host_that_is_not_a_clearml_server_means_offline(
        tmp_path: Path, home: Path, server: str, cause: str) -> None:
    (home / "clearml.conf").write_text(
        f'api {{ api_server: "{server}"\n'
        f'  credentials {{ access_key: "{KEY}", secret_key: "{SECRET}" }} }}\n')
    result = _track(tmp_path, home)
    _one_offline_warning(*result, cause.format(host=server))


def test_a_bad_tracking_mode_is_one_line_before_any_trial(tmp_path: Path) -> None:
    env = {**os.environ, "XRAY_HPO_CLEARML": "nonsense",
           "XRAY_HPO_STORAGE": f"journal:{tmp_path / 'journal.log'}"}
    proc = subprocess.run([sys.executable, "-m", "xray_hpo.tuning.worker", "--study", "s"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "tune-worker: error: XRAY_HPO_CLEARML='nonsense': expected off, offline, online or auto"]
    assert not (tmp_path / "journal.log").exists()  # stopped before the storage
