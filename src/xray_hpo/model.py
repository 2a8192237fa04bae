"""The original study's network family, made size-agnostic and self-describing.

A LeNet-style feature extractor (conv5x6, pool, conv5x16, pool), then
Linear(lin1_size) -> dropout -> Linear(lin2_size) -> dropout -> Linear(3).
The stronger family of the extended search space widens the two convolutions
(``conv1_width``, ``conv2_width``) and may put BatchNorm after each; the defaults build the
original network, layer for layer (same state_dict keys).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xray_hpo.atomic import atomic_write_bytes
from xray_hpo.data.manifest import CLASSES


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild the network: saved next to the weights."""

    image_size: int
    lin1_size: int
    lin2_size: int
    p_dropout: float
    # Pixel statistics of the training split: normalisation lives inside the model, so
    # prediction applies exactly the preprocessing that training saw.
    pixel_mean: float = 0.5
    pixel_std: float = 0.25
    num_classes: int = len(CLASSES)
    # The extended family (newer than the fields above: a model.pt saved without them
    # rebuilds the original network).
    conv1_width: int = 6
    conv2_width: int = 16
    batch_norm: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The saved form: the extended family's fields only where they differ from the
        original network, so a default model.pt stays byte-identical to older ones."""
        return {name: value for name, value in asdict(self).items()
                if name not in _EXTENDED_DEFAULTS or value != _EXTENDED_DEFAULTS[name]}


_EXTENDED_DEFAULTS: dict[str, Any] = {"conv1_width": 6, "conv2_width": 16, "batch_norm": False}


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=5,
                                         bias=not batch_norm)]
    if batch_norm:  # the conv's bias would duplicate BatchNorm's shift
        layers.append(nn.BatchNorm2d(out_channels))
    return [*layers, nn.ReLU(), nn.MaxPool2d(2)]


class XrayCNN(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.register_buffer("pixel_mean", torch.tensor(args.pixel_mean))
        self.register_buffer("pixel_std", torch.tensor(args.pixel_std))
        self.features = nn.Sequential(
            *_conv_block(1, args.conv1_width, args.batch_norm),
            *_conv_block(args.conv1_width, args.conv2_width, args.batch_norm),
            nn.Flatten(),
        )
        # Derive the flatten size from a dummy pass instead of hard-coding 16*13*13, so the
        # same family works at any prepare.image_size.
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 1, args.image_size, args.image_size)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, args.lin1_size),
            nn.ReLU(),
            nn.Dropout(args.p_dropout),
            nn.Linear(args.lin1_size, args.lin2_size),
            nn.ReLU(),
            nn.Dropout(args.p_dropout),
            nn.Linear(args.lin2_size, args.num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float tensor (N, 1, H, W) with pixel values in [0, 1]; returns logits."""
        return self.classifier(self.features((images - self.pixel_mean) / self.pixel_std))


def save_model(model: XrayCNN, path: str | Path) -> None:
    """Weights plus the arguments that rebuild them, in one torch file."""
    payload = {"args": model.args.as_dict(), "state_dict": model.state_dict()}
    # Serialise in memory: torch.save names the zip's inner folder after the file, so a
    # temporary file name would make identical models differ byte for byte.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> XrayCNN:
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model = XrayCNN(ModelArgs(**payload["args"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model
