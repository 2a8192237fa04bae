"""``xray-hpo predict``: a folder with one corrupt file, prepare's exact preprocessing."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xray_hpo.cli import main as cli_main
from xray_hpo.data.dataset import load_prepared
from xray_hpo.model import ModelArgs, XrayCNN, save_model
from xray_hpo.predict import COLUMNS
from xray_hpo.training import SplitData, evaluate_split


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    torch.manual_seed(0)  # an untrained network: predictions are arbitrary but exact
    path = tmp_path / "model.pt"
    save_model(XrayCNN(ModelArgs(image_size=64, lin1_size=80, lin2_size=40, p_dropout=0.1,
                                 pixel_mean=0.45, pixel_std=0.2)), path)
    return path


def test_predict_folder_with_a_corrupt_file_reports_it_and_predicts_the_rest(
        tmp_path: Path, phantom_data: Path, prepared_template: Path, model_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    prepared = load_prepared(prepared_template, "test")
    picked = [0, 1, 60, 61, 120]  # every class
    folder = tmp_path / "incoming"
    for n, index in enumerate(picked):
        source = phantom_data / str(prepared.paths[index])
        target = folder / ("nested" if n % 2 else "") / f"img{n}{source.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 10)
    (folder / "notes.txt").write_text("not an image; skipped by suffix")
    (folder / "missing.png").symlink_to(tmp_path / "moved-away.png")  # a dangling link
    out = tmp_path / "predictions.csv"

    rc = cli_main(["predict", str(folder), "--model", str(model_path), "--out", str(out)])
    assert rc == 0
    assert "5 image(s) classified, 2 error row(s)" in capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert tuple(rows[0]) == COLUMNS == ("path", "prediction", "p_normal", "p_bacterial",
                                         "p_viral", "error")
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"broken.png", "missing.png", *(f"img{n}.png" for n in range(5))}
    for name in ("broken.png", "missing.png"):
        assert by_name[name]["error"] and by_name[name]["prediction"] == ""
        assert by_name[name]["p_normal"] == ""
    assert "not a decodable" in by_name["broken.png"]["error"]
    assert by_name["missing.png"]["error"] == ("dangling symbolic link; expected a PNG or "
                                               "JPEG image")

    # Exactly prepare's preprocessing: same probabilities as the prepared arrays give.
    from xray_hpo.model import load_model

    model = load_model(model_path)
    expected = evaluate_split(model, SplitData.from_arrays(
        prepared.images[picked], prepared.labels[picked]), torch.device("cpu"))[2].numpy()
    for n in range(5):
        row = by_name[f"img{n}.png"]
        assert row["error"] == ""
        probs = np.array([float(row[c]) for c in COLUMNS[2:5]])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(probs, expected[n], atol=2e-6)
        assert row["prediction"] == COLUMNS[2 + int(expected[n].argmax())].removeprefix("p_")


def test_predict_without_a_model_is_one_line_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["predict", str(tmp_path), "--model", str(tmp_path / "none.pt")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model not found" in err
