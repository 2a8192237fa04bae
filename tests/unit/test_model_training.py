"""The network family and the shared train(): shapes, learning, selection, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xray_hpo.config import HParams, TrainConfig
from xray_hpo.model import ModelArgs, XrayCNN, load_model, save_model
from xray_hpo.training import NonFiniteLossError, SplitData, evaluate_split, train


@pytest.mark.parametrize("size", [32, 48, 64, 100, 128])
def test_output_shape_at_any_image_size(size: int) -> None:
    model = XrayCNN(ModelArgs(image_size=size, lin1_size=80, lin2_size=40, p_dropout=0.2))
    assert model(torch.rand(5, 1, size, size)).shape == (5, 3)
    assert model.classifier[0].out_features == 80
    assert model.classifier[3].out_features == 40


def _toy_data(n: int = 60, size: int = 32, seed: int = 0) -> SplitData:
    """Three classes a CNN can separate: a bright square in one of three places."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 1, size, size, generator=gen) * 0.3
    for i, label in enumerate(labels.tolist()):
        x0 = 2 + 10 * label
        images[i, 0, 8:20, x0:x0 + 8] += 0.6
    return SplitData(images.clamp(0, 1), labels)


def test_one_epoch_lowers_the_loss_on_a_small_batch() -> None:
    torch.manual_seed(0)
    data = _toy_data(12)
    model = XrayCNN(ModelArgs(image_size=32, lin1_size=64, lin2_size=32, p_dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before, _, _ = evaluate_split(model, data, torch.device("cpu"))
    model.train()
    for _ in range(10):  # one epoch = 10 steps over the same small batch
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(data.images), data.labels).backward()
        optimizer.step()
    after, _, _ = evaluate_split(model, data, torch.device("cpu"))
    assert after < before * 0.9


def test_train_keeps_the_best_epoch_and_is_deterministic() -> None:
    hp = HParams(lin1_size=64, lin2_size=32, p_dropout=0.1, lr=2e-3, batch_size=8)
    config = TrainConfig(epochs=4, seed=3)
    train_data, val_data = _toy_data(60, seed=1), _toy_data(30, seed=2)
    first = train(hp, config, train_data, val_data)
    second = train(hp, config, train_data, val_data)
    assert first.history == second.history  # same seed, same numbers
    accuracies = [s.val_acc for s in first.history]
    assert first.best_val_acc == max(accuracies)
    assert first.history[first.best_epoch - 1].val_acc == first.best_val_acc
    # The returned weights are the best epoch's, whatever came after it.
    _, acc, _ = evaluate_split(first.model, val_data, torch.device("cpu"))
    assert acc == pytest.approx(first.best_val_acc)
    assert first.best_val_acc > 0.6


def test_divergence_is_reported_not_hidden() -> None:
    # Past the validated lr bound on purpose (model_construct skips validation): what is
    # tested is training's own guard against a loss that blows up.
    hp = HParams.model_construct(lin1_size=64, lin2_size=32, p_dropout=0.0, lr=1e12,
                                 batch_size=4)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        train(hp, TrainConfig(epochs=3, seed=0), _toy_data(24), _toy_data(12))


def test_save_load_round_trip_is_byte_stable(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = XrayCNN(ModelArgs(image_size=48, lin1_size=70, lin2_size=33, p_dropout=0.3,
                              pixel_mean=0.4, pixel_std=0.2))
    save_model(model, tmp_path / "a.pt")
    save_model(model, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = load_model(tmp_path / "a.pt")
    assert loaded.args == model.args
    x = torch.rand(2, 1, 48, 48)
    model.eval()
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fast_kernels_are_deterministic_and_hand_back_standard_weights(
        optimizer: str, tmp_path: Path) -> None:
    hp = HParams(lin1_size=64, lin2_size=32, p_dropout=0.1, batch_size=4,
                 lr=2e-3 if optimizer == "adam" else 2e-2)
    train_data, val_data = _toy_data(60, seed=1), _toy_data(30, seed=2)
    runs = {fast: train(hp, TrainConfig(epochs=3, seed=3, optimizer=optimizer,
                                        fast_kernels=fast), train_data, val_data)
            for fast in (False, True)}
    again = train(hp, TrainConfig(epochs=3, seed=3, optimizer=optimizer, fast_kernels=True),
                  train_data, val_data)
    assert again.history == runs[True].history  # fused + channels-last: still seeded
    assert runs[True].best_val_acc > 0.6 and runs[False].best_val_acc > 0.6
    model = runs[True].model
    # Callers (save, predict, Grad-CAM) get the standard layout, not the training's.
    # (The second convolution: with one input channel the first's weights are both layouts.)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1].weight
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    save_model(model, tmp_path / "fast.pt")
    loaded = load_model(tmp_path / "fast.pt")
    assert torch.equal(loaded(val_data.images), model(val_data.images))
    _, acc, _ = evaluate_split(loaded, val_data, torch.device("cpu"))
    assert acc == pytest.approx(runs[True].best_val_acc)


def test_fast_kernels_flush_denormals_only_while_training() -> None:
    denormal = 1e-40  # below float32's smallest normal number (1.2e-38)
    seen: list[float] = []
    hp = HParams(lin1_size=32, lin2_size=16, p_dropout=0.0, lr=2e-3, batch_size=8)
    train(hp, TrainConfig(epochs=1, fast_kernels=True), _toy_data(24), _toy_data(12),
          on_epoch=lambda _: seen.append(torch.tensor([denormal]).item()))
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    assert seen == [0.0]  # flushed to zero inside train()
    assert torch.tensor([denormal]).item() != 0.0  # and torch's default again after it
