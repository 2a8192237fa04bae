"""``xray-hpo import-kermany`` on hostile sources and outputs: special and oversized files
are skipped with their reason (a FIFO is never read), a symbolic-link loop is one row, unsafe
zip entries are reported, --out is never the current folder nor an unrelated folder
(without --force), and no staging folder survives a failure, Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_files import ALL_BAD, tree_bytes
from xray_hpo.cli import main

SIZES = ["--sizes", "3", "3", "3"]


def synthetic_source(root: Path, per_class: int = 6) -> Path:
    """A tiny tree in the dataset's layout and naming: one image per patient, distinct
    random pixels (so no file is a duplicate of another)."""
    rng = np.random.default_rng(0)
    names = {"NORMAL": [f"IM-{n:04d}-0001.jpeg" for n in range(per_class)],
             "PNEUMONIA": [f"person{n}_bacteria_{n}.jpeg" for n in range(per_class)]
             + [f"person{n}_virus_{n}.jpeg" for n in range(per_class)]}
    for folder, files in names.items():
        (root / "train" / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            pixels = rng.integers(0, 255, (24, 20), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / folder / name, format="PNG")
    return root


def _report(out: Path) -> dict[str, str]:
    report = json.loads((out / "import_report.json").read_text())
    return {entry["source"]: entry["reason"] for entry in report["skipped"]}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_special_and_oversized_files_are_skipped_with_their_reason(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path / "src")
    expected = {}
    for n, (kind, make) in enumerate(ALL_BAD.items()):
        name = f"train/NORMAL/IM-{900 + n:04d}-0001.jpeg"  # labelled: it reaches the decoder
        reason = make(source / name)
        expected[name] = f"too large to decode safely: {reason}" if kind == "oversized" \
            else reason
    out = tmp_path / "data"
    assert main(["import-kermany", str(source), "--out", str(out), *SIZES]) == 0  # no hang
    assert _report(out) == expected


def test_a_symbolic_link_loop_is_one_row_not_thousands_of_copies(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path / "src")
    (source / "train/PNEUMONIA/again").symlink_to("../..", target_is_directory=True)
    out = tmp_path / "data"
    assert main(["import-kermany", str(source), "--out", str(out), *SIZES]) == 0
    assert _report(out) == {"train/PNEUMONIA/again": "symbolic link loop (to .); not followed"}


def test_unsafe_zip_entries_are_reported_and_not_extracted(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path / "src")
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*.jpeg")):
            zf.write(path, f"chest_xray/{path.relative_to(source).as_posix()}")
        zf.writestr("../train/NORMAL/IM-0950-0001.jpeg", b"escape attempt")
        zf.writestr("/etc/train/NORMAL/IM-0951-0001.jpeg", b"absolute path")
    out = tmp_path / "work" / "data"
    out.parent.mkdir()
    assert main(["import-kermany", str(archive), "--out", str(out), *SIZES]) == 0
    reason = "unsafe path (absolute or with ..); not extracted"
    assert _report(out) == {"../train/NORMAL/IM-0950-0001.jpeg": reason,
                            "/etc/train/NORMAL/IM-0951-0001.jpeg": reason}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["download.zip", "src", "work"]
    assert not list(out.rglob("IM-095*"))


@pytest.mark.parametrize("out", [".", "..", "sub/.."])
def test_out_is_never_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], out: str) -> None:
    source = synthetic_source(tmp_path / "src")
    here = tmp_path / "project"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here)
    before = tree_bytes(tmp_path)
    assert main(["import-kermany", str(source), "--out", out, *SIZES]) == 2
    assert capsys.readouterr().err.strip() == (
        f"xray-hpo import-kermany: error: --out {out}: is the current folder or one above "
        "it; give the import a folder of its own, e.g. --out data")
    assert tree_bytes(tmp_path) == before


def test_an_unrelated_folder_needs_force(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    source = synthetic_source(tmp_path / "src")
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("months of work")
    assert main(["import-kermany", str(source), "--out", str(out), *SIZES]) == 2
    assert capsys.readouterr().err.strip() == (
        f"xray-hpo import-kermany: error: --out {out}: not empty and not a dataset this "
        "project wrote (no import_report.json or manifest.csv); the import replaces it "
        "whole: pass --force to replace it, or choose another --out")
    assert (out / "chapter1.tex").read_text() == "months of work"
    assert main(["import-kermany", str(source), "--out", str(out), *SIZES, "--force"]) == 0
    assert not (out / "chapter1.tex").exists() and (out / "import_report.json").is_file()
    # A previous import, and the built-in phantoms, are replaced without --force.
    assert main(["import-kermany", str(source), "--out", str(out), *SIZES]) == 0
    phantoms = tmp_path / "phantoms"
    assert main(["make-data", "--out", str(phantoms)]) == 0
    assert main(["import-kermany", str(source), "--out", str(phantoms), *SIZES]) == 0


def test_ctrl_c_leaves_no_staging_folder_and_the_previous_import(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from xray_hpo.data.kermany import importer

    source = synthetic_source(tmp_path / "src")
    out = tmp_path / "data"
    assert main(["import-kermany", str(source), "--out", str(out), *SIZES]) == 0
    before = tree_bytes(out)

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(importer, "decode_all", interrupted)
    capsys.readouterr()
    assert main(["import-kermany", str(source), "--out", str(out), *SIZES]) == 130
    assert capsys.readouterr().err.strip() == (
        f"xray-hpo import-kermany: interrupted; {out} left as it was")
    assert tree_bytes(out) == before and _leftovers(tmp_path) == []


def test_sigterm_leaves_no_staging_folder(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path / "src")
    out = tmp_path / "data"
    code = textwrap.dedent(f"""
        import os, signal, sys
        from xray_hpo.data.kermany import importer
        from xray_hpo.cli import main
        def killed(*args):
            os.kill(os.getpid(), signal.SIGTERM)  # kill PID, mid-import
            raise AssertionError("SIGTERM did not stop the import")
        importer.decode_all = killed
        sys.exit(main(["import-kermany", {str(source)!r}, "--out", {str(out)!r},
                       "--sizes", "3", "3", "3"]))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == f"xray-hpo import-kermany: interrupted; {out} left as it was"
    assert _leftovers(tmp_path) == [] and not out.exists()


def test_a_fifo_as_source_is_refused_without_reading_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "download.zip"
    ALL_BAD["fifo"](source)
    assert main(["import-kermany", str(source), "--out", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"xray-hpo import-kermany: error: {source}: not a folder or a .zip; expected the "
        "Kermany dataset")
