"""Training-time augmentation of the in-memory batches, with torchvision.transforms.v2.

Prepare decodes the images once; ``train()`` slices batches from those tensors, and each
batch goes through :func:`augment_batch` before the forward pass (on whatever device the
batch is on). Every random draw comes from a ``torch.Generator`` seeded from the run's seed
and the epoch, never from torch's global generator, so a run stays byte-reproducible and
turning augmentation on does not move dropout's or the shuffler's random stream.

Geometry (rotation, translation, random resized crop, optional flip) is one draw per batch,
applied by v2's kernels to the whole batch, as a v2 transform does to a batched tensor: a
v2 affine costs about 1 ms per call whatever the batch, so per-image geometry would double
an epoch on the CPU. Batches are reshuffled every epoch, so each image still meets a new
geometry each time. Brightness, contrast and gamma are drawn per image (the acquisition
differences between hospitals), in one vectorised step equal to v2's ``adjust_*`` kernels
image by image; Gaussian noise is per pixel.

``strength`` in [0, 1] scales every magnitude at once (0 = off: the batch is returned
untouched, the original pipeline exactly); the other settings give each transform's
magnitude at strength 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from xray_hpo.config import AugmentConfig


@dataclass(frozen=True)
class Geometry:
    """One batch's geometric draw: what :func:`apply_geometry` does to it."""

    angle: float  # degrees, counter-clockwise
    translate: tuple[int, int]  # pixels (x, y)
    crop: tuple[int, int, int, int]  # top, left, height, width; resized back to the side
    flip: bool


def augmentation_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's draws, derived from the run's seed and the epoch, so an
    epoch's augmentation does not depend on how many draws the epochs before it made."""
    derived = np.random.SeedSequence([seed, epoch, 0xA06]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(derived))


def _symmetric(generator: torch.Generator, n: int = 1) -> torch.Tensor:
    """``n`` draws uniform in [-1, 1), float64 on the CPU."""
    return torch.rand(n, generator=generator, dtype=torch.float64) * 2.0 - 1.0


def draw_geometry(side: int, settings: AugmentConfig, strength: float,
                  generator: torch.Generator) -> Geometry:
    """A batch's geometry at ``strength``: always the same number of draws, so the stream
    stays aligned whatever the settings."""
    s = strength
    u = _symmetric(generator, 7).tolist()
    angle = u[0] * s * settings.rotation_degrees
    shift = s * settings.translate * side
    translate = (round(u[1] * shift), round(u[2] * shift))
    # Random resized crop: an area share in [1 - s * (1 - crop_scale), 1] and an aspect
    # ratio within (1 + crop_ratio) of square (log-uniform), at a uniform position.
    share = 1.0 - s * (1.0 - settings.crop_scale) * (u[3] + 1.0) / 2.0
    log_ratio = u[4] * s * math.log1p(settings.crop_ratio)
    height = min(side, max(1, round(side * math.sqrt(share / math.exp(log_ratio)))))
    width = min(side, max(1, round(side * math.sqrt(share * math.exp(log_ratio)))))
    top = min(side - height, int((u[5] + 1.0) / 2.0 * (side - height + 1)))
    left = min(side - width, int((u[6] + 1.0) / 2.0 * (side - width + 1)))
    flip = settings.horizontal_flip and float(torch.rand((), generator=generator)) < 0.5
    return Geometry(angle, translate, (top, left, height, width), flip)


def apply_geometry(images: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``images`` (..., 1, S, S) float in [0, 1] through v2's kernels; same shape and dtype.
    Pixels moved in from outside the image are black, as outside a radiograph's field."""
    side = images.shape[-1]
    # Imported here, not at the top: torchvision's package import (models, ops, and through
    # them torch._dynamo) costs ~2.5 s per process, and every tune worker, selection run and
    # train_best imports this module while the default pipeline never augments.
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    out = F.affine(images, angle=geometry.angle, translate=list(geometry.translate),
                   scale=1.0, shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR,
                   fill=0.0)
    out = F.resized_crop(out, *geometry.crop, size=[side, side],
                         interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.horizontal_flip(out) if geometry.flip else out


def draw_photometric(n: int, settings: AugmentConfig, strength: float,
                     generator: torch.Generator) -> torch.Tensor:
    """Per image brightness, contrast and gamma factors, shape (n, 3), float64."""
    u = _symmetric(generator, 3 * n).reshape(n, 3)
    s = strength
    return torch.stack([1.0 + u[:, 0] * s * settings.brightness,
                        1.0 + u[:, 1] * s * settings.contrast,
                        torch.exp(u[:, 2] * s * math.log1p(settings.gamma))], dim=1)


def apply_photometric(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Image i through v2's ``adjust_brightness``, ``adjust_contrast`` (a blend toward the
    image's mean grey) and ``adjust_gamma`` with factors[i], for the whole batch at once."""
    shape = (-1,) + (1,) * (images.dim() - 1)
    brightness, contrast, gamma = (factors[:, k].to(images).reshape(shape) for k in range(3))
    out = (images * brightness).clamp_(0.0, 1.0)
    mean = out.mean(dim=(-3, -2, -1), keepdim=True)
    out = (contrast * out + (1.0 - contrast) * mean).clamp_(0.0, 1.0)
    return out.pow_(gamma).clamp_(0.0, 1.0)


def augment_batch(images: torch.Tensor, settings: AugmentConfig, strength: float,
                  generator: torch.Generator) -> torch.Tensor:
    """A new (N, 1, S, S) float batch in [0, 1]: the batch's geometry, each image's
    photometric jitter, then Gaussian noise (sigma ``strength * noise_std``).
    ``strength`` 0 returns ``images`` itself."""
    if strength <= 0:
        return images
    geometry = draw_geometry(images.shape[-1], settings, strength, generator)
    factors = draw_photometric(len(images), settings, strength, generator)
    out = apply_photometric(apply_geometry(images, geometry), factors)
    sigma = strength * settings.noise_std
    if sigma > 0:
        # Drawn on the CPU from the run's generator, so every device sees the same noise.
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        out.add_(noise.to(images.device), alpha=sigma)
    return out.clamp_(0.0, 1.0)
