"""The built-in phantom dataset: deterministic bytes, balanced splits, honest manifest,
class differences in the expected direction, and all-or-nothing writes."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import xray_hpo.data.phantoms.generate as phantoms
from xray_hpo.data.manifest import CLASSES, SPLITS, read_manifest, sha256_file
from xray_hpo.data.phantoms.generate import (
    PHANTOM_DATA_MD5,
    SOURCE,
    PhantomSpec,
    class_counts,
    generate_dataset,
    render_phantom,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = PhantomSpec(image_size=64, counts={"train": 7, "val": 3, "test": 4})


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("phantoms") / "data"
    return root, generate_dataset(root, SMALL)


def test_default_sizes_follow_the_original_study() -> None:
    counts = PhantomSpec().counts
    assert class_counts(counts["train"]) == {"normal": 69, "bacterial": 69, "viral": 68}
    assert class_counts(counts["val"]) == {"normal": 15, "bacterial": 15, "viral": 15}
    assert class_counts(counts["test"]) == {"normal": 50, "bacterial": 50, "viral": 50}


def test_regenerating_gives_identical_bytes(small_dataset, tmp_path: Path) -> None:
    root, rows = small_dataset
    again = generate_dataset(tmp_path / "again", SMALL)
    assert again == rows
    assert _tree_bytes(tmp_path / "again") == _tree_bytes(root)


def test_an_image_does_not_depend_on_the_other_splits(small_dataset, tmp_path: Path) -> None:
    """Per-image streams: shrinking one split or dropping another leaves the rest unchanged
    (only the shuffled patient numbers, hence file names, may differ)."""
    _, rows = small_dataset
    other = generate_dataset(tmp_path / "other", PhantomSpec(
        image_size=64, counts={"train": 4, "test": 4}))
    hashes = {(row.split, row.cls, row.sha256) for row in rows}
    assert {(row.split, row.cls, row.sha256) for row in other} <= hashes


def test_splits_are_balanced_and_laid_out_canonically(small_dataset) -> None:
    root, rows = small_dataset
    per_split_class = Counter((row.split, row.cls) for row in rows)
    for split in SPLITS:
        assert {cls: per_split_class[(split, cls)] for cls in CLASSES} == class_counts(
            SMALL.counts[split])
    for row in rows:
        assert row.path == f"{row.split}/{row.cls}/{row.patient_id}_0.png"
        assert row.patient_id.startswith("phantom-") and row.source == SOURCE
    assert len({row.patient_id for row in rows}) == len(rows)  # one image per patient
    files = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert files == {row.path for row in rows}


def test_manifest_hashes_equal_file_hashes(small_dataset) -> None:
    root, rows = small_dataset
    assert read_manifest(root) == rows  # rows come back sorted by path, like the file
    for row in rows:
        assert sha256_file(root / row.path) == row.sha256


def test_images_are_8_bit_grayscale_of_the_requested_size(small_dataset) -> None:
    root, rows = small_dataset
    for row in rows:
        with Image.open(root / row.path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (64, 64))
            assert not image.info, "PNG metadata would make bytes machine dependent"
    pixels = render_phantom(np.random.default_rng(0), "viral", 96)
    assert pixels.shape == (96, 96) and pixels.dtype == np.uint8
    assert pixels.min() < 40 and pixels.max() > 200  # dark background, bright bone/heart


def test_unknown_class_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown class"):
        render_phantom(np.random.default_rng(0), "fungal", 64)


# Rough lung-field windows (rows, columns as fractions of the image) that stay inside the
# lungs across the pose and anatomy variation.
_LUNG_ROWS = (0.2, 0.75)
_LUNG_COLUMNS = ((0.15, 0.45), (0.55, 0.85))  # viewer's left, viewer's right


def _lung_means(image: np.ndarray) -> tuple[float, float]:
    size = image.shape[0]
    rows = slice(int(_LUNG_ROWS[0] * size), int(_LUNG_ROWS[1] * size))
    return tuple(  # type: ignore[return-value]
        float(image[rows, int(lo * size):int(hi * size)].mean()) for lo, hi in _LUNG_COLUMNS)


def test_pneumonia_brightens_the_lungs_bacterial_one_sided_viral_bilateral() -> None:
    """Same patient, same film, only the disease differs (render_phantom keeps the streams
    apart): both pneumonias add lung opacity; bacterial mostly on one side, viral on both."""
    n_pairs = 24
    gain = {cls: [] for cls in CLASSES[1:]}
    asymmetry = {cls: [] for cls in CLASSES[1:]}
    for key in range(n_pairs):
        normal = render_phantom(np.random.default_rng([7, key]), "normal", 64).astype(float)
        for cls in CLASSES[1:]:
            sick = render_phantom(np.random.default_rng([7, key]), cls, 64).astype(float)
            left, right = _lung_means(sick - normal)
            gain[cls].append(left + right)
            asymmetry[cls].append(abs(left - right) / (abs(left) + abs(right) + 1e-9))
    for cls in CLASSES[1:]:
        assert np.mean(np.array(gain[cls]) > 0) > 0.9, cls
    assert np.mean(asymmetry["bacterial"]) > np.mean(asymmetry["viral"]) + 0.2


def test_classes_differ_in_lung_brightness_across_patients() -> None:
    """Unpaired, as a classifier sees them: diseased lungs are brighter on average."""
    brightness: dict[str, float] = {}
    for class_index, cls in enumerate(CLASSES):
        means = [np.mean(_lung_means(render_phantom(
            np.random.default_rng([11, class_index, i]), cls, 64))) for i in range(40)]
        brightness[cls] = float(np.mean(means))
    assert brightness["bacterial"] > brightness["normal"]
    assert brightness["viral"] > brightness["normal"]


def test_a_failed_generation_leaves_the_old_dataset_untouched(monkeypatch, tmp_path) -> None:
    real_render = phantoms.render_phantom
    calls = 0

    def render_then_fail(rng: np.random.Generator, cls: str, image_size: int) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise RuntimeError("simulated crash halfway")
        return real_render(rng, cls, image_size)

    monkeypatch.setattr(phantoms, "render_phantom", render_then_fail)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="halfway"):
        generate_dataset(fresh, SMALL)
    assert not fresh.exists()

    existing = tmp_path / "existing"
    (existing / "train").mkdir(parents=True)
    (existing / "train" / "old.png").write_bytes(b"old")
    calls = 0
    with pytest.raises(RuntimeError, match="halfway"):
        generate_dataset(existing, SMALL)
    assert _tree_bytes(existing) == {"train/old.png": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # no temp leftovers


def _dvc_directory_md5(root: Path) -> tuple[str, int, int]:
    """DVC 3's directory hash: md5 of the sorted JSON list of {md5, relpath}, plus '.dir'."""
    entries, size = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        size += len(data)
        entries.append({"md5": hashlib.md5(data).hexdigest(),
                        "relpath": path.relative_to(root).as_posix()})
    entries.sort(key=lambda entry: entry["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir", len(entries), size


def test_a_fresh_generation_matches_data_dvc(phantom_data: Path) -> None:
    """phantom_data (conftest): this session's ``generate_dataset(root, PhantomSpec())``."""
    out = yaml.safe_load((REPO_ROOT / "data.dvc").read_text())["outs"][0]
    md5, nfiles, size = _dvc_directory_md5(phantom_data)
    assert (md5, nfiles, size) == (out["md5"], out["nfiles"], out["size"])
    # ensure-data regenerates only what hashes to this constant: it must be data.dvc's.
    assert md5 == PHANTOM_DATA_MD5
