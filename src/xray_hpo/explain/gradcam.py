"""Grad-CAM (Captum's ``LayerGradCam``) on a model's last convolution, at the input's size.

The layer is found generically (the last ``nn.Conv2d`` the model registers), so any saved
model works, whatever its depth, widths or normalisation layers. The device is the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xray_hpo.errors import UserError

# Maps are computed in chunks: Captum keeps every activation and gradient of a chunk alive.
CHUNK = 64


class ExplainError(UserError):
    """The model cannot be explained (no convolution): one line naming what is missing."""


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last ``nn.Conv2d`` in registration order: the end of the feature extractor."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ExplainError(f"{type(model).__name__}: no nn.Conv2d layer; Grad-CAM needs a "
                           "convolutional model")
    return convs[-1]


def grad_cam(model: nn.Module, images: torch.Tensor,
             target: Sequence[int] | torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] for ``images`` (N, 1, H, W, pixels in [0, 1]).

    ``target`` is the class explained per image (usually the prediction). Each map is the
    ReLU of the gradient-weighted activations of the last convolution, bilinearly upsampled
    to the input's H x W, then scaled to its own minimum and maximum (as the ``grad-cam``
    package does): a floor of evidence spread over the whole image says nothing about
    where the model looks. A flat map (no evidence anywhere) is all zeros.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    device = next(model.parameters()).device
    cam = LayerGradCam(model, last_conv(model))
    targets = torch.as_tensor(target, dtype=torch.long)
    size = tuple(images.shape[-2:])
    maps = []
    was_training = model.training
    model.eval()  # dropout off: the map explains the prediction the model makes
    try:
        for start in range(0, len(images), CHUNK):
            batch = images[start:start + CHUNK].to(device=device, dtype=torch.float32)
            attr = cam.attribute(batch, target=targets[start:start + CHUNK].to(device),
                                 relu_attributions=True)
            up = LayerAttribution.interpolate(attr.detach(), size, interpolate_mode="bilinear")
            maps.append(up[:, 0].clamp_(min=0).cpu())
    finally:
        model.train(was_training)
    stacked = torch.cat(maps) if maps else torch.zeros((0, *size))
    low = stacked.flatten(1).amin(dim=1)[:, None, None]
    span = stacked.flatten(1).amax(dim=1)[:, None, None] - low
    flat = span <= 1e-12 * low.abs().clamp(min=1.0)
    return torch.where(flat, 0.0, (stacked - low) / torch.where(flat, 1.0, span)).numpy()


# --- where the attention falls -------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    name: str
    description: str
    # Fractions of height and width: (top, bottom, left, right) of the box.
    box: tuple[float, float, float, float]
    inside: bool  # True: the box itself; False: everything outside it

    def mask(self, height: int, width: int) -> np.ndarray:
        top, bottom, left, right = self.box
        rows = (np.arange(height) + 0.5) / height
        cols = (np.arange(width) + 0.5) / width
        box = ((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))
        return box if self.inside else ~box


# Two regions of equal area (36% of the image each), so their shares compare directly and a
# map spread evenly would give 36% to both:
# - the central lung region: the middle 60% of the height and of the width. On a frontal
#   chest film, phantom or real, it holds most of both lung fields (and the heart between).
# - the border: the outer frame 10% of the side wide, where side markers, labels, ECG wires
#   and collimation edges sit. A model reading markers puts its mass here.
CENTRE = Region("centre", "central lung region (middle 60% x 60%)", (0.2, 0.8, 0.2, 0.8), True)
BORDER = Region("border", "image border (outer 10% frame)", (0.1, 0.9, 0.1, 0.9), False)
REGIONS = (CENTRE, BORDER)


def attention_shares(maps: np.ndarray,
                     regions: Sequence[Region] = REGIONS) -> dict[str, float | int]:
    """Mean over images of each region's share of the image's Grad-CAM mass.

    Every image counts once, whatever its map's scale; all-zero maps (no positive
    evidence for the class) have no shares and are counted in ``empty_maps``.
    """
    n, height, width = maps.shape
    totals = maps.reshape(n, -1).sum(axis=1, dtype=np.float64)
    used = totals > 0
    out: dict[str, float | int] = {"images": int(used.sum()), "empty_maps": int(n - used.sum())}
    for region in regions:
        mask = region.mask(height, width)
        mass = maps[:, mask].sum(axis=1, dtype=np.float64)
        out[region.name] = float((mass[used] / totals[used]).mean()) if used.any() else 0.0
        out[f"{region.name}_area"] = float(mask.mean())
    return out
