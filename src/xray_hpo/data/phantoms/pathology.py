"""Pneumonia patterns added to a phantom's density: what separates the three classes.

- bacterial: dense focal or lobar consolidation, usually in one lung and the lower or middle
  zone, with fluffy edges, sometimes air bronchograms or a blunted costophrenic angle;
- viral: diffuse bilateral interstitial / perihilar haze with reticular, streaky texture.

Severity is drawn per image from a wide distribution that includes barely visible cases, so
even a good classifier stays below 100% and the hyperparameter search has something to win.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from xray_hpo.data.phantoms.anatomy import (
    SIDES,
    ChestAnatomy,
    radial_streaks,
    smooth_noise,
    soft_ellipse,
    soft_step,
)

# Shared severity knobs, in density units (a lung field is ~0.45-0.55 darker than soft
# tissue). They set how hard the dataset is: bench/phantom_difficulty.py measures it.
CONSOLIDATION_DENSITY = (0.45, 1.3)
INTERSTITIAL_DENSITY = (0.12, 0.55)


def _severity(rng: np.random.Generator) -> float:
    """Mostly moderate, with a tail of subtle cases on one side and florid ones on the other."""
    return float(rng.beta(2.0, 1.8))


def consolidation(rng: np.random.Generator, anatomy: ChestAnatomy,
                  x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bacterial pneumonia: one (sometimes a second, weaker) airspace opacity."""
    u = rng.uniform
    ppu = anatomy.pixels_per_unit
    low, high = CONSOLIDATION_DENSITY
    strength = low + (high - low) * _severity(rng)
    main_side = int(rng.integers(2))
    sides = [(main_side, 1.0)]
    if rng.random() < 0.2:
        sides.append((1 - main_side, u(0.25, 0.6)))

    opacity = np.zeros_like(x)
    for index, weight in sides:
        lung = anatomy.lungs[index]
        side = SIDES[index]
        top, base = anatomy.lung_top, anatomy.lung_base[index]
        zone = rng.choice(3, p=(0.55, 0.35, 0.10))  # lower, middle, upper
        depth = (u(0.55, 0.78), u(0.38, 0.6), u(0.15, 0.35))[zone]
        center = (anatomy.lung_center_x[index] + side * u(-0.35, 0.45) * anatomy.lung_half_width,
                  top + depth * (base - top))
        if rng.random() < 0.4:  # lobar: fills the lung below an oblique fissure
            fissure = center[1] - u(0.05, 0.15) + u(-0.3, 0.3) * (x - center[0])
            region = soft_step(y - fissure, 0.03) * soft_step(
                u(0.22, 0.35) - np.abs(y - center[1] - 0.1), 0.08)
        else:  # patchy: a cluster of overlapping blobs
            region = np.zeros_like(x)
            for _ in range(int(rng.integers(2, 6))):
                blob_center = (center[0] + u(-0.1, 0.1), center[1] + u(-0.08, 0.08))
                radius = u(0.08, 0.18)
                region = np.maximum(region, soft_ellipse(
                    x, y, blob_center, (radius, radius * u(0.7, 1.3)), u(0, np.pi), 0.05))
        # Fluffy, ill-defined margins: threshold the region against smooth noise.
        fluff = smooth_noise(rng, x.shape, 0.025 * ppu)
        patch = soft_step(region + 0.3 * fluff - 0.3, 0.2) * region
        if rng.random() < 0.35:  # air bronchograms: dark branching lines inside the opacity
            streaks = radial_streaks(rng, x, y, anatomy.hila[index], int(u(25, 45)), 4.0)
            patch *= 1.0 - 0.5 * np.clip(streaks, 0, 1) * soft_step(patch - 0.4, 0.1)
        opacity += weight * patch * lung
        if rng.random() < 0.25 and weight == 1.0:  # parapneumonic effusion: blunted angle
            lateral = side * (x - anatomy.lung_center_x[index]) / anatomy.lung_half_width
            meniscus = anatomy.dome_y[index] - u(0.06, 0.16) * np.clip(lateral, 0, None) ** 2
            angle_region = (soft_step(lateral - 0.2, 0.1) * soft_step(1.1 - lateral, 0.05)
                            * soft_step(anatomy.dome_y[index] + 0.05 - y, 0.02))
            opacity += 1.6 * soft_step(y - meniscus, 0.02) * angle_region
    return strength * gaussian_filter(opacity, 0.025 * ppu)


def interstitial(rng: np.random.Generator, anatomy: ChestAnatomy,
                 x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Viral pneumonia: bilateral perihilar haze plus reticular and peribronchial markings."""
    u = rng.uniform
    ppu = anatomy.pixels_per_unit
    low, high = INTERSTITIAL_DENSITY
    strength = low + (high - low) * _severity(rng)
    spread = u(0.3, 0.55)  # small: perihilar; large: diffuse
    baseline = u(0.1, 0.45)

    # Reticular net: band-pass noise keeps a lattice of thin bright lines.
    band = smooth_noise(rng, x.shape, 0.012 * ppu) - 0.7 * smooth_noise(rng, x.shape, 0.035 * ppu)
    reticular = np.clip(band, 0.0, None)
    reticular /= max(float(reticular.mean()), 1e-12)

    haze = np.zeros_like(x)
    for index, hilum in enumerate(anatomy.hila):
        r = np.hypot(x - hilum[0], y - hilum[1])
        perihilar = baseline + (1 - baseline) * np.exp(-((r / spread) ** 2))
        streaks = radial_streaks(rng, x, y, hilum, int(u(40, 70)), 2.0) * np.exp(-r / 0.5)
        texture = 0.45 + 0.35 * reticular + 0.5 * streaks
        haze += u(0.75, 1.25) * anatomy.lungs[index] * perihilar * texture
    return strength * haze
