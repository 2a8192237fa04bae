"""Decode Kermany source images (any JPEG/PNG mode) to small, canonical grayscale PNGs.

``decode_to_png`` is a pure function over bytes (tests call it on synthetic images);
``decode_all`` runs it over a folder's or zip's members, in worker processes when many.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from xray_hpo.data.dataset import ImageTooLarge, check_header, file_problem, to_gray8

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG"})
DEFAULT_MAX_SIZE = 256


class UndecodableImage(Exception):
    """A source file that is not a usable image; the message is the reason in the report."""


def decode_to_png(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Source bytes -> PNG bytes: upright (EXIF), grayscale 8-bit, longer side <= max_size,
    aspect kept, no metadata, identical bytes for identical input."""
    if not data:
        raise UndecodableImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ACCEPTED_FORMATS:
                raise UndecodableImage(f"unsupported format {image.format} (expected JPEG or PNG)")
            check_header(image)  # before a single pixel is decoded
            if image.format == "JPEG":
                # Let libjpeg decode at 1/2..1/8 scale straight into grayscale: a 2k px
                # original never exists in memory at full size, so memory stays flat.
                image.draft("L", (max_size, max_size))
            image.load()  # decode now, so truncation surfaces here as an error
            upright = ImageOps.exif_transpose(image)
            gray = to_gray8(upright)
            gray.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
            # A fresh image carries no info dict, so no ICC profile/EXIF/text is written.
            clean = Image.frombytes("L", gray.size, gray.tobytes())
    except UndecodableImage:
        raise
    except UnidentifiedImageError as exc:
        raise UndecodableImage("not an image (content is no known image format)") from exc
    except ImageTooLarge as exc:
        raise UndecodableImage(f"too large to decode safely: {exc}") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError...)
        raise UndecodableImage(f"corrupt image ({type(exc).__name__}: {exc})") from exc
    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


# --- many files, in worker processes --------------------------------------------------------

@dataclass
class _WorkerState:
    source: Path
    staging: Path
    max_size: int
    archive: zipfile.ZipFile | None  # one handle per process, reused for every member


_WORKER: _WorkerState | None = None


def _init_worker(source: str, staging: str, max_size: int) -> None:
    global _WORKER
    archive = zipfile.ZipFile(source) if zipfile.is_zipfile(source) else None
    _WORKER = _WorkerState(Path(source), Path(staging), max_size, archive)


def _decode_one(task: tuple[int, str]) -> tuple[int, str, str, str]:
    """(index, source sha256, output sha256, reason); the PNG goes to <staging>/<index>.png."""
    index, name = task
    state = _WORKER
    assert state is not None, "_init_worker must run first"
    if state.archive is None:  # a folder: stat first, since reading a FIFO never returns
        problem = file_problem(state.source / name)
        if problem:
            return index, "", "", problem
    try:
        data = state.archive.read(name) if state.archive else (state.source / name).read_bytes()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        return index, "", "", f"unreadable ({type(exc).__name__}: {exc})"
    source_sha = hashlib.sha256(data).hexdigest()
    try:
        png = decode_to_png(data, state.max_size)
    except UndecodableImage as exc:
        return index, source_sha, "", str(exc)
    (state.staging / f"{index:06d}.png").write_bytes(png)
    return index, source_sha, hashlib.sha256(png).hexdigest(), ""


def decode_all(
    source: Path, names: list[str], staging: Path, max_size: int, jobs: int
) -> list[tuple[int, str, str, str]]:
    tasks = list(enumerate(names))
    init_args = (str(source), str(staging), max_size)
    if jobs <= 1 or len(tasks) < 500:  # a pool costs ~0.5 s to start: not worth it for a few
        _init_worker(*init_args)
        try:
            return [_decode_one(task) for task in tasks]
        finally:
            if _WORKER is not None and _WORKER.archive is not None:
                _WORKER.archive.close()
    # spawn, not fork: a forked child of a process holding threads (torch, ClearML) can hang.
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=_init_worker, initargs=init_args) as pool:
        return list(pool.imap(_decode_one, tasks, chunksize=64))
