"""The Kermany import on the shared real images, on corrupted copies and on synthetic files."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from xray_hpo.cli import main
from xray_hpo.data.kermany.decode import UndecodableImage, decode_to_png
from xray_hpo.data.kermany.importer import ImportOptions, KermanyImportError, import_kermany
from xray_hpo.data.kermany.source import Unlabeled, label_file
from xray_hpo.data.kermany.split import SplitError, SplitItem, group_items
from xray_hpo.data.manifest import CLASSES, SPLITS, ManifestRow, read_manifest, sha256_file

# One pytest-xdist process runs the module (--dist loadfile): its imports of the shared
# images (module fixtures) then happen once, not once per process.

SHARED = Path(__file__).resolve().parents[2].parent / "shared/data/chest_xray_64"
SHARED_COUNTS = {"normal": 1341, "bacterial": 2530, "viral": 1345}  # from its README


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (SHARED / "train").is_dir():
        pytest.skip(f"shared real images not found at {SHARED}")
    return SHARED


def expected_label(source: str) -> tuple[str, str]:
    """The dataset's naming rules, written independently of the importer."""
    folder, name = source.split("/")[-2:]
    stem = name.rsplit(".", 1)[0]
    if folder == "NORMAL":
        prefix = "NORMAL2-" if stem.startswith("NORMAL2-") else ""
        return "normal", prefix + "-".join(stem.removeprefix(prefix).split("-")[:2])
    person, kind = stem.split("_")[:2]
    return {"bacteria": "bacterial", "virus": "viral"}[kind], f"{person}_{kind}"


def build_subset(shared: Path, target: Path, per_class: int = 40) -> Path:
    """A small real tree (first files of each kind plus known duplicate sets), as copies."""
    pneumonia = sorted((shared / "train/PNEUMONIA").iterdir())
    chosen = sorted((shared / "train/NORMAL").iterdir())[:per_class]
    chosen += [p for p in pneumonia if "_bacteria_" in p.name][:per_class]
    chosen += [p for p in pneumonia if "_virus_" in p.name][:per_class]
    chosen += [p for p in pneumonia if p.name.startswith(("person1372_bacteria_", "person357_v"))]
    for path in chosen:
        destination = target / "train" / path.parent.name / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    return target


def overlaps(rows: list[ManifestRow], field: str) -> set[str]:
    sides: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        sides[getattr(row, field)].add(row.split)
    return {value for value, splits in sides.items() if len(splits) > 1}


