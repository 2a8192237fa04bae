"""Training-time augmentation: seeded, pixel-changing, shape-keeping, off at strength 0."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from xray_hpo.augment import (
    apply_photometric,
    augment_batch,
    augmentation_generator,
    draw_geometry,
    draw_photometric,
)
from xray_hpo.config import AugmentConfig, HParams, TrainConfig
from xray_hpo.training import SplitData, train


def _images(n: int = 6, side: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, side, side, generator=gen) * 0.5
    images[:, :, side // 4:3 * side // 4, side // 3:2 * side // 3] += 0.4  # structure to move
    return images.clamp(0.0, 1.0)


SETTINGS = AugmentConfig(strength=0.5)


def test_same_seed_same_pixels_other_seed_or_epoch_other_pixels() -> None:
    images = _images()
    first = augment_batch(images, SETTINGS, 0.5, augmentation_generator(42, 1))
    again = augment_batch(images, SETTINGS, 0.5, augmentation_generator(42, 1))
    assert torch.equal(first, again)
    other_seed = augment_batch(images, SETTINGS, 0.5, augmentation_generator(43, 1))
    other_epoch = augment_batch(images, SETTINGS, 0.5, augmentation_generator(42, 2))
    assert not torch.equal(first, other_seed)
    assert not torch.equal(first, other_epoch)


def test_augmentation_changes_pixels_and_keeps_shape_dtype_range() -> None:
    images = _images()
    out = augment_batch(images, SETTINGS, 1.0, augmentation_generator(0, 1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out - images).abs().mean()) > 0.02  # visibly changed, every image
    assert all(not torch.equal(a, b) for a, b in zip(out, images, strict=True))
    assert torch.equal(images, _images())  # the input batch is left untouched


def test_strength_zero_is_the_identity_and_draws_nothing() -> None:
    images = _images()
    generator = augmentation_generator(0, 1)
    state = generator.get_state()
    assert augment_batch(images, SETTINGS, 0.0, generator) is images
    assert torch.equal(generator.get_state(), state)


def test_does_not_touch_the_global_random_stream() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    augment_batch(_images(), SETTINGS, 1.0, augmentation_generator(0, 1))
    assert torch.equal(torch.rand(3), expected)


def test_strength_scales_the_magnitudes() -> None:
    weak = draw_photometric(200, SETTINGS, 0.1, augmentation_generator(0, 1))
    strong = draw_photometric(200, SETTINGS, 1.0, augmentation_generator(0, 1))
    assert float((weak[:, 0] - 1).abs().max()) <= 0.1 * SETTINGS.brightness + 1e-9
    assert float((strong[:, 0] - 1).abs().max()) > 0.5 * SETTINGS.brightness
    geometry = draw_geometry(64, SETTINGS, 0.1, augmentation_generator(0, 1))
    assert abs(geometry.angle) <= 0.1 * SETTINGS.rotation_degrees
    top, left, height, width = geometry.crop
    assert 0 <= top <= 64 - height and 0 <= left <= 64 - width
    assert height * width >= 64 * 64 * (1 - 0.1 * (1 - SETTINGS.crop_scale)) * 0.9


def test_flip_only_when_asked() -> None:
    flips = [draw_geometry(32, SETTINGS, 1.0, augmentation_generator(0, e)).flip
             for e in range(40)]
    assert not any(flips)
    flipping = SETTINGS.model_copy(update={"horizontal_flip": True})
    flips = [draw_geometry(32, flipping, 1.0, augmentation_generator(0, e)).flip
             for e in range(40)]
    assert any(flips) and not all(flips)


def test_photometric_step_equals_v2_kernels_image_by_image() -> None:
    images = _images(5)
    factors = draw_photometric(5, SETTINGS, 1.0, augmentation_generator(1, 1))
    batch = apply_photometric(images, factors)
    for i in range(5):
        b, c, g = (float(v) for v in factors[i])
        one = F.adjust_gamma(F.adjust_contrast(F.adjust_brightness(images[i], b), c), g)
        torch.testing.assert_close(batch[i], one, atol=1e-6, rtol=0)


def _toy(n: int, seed: int) -> SplitData:
    labels = torch.arange(n) % 3
    images = _images(n, seed=seed)
    for i, label in enumerate(labels.tolist()):
        images[i, 0, 4:12, 2 + 10 * label:8 + 10 * label] = 1.0
    return SplitData(images, labels)


@pytest.mark.parametrize("strength", [0.0, 0.6])
def test_train_with_augmentation_is_deterministic(strength: float) -> None:
    hp = HParams(lin1_size=32, lin2_size=16, p_dropout=0.1, lr=2e-3, batch_size=8)
    config = TrainConfig(epochs=2, seed=1, augment=AugmentConfig(strength=strength))
    first = train(hp, config, _toy(48, 1), _toy(24, 2))
    second = train(hp, config, _toy(48, 1), _toy(24, 2))
    assert first.history == second.history


def test_augmentation_changes_training_and_off_matches_the_original() -> None:
    hp = HParams(lin1_size=32, lin2_size=16, p_dropout=0.1, lr=2e-3, batch_size=8)
    plain = train(hp, TrainConfig(epochs=2, seed=1), _toy(48, 1), _toy(24, 2))
    off = train(hp, TrainConfig(epochs=2, seed=1, augment=AugmentConfig(strength=0.0)),
                _toy(48, 1), _toy(24, 2))
    on = train(hp, TrainConfig(epochs=2, seed=1, augment=AugmentConfig(strength=0.8)),
               _toy(48, 1), _toy(24, 2))
    assert off.history == plain.history
    assert on.history[0].train_loss != plain.history[0].train_loss
    # A trial's augment_strength overrides train.augment.strength.
    searched = train(hp.model_copy(update={"augment_strength": 0.8}), TrainConfig(epochs=2, seed=1),
                     _toy(48, 1), _toy(24, 2))
    assert searched.history == on.history
