"""Grad-CAM maps drawn in colour on the grayscale X-ray, and written as PNG files.

The map is resized to the picture it is drawn on, so an overlay has the size of its input.
Both the report and ``xray-hpo predict --cam`` draw on the image exactly as the model saw
it (``prepare.image_size`` squared, prepare's own decoding), so the picture is what the
model looked at. Drawing on the original file instead (re-read at up to 256 px a side)
measured 6-8x a plain prediction per image against 1.7-2.6x (bench/RESULTS_gradcam.md),
and it adds X-ray detail, not attention detail: the map has the last convolution's
resolution (26 x 26 for 64 px inputs).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

COLORMAP = "jet"  # the usual Grad-CAM palette: blue (little) to red (most attention)
# Colour opacity grows with the map, so unattended lung stays plain grayscale and only the
# evidence is tinted; at the map's peak the X-ray still shows through.
MAX_ALPHA = 0.6
# PNG compression: zlib level 1 with its run-length strategy (meant for PNG rows) encodes
# about 10x faster than Pillow's default level 6 at almost the same size on these images.
PNG_LEVEL, PNG_STRATEGY = 1, 3  # 3 = zlib.Z_RLE


@cache
def _palette() -> np.ndarray:
    """The colormap as a 256-entry lookup table (indexing beats evaluating it per pixel)."""
    from matplotlib import colormaps

    return colormaps[COLORMAP](np.linspace(0.0, 1.0, 256), bytes=True)[:, :3].astype(
        np.int32)


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
    # Integer blending (opacity in 1/256 steps): exact, and twice as fast as float maths.
    alpha = ((level.astype(np.int32) * round(MAX_ALPHA * 256)) // 255)[..., None]
    base = gray.astype(np.int32)[..., None]
    return (base + (((_palette()[level] - base) * alpha + 128) >> 8)).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """No metadata chunks: the bytes depend only on the pixels."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=PNG_LEVEL,
                              compress_type=PNG_STRATEGY)
    return buffer.getvalue()


def write_png(rgb: np.ndarray, path: Path) -> None:
    """One write of the finished bytes, without atomic.py's temporary file and rename:
    those cost more than the encoding (a third of predict --cam's time per image), and a
    new overlay replaces nothing; the CSV that names the overlays is written (atomically)
    only after all of them, so an interrupted run leaves no CSV pointing at a torn PNG."""
    path.write_bytes(png_bytes(rgb))


def write_overlays(model: object, images: np.ndarray, targets: Sequence[int],
                   outputs: Sequence[Path]) -> list[str]:
    """Grad-CAM of ``targets`` drawn on ``images`` (N, S, S uint8, as the model sees them)
    into ``outputs``; returns the paths written."""
    import torch

    from xray_hpo.explain.gradcam import grad_cam

    pixels = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float().div_(255.0)
    maps = grad_cam(model, pixels, targets)  # type: ignore[arg-type]
    for folder in {out.parent for out in outputs}:
        folder.mkdir(parents=True, exist_ok=True)
    for gray, heat, out in zip(images, maps, outputs, strict=True):
        write_png(colour_overlay(gray, heat), out)
    return [str(out) for out in outputs]


def overlay_path(cam_dir: Path, index: int, shown: str) -> Path:
    """``<cam_dir>/<row>_<stem>.png``: the row number keeps same-named inputs apart."""
    return Path(cam_dir) / f"{index + 1:04d}_{Path(shown).stem}.png"
