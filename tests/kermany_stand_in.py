"""A stand-in for the full Kermany download (train/, val/, test/) built from the shared copy.

The dataset's official test folder is not on these machines; the shared copy holds the
training split only. This tree takes a few of its patients for ``test/`` (an unequal, natural
class mix, with the byte-equal duplicates ``person1372_bacteria_3501-3503``), others for
``train/`` and ``val/``, and plants leaks in train/ that the import must drop from train:
a test image copied under another patient's name, the same pixels re-encoded, a test
patient's other image, and a same-name copy in a folder that sorts before ``test/``.
Copies go to a temporary folder; the shared files are only read.
"""

from __future__ import annotations

import io
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/chest_xray_64"


def patient_of(name: str) -> str:
    """The dataset's patient rule, written apart from the importer's."""
    stem = name.rsplit(".", 1)[0]
    if stem.startswith(("IM-", "NORMAL2-")):
        return re.match(r"(?:NORMAL2-)?IM-\d+", stem).group(0)
    return "_".join(stem.split("_")[:2])


def class_of(path: Path) -> str:
    if path.parent.name == "NORMAL":
        return "normal"
    return "bacterial" if "_bacteria_" in path.name else "viral"


@dataclass
class StandIn:
    root: Path
    test_files: list[str]  # relative paths of the official test folder
    val_files: list[str]
    leaks: dict[str, str] = field(default_factory=dict)  # planted train file -> expected reason


def patients(shared: Path, cls: str) -> list[list[Path]]:
    folder = shared / "train" / ("NORMAL" if cls == "normal" else "PNEUMONIA")
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if class_of(path) == cls and not path.name.startswith("person1372_"):
            groups[patient_of(path.name)].append(path)
    return [groups[p] for p in sorted(groups)]


def build_stand_in(shared: Path, root: Path) -> StandIn:
    def put(path: Path, split: str, name: str | None = None) -> str:
        relative = f"{split}/{path.parent.name}/{name or path.name}"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / relative)
        return relative

    test, val = [], []
    # A natural, unequal mix in test: 3 normal, 5 bacterial (+6 of one child, some byte-equal
    # duplicates of each other, as the dataset has them), 2 viral patients.
    for cls, n_test in (("normal", 3), ("bacterial", 5), ("viral", 2)):
        groups = patients(shared, cls)
        test += [put(p, "test") for group in groups[:n_test] for p in group]
        train_groups = groups[n_test:n_test + 12]
        for group in train_groups:
            for p in group:
                put(p, "train")
        val += [put(p, "val") for group in groups[n_test + 12:n_test + 14] for p in group]
    pneumonia = shared / "train/PNEUMONIA"
    test += [put(p, "test") for p in sorted(pneumonia.glob("person1372_bacteria_*.png"))]
    stand_in = StandIn(root, sorted(test), sorted(val))

    # Leaks planted in train/: each must leave train, never the test image.
    copied = root / test[0]  # a normal test image, copied under a new patient's name
    stand_in.leaks[put(copied, "train", "IM-9901-0001.png")] = f"same pixels as official test " \
                                                               f"image {test[0]}"
    viral = next(root / t for t in test if "_virus_" in t)
    with Image.open(viral) as image:  # the same pixels, other bytes
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
    (root / "train/PNEUMONIA/person9902_virus_1.png").write_bytes(buffer.getvalue())
    stand_in.leaks["train/PNEUMONIA/person9902_virus_1.png"] = (
        f"same pixels as official test image {viral.relative_to(root).as_posix()}")
    # A test patient's other image in train/ (the child may not sit on both sides).
    person = shared / "train/PNEUMONIA/person1372_bacteria_3498.png"
    (root / "test/PNEUMONIA/person1372_bacteria_3498.png").unlink()
    stand_in.test_files.remove("test/PNEUMONIA/person1372_bacteria_3498.png")
    stand_in.leaks[put(person, "train")] = "patient person1372_bacteria is in the official test"
    # Same name and bytes in a folder that sorts before test/: the copy dropped is the train one.
    first = [t for t in test if t.startswith("test/NORMAL/")][1]
    early = f"copies/train/NORMAL/{Path(first).name}"
    (root / early).parent.mkdir(parents=True)
    shutil.copyfile(root / first, root / early)
    stand_in.leaks[early] = f"copy of {first}"
    return stand_in
