"""Normal paediatric chest anatomy for the synthetic phantoms, drawn as an X-ray density map.

Everything works on a normalised grid (``x`` to the viewer's right, ``y`` downwards, the
image spanning [-1, 1]) that the caller has already rotated, scaled and shifted for the
patient's pose, so shapes here never deal with pixels except for blur widths. Densities are
in arbitrary attenuation units (soft tissue through the thickest part of the trunk ~ 1);
higher means brighter on the film. All maths is float64: the PNG bytes must not depend on
which SIMD path numpy picks on a given CPU, and float32 rounding could flip a pixel.

Convention, as on a real PA/AP film: the patient's left is on the viewer's right, so the
heart shadow bulges into the right-hand lung field and the gastric bubble sits under the
right-hand dome. Index 0 of every per-side tuple is the viewer's left (patient's right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

SIDES: tuple[int, int] = (-1, 1)  # sign of x for the viewer's left / right lung


def soft_step(signed_distance: np.ndarray, softness: float) -> np.ndarray:
    """0 outside, 1 inside, with a smooth edge ``1.5 * softness`` wide on either side.

    A clipped cubic smoothstep (same slope at the edge as ``(1 + tanh(d / softness)) / 2``):
    a few multiply-adds instead of a transcendental, the hottest call of the renderer.
    """
    t = np.clip(signed_distance * (1.0 / (3.0 * softness)) + 0.5, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def soft_ellipse(x: np.ndarray, y: np.ndarray, center: tuple[float, float],
                 radii: tuple[float, float], angle: float = 0.0,
                 softness: float = 0.04) -> np.ndarray:
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    dx, dy = x - center[0], y - center[1]
    u = (dx * cos_a + dy * sin_a) / radii[0]
    v = (-dx * sin_a + dy * cos_a) / radii[1]
    return soft_step(1.0 - np.sqrt(u * u + v * v), softness)


def segment_distance(x: np.ndarray, y: np.ndarray, start: tuple[float, float],
                     end: tuple[float, float]) -> np.ndarray:
    """Distance from every grid point to the segment ``start``-``end``."""
    ax, ay = start
    bx, by = end
    length_sq = (bx - ax) ** 2 + (by - ay) ** 2
    t = np.clip(((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / length_sq, 0.0, 1.0)
    return np.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay)))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(shape), sigma_px, mode="reflect", truncate=3.0)
    return field / max(float(field.std()), 1e-12)


def radial_streaks(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                   origin: tuple[float, float], n_rays: int, sharpness: float) -> np.ndarray:
    """Thin lines fanning out from ``origin`` (vessels, bronchi): a periodic 1-D noise sampled
    at each point's angle, so each 'ray' is one noise peak; cheap and fully vectorised."""
    angle = np.arctan2(y - origin[1], x - origin[0])
    knots = rng.standard_normal(n_rays)
    positions = (angle + np.pi) / (2 * np.pi) * n_rays
    profile = np.interp(positions, np.arange(n_rays + 1), np.append(knots, knots[0]))
    return np.clip(profile, 0.0, None) ** sharpness


@dataclass(frozen=True)
class ChestAnatomy:
    """The drawn density plus the landmarks that pathology needs to stay anatomical."""

    density: np.ndarray
    lungs: tuple[np.ndarray, np.ndarray]  # soft masks in [0, 1]
    lung_center_x: tuple[float, float]
    lung_half_width: float
    lung_top: float
    lung_base: tuple[float, float]  # lowest point of each lung (costophrenic recess)
    dome_y: tuple[np.ndarray, np.ndarray]  # diaphragm height under each lung, per grid point
    hila: tuple[tuple[float, float], tuple[float, float]]
    pixels_per_unit: float  # image_size / 2: converts normalised lengths to blur widths


