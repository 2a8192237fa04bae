"""Bad inputs the fault tests share: a decompression-bomb PNG header and special files.

Every maker writes at ``path`` and returns the one-line reason the project gives for it,
as ``file_problem``/``check_header`` word it (prepare and predict add their own framing).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header claiming width x height pixels, with (almost) no pixel data:
    Pillow reads the size from IHDR; decoding it would need width*height bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + \
        _chunk(b"IEND", b"")


def oversized(path: Path) -> str:
    path.write_bytes(bomb_png())
    return "header claims 30000x30000 pixels (900 MP), over the 100 MP limit"


def zero_bytes(path: Path) -> str:
    path.write_bytes(b"")
    return "empty file (0 bytes)"


def fifo(path: Path) -> str:
    os.mkfifo(path)  # opening it for reading would wait forever for a writer
    return "not a regular file: a FIFO (named pipe)"


def dangling_link(path: Path) -> str:
    path.symlink_to(path.with_name("moved-away.png"))
    return "dangling symbolic link"


def device(path: Path) -> str:
    path.symlink_to("/dev/null")  # a character device under an image name
    return "not a regular file: a character device"


SPECIAL: dict[str, Callable[[Path], str]] = {
    "zero-byte": zero_bytes, "fifo": fifo, "dangling-link": dangling_link, "device": device}
ALL_BAD: dict[str, Callable[[Path], str]] = {"oversized": oversized, **SPECIAL}


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every regular file under root, by relative path: compare before and after."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
