"""The raw dataset's canonical layout and its manifest (shared by the generator and importers).

Layout: ``<root>/<split>/<class>/<image>`` plus ``<root>/manifest.csv`` with one row per image.
An import also writes the sidecar ``<root>/split_protocol.json``: which protocol made the splits
(the dataset's own test folder kept as test, or a re-split of one pool); generated data has none.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from xray_hpo.atomic import atomic_write_json, atomic_write_text
from xray_hpo.errors import UserError

CLASSES: tuple[str, ...] = ("normal", "bacterial", "viral")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg"})
MANIFEST_NAME = "manifest.csv"
SPLIT_PROTOCOL_NAME = "split_protocol.json"  # the manifest's sidecar: how its splits were made
# official-test: test is the dataset's own test folder; resplit: one pool split i.i.d. by patient.
SPLIT_PROTOCOLS: tuple[str, ...] = ("official-test", "resplit")


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


class SplitProtocolError(UserError):
    """``split_protocol.json`` is unreadable or names no known protocol (a one-line message)."""


def write_split_protocol(root: Path, record: dict[str, object]) -> Path:
    if record.get("protocol") not in SPLIT_PROTOCOLS:
        raise ValueError(f"protocol: expected one of {SPLIT_PROTOCOLS}, "
                         f"got {record.get('protocol')!r}")
    target = root / SPLIT_PROTOCOL_NAME
    atomic_write_json(target, record)
    return target


def read_split_protocol(root: Path) -> dict[str, object] | None:
    """The sidecar's record, or None where there is none (generated data, older imports)."""
    path = root / SPLIT_PROTOCOL_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitProtocolError(f"{path}: not valid JSON ({exc}); expected the import's "
                                 "split protocol record (re-run the import)") from exc
    if not isinstance(record, dict) or record.get("protocol") not in SPLIT_PROTOCOLS:
        got = record.get("protocol") if isinstance(record, dict) else record
        raise SplitProtocolError(f"{path}: protocol: expected one of "
                                 f"{', '.join(SPLIT_PROTOCOLS)}, got {got!r}")
    return record