def draw_chest(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> ChestAnatomy:
    """One normal chest with its own body habitus, heart size and depth of inspiration."""
    ppu = x.shape[0] / 2.0
    u = rng.uniform
    body_half_width = u(0.78, 0.95)
    lung_top = u(-0.78, -0.62)
    inspiration = u(0.0, 1.0)  # deep breath: low flat domes, long lungs
    base_right = lung_top + 0.95 + 0.35 * inspiration + u(-0.04, 0.04)
    bases = (base_right, base_right + u(0.02, 0.08))  # the right dome sits higher
    dome_height = u(0.08, 0.16) * (1.3 - 0.5 * inspiration)
    lung_offset = u(0.37, 0.45) * body_half_width / 0.87
    lung_half_width = u(0.25, 0.31) * body_half_width / 0.87

    # Trunk: a projected cylinder (thicker in the middle) narrowing to the neck above the
    # shoulders; outside it there is no attenuation, i.e. the black film background.
    neck = u(0.2, 0.3)
    shoulder_y = lung_top - u(0.08, 0.18)
    half_width = neck + (body_half_width - neck) * soft_step(y - shoulder_y, 0.09)
    body = soft_step(half_width - np.abs(x), 0.02)
    thickness = np.sqrt(np.clip(1.0 - (x / half_width) ** 2, 0.0, 1.0)) * body
    density = (0.45 + 0.55 * thickness) * body

    heart_center = (u(0.05, 0.14), bases[1] - u(0.14, 0.22))
    heart = soft_ellipse(x, y, heart_center, (u(0.25, 0.34), u(0.18, 0.25)),
                         angle=u(-0.55, -0.25), softness=0.06)
    mediastinum_width = u(0.08, 0.12) + (u(0.03, 0.08) if rng.random() < 0.3 else 0.0)  # thymus
    mediastinum = soft_step(mediastinum_width - np.abs(x - 0.01), 0.02) * soft_step(
        heart_center[1] - y, 0.05)
    aortic_knob = soft_ellipse(x, y, (u(0.08, 0.12), lung_top + u(0.22, 0.3)), (0.06, 0.05))

    lungs, domes, centers = [], [], []
    for side, base in zip(SIDES, bases, strict=True):
        center = side * lung_offset
        height = base - lung_top
        depth = np.clip((y - lung_top) / height, 0.0, 1.0)
        half = lung_half_width * (0.45 + 0.55 * np.sqrt(depth))
        axis = center + side * 0.05 * depth  # lungs flare laterally towards the base
        apex = lung_top + 0.25 * height * ((x - center) / lung_half_width) ** 2
        dome = base - dome_height * np.clip(1.0 - ((x - center + side * 0.05) / (
            1.05 * lung_half_width)) ** 2, 0.0, 1.0)
        lung = (soft_step(half - np.abs(x - axis), 0.025) * soft_step(y - apex, 0.025)
                * soft_step(dome - y, 0.015))
        lung *= 1.0 - 0.9 * np.maximum(heart, mediastinum)
        lungs.append(gaussian_filter(lung, 0.012 * ppu))
        domes.append(dome)
        centers.append(center)
    air = lungs[0] + lungs[1]

    hila = tuple((side * u(0.16, 0.22), lung_top + u(0.38, 0.48)) for side in SIDES)
    markings = np.zeros_like(x)
    for lung, hilum in zip(lungs, hila, strict=True):
        r = np.hypot(x - hilum[0], y - hilum[1])
        streaks = radial_streaks(rng, x, y, hilum, n_rays=int(u(50, 80)), sharpness=2.0)
        markings += lung * streaks * np.exp(-r / u(0.25, 0.4))
        markings += 0.6 * soft_ellipse(x, y, hilum, (0.07, 0.09), softness=0.05)
    markings *= 0.6 + 0.4 * smooth_noise(rng, x.shape, 0.03 * ppu).clip(-1.5, 1.5) / 1.5

    density = (density - u(0.55, 0.7) * air
               + u(0.3, 0.45) * np.maximum(heart, mediastinum) * body
               + 0.25 * aortic_knob + u(0.04, 0.08) * markings
               + 0.04 * air * smooth_noise(rng, x.shape, 0.02 * ppu))
    # Below the domes the liver and spleen are as dense as the heart: the heart shadow merges
    # with the diaphragm instead of floating on a darker abdomen.
    below_domes = soft_step(y - np.where(x < 0, domes[0], domes[1]), 0.015)
    density += u(0.15, 0.3) * below_domes * body
    density += _skeleton(rng, x, y, lung_top, lung_offset + lung_half_width, body)
    density -= 0.12 * _airways(x, y, lung_top, hila)
    if rng.random() < 0.6:  # gastric bubble under the left dome (viewer's right)
        bubble = soft_ellipse(x, y, (lung_offset * u(0.6, 1.0), bases[1] + u(0.07, 0.14)),
                              (u(0.05, 0.1), u(0.04, 0.06)), softness=0.02)
        density -= u(0.15, 0.3) * bubble
    return ChestAnatomy(
        density=density, lungs=(lungs[0], lungs[1]), lung_center_x=(centers[0], centers[1]),
        lung_half_width=lung_half_width, lung_top=lung_top, lung_base=bases,
        dome_y=(domes[0], domes[1]), hila=(hila[0], hila[1]), pixels_per_unit=ppu,
    )


def _skeleton(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, lung_top: float,
              chest_half_width: float, body: np.ndarray) -> np.ndarray:
    """Spine, posterior ribs (arcs that droop laterally) and clavicles."""
    u = rng.uniform
    period = u(0.1, 0.13)
    vertebrae = 0.75 + 0.25 * np.cos(np.pi * (y - u(0, period)) / period) ** 2
    bones = u(0.18, 0.28) * soft_step(u(0.045, 0.065) - np.abs(x), 0.015) * vertebrae

    # Evenly spaced ribs share one shape, so a single pass over the phase of the repeating
    # pattern draws all of them (a stack of per-rib arrays was most of the render time).
    n_ribs = 9
    spacing = u(0.13, 0.17)
    first_rib = lung_top - 0.06
    droop = u(0.45, 0.7)
    rib_strength = u(0.04, 0.08)
    thickness = u(0.022, 0.032)
    reach = np.clip((np.abs(x) - 0.04) / chest_half_width, 0.0, None)
    phase = (y - first_rib + 0.08 * reach - droop * reach * reach) / spacing
    rib_index = np.rint(phase)
    offset = (phase - rib_index) * spacing / thickness
    offset *= offset
    ribs = np.exp(-offset * offset) * soft_step(1.05 - reach, 0.05)
    ribs *= (rib_index >= 0) & (rib_index < n_ribs)
    bones = bones + rib_strength * ribs

    clavicle_y = lung_top + u(-0.02, 0.06)
    for side in SIDES:
        lateral = (side * u(0.5, 0.62), clavicle_y - u(0.04, 0.12))
        dist = segment_distance(x, y, (side * 0.07, clavicle_y), lateral)
        bones = bones + u(0.18, 0.28) * np.exp(-((dist / u(0.022, 0.03)) ** 2))
    return bones * body


def _airways(x: np.ndarray, y: np.ndarray, lung_top: float,
             hila: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Trachea down to the carina, then the two main bronchi towards the hila (air: darker)."""
    carina = (0.01, lung_top + 0.3)
    dist = segment_distance(x, y, (0.0, -1.2), carina)
    for hilum in hila:
        dist = np.minimum(dist, segment_distance(x, y, carina, hilum))
    return soft_step(0.028 - dist, 0.01)
