"""``xray-hpo predict`` on bad inputs: an error row per bad file (the good ones are still
classified), a missing PATH or a bad --out stops before any work, --out DIR works, and a
model file that is not ours gets one line without torch's weights_only=False advice."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
import torch

from bad_files import ALL_BAD
from xray_hpo.cli import main as cli_main
from xray_hpo.model import ModelArgs, XrayCNN, save_model


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_model(XrayCNN(ModelArgs(image_size=64, lin1_size=80, lin2_size=40, p_dropout=0.1,
                                 pixel_mean=0.45, pixel_std=0.2)), path)
    return path


@pytest.fixture
def good_images(tmp_path: Path, phantom_data: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for source in sorted((phantom_data / "test").rglob("*.png"))[:3]:
        shutil.copy(source, folder / source.name)
    return folder


def _rows(path: Path) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(path.read_text()))}


def test_every_bad_file_gets_its_row_and_the_good_ones_are_classified(
        tmp_path: Path, good_images: Path, model_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    reasons = {f"{kind}.png": make(good_images / f"{kind}.png") for kind, make in ALL_BAD.items()}
    out = tmp_path / "predictions.csv"
    rc = cli_main(["predict", str(good_images), "--model", str(model_path), "--out", str(out)])
    assert rc == 0
    assert capsys.readouterr().err.strip() == (
        f"predict: 3 image(s) classified, {len(ALL_BAD)} error row(s) -> {out}")
    rows = _rows(out)
    for name, reason in reasons.items():  # the row shows the reason, nothing predicted
        suffix = "; not decoded" if "MP limit" in reason else "; expected a PNG or JPEG image"
        assert rows[name]["error"] == reason + suffix
        assert rows[name]["prediction"] == "" and rows[name]["p_normal"] == ""
    good = [r for name, r in rows.items() if name not in reasons]
    assert len(good) == 3 and all(r["prediction"] and not r["error"] for r in good)


def test_a_fifo_named_on_the_command_line_gets_a_row(
        tmp_path: Path, good_images: Path, model_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    reason = ALL_BAD["fifo"](fifo)
    out = tmp_path / "p.csv"
    assert cli_main(["predict", str(fifo), str(good_images), "--model", str(model_path),
                     "--out", str(out)]) == 0
    assert _rows(out)["pipe.png"]["error"] == f"{reason}; expected a PNG or JPEG image"


def test_a_missing_path_stops_before_any_work(
        tmp_path: Path, good_images: Path, model_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "predictions.csv"
    out.write_text("previous\n")
    missing = tmp_path / "typo.png"
    rc = cli_main(["predict", str(good_images), str(missing), "--model", str(model_path),
                   "--out", str(out)])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        f"xray-hpo predict: error: {missing}: no such file or folder")
    assert out.read_text() == "previous\n"  # the previous CSV is intact


def test_out_dir_writes_predictions_csv_inside(
        tmp_path: Path, good_images: Path, model_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    assert cli_main(["predict", str(good_images), "--model", str(model_path),
                     "--out", str(folder)]) == 0
    assert len(_rows(folder / "predictions.csv")) == 3
    assert capsys.readouterr().err.strip().endswith(f"-> {folder / 'predictions.csv'}")
    missing_parent = tmp_path / "no-such-folder" / "p.csv"
    assert cli_main(["predict", str(good_images), "--model", str(model_path),
                     "--out", str(missing_parent)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"xray-hpo predict: error: --out {missing_parent}: folder "
        f"{missing_parent.parent} does not exist")


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


@pytest.mark.parametrize("content", ["pickle", "truncated"])
def test_a_foreign_model_file_is_one_line_without_unsafe_advice(
        tmp_path: Path, good_images: Path, model_path: Path, content: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    if content == "pickle":  # a pickle with code in it, as torch.save would write it
        torch.save({"args": _Payload()}, bad)
    else:
        bad.write_bytes(model_path.read_bytes()[:200])
    assert cli_main(["predict", str(good_images), "--model", str(bad)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "weights_only" not in err
    assert "this must never run" not in captured.out
    assert err.startswith(f"xray-hpo predict: error: {bad}: not a model saved by xray-hpo (")
    if content == "pickle":
        assert err.endswith("(it holds Python objects besides tensors, which are not loaded, "
                            "for safety)")
