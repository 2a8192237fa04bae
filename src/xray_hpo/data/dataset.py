"""Raw tree validation and the one-time decode into compact arrays (the prepare stage's work).

Any ``<split>/<class>/`` tree of PNG or JPEG images works: the built-in phantoms and the
imported Kermany data share this loader.
"""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xray_hpo.data.manifest import CLASSES, IMAGE_SUFFIXES, SPLITS
from xray_hpo.errors import UserError

# A digital chest radiograph is 5-20 MP; a header claiming more is damage or a decompression
# bomb. Checked from the header (check_header) before any pixel is decoded, naming the file;
# Pillow's own check, which raises an unnamed DecompressionBombError, is replaced by ours.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = None


class DatasetError(UserError):
    """The raw tree is unusable: the message names the file or folder and what is expected."""


@dataclass(frozen=True)
class RawImage:
    path: Path
    split: str
    label: int  # index into CLASSES


@dataclass(frozen=True)
class PreparedSplit:
    images: np.ndarray  # uint8 (N, S, S)
    labels: np.ndarray  # int64 (N,)
    paths: np.ndarray  # str (N,), relative to the raw root


def scan_raw_tree(root: Path, splits: tuple[str, ...] = SPLITS) -> list[RawImage]:
    """List every image, checking that each class is present in each split."""
    if not root.is_dir():
        raise DatasetError(
            f"{root}: not a directory; expected the raw tree <split>/<class>/<image>")
    found: list[RawImage] = []
    for split in splits:
        for label, cls in enumerate(CLASSES):
            folder = root / split / cls
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
                if folder.is_dir() else []
            if not files:
                raise DatasetError(f"{folder}: no PNG or JPEG images; every split needs "
                                   f"every class ({', '.join(CLASSES)})")
            found.extend(RawImage(path=p, split=split, label=label) for p in files)
    return found


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an image file (from ``stat`` alone: a FIFO is never opened,
    since reading one waits forever for a writer), or None for a non-empty regular file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return "dangling symbolic link" if path.is_symlink() else "not found"
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(info.st_mode):
        return "empty file (0 bytes)" if info.st_size == 0 else None
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISDIR, "a folder"))
    kind = next((text for test, text in kinds if test(info.st_mode)), "a special file")
    return f"not a regular file: {kind}"


class ImageTooLarge(ValueError):
    """An image header claims more pixels than MAX_PIXELS; the message says how many."""


def check_header(image: Image.Image) -> None:
    """Refuse an image whose header claims more than MAX_PIXELS, before it is decoded."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageTooLarge(f"header claims {width}x{height} pixels "
                            f"({width * height / 1e6:.0f} MP), over the "
                            f"{MAX_PIXELS // 1_000_000} MP limit")


def decode_image(source: Path | bytes, image_size: int) -> np.ndarray:
    """Decode any PNG/JPEG (L, RGB, RGBA, I;16; EXIF-rotated) into uint8 (S, S) grayscale.

    prepare and predict both call this, so a model always sees the same preprocessing.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, Path):
        problem = file_problem(source)
        if problem:
            raise DatasetError(f"{name}: {problem}; expected a PNG or JPEG image")
    elif not source:
        raise DatasetError(f"{name}: empty file (0 bytes); expected a PNG or JPEG image")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            check_header(img)
            img.draft("L", (image_size * 2, image_size * 2))  # JPEG: decode at reduced scale
            img = ImageOps.exif_transpose(img)
            gray = to_gray8(img)
            gray = gray.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8).copy()
    except ImageTooLarge as exc:
        raise DatasetError(f"{name}: {exc}; not decoded") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{name}: not a decodable PNG or JPEG image ({exc})") from exc


def to_gray8(image: Image.Image) -> Image.Image:
    """8-bit grayscale of any Pillow mode, scaling high bit depths instead of clipping them."""
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # convert("L") would clip every value above 255 to white; map 0..65535 onto 0..255.
        values = np.asarray(image, dtype=np.int64).clip(0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    # Alpha is dropped, not composited: radiographs do not use transparency, so the stored
    # colour values are the picture and a background colour would invent pixels.
    return image.convert("L")


def prepare_split(root: Path, images: list[RawImage], image_size: int) -> PreparedSplit:
    pixels = np.stack([decode_image(item.path, image_size) for item in images]) if images \
        else np.zeros((0, image_size, image_size), np.uint8)
    return PreparedSplit(
        images=pixels,
        labels=np.array([item.label for item in images], dtype=np.int64),
        paths=np.array([item.path.relative_to(root).as_posix() for item in images]),
    )


def save_prepared(split: PreparedSplit, path: Path) -> None:
    from xray_hpo.atomic import atomic_path

    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, images=split.images, labels=split.labels, paths=split.paths)


def load_prepared(prepared_dir: Path, split: str) -> PreparedSplit:
    path = prepared_dir / f"{split}.npz"
    if not path.is_file():
        raise DatasetError(f"{path}: missing; run the prepare stage first (dvc repro prepare)")
    with np.load(path, allow_pickle=False) as data:
        return PreparedSplit(images=data["images"], labels=data["labels"], paths=data["paths"])
