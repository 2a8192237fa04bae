"""Grad-CAM: maps at the input's size, per target class, on the evidence; predict --cam."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from xray_hpo.cli import main as cli_main
from xray_hpo.data.dataset import load_prepared
from xray_hpo.explain.gradcam import (
    BORDER,
    CENTRE,
    ExplainError,
    attention_shares,
    grad_cam,
    last_conv,
)
from xray_hpo.explain.overlay import colour_overlay
from xray_hpo.model import ModelArgs, XrayCNN, save_model
from xray_hpo.reporting.gallery import attention_sentence

SIZE = 32  # small, so each synthetic model trains in seconds
MARK = 8  # side of the square marker, in pixels


def marked_images(n: int, corner: tuple[int, int] | None, seed: int) -> torch.Tensor:
    """Smooth noise; with ``corner`` (top, left) a bright square there, else nothing."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, SIZE // 4, SIZE // 4, generator=gen)
    images = nn.functional.interpolate(base, size=(SIZE, SIZE), mode="bilinear") * 0.6
    if corner is not None:
        top, left = corner
        images[:, :, top:top + MARK, left:left + MARK] = 1.0
    return images


def train_marker_model(position: tuple[int, int]) -> XrayCNN:
    """Class 1 iff the marker is present: the only evidence in the data is the marker."""
    torch.manual_seed(0)
    model = XrayCNN(ModelArgs(image_size=SIZE, lin1_size=32, lin2_size=16, p_dropout=0.0))
    images = torch.cat([marked_images(64, None, 1), marked_images(64, position, 2)])
    labels = torch.cat([torch.zeros(64, dtype=torch.long), torch.ones(64, dtype=torch.long)])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):  # full batch: about a second
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    test = torch.cat([marked_images(16, None, 3), marked_images(16, position, 4)])
    with torch.no_grad():
        accuracy = (model(test).argmax(1) == torch.tensor([0] * 16 + [1] * 16)).float().mean()
    assert accuracy == 1.0, "the synthetic task is learnt (else the test proves nothing)"
    return model


_MODELS: dict[tuple[int, int], XrayCNN] = {}


def corner_model_cache(position: tuple[int, int]) -> XrayCNN:
    if position not in _MODELS:
        _MODELS[position] = train_marker_model(position)
    return _MODELS[position]


@pytest.fixture
def corner_model() -> XrayCNN:
    return corner_model_cache((1, 1))


def box_share(maps: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    inside = maps[:, top:top + side, left:left + side].sum(axis=(1, 2))
    return inside / maps.sum(axis=(1, 2))


@pytest.mark.parametrize("position", [(1, 1), (12, 12)], ids=["corner", "centre"])
def test_grad_cam_mass_lies_where_the_decisive_marker_is(position: tuple[int, int]) -> None:
    model = corner_model_cache(position)
    images = marked_images(16, position, 5)
    maps = grad_cam(model, images, [1] * 16)
    assert maps.shape == (16, SIZE, SIZE)
    corner = box_share(maps, 0, 0, SIZE // 2)  # the top-left quarter of the image
    shares = attention_shares(maps)
    flagged = "Flag" in attention_sentence(shares)
    if position == (1, 1):  # nearly all the mass in that corner, flagged in numbers
        assert np.median(corner) > 0.9
        assert shares["border"] > 0.5 > 0.1 > shares["centre"] and flagged
    else:  # the same check on a model that reads the centre: no corner, no flag
        assert np.median(corner) < 0.4
        assert shares["centre"] > 0.7 > 0.1 > shares["border"] and not flagged


def test_the_map_changes_with_the_target_class(corner_model: XrayCNN) -> None:
    images = marked_images(8, (1, 1), 6)
    for_marker = grad_cam(corner_model, images, [1] * 8)
    for_no_marker = grad_cam(corner_model, images, [0] * 8)
    assert for_marker.shape == for_no_marker.shape
    assert np.abs(for_marker - for_no_marker).mean() > 0.05
    # The evidence for "marker" sits on it; for "no marker", it does not.
    half = SIZE // 2
    assert box_share(for_marker, 0, 0, half).mean() > box_share(for_no_marker, 0, 0, half).mean()


def test_overlay_has_the_input_size_and_colours_only_the_attention() -> None:
    gray = np.full((90, 150), 128, dtype=np.uint8)  # not square, not the map's size
    cam = np.zeros((26, 26), dtype=np.float32)
    cam[:8, :8] = 1.0  # attention in the top-left corner only
    rgb = colour_overlay(gray, cam)
    assert rgb.shape == (90, 150, 3) and rgb.dtype == np.uint8
    assert (rgb[-20:, -40:] == 128).all()  # no attention: the X-ray, untouched
    corner = rgb[:10, :20].astype(int)
    assert (corner.max(axis=2) - corner.min(axis=2)).min() > 40  # in colour


def test_last_conv_is_found_in_any_architecture() -> None:
    deeper = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    assert last_conv(deeper) is deeper[3]
    maps = grad_cam(deeper.eval(), torch.rand(3, 1, 40, 40), [0, 1, 2])
    assert maps.shape == (3, 40, 40) and maps.min() >= 0 and maps.max() <= 1
    with pytest.raises(ExplainError, match=r"no nn\.Conv2d"):
        last_conv(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))


def test_regions_are_the_documented_boxes() -> None:
    centre, border = CENTRE.mask(100, 100), BORDER.mask(100, 100)
    assert centre.mean() == pytest.approx(0.36) and border.mean() == pytest.approx(0.36)
    assert centre[50, 50] and not centre[10, 50] and border[5, 50] and not border[50, 50]
    assert not (centre & border).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_grad_cam_on_cuda_matches_cpu(corner_model: XrayCNN) -> None:
    images = marked_images(8, (1, 1), 7)
    on_cpu = grad_cam(corner_model, images, [1] * 8)
    on_gpu = grad_cam(corner_model.to("cuda"), images, [1] * 8)
    corner_model.to("cpu")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-3)


