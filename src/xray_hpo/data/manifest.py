"""The raw dataset's canonical layout and its manifest (shared by the generator and importers).

Layout: ``<root>/<split>/<class>/<image>`` plus ``<root>/manifest.csv`` with one row per image.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from xray_hpo.atomic import atomic_write_text

CLASSES: tuple[str, ...] = ("normal", "bacterial", "viral")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ManifestRow:
    split: str
    cls: str  # written as column "class" (a Python keyword)
    path: str  # relative to the dataset root, POSIX separators
    patient_id: str
    sha256: str
    source: str


MANIFEST_COLUMNS: tuple[str, ...] = tuple(
    "class" if f.name == "cls" else f.name for f in fields(ManifestRow)
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(root: Path, rows: Iterable[ManifestRow]) -> Path:
    """Write ``manifest.csv`` sorted by path, so the same dataset gives the same bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in sorted(rows, key=lambda r: r.path):
        writer.writerow(astuple(row))
    target = root / MANIFEST_NAME
    atomic_write_text(target, buffer.getvalue())
    return target


def read_manifest(root: Path) -> list[ManifestRow]:
    path = root / MANIFEST_NAME
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: missing columns {sorted(missing)}; expected {MANIFEST_COLUMNS}")
        return [
            ManifestRow(
                split=r["split"], cls=r["class"], path=r["path"],
                patient_id=r["patient_id"], sha256=r["sha256"], source=r["source"],
            )
            for r in reader
        ]
