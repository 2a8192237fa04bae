"""The one ``train()`` that both the Optuna objective and the final retraining call.

Data stays in memory as tensors (prepare decoded it once), batches are slices of a
seeded permutation: no DataLoader workers, so a trial costs little beyond its epochs.
Augmentation (``train.augment``, or a trial's ``augment_strength``) transforms each batch
on its device, drawing from its own seeded generator (xray_hpo.augment).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xray_hpo.augment import augment_batch, augmentation_generator
from xray_hpo.config import AugmentConfig, HParams, TrainConfig
from xray_hpo.model import ModelArgs, XrayCNN


class NonFiniteLossError(RuntimeError):
    """Training diverged: a NaN or infinite loss. Optuna records the trial as failed."""


@dataclass(frozen=True)
class SplitData:
    """One split in memory: pixels in [0, 1] as (N, 1, S, S) float32, labels as int64."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray) -> SplitData:
        pixels = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
        return cls(images=pixels, labels=torch.from_numpy(labels.astype(np.int64)))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_splits(prepared_dir: Path, *names: str) -> dict[str, SplitData]:
    """Prepared arrays of the named splits, as tensors: what every training consumer needs."""
    from xray_hpo.data.dataset import load_prepared

    return {name: SplitData.from_arrays(split.images, split.labels)
            for name, split in ((n, load_prepared(prepared_dir, n)) for n in names)}


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float


@dataclass
class TrainResult:
    model: XrayCNN  # holds the weights of the best epoch, not the last
    best_epoch: int
    best_val_acc: float
    best_val_loss: float
    history: list[EpochStats] = field(default_factory=list)


EpochCallback = Callable[[EpochStats], None]


def configure_torch(config: TrainConfig) -> torch.device:
    """Process-wide torch settings for reproducible runs; returns the device to train on."""
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    cuda = torch.cuda.is_available() and config.device in ("auto", "cuda")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if cuda:
        # The CPU kernels this model uses are deterministic already; on CUDA, ask for
        # deterministic algorithms (only there: the call imports torch's compiler, ~2.5 s
        # per process). cuBLAS needs the workspace setting for that.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return torch.device("cuda" if cuda else "cpu")


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (sklearn's 'balanced'): each class counts equally in the loss."""
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).float()
    return len(labels) / (num_classes * counts)


