"""Find the Kermany dataset's images in a folder or .zip and label them from folder and name.

Layout: ``train|val|test/NORMAL|PNEUMONIA/<file>`` at any depth. Classes: NORMAL -> normal;
PNEUMONIA with ``_bacteria_`` -> bacterial, ``_virus_`` -> viral. A name that fits no rule is
reported by the importer, never guessed.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from xray_hpo.errors import UserError

SOURCE_SPLITS = frozenset({"train", "val", "test"})
SOURCE_CLASSES = frozenset({"NORMAL", "PNEUMONIA"})
# "personNNN" alone is not a patient: the number is reused across the bacterial and viral kinds.
PNEUMONIA_PATIENT = re.compile(r"^(person\d+_(?:bacteria|virus))_")
NORMAL_PATIENT = re.compile(r"^((?:NORMAL2-)?IM-\d+)-")


class KermanyImportError(UserError):
    """A problem the user can fix (bad SOURCE or --out); the message is one line."""


class Unlabeled(Exception):
    """A file name that fits no labelling rule; the message is the reason for the report."""


@dataclass(frozen=True)
class SourceFile:
    name: str  # the path inside SOURCE (POSIX): the manifest's ``source`` column
    folder_class: str  # NORMAL or PNEUMONIA


def label_file(folder_class: str, file_name: str) -> tuple[str, str]:
    """(class, patient id) from the dataset's folder and naming rules; raises Unlabeled."""
    if folder_class == "NORMAL":
        match = NORMAL_PATIENT.match(file_name)
        if not match:
            raise Unlabeled("NORMAL file without an IM-xxxx or NORMAL2-IM-xxxx patient prefix")
        return "normal", match.group(1)
    kinds = [cls for token, cls in (("_bacteria_", "bacterial"), ("_virus_", "viral"))
             if token in file_name]
    if len(kinds) != 1:
        raise Unlabeled("PNEUMONIA file naming neither or both of _bacteria_ and _virus_")
    match = PNEUMONIA_PATIENT.match(file_name)
    if not match:
        raise Unlabeled("PNEUMONIA file without a personNNN_bacteria/personNNN_virus prefix")
    return kinds[0], match.group(1)


def _layout_class(parts: tuple[str, ...]) -> str | None:
    """NORMAL/PNEUMONIA when a path ends in <split>/<class>/<file>, else None."""
    if len(parts) < 3 or parts[-3].lower() not in SOURCE_SPLITS:
        return None
    folder = parts[-2].upper()
    return folder if folder in SOURCE_CLASSES else None


def source_split(name: str) -> str:
    """The dataset's own split folder of a discovered file: train, val or test."""
    return PurePosixPath(name).parts[-3].lower()


def _is_hidden(parts: tuple[str, ...]) -> bool:
    # macOS zips carry __MACOSX/ and ._name twins of every image: not data, not worth a report.
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _unsafe(name: str) -> bool:
    """A zip entry that would land outside the output if extracted as named."""
    return name.startswith("/") or ".." in PurePosixPath(name).parts


def _walk(source: Path, skipped: list[dict[str, str]]) -> list[str]:
    """Every file name under SOURCE, following symbolic links (downloads are often linked
    together) but not into a folder that contains the link: that loop would repeat the tree
    until the path is too long (thousands of copies). Each such link is reported once."""
    names = []
    for folder, dirs, files in os.walk(source, followlinks=True):
        here = Path(folder)
        real = here.resolve()
        for sub in list(dirs):
            link = here / sub
            if link.is_symlink() and real.is_relative_to(link.resolve()):
                dirs.remove(sub)
                target = os.path.relpath(link.resolve(), source.resolve())
                skipped.append({"source": link.relative_to(source).as_posix(),
                                "reason": f"symbolic link loop (to {Path(target).as_posix()}); "
                                          "not followed"})
        names.extend((here / file).relative_to(source).as_posix() for file in files)
    return names


def discover(source: Path) -> tuple[list[SourceFile], list[dict[str, str]]]:
    """Every file under a <split>/<NORMAL|PNEUMONIA>/ folder of SOURCE, sorted by name, and
    the entries passed over that the report must list (unsafe zip paths, link loops)."""
    skipped: list[dict[str, str]] = []
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    elif source.is_dir():
        names = _walk(source, skipped)
    else:
        raise KermanyImportError(f"{source}: not a folder or a .zip; expected the Kermany dataset")
    found = []
    for name in sorted(names):
        if _unsafe(name):  # never extracted; listed, since a zip with these is suspect
            skipped.append({"source": name, "reason": "unsafe path (absolute or with ..); "
                                                      "not extracted"})
            continue
        parts = PurePosixPath(name).parts
        folder_class = _layout_class(parts)
        if folder_class and not _is_hidden(parts):
            found.append(SourceFile(name, folder_class))
    if not found:
        raise KermanyImportError(
            f"{source}: no train|val|test/NORMAL|PNEUMONIA folders with files found; "
            "expected the Kermany chest_xray dataset (folder or .zip)"
        )
    return found, skipped