def test_predict_cam_writes_overlays_for_the_readable_files_only(
        tmp_path: Path, phantom_data: Path, prepared_template: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model_path = tmp_path / "model.pt"
    save_model(XrayCNN(ModelArgs(image_size=64, lin1_size=80, lin2_size=40, p_dropout=0.1)),
               model_path)
    prepared = load_prepared(prepared_template, "test")
    folder = tmp_path / "incoming"
    (folder / "nested").mkdir(parents=True)
    for n, index in enumerate([0, 60, 120]):
        shutil.copy(phantom_data / str(prepared.paths[index]), folder / f"img{n}.png")
    # Same name in a subfolder, another size and format: its own overlay.
    Image.open(phantom_data / str(prepared.paths[1])).resize((150, 90)).convert("RGB").save(
        folder / "nested" / "img0.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 10)
    (tmp_path / "missing.png").symlink_to(tmp_path / "gone.png")  # dangling: an error row
    out, cams = tmp_path / "predictions.csv", tmp_path / "cams"

    rc = cli_main(["predict", str(folder), str(tmp_path / "missing.png"), "--model",
                   str(model_path), "--out", str(out), "--cam", str(cams)])
    assert rc == 0
    assert f"overlays -> {cams}/" in capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0])[-1] == "cam"
    by_path = {Path(r["path"]).relative_to(tmp_path).as_posix(): r for r in rows}
    for bad in ("incoming/broken.png", "missing.png"):
        assert by_path[bad]["error"] and by_path[bad]["cam"] == ""
    good = {p: r for p, r in by_path.items() if not r["error"]}
    assert len(good) == 4
    written = sorted(cams.iterdir())
    assert sorted(Path(r["cam"]) for r in good.values()) == written
    # Drawn on the image as the model saw it: prepare's decoding, at the model's input size.
    from xray_hpo.data.dataset import decode_image

    for shown, row in good.items():
        with Image.open(row["cam"]) as overlay:
            assert overlay.size == (64, 64) and overlay.mode == "RGB"
            rgb = np.asarray(overlay).astype(int)
        gray = decode_image(tmp_path / shown, 64).astype(int)
        plain = (rgb.max(axis=2) - rgb.min(axis=2)) == 0  # untinted: the X-ray itself
        assert plain.any() and (rgb[plain][:, 0] == gray[plain]).all()

    # Without --cam, the CSV keeps exactly its columns.
    cli_main(["predict", str(folder), "--model", str(model_path), "--out", str(out)])
    assert "cam" not in out.read_text().splitlines()[0]

    # A --cam path that is a file: one line naming it, before any work.
    capsys.readouterr()
    rc = cli_main(["predict", str(folder), "--model", str(model_path), "--out",
                   str(tmp_path / "other.csv"), "--cam", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and f"{out}: not a folder" in err
    assert not (tmp_path / "other.csv").exists()
