"""Grad-CAM maps drawn in colour on the grayscale X-ray, and written as PNG files.

The map is resized to the picture it is drawn on, so an overlay has the size of its input:
the prepared array in the report; in ``xray-hpo predict --cam`` the original file
(EXIF-rotated as prepare reads it), at its own size up to ``MAX_SIDE`` pixels a side.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

COLORMAP = "jet"  # the usual Grad-CAM palette: blue (little) to red (most attention)
# Colour opacity grows with the map, so unattended lung stays plain grayscale and only the
# evidence is tinted; at the map's peak the X-ray still shows through.
MAX_ALPHA = 0.6
# predict --cam draws on the file itself, scaled down to at most this side: the map has the
# last convolution's resolution (26 x 26 for 64 px inputs), so a bigger canvas adds X-ray
# detail but no attention detail, and a full-size film would cost far more than the
# prediction (colouring and PNG-encoding millions of pixels per image).
MAX_SIDE = 256
# PNG compression: level 1 encodes several times faster than the default 6 at almost the
# same size on these smooth images.
PNG_LEVEL = 1


@cache
def _palette() -> np.ndarray:
    """The colormap as a 256-entry lookup table (indexing beats evaluating it per pixel)."""
    from matplotlib import colormaps

    return colormaps[COLORMAP](np.linspace(0.0, 1.0, 256), bytes=True)[:, :3].astype(
        np.float32)


def colour_overlay(gray: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3): ``cam`` (any size, values in [0, 1]) over ``gray`` (H, W)."""
    if gray.ndim != 2:
        raise ValueError(f"expected a grayscale image (H, W), got shape {gray.shape}")
    height, width = gray.shape
    heat = np.asarray(cam, dtype=np.float32)
    if heat.shape != gray.shape:
        heat = np.asarray(Image.fromarray(heat).resize((width, height),
                                                       Image.Resampling.BILINEAR))
    level = np.rint(np.clip(heat, 0.0, 1.0) * 255.0).astype(np.uint8)
    alpha = (level.astype(np.float32) * (MAX_ALPHA / 255.0))[..., None]
    base = gray.astype(np.float32)[..., None]
    return np.rint(base + (_palette()[level] - base) * alpha).astype(np.uint8)


def read_gray(path: Path, max_side: int = MAX_SIDE) -> np.ndarray:
    """A file's 8-bit grayscale, oriented as prepare reads it, at its own size or scaled
    down (aspect kept) to fit ``max_side``."""
    from xray_hpo.data.dataset import to_gray8

    with Image.open(path) as img:
        img.draft("L", (max_side, max_side))  # JPEG: decode at a reduced scale, cheaply
        gray = to_gray8(ImageOps.exif_transpose(img))
        if max(gray.size) > max_side:
            scale = max_side / max(gray.size)
            gray = gray.resize((max(1, round(gray.width * scale)),
                                max(1, round(gray.height * scale))),
                               Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.uint8).copy()


def write_png(rgb: np.ndarray, path: Path) -> None:
    """No metadata chunks: the bytes depend only on the pixels."""
    from xray_hpo.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=PNG_LEVEL)


def write_overlays(model: object, pixels: object, targets: Sequence[int],
                   sources: Sequence[Path], outputs: Sequence[Path]) -> list[str]:
    """Grad-CAM of ``targets`` on the model-sized ``pixels`` (N, 1, S, S), drawn on each
    source file at its own size into ``outputs``; the path written per image, or "" where
    the source could no longer be read."""
    from xray_hpo.explain.gradcam import grad_cam

    maps = grad_cam(model, pixels, targets)  # type: ignore[arg-type]
    written = []
    for heat, source, out in zip(maps, sources, outputs, strict=True):
        try:
            gray = read_gray(source)
        except (OSError, ValueError, SyntaxError):  # changed since it was decoded
            written.append("")
            continue
        write_png(colour_overlay(gray, heat), out)
        written.append(str(out))
    return written


def overlay_path(cam_dir: Path, index: int, shown: str) -> Path:
    """``<cam_dir>/<row>_<stem>.png``: the row number keeps same-named inputs apart."""
    return Path(cam_dir) / f"{index + 1:04d}_{Path(shown).stem}.png"
