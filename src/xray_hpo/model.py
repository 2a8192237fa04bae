"""The original study's network family, made size-agnostic and self-describing.

A LeNet-style feature extractor (conv5x6, pool, conv5x16, pool), then
Linear(lin1_size) -> dropout -> Linear(lin2_size) -> dropout -> Linear(3).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

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


class XrayCNN(nn.Module):
    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.register_buffer("pixel_mean", torch.tensor(args.pixel_mean))
        self.register_buffer("pixel_std", torch.tensor(args.pixel_std))
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
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
    payload = {"args": asdict(model.args), "state_dict": model.state_dict()}
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
