"""The project's built-in dataset: deterministic synthetic chest X-ray phantoms.

Nothing here is a real patient. Each PNG is drawn from a seeded random generator keyed by
(seed, split, class, index), so an image never depends on generation order or on the size
of the other splits, and regenerating gives the same bytes; that is what lets ``data.dvc``
record hashes that a fresh clone reproduces without downloading anything.

Rendering: a pose-transformed grid -> normal anatomy as a density map
(:mod:`xray_hpo.data.phantoms.anatomy`) -> class pathology
(:mod:`xray_hpo.data.phantoms.pathology`) ->
film response, detector artefacts, blur and noise -> uint8.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from xray_hpo.atomic import atomic_directory
from xray_hpo.data.manifest import CLASSES, SPLITS, ManifestRow, sha256_bytes, write_manifest
from xray_hpo.data.phantoms.anatomy import draw_chest, segment_distance, soft_step
from xray_hpo.data.phantoms.pathology import consolidation, interstitial

SOURCE = "synthetic-phantom v1"
# DVC's hash of the default set (PhantomSpec()): data.dvc records it, and `xray-hpo
# ensure-data` regenerates only data that hashes to it. A generator change is a new
# dataset version: update this, regenerate, and `dvc add data`.
PHANTOM_DATA_MD5 = "cf16eae7a7259200accbe63d26d7b5a3.dir"
# A stream key no image uses (images use four-number keys), for shuffling patient numbers.
_PATIENT_SHUFFLE_KEY = (0x50415449,)

# Lead side markers as 5x5 bitmaps: placed at random, independent of class, so a network
# cannot use them as a shortcut but must learn to ignore them, as on real films.
_MARKERS: dict[str, tuple[str, ...]] = {
    "L": ("10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "11110", "10100", "10011"),
}


def _default_counts() -> dict[str, int]:
    # The original study's 206 train / 45 val, plus a larger test split for a tighter
    # confidence interval on the final accuracy (still < 5 MB of PNGs in all).
    return {"train": 206, "val": 45, "test": 150}


@dataclass(frozen=True)
class PhantomSpec:
    seed: int = 20261201
    image_size: int = 128  # PNG size; the prepare stage resizes (64 by default)
    counts: dict[str, int] = field(default_factory=_default_counts)  # images per split


def class_counts(total: int) -> dict[str, int]:
    """Balanced per-class counts; a remainder goes to the first classes (206 -> 69/69/68)."""
    base, extra = divmod(total, len(CLASSES))
    return {cls: base + (1 if i < extra else 0) for i, cls in enumerate(CLASSES)}


def render_phantom(rng: np.random.Generator, cls: str, image_size: int) -> np.ndarray:
    """One radiograph of class ``cls`` as a (image_size, image_size) uint8 array."""
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; expected one of {CLASSES}")
    if image_size < 16:
        raise ValueError(f"image_size {image_size} too small; expected >= 16")
    # Independent streams for patient, disease and acquisition: the same generator state
    # gives the same patient filmed the same way whatever the class, so a class's effect can
    # be seen (and tested) in isolation, all else equal.
    patient_rng, disease_rng, acquisition_rng = rng.spawn(3)
    image_x, image_y = _image_grid(image_size)
    x, y = _patient_pose(patient_rng, image_x, image_y)
    anatomy = draw_chest(patient_rng, x, y)
    density = anatomy.density
    if cls == "bacterial":
        density = density + consolidation(disease_rng, anatomy, x, y)
    elif cls == "viral":
        density = density + interstitial(disease_rng, anatomy, x, y)
    film = _film_response(acquisition_rng, density)
    film = _detector_artefacts(acquisition_rng, film, image_x, image_y)
    scale = image_size / 128.0
    film = gaussian_filter(film, acquisition_rng.uniform(0.3, 1.0) * scale)
    noise = gaussian_filter(acquisition_rng.standard_normal(film.shape), 0.5 * scale)
    film = film + acquisition_rng.uniform(0.01, 0.035) * noise / max(float(noise.std()), 1e-12)
    return np.rint(np.clip(film, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """Fixed encoder settings and no metadata chunks: same pixels, same bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def generate_dataset(out_dir: Path, spec: PhantomSpec = PhantomSpec()) -> list[ManifestRow]:
    """Write ``out_dir/<split>/<class>/<patient>_0.png`` plus ``manifest.csv``, all or nothing.

    The tree is built in a temporary sibling and swapped in whole, so an interrupted run
    leaves the previous dataset (or nothing), never a half-written one.
    """
    unknown = sorted(set(spec.counts) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown} in PhantomSpec.counts; expected {SPLITS}")
    plan = [
        (split_index, split, class_index, cls, index)
        for split_index, split in enumerate(SPLITS)
        for class_index, (cls, n) in enumerate(class_counts(spec.counts.get(split, 0)).items())
        for index in range(n)
    ]
    # Patient numbers are shuffled so neither the id nor the file order reveals the class.
    patient_numbers = np.random.default_rng([spec.seed, *_PATIENT_SHUFFLE_KEY]).permutation(
        len(plan))
    rows: list[ManifestRow] = []
    with atomic_directory(Path(out_dir)) as staging:
        staging.chmod(0o755)  # mkdtemp makes it owner-only; the dataset is meant to be shared
        for (split_index, split, class_index, cls, index), number in zip(
                plan, patient_numbers, strict=True):
            rng = np.random.default_rng([spec.seed, split_index, class_index, index])
            data = encode_png(render_phantom(rng, cls, spec.image_size))
            patient_id = f"phantom-{int(number):05d}"
            relative = f"{split}/{cls}/{patient_id}_0.png"
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            rows.append(ManifestRow(split=split, cls=cls, path=relative, patient_id=patient_id,
                                    sha256=sha256_bytes(data), source=SOURCE))
        write_manifest(staging, rows)
    return sorted(rows, key=lambda row: row.path)