def evaluate_split(model: nn.Module, data: SplitData, device: torch.device,
                   batch_size: int = 256) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and class probabilities over a whole split."""
    model.eval()
    loss_sum, probs = 0.0, []
    # inference_mode: no autograd bookkeeping at all (no_grad still tracks versions).
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            images = data.images[start:start + batch_size].to(device)
            labels = data.labels[start:start + batch_size].to(device)
            logits = model(images)
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            probs.append(torch.softmax(logits, dim=1).cpu())
    all_probs = torch.cat(probs)
    accuracy = int((all_probs.argmax(dim=1) == data.labels).sum()) / len(data)
    return loss_sum / len(data), accuracy, all_probs


def train(
    hparams: HParams,
    config: TrainConfig,
    train_data: SplitData,
    val_data: SplitData,
    *,
    device: torch.device | None = None,
    seed: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train for ``config.epochs`` and keep the epoch with the best validation accuracy.

    ``on_epoch`` sees every epoch's statistics; it may raise (``optuna.TrialPruned``) to stop.
    Ties in validation accuracy go to the lower validation loss, then the earlier epoch.
    """
    device = device or torch.device("cpu")
    seed = config.seed if seed is None else seed
    torch.manual_seed(seed)
    image_size = int(train_data.images.shape[-1])
    pixels = train_data.images
    # channels-last lets oneDNN run the convolutions without reordering at every call.
    layout = torch.channels_last if config.fast_kernels else torch.contiguous_format
    model = XrayCNN(ModelArgs(
        image_size=image_size, lin1_size=hparams.lin1_size, lin2_size=hparams.lin2_size,
        p_dropout=hparams.p_dropout, pixel_mean=round(pixels.mean().item(), 6),
        pixel_std=round(max(pixels.std().item(), 1e-3), 6), conv1_width=hparams.conv1_width,
        conv2_width=hparams.conv2_width, batch_norm=hparams.batch_norm,
    )).to(device, memory_format=layout)
    optimizer = _make_optimizer(model, hparams, config)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.lr_schedule == "cosine" else None)
    weights = (class_weights(train_data.labels, model.args.num_classes).to(device)
               if config.class_weighting == "balanced" else None)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    shuffler = torch.Generator().manual_seed(seed)
    strength = (config.augment.strength if hparams.augment_strength is None
                else hparams.augment_strength)

    result = TrainResult(model=model, best_epoch=0, best_val_acc=-1.0, best_val_loss=math.inf)
    best_state: dict[str, torch.Tensor] | None = None
    with _denormals_flushed(config.fast_kernels):
        for epoch in range(1, config.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            augmentation = (_Augmentation(config.augment, strength,
                                          augmentation_generator(seed, epoch))
                            if strength > 0 else None)
            train_loss, train_acc = _train_one_epoch(
                model, optimizer, loss_fn, train_data, hparams.batch_size, shuffler, device,
                layout, augmentation)
            if scheduler is not None:
                scheduler.step()
            val_loss, val_acc, _ = evaluate_split(model, val_data, device)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch} (train {train_loss}, val {val_loss})")
            stats = EpochStats(epoch, train_loss, train_acc, val_loss, val_acc, lr)
            result.history.append(stats)
            if (val_acc, -val_loss) > (result.best_val_acc, -result.best_val_loss):
                result.best_epoch, result.best_val_acc = epoch, val_acc
                result.best_val_loss = val_loss
                best_state = copy.deepcopy(model.state_dict())
            if on_epoch is not None:
                on_epoch(stats)
    if best_state is not None:
        model.load_state_dict(best_state)
    # Callers get the standard layout: saved weights, predict and Grad-CAM never see the
    # training's memory format.
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return result


@contextlib.contextmanager
def _denormals_flushed(enabled: bool) -> Iterator[None]:
    """Tiny activations and gradients of real images fall into float32's denormal range,
    where x86 arithmetic is many times slower; flushing them to zero made a batch-2 step on
    the real data 1.6x faster (bench/bench_epoch.py). Back to torch's default afterwards."""
    torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass(frozen=True)
class _Augmentation:
    settings: AugmentConfig
    strength: float
    generator: torch.Generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return augment_batch(images, self.settings, self.strength, self.generator)


def _make_optimizer(model: nn.Module, hparams: HParams,
                    config: TrainConfig) -> torch.optim.Optimizer:
    weight_decay = config.weight_decay if hparams.weight_decay is None else hparams.weight_decay
    # fused: one kernel updates every weight. The default steps tensor by tensor, which at
    # batch 2 made Optimizer.step 42 % of a step (bench/RESULTS_parallel.md).
    fused = config.fast_kernels or None
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=hparams.lr, momentum=0.9,
                               weight_decay=weight_decay, fused=fused)
    return torch.optim.Adam(model.parameters(), lr=hparams.lr, weight_decay=weight_decay,
                            fused=fused)


def _train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                     data: SplitData, batch_size: int, shuffler: torch.Generator,
                     device: torch.device, layout: torch.memory_format = torch.contiguous_format,
                     augmentation: _Augmentation | None = None) -> tuple[float, float]:
    model.train()
    order = torch.randperm(len(data), generator=shuffler)
    # Running sums stay tensors: no per-batch .item() round trip (a sync on CUDA).
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, len(data), batch_size):
        index = order[start:start + batch_size]
        images, labels = data.images[index].to(device), data.labels[index].to(device)
        if augmentation is not None:
            images = augmentation(images)
        images = images.contiguous(memory_format=layout)
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(index)
        correct += (logits.detach().argmax(dim=1) == labels).sum()
    return loss_sum.item() / len(data), int(correct.item()) / len(data)
