"""The split protocol: the dataset's own test/ folder kept as the test split, or --resplit.

The official test folder is not on these machines: ``kermany_stand_in`` builds a stand-in
tree with ``train/``, ``val/`` and ``test/`` from a few of the shared training images, with
leaks planted in train/ that must leave it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kermany_stand_in import SHARED, StandIn, build_stand_in, class_of, patients
from xray_hpo.cli import main
from xray_hpo.data.kermany.decode import decode_to_png
from xray_hpo.data.kermany.importer import ImportOptions, KermanyImportError, import_kermany
from xray_hpo.data.manifest import (
    CLASSES,
    ManifestRow,
    SplitProtocolError,
    read_manifest,
    read_split_protocol,
    sha256_file,
)
from xray_hpo.reporting.page import data_section

SIZES = (12, 6, None)  # balanced train 4/4/4, val 2/2/2; test: the official folder


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> StandIn:
    if not (SHARED / "train").is_dir():
        pytest.skip(f"shared real images not found at {SHARED}")
    return build_stand_in(SHARED, tmp_path_factory.mktemp("official") / "chest_xray")


@pytest.fixture(scope="module")
def official(stand_in: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("official_import") / "data"
    import_kermany(ImportOptions(stand_in.root, out, seed=5, sizes=SIZES))
    return out


def overlaps(rows: list[ManifestRow], field_name: str) -> set[str]:
    sides: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        sides[getattr(row, field_name)].add(row.split)
    return {value for value, splits in sides.items() if len(splits) > 1}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


# --- the official test is the test split, unchanged ------------------------------------------

def test_official_test_is_kept_whole_and_unchanged(stand_in: StandIn, official: Path) -> None:
    rows = read_manifest(official)
    test_rows = {row.source: row for row in rows if row.split == "test"}
    assert sorted(test_rows) == stand_in.test_files  # every file, nothing added or moved
    for source, row in test_rows.items():
        data = (stand_in.root / source).read_bytes()
        assert row.cls == class_of(stand_in.root / source)
        stored = official / row.path
        assert stored.read_bytes() == decode_to_png(data)  # decoded exactly like train
        assert (_pixels(stored) == _pixels(stand_in.root / source)).all()  # 8-bit gray: same
    report = json.loads((official / "import_report.json").read_text())
    assert report["official_test_sources"] == {
        source: hashlib.sha256((stand_in.root / source).read_bytes()).hexdigest()
        for source in stand_in.test_files}
    # The fingerprint of the folder's bytes, computed here independently of the importer.
    lines = sorted(f"{s} {sha256_file(stand_in.root / s)}\n" for s in stand_in.test_files)
    record = read_split_protocol(official)
    assert record is not None and record["protocol"] == "official-test"
    assert record["official_test"]["sources_sha256"] == hashlib.sha256(
        "".join(lines).encode()).hexdigest()
    natural = Counter(class_of(stand_in.root / s) for s in stand_in.test_files)
    assert record["official_test"]["per_class"] == {c: natural[c] for c in CLASSES}
    assert len(set(natural.values())) == 3  # unequal: the balanced mode did not touch test
    assert report["counts"]["test"] == record["official_test"]["per_class"]
    assert report["protocol"] == "official-test" and record["warning"] is None
    # The byte-equal duplicates inside the test folder all stay: the benchmark is not edited.
    assert sum("person1372_bacteria_" in s for s in test_rows) == 5


def test_leaks_into_train_are_dropped_and_reported(stand_in: StandIn, official: Path) -> None:
    rows = read_manifest(official)
    imported = {row.source for row in rows}
    report = json.loads((official / "import_report.json").read_text())
    reasons = {entry["source"]: entry["reason"] for entry in report["skipped"]}
    for leak, reason in stand_in.leaks.items():
        assert leak not in imported
        assert reason in reasons[leak], (leak, reasons.get(leak))
    assert not any(source.startswith("test/") for source in reasons)  # never a test image
    dropped = report["split_protocol"]["dropped_from_train_val"]
    assert dropped == {"same_pixels_as_test": 2, "patient_in_test": 1}
    test_pixels = {row.sha256 for row in rows if row.split == "test"}
    assert not any(row.sha256 in test_pixels for row in rows if row.split != "test")


@pytest.mark.parametrize("use_all", [False, True])
def test_no_patient_or_image_on_two_sides(stand_in: StandIn, tmp_path: Path,
                                          use_all: bool) -> None:
    for seed in range(3):
        out = tmp_path / f"seed{seed}"
        import_kermany(ImportOptions(stand_in.root, out, seed=seed, sizes=SIZES,
                                     use_all=use_all))
        rows = read_manifest(out)
        assert overlaps(rows, "patient_id") == set()
        assert overlaps(rows, "sha256") == set()
        assert sorted(r.source for r in rows if r.split == "test") == stand_in.test_files


def test_balanced_and_all_apply_to_train_and_val_only(stand_in: StandIn, official: Path,
                                                      tmp_path: Path) -> None:
    counts = json.loads((official / "import_report.json").read_text())["counts"]
    assert counts["train"] == dict.fromkeys(CLASSES, 4)
    assert counts["val"] == dict.fromkeys(CLASSES, 2)
    every = tmp_path / "all"
    import_kermany(ImportOptions(stand_in.root, every, seed=5, use_all=True))
    rows = read_manifest(every)
    report = json.loads((every / "import_report.json").read_text())
    assert report["counts"]["test"] == counts["test"]  # the same whole folder
    pool = [r for r in rows if r.split != "test"]
    train_folder = {p.relative_to(stand_in.root).as_posix()
                    for p in (stand_in.root / "train").rglob("*.png")}
    expected_pool = (train_folder | set(stand_in.val_files)) - set(stand_in.leaks)
    assert {r.source for r in pool} == expected_pool  # every train/ and val/ image, no leak
    for cls in CLASSES:  # val gets 0.15 / (0.7 + 0.15) of each class, train the rest
        per = Counter(r.split for r in pool if r.cls == cls)
        assert abs(per["val"] / (per["train"] + per["val"]) - 0.15 / 0.85) < 0.08, cls
    # The (16-image) val/ folder joins the pool: its images go to train or val, never test.
    assert {r.split for r in rows if r.source in stand_in.val_files} <= {"train", "val"}


# --- --resplit, and a source without test/ -----------------------------------------------------

def test_resplit_pools_every_folder_as_before(stand_in: StandIn, tmp_path: Path) -> None:
    out = tmp_path / "resplit"
    result = import_kermany(ImportOptions(stand_in.root, out, seed=5, sizes=SIZES, resplit=True))
    rows = read_manifest(out)
    test_sources = {r.source for r in rows if r.split == "test"}
    assert test_sources - set(stand_in.test_files)  # test drawn from the pool...
    assert len(set(result.counts["test"].values())) == 1  # ...balanced, as the mode says
    # Pooled: the planted leaks are no longer "test" images; they group with their twins.
    assert overlaps(rows, "patient_id") == set() and overlaps(rows, "sha256") == set()
    record = read_split_protocol(out)
    assert record is not None and record["protocol"] == "resplit"
    assert "--resplit" in record["reason"] and "overstates accuracy" in record["warning"]
    assert json.loads((out / "import_report.json").read_text())["official_test_sources"] is None


def test_source_without_test_folder_is_a_resplit_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (SHARED / "train").is_dir():
        pytest.skip(f"shared real images not found at {SHARED}")
    source = tmp_path / "train_only"
    for cls, folder in (("normal", "NORMAL"), ("bacterial", "PNEUMONIA"), ("viral", "PNEUMONIA")):
        for group in patients(SHARED, cls)[:4]:
            (source / "train" / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(group[0], source / "train" / folder / group[0].name)
    out = tmp_path / "data"
    assert main(["import-kermany", str(source), "--out", str(out), "--sizes", "6", "3", "max"]) == 0
    captured = capsys.readouterr()
    assert "split protocol: resplit (SOURCE has no test/ folder," in captured.out
    assert "warning:" in captured.err and "overstates accuracy" in captured.err
    assert "new hospitals" in captured.err
    record = read_split_protocol(out)
    assert record is not None and record["protocol"] == "resplit"


def test_a_test_size_with_the_official_folder_is_refused(
        stand_in: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KermanyImportError, match="official test/ folder is kept whole"):
        import_kermany(ImportOptions(stand_in.root, tmp_path / "a", sizes=(12, 6, 6)))
    out = tmp_path / "b"
    assert main(["import-kermany", str(stand_in.root), "--out", str(out),
                 "--sizes", "12", "6", "6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resplit" in err and not out.exists()
    assert main(["import-kermany", str(stand_in.root), "--out", str(out),
                 "--sizes", "12", "6", "6", "--resplit"]) == 0
    printed = capsys.readouterr()
    assert "test 6 (2/2/2)" in printed.out and "split protocol: resplit" in printed.out


def test_cli_names_the_official_protocol(stand_in: StandIn, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "chest_xray.zip"
    with zipfile.ZipFile(archive, "w") as zipped:  # a zip, with a second copy of the tree
        for path in sorted(stand_in.root.rglob("*.png")):
            relative = path.relative_to(stand_in.root).as_posix()
            zipped.write(path, f"chest_xray/{relative}")
            if relative.startswith("test/"):
                zipped.write(path, f"chest_xray/chest_xray/{relative}")
    out = tmp_path / "data"
    assert main(["import-kermany", str(archive), "--out", str(out), "--sizes", "12", "6",
                 "max"]) == 0
    captured = capsys.readouterr()
    assert "split protocol: official-test" in captured.out
    assert f"test: the official test/ folder as it is, {len(stand_in.test_files)} images" \
        in captured.out
    assert "warning" not in captured.err
    rows = read_manifest(out)
    assert len([r for r in rows if r.split == "test"]) == len(stand_in.test_files)


# --- the record: sidecar, data.json, report ----------------------------------------------------

def test_the_report_data_section_states_the_protocol(official: Path) -> None:
    record = read_split_protocol(official)
    sources = {"files imported with xray-hpo import-kermany": 60}
    text = data_section(sources, {"image_size": 64, "counts": {}, "split_protocol": record})
    assert "**Split protocol: `official-test`**" in text
    mix = record["official_test"]["per_class"]
    assert (f"The official test holds {record['official_test']['images']} images "
            f"({mix['normal']} normal, {mix['bacterial']} bacterial, {mix['viral']} viral)") in text
    resplit = {**record, "protocol": "resplit", "official_test": None,
               "dropped_from_train_val": None, "warning": "an i.i.d. re-split overstates it"}
    text = data_section(sources, {"image_size": 64, "counts": {}, "split_protocol": resplit})
    assert "`resplit`" in text and "**Caveat:** an i.i.d. re-split overstates it." in text
    assert "not recorded" in data_section(sources, {"image_size": 64, "counts": {}})
    phantoms = data_section({"synthetic phantoms v1": 600}, {"image_size": 64, "counts": {}})
    assert "Split protocol" not in phantoms


def test_a_bad_sidecar_is_one_line_naming_the_file(tmp_path: Path) -> None:
    assert read_split_protocol(tmp_path) is None  # generated data: none
    (tmp_path / "split_protocol.json").write_text('{"protocol": "random"}')
    with pytest.raises(SplitProtocolError, match=r"protocol\.json: protocol: expected one of"):
        read_split_protocol(tmp_path)
    (tmp_path / "split_protocol.json").write_text("{")
    with pytest.raises(SplitProtocolError, match="not valid JSON"):
        read_split_protocol(tmp_path)