def _image_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in normalised detector coordinates, [-1, 1] on both axes."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    image_y, image_x = np.meshgrid(coords, coords, indexing="ij")
    return image_x, image_y


def _patient_pose(rng: np.random.Generator, image_x: np.ndarray,
                  image_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map detector coordinates into the patient's frame: small rotation, shift and scale."""
    angle = float(np.clip(rng.normal(0.0, 0.04), -0.1, 0.1))
    scale = rng.uniform(0.9, 1.08)
    shift_x, shift_y = rng.uniform(-0.06, 0.06), rng.uniform(-0.05, 0.07)
    dx, dy = image_x - shift_x, image_y - shift_y
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    return (cos_a * dx + sin_a * dy) / scale, (-sin_a * dx + cos_a * dy) / scale


def _film_response(rng: np.random.Generator, density: np.ndarray) -> np.ndarray:
    """Exposure and processing: saturating film curve, window/level and gamma."""
    exposure = rng.uniform(1.0, 1.8)
    film = (1.0 - np.exp(-exposure * np.clip(density, 0.0, None))) / (
        1.0 - np.exp(-exposure * 1.5))
    low, high = rng.uniform(0.08, 0.22), rng.uniform(0.9, 1.1)
    return np.clip((film - low) / (high - low), 0.0, 1.0) ** rng.uniform(0.75, 1.3)


def _detector_artefacts(rng: np.random.Generator, film: np.ndarray, image_x: np.ndarray,
                        image_y: np.ndarray) -> np.ndarray:
    """Side marker, ECG leads and collimation edges, each present in some images only."""
    size = film.shape[0]
    if rng.random() < 0.45:
        bitmap = np.array([[c == "1" for c in row] for row in _MARKERS["LR"[rng.integers(2)]]])
        cell = max(1, round(size * 0.015))
        letter = np.kron(bitmap, np.ones((cell, cell), dtype=bool))
        top = int(rng.integers(2, size // 5))
        left = int(rng.integers(2, size // 6)) if rng.random() < 0.5 else int(
            rng.integers(size - size // 6 - letter.shape[1], size - letter.shape[1] - 2))
        film = film.copy()
        region = film[top:top + letter.shape[0], left:left + letter.shape[1]]
        region[letter] = rng.uniform(0.85, 1.0)
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 4))):
            center = (rng.uniform(-0.6, 0.6), rng.uniform(-0.7, 0.1))
            electrode = np.hypot(image_x - center[0], image_y - center[1])
            wire_end = (center[0] + rng.uniform(-0.5, 0.5), -1.1)
            wire = segment_distance(image_x, image_y, center, wire_end)
            lead = np.maximum(soft_step(0.035 - electrode, 0.008), 0.7 * soft_step(
                0.008 - wire, 0.004))
            film = np.maximum(film, lead * rng.uniform(0.8, 1.0))
    for axis_values, sign in ((image_x, -1), (image_x, 1), (image_y, -1), (image_y, 1)):
        if rng.random() < 0.2:
            tilt = rng.uniform(-0.04, 0.04) * (image_y if axis_values is image_x else image_x)
            edge = 1.0 - rng.uniform(0.03, 0.12)
            outside = soft_step(sign * (axis_values + tilt) - edge, 0.006)
            film = film * (1.0 - outside) + rng.uniform(0.7, 0.95) * outside
    return film
