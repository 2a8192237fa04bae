"""Bad image files before any decoding: prepare stops with one line naming the file and
keeps its previous prepared/ whole; decode_image never opens a FIFO and never decodes a
header that claims more than 100 MP."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bad_files import ALL_BAD, bomb_png, tree_bytes
from xray_hpo.data.dataset import DatasetError, decode_image


@pytest.mark.parametrize("make", ALL_BAD.values(), ids=ALL_BAD.keys())
def test_decode_image_refuses_with_the_file_and_the_reason(
        tmp_path: Path, make: Callable[[Path], str]) -> None:
    path = tmp_path / "x.png"
    reason = make(path)
    started = time.perf_counter()
    with pytest.raises(DatasetError) as caught:
        decode_image(path, 64)
    assert time.perf_counter() - started < 5  # a FIFO was not opened, a bomb not decoded
    suffix = "; not decoded" if "MP limit" in reason else "; expected a PNG or JPEG image"
    assert str(caught.value) == f"{path}: {reason}{suffix}"


def test_a_bomb_in_memory_is_refused_from_its_header() -> None:
    with pytest.raises(DatasetError, match=r"^<bytes>: header claims 30000x30000 pixels "
                                           r"\(900 MP\), over the 100 MP limit; not decoded$"):
        decode_image(bomb_png(), 64)


@pytest.fixture
def own_data_project(make_project: Callable[..., object], phantom_data: Path) -> object:
    """A tiny project with prepared/ in place and a writable copy of the phantom data."""
    project = make_project()
    data = project.root / "data"  # type: ignore[attr-defined]
    data.unlink()
    shutil.copytree(phantom_data, data)
    project.run("prepare")  # type: ignore[attr-defined]
    return project


@pytest.mark.slow
@pytest.mark.parametrize("kind", ALL_BAD.keys())
def test_prepare_stops_on_a_bad_test_image_and_keeps_every_split(
        own_data_project: object, kind: str) -> None:
    root: Path = own_data_project.root  # type: ignore[attr-defined]
    before = tree_bytes(root / "prepared")
    assert sorted(before) == ["test.npz", "train.npz", "val.npz"]
    data_before = (root / "metrics/data.json").read_bytes()
    # test/ is prepared last: train and val are already decoded when it fails.
    reason = ALL_BAD[kind](root / "data/test/viral/zz-bad.png")
    proc = own_data_project.run("prepare", check=False)  # type: ignore[attr-defined]
    assert proc.returncode == 2
    suffix = "; not decoded" if kind == "oversized" else "; expected a PNG or JPEG image"
    assert proc.stderr.splitlines() == [
        f"prepare: error: data/test/viral/zz-bad.png: {reason}{suffix}"]
    assert tree_bytes(root / "prepared") == before  # no new train/val beside an old test
    assert (root / "metrics/data.json").read_bytes() == data_before
    assert not [p.name for p in root.iterdir() if p.name.startswith(".prepared")]