@pytest.fixture(scope="module")
def all_import(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("all") / "data"
    import_kermany(ImportOptions(shared, out, seed=3, use_all=True, jobs=2))
    return out


@pytest.fixture(scope="module")
def default_import(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("default") / "data"
    import_kermany(ImportOptions(shared, out, jobs=2))
    return out


# --- the real shared images -------------------------------------------------------------------

def test_all_images_keep_every_class_count(all_import: Path) -> None:
    rows = read_manifest(all_import)
    assert Counter(row.cls for row in rows) == SHARED_COUNTS
    for cls in CLASSES:  # stratified: each class gets about 70/15/15
        per_split = Counter(row.split for row in rows if row.cls == cls)
        for split, fraction in zip(SPLITS, (0.70, 0.15, 0.15), strict=True):
            assert abs(per_split[split] / SHARED_COUNTS[cls] - fraction) < 0.01, (cls, split)
    for row in rows[::97]:  # the manifest describes the files actually written
        assert sha256_file(all_import / row.path) == row.sha256
        assert row.path == f"{row.split}/{row.cls}/{Path(row.source).stem}.png"
    on_disk = {p.relative_to(all_import).as_posix() for p in all_import.rglob("*.png")}
    assert on_disk == {row.path for row in rows}


def test_default_is_the_balanced_original_study_sizes(default_import: Path) -> None:
    rows = read_manifest(default_import)
    counts = Counter((row.split, row.cls) for row in rows)
    assert [counts["train", c] for c in CLASSES] == [69, 69, 68]  # 206
    assert [counts["val", c] for c in CLASSES] == [15, 15, 15]  # 45
    # Test: as many as balance allows; normal is the limit (1341 - 69 - 15).
    assert [counts["test", c] for c in CLASSES] == [1257, 1257, 1257]
    with Image.open(default_import / rows[0].path) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (64, 64))


@pytest.mark.parametrize("tree", ["all_import", "default_import"])
def test_no_patient_and_no_duplicate_on_two_sides(tree: str, shared: Path,
                                                 request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(tree)
    rows = read_manifest(root)
    assert overlaps(rows, "patient_id") == set()
    assert overlaps(rows, "sha256") == set()
    source_sha = {row.source: sha256_file(shared / row.source) for row in rows}
    split_of_source_sha: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        split_of_source_sha[source_sha[row.source]].add(row.split)
    assert all(len(splits) == 1 for splits in split_of_source_sha.values())
    duplicate_shas = [s for s, n in Counter(source_sha.values()).items() if n > 1]
    assert duplicate_shas  # the dataset's byte-identical duplicates were imported and checked


def test_labels_follow_the_file_name_rules(all_import: Path) -> None:
    rows = read_manifest(all_import)
    for row in rows:
        assert (row.cls, row.patient_id) == expected_label(row.source), row.source
    # personNNN alone is no patient: the same number names a bacterial and a viral child.
    kinds_per_person = defaultdict(set)
    for row in rows:
        if row.cls != "normal":
            kinds_per_person[row.patient_id.split("_")[0]].add(row.patient_id)
    assert any(len(ids) == 2 for ids in kinds_per_person.values())


# --- determinism, zip, report, atomicity (on a small real subset) -------------------------------

def test_same_seed_same_manifest_bytes(shared: Path, tmp_path: Path) -> None:
    source = build_subset(shared, tmp_path / "src")
    sizes = (30, 15, None)
    manifests = []
    for seed, name in ((7, "a"), (7, "b"), (8, "c")):
        out = tmp_path / name
        import_kermany(ImportOptions(source, out, seed=seed, sizes=sizes))
        manifests.append((out / "manifest.csv").read_bytes())
    assert manifests[0] == manifests[1]
    assert manifests[0] != manifests[2]  # the seed does drive the split


def test_zip_source_gives_the_folder_result(shared: Path, tmp_path: Path) -> None:
    source = build_subset(shared, tmp_path / "src", per_class=20)
    archive = tmp_path / "chest_xray.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(source.rglob("*.png")):
            zipped.write(path, f"chest_xray/{path.relative_to(source).as_posix()}")
        zipped.writestr("__MACOSX/chest_xray/train/NORMAL/._IM-0115-0001.png", b"\0\5\26\7")
    import_kermany(ImportOptions(source, tmp_path / "from_dir", sizes=(15, 6, None)))
    import_kermany(ImportOptions(archive, tmp_path / "from_zip", sizes=(15, 6, None)))
    from_dir, from_zip = read_manifest(tmp_path / "from_dir"), read_manifest(tmp_path / "from_zip")
    assert [(r.split, r.path, r.sha256) for r in from_dir] == [
        (r.split, r.path, r.sha256) for r in from_zip]
    assert all(r.source.startswith("chest_xray/train/") for r in from_zip)
    assert not (tmp_path / "from_zip/import_report.json").read_text().count("MACOSX")


def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def test_report_lists_corrupt_and_unlabeled_files(shared: Path, tmp_path: Path) -> None:
    source = build_subset(shared, tmp_path / "src", per_class=12)
    normal = source / "train/NORMAL"
    real_png = (normal / "IM-0115-0001.png").read_bytes()
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, format="GIF")
    bad = {
        "train/NORMAL/IM-9001-0001.jpeg": (_truncated_jpeg(), "truncated"),
        "train/NORMAL/IM-9002-0001.png": (real_png[: len(real_png) // 2], "corrupt"),
        "train/PNEUMONIA/person9001_virus_1.png": (b"", "empty"),
        "train/PNEUMONIA/person9002_bacteria_2.png": (b"not an image\n", "not an image"),
        "train/NORMAL/IM-9003-0001.png": (gif.getvalue(), "unsupported format GIF"),
        "train/PNEUMONIA/person9003_fungus_3.png": (real_png, "unlabeled"),
        "train/NORMAL/scan_0001.png": (real_png, "unlabeled"),
        # The same picture under NORMAL and PNEUMONIA: the label cannot be trusted.
        "val/PNEUMONIA/person9004_virus_4.png": ((normal / "IM-0117-0001.png").read_bytes(),
                                                 "labelled normal and viral"),
    }
    for name, (data, _) in bad.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    (source / "val/NORMAL").mkdir()
    shutil.copyfile(normal / "IM-0117-0001.png", source / "val/NORMAL/IM-0117-0001.png")
    (source / "train/NORMAL/.DS_Store").write_bytes(b"\0")  # hidden: ignored, not reported

    result = import_kermany(ImportOptions(source, tmp_path / "data", sizes=(9, 3, None)))
    reasons = {entry["source"]: entry["reason"] for entry in result.skipped}
    assert set(reasons) == {*bad, "train/NORMAL/IM-0117-0001.png", "val/NORMAL/IM-0117-0001.png"}
    for name, (_, reason) in bad.items():
        assert reason in reasons[name], (name, reasons[name])
    assert reasons["val/NORMAL/IM-0117-0001.png"] == "copy of train/NORMAL/IM-0117-0001.png"
    report = (tmp_path / "data/import_report.json").read_text()
    assert all(name in report for name in bad)
    assert not {row.source for row in read_manifest(tmp_path / "data")} & set(reasons)


def test_cross_patient_duplicates_stay_on_one_side(shared: Path, tmp_path: Path) -> None:
    source = build_subset(shared, tmp_path / "src", per_class=10)
    original = source / "train/NORMAL/IM-0115-0001.png"
    shutil.copyfile(original, source / "train/NORMAL/IM-9999-0001.png")  # same bytes
    with Image.open(original) as image:  # same pixels, different bytes
        image.save(source / "train/NORMAL/IM-9998-0001.png", compress_level=1)
    for seed in range(6):  # six seeds: a broken union would split them by chance
        out = tmp_path / f"out{seed}"
        import_kermany(ImportOptions(source, out, seed=seed, use_all=True))
        splits = {row.split for row in read_manifest(out)
                  if row.patient_id in ("IM-0115", "IM-9999", "IM-9998")}
        assert len(splits) == 1


def test_group_items_unions_patients_and_both_hashes() -> None:
    items = [SplitItem("a", "normal", "p1", "s1", "x1"), SplitItem("b", "normal", "p2", "s1", "x2"),
             SplitItem("c", "normal", "p3", "s3", "x2"), SplitItem("d", "normal", "p3", "s4", "x4"),
             SplitItem("e", "normal", "p5", "s5", "x5")]
    assert [[i.key for i in group] for group in group_items(items)] == [["a", "b", "c", "d"], ["e"]]


def test_failed_import_leaves_existing_output_untouched(shared: Path, tmp_path: Path) -> None:
    source = build_subset(shared, tmp_path / "src", per_class=5)
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("old data")  # not an import: replaced only with force
    with pytest.raises(SplitError, match="only 5 usable normal images"):
        import_kermany(ImportOptions(source, out, sizes=(206, 45, None), force=True))
    assert [p.name for p in tmp_path.iterdir() if p.name != "src"] == ["data"]  # no temp left
    assert (out / "keep.txt").read_text() == "old data"
    import_kermany(ImportOptions(source, out, sizes=(6, 3, None), force=True))
    assert not (out / "keep.txt").exists()  # a successful import replaces the tree whole


# --- user errors and the command line ---------------------------------------------------------

def test_user_errors_are_one_line_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(KermanyImportError, match=f"{tmp_path / 'nope'}: not found"):
        import_kermany(ImportOptions(tmp_path / "nope", tmp_path / "data"))
    (tmp_path / "flat/images").mkdir(parents=True)
    (tmp_path / "flat/images/a.png").write_bytes(b"x")
    with pytest.raises(KermanyImportError, match="no train\\|val\\|test/NORMAL\\|PNEUMONIA"):
        import_kermany(ImportOptions(tmp_path / "flat", tmp_path / "data"))
    with pytest.raises(KermanyImportError, match="inside --out"):
        import_kermany(ImportOptions(tmp_path / "flat", tmp_path))


def test_cli_prints_the_error_or_the_next_steps(shared: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-kermany", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'missing'}: not found" in err
    source = build_subset(shared, tmp_path / "src", per_class=6)
    out = tmp_path / "data"
    assert main(["import-kermany", str(source), "--out", str(out), "--sizes", "6", "3", "3"]) == 0
    printed = capsys.readouterr().out
    assert "train 6 (2/2/2), val 3 (1/1/1), test 3 (1/1/1)" in printed
    for step in (f"dvc add {out}", f"git add {out}.dvc", "dvc remote add -d", "dvc push"):
        assert step in printed


def test_dvc_add_flag_versions_the_import(shared: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    source = build_subset(shared, tmp_path / "src", per_class=6)
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    dvc = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    assert dvc, "dvc is a project dependency"
    subprocess.run([dvc, "init", "--no-scm", "-q"], check=True)
    assert main(["import-kermany", str(source), "--sizes", "6", "3", "3", "--dvc-add"]) == 0
    recorded = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]
    assert recorded["path"] == "data" and recorded["nfiles"] == 12 + 3  # + 3 json/csv files


def test_label_rules() -> None:
    assert label_file("PNEUMONIA", "person1_bacteria_1.jpeg") == ("bacterial", "person1_bacteria")
    assert label_file("PNEUMONIA", "person1_virus_6.jpeg") == ("viral", "person1_virus")
    assert label_file("NORMAL", "NORMAL2-IM-0395-0001-0002.jpeg") == ("normal", "NORMAL2-IM-0395")
    assert label_file("NORMAL", "IM-0115-0001.jpeg") == ("normal", "IM-0115")
    for folder, name in (("PNEUMONIA", "person2_1.jpeg"), ("PNEUMONIA", "x_bacteria_virus_1.png"),
                         ("PNEUMONIA", "patient_virus_1.png"), ("NORMAL", "person1_virus_6.jpeg")):
        with pytest.raises(Unlabeled):
            label_file(folder, name)


# --- decoding synthetic images ----------------------------------------------------------------

def _encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _decoded(data: bytes, max_size: int = 256) -> np.ndarray:
    with Image.open(io.BytesIO(decode_to_png(data, max_size))) as image:
        assert image.mode == "L"
        return np.asarray(image)


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append(kind)
        offset += 12 + length
    return chunks


def test_rgb_and_rgba_become_luma() -> None:
    expected = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # ITU-R 601 luma = 124
    assert (_decoded(_encode(Image.new("RGB", (9, 5), (200, 100, 50)))) == expected).all()
    jpeg = _decoded(_encode(Image.new("RGB", (64, 48), (200, 100, 50)), "JPEG", quality=95))
    assert jpeg.shape == (48, 64) and abs(int(jpeg.mean()) - expected) <= 2
    # Alpha is dropped, not composited: fully transparent pixels keep their grey value.
    rgba = _decoded(_encode(Image.new("RGBA", (4, 4), (200, 100, 50, 0))))
    assert (rgba == expected).all()


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(values))
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode in ("I;16", "I")
    assert _decoded(data).tolist() == [[0, 1, 128, 255]]


def test_exif_orientation_is_applied() -> None:
    stored = np.zeros((40, 80), dtype=np.uint8)
    stored[:, :40] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    pixels = _decoded(_encode(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95))
    assert pixels.shape == (80, 40)  # upright: tall
    assert pixels[:40].mean() > 200 and pixels[40:].mean() < 50  # the white half is on top


def test_large_images_shrink_keep_aspect_and_carry_no_metadata() -> None:
    gradient = np.tile(np.linspace(0, 255, 3000, dtype=np.uint8), (1200, 1))
    for fmt in ("PNG", "JPEG"):
        data = _encode(Image.fromarray(gradient).convert("RGB"), fmt, dpi=(300, 300))
        png = decode_to_png(data, 256)
        with Image.open(io.BytesIO(png)) as image:
            assert image.size == (256, 102)
        assert _png_chunks(png) == [b"IHDR", b"IDAT", b"IEND"]
        assert decode_to_png(data, 256) == png  # deterministic bytes


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty file"), (b"hello", "not an image"), (_truncated_jpeg(), "truncated"),
])
def test_undecodable_inputs_raise_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableImage, match=reason):
        decode_to_png(data)
