"""The split protocol of a Kermany import: the dataset's own test folder, or a re-split.

``official-test`` (the default when SOURCE holds the dataset's ``test/`` folder): every image
of that folder becomes the test split, none dropped, moved or re-balanced, so the score is the
one papers report (the folder was acquired apart from ``train/`` and is shifted from it). Train
and val are drawn from ``train/`` plus ``val/`` (16 images: too few to select a model with).
A train/val image that shares pixels, bytes or a patient with a test image leaves the pool
and is reported; the test image always stays.

``resplit`` (``--resplit``, or SOURCE has no ``test/`` folder): every folder is pooled and
split i.i.d. by patient, as before. Its test split comes from the same acquisition as train,
so it overstates accuracy on new hospitals' images: the record carries that warning.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from xray_hpo.data.kermany.source import KermanyImportError, SourceFile, source_split
from xray_hpo.data.kermany.split import SplitItem, SplitPlan, plan_all, plan_balanced
from xray_hpo.data.manifest import CLASSES, SPLIT_PROTOCOLS

OFFICIAL_TEST, RESPLIT = SPLIT_PROTOCOLS
IID_CAVEAT = ("an i.i.d. re-split overstates accuracy on new hospitals' images: its test images "
              "come from the same pool and acquisition as train; the dataset's own test/ "
              "folder, imported with the rest, is the honest benchmark")


@dataclass(frozen=True)
class Protocol:
    name: str  # official-test | resplit
    reason: str  # why: the source's folders or --resplit


def choose_protocol(files: Iterable[SourceFile], resplit: bool) -> Protocol:
    has_test = any(source_split(file.name) == "test" for file in files)
    if resplit:
        return Protocol(RESPLIT, "--resplit: the dataset's own test/ folder is pooled with "
                                 "train/ and val/ and re-split" if has_test
                        else "--resplit (SOURCE has no test/ folder)")
    if has_test:
        return Protocol(OFFICIAL_TEST, "SOURCE holds the dataset's own test/ folder")
    return Protocol(RESPLIT, "SOURCE has no test/ folder, only training images: test is "
                             "re-split from them")


def check_sizes(protocol: Protocol, sizes: tuple[int, int, int | None], use_all: bool,
                fractions: tuple[float, float, float]) -> None:
    """Options that cannot apply to a test split kept whole: one line, before any decoding."""
    if protocol.name != OFFICIAL_TEST:
        return
    if not use_all and sizes[2] is not None:
        raise KermanyImportError(
            f"--sizes TEST (kermany.test) = {sizes[2]}: the official test/ folder is kept whole "
            "with its natural class mix; pass max, or --resplit to draw test from the pool")
    if use_all and fractions[0] + fractions[1] <= 0:
        raise KermanyImportError("--fractions: TRAIN + VAL must be > 0 (the official test/ "
                                 "folder is the test split)")


def copy_order(protocol: Protocol, name: str) -> int:
    """Sort key for the copy check: test files first, so a second copy is never the test image."""
    return 0 if protocol.name == OFFICIAL_TEST and source_split(name) == "test" else 1


@dataclass
class OfficialTest:
    items: dict[str, SplitItem]  # source name -> item, every image kept from the test/ folder
    duplicates: list[dict[str, str]] = field(default_factory=list)  # pool images, dropped
    patients: list[dict[str, str]] = field(default_factory=list)  # pool images, dropped


def separate_official_test(items: dict[str, SplitItem]) -> OfficialTest:
    """Move the test/ folder's items out of ``items`` (which stays the train/val pool) and drop
    pool items that share pixels, bytes or a patient with one of them (leak-free train/val)."""
    official = OfficialTest({key: items.pop(key) for key in sorted(items)
                             if source_split(key) == "test"})
    twin_of: dict[str, str] = {}
    patient_of: dict[str, str] = {}
    for key, item in official.items.items():
        twin_of.setdefault(item.pixel_sha256, key)
        twin_of.setdefault(item.source_sha256, key)
        patient_of.setdefault(item.patient_id, key)
    for key in sorted(items):
        item = items[key]
        twin = twin_of.get(item.pixel_sha256) or twin_of.get(item.source_sha256)
        if twin:
            official.duplicates.append({"source": key, "reason": (
                f"same pixels as official test image {twin}: dropped from train/val, "
                "the test image stays")})
        elif item.patient_id in patient_of:
            official.patients.append({"source": key, "reason": (
                f"patient {item.patient_id} is in the official test "
                f"({patient_of[item.patient_id]}): dropped from train/val")})
        else:
            continue
        del items[key]
    return official


def label_conflict_notes(official: OfficialTest) -> list[str]:
    """Identical images under two labels inside the test folder: kept (the benchmark is not
    edited), but named, since such a pair caps the reachable accuracy."""
    classes_of: dict[str, set[str]] = defaultdict(set)
    for item in official.items.values():
        classes_of[item.pixel_sha256].add(item.cls)
    return [f"official test: {key} has the same pixels as an image labelled "
            f"{' and '.join(sorted(classes_of[item.pixel_sha256] - {item.cls}))}; kept as is"
            for key, item in sorted(official.items.items())
            if len(classes_of[item.pixel_sha256]) > 1]


def train_val_rule(protocol: Protocol, use_all: bool, sizes: tuple[int, int, int | None],
                   fractions: tuple[float, float, float]) -> str:
    """The balanced / --all rule in words (it never applies to the official test)."""
    pool = ("train/ and val/ folders" if protocol.name == OFFICIAL_TEST
            else "source's folders pooled")
    if use_all:
        shares = fractions[:2] if protocol.name == OFFICIAL_TEST else fractions
        return (f"every image of the {pool}, split per class by fractions "
                f"{' '.join(f'{f:g}' for f in shares)}, grouped by patient")
    counts = (f"{sizes[0]} train / {sizes[1]} val" if protocol.name == OFFICIAL_TEST else
              f"{sizes[0]} train / {sizes[1]} val / "
              f"{'max' if sizes[2] is None else sizes[2]} test")
    return f"balanced ({counts}, equal per class) from the {pool}, grouped by patient"


def plan_official(pool: Sequence[SplitItem], official: OfficialTest, use_all: bool,
                  sizes: tuple[int, int, int | None], fractions: tuple[float, float, float],
                  seed: int) -> SplitPlan:
    """Train/val from the pool by the balanced or --all rule; test = the official items."""
    plan = (plan_all(pool, (fractions[0], fractions[1], 0.0), seed) if use_all
            else plan_balanced(pool, (sizes[0], sizes[1], 0), seed))
    return SplitPlan({**plan.assignment, **dict.fromkeys(official.items, "test")},
                     plan.shortfalls)


def fingerprint(official: OfficialTest) -> str:
    """sha256 of the sorted ``test/<CLASS>/<file> <sha256 of its bytes>`` lines: the same for
    the same test folder, whether it sat in a folder or a zip, at any depth."""
    lines = sorted(f"{'/'.join(PurePosixPath(key).parts[-3:])} {item.source_sha256}\n"
                   for key, item in official.items.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def lost_test_files(skipped: Iterable[dict[str, str]]) -> list[str]:
    """Test-folder files that could not be imported (a second copy of the tree is no loss)."""
    return sorted(entry["source"] for entry in skipped if source_split(entry["source"]) == "test"
                  and not entry["reason"].startswith("copy of "))


def protocol_record(protocol: Protocol, official: OfficialTest | None, train_val_rule: str,
                    lost: Sequence[str]) -> dict[str, object]:
    """What ``split_protocol.json``, the import report and the results page say."""
    if official is None:
        return {"protocol": protocol.name, "reason": protocol.reason,
                "test": "re-split: drawn i.i.d. (grouped by patient) from the same pool as "
                        "train and val", "train_val": train_val_rule,
                "official_test": None, "dropped_from_train_val": None,
                "warning": IID_CAVEAT}
    per_class = Counter(item.cls for item in official.items.values())
    warning = None
    if lost:
        warning = (f"{len(lost)} file(s) of the official test folder could not be imported "
                   "(see skipped): scores are not comparable with the full official test")
    return {
        "protocol": protocol.name, "reason": protocol.reason,
        "test": "the dataset's own test/ folder: every image, its natural class mix, decoded "
                "like train (same pixels for 8-bit grayscale sources)",
        "train_val": train_val_rule,
        "official_test": {"images": len(official.items),
                          "per_class": {cls: per_class.get(cls, 0) for cls in CLASSES},
                          "sources_sha256": fingerprint(official), "not_imported": len(lost)},
        "dropped_from_train_val": {"same_pixels_as_test": len(official.duplicates),
                                   "patient_in_test": len(official.patients)},
        "warning": warning,
    }
