"""Written outputs: the mode any new file gets under the user's umask (not mkstemp's 0600),
and a stage stopped by SIGTERM unwinds like Ctrl-C: its temporary files are removed, its
message is one line, and the previous output stays."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xray_hpo.atomic import atomic_directory, atomic_write_text


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775), (0o077, 0o600, 0o700)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, file_mode: int,
                                        dir_mode: int) -> None:
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}\n")
        with atomic_directory(tmp_path / "prepared") as staging:
            (staging / "a.npz").write_bytes(b"x")
        (tmp_path / "plain.txt").write_text("as any program writes it")
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "prepared").stat().st_mode & 0o777 == dir_mode


def test_sigterm_in_a_stage_unwinds_and_keeps_the_previous_output(tmp_path: Path) -> None:
    target = tmp_path / "best_params.yaml"
    target.write_text("previous\n")
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from xray_hpo.atomic import atomic_path
        from xray_hpo.stage_util import run_stage
        def main():
            with atomic_path(Path({str(target)!r})) as tmp:
                tmp.write_text("half written")
                os.kill(os.getpid(), signal.SIGTERM)  # kill PID, mid-write
        run_stage("tune", main)
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 130
    assert proc.stderr.splitlines() == ["tune: interrupted; outputs left as they were"]
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_params.yaml"]
