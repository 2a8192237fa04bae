"""The stronger model family (BatchNorm, conv widths) and the extended search space."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from xray_hpo.cli import main as cli_main
from xray_hpo.config import (
    EXTENDED_HYPERPARAMETERS,
    HYPERPARAMETERS,
    ConfigError,
    HParams,
    TrainConfig,
    config_from_dict,
)
from xray_hpo.model import ModelArgs, XrayCNN, load_model, save_model
from xray_hpo.training import SplitData, train
from xray_hpo.tuning.search_space import suggest_hparams
from xray_hpo.tuning.trials import trials_csv, trials_from_csv

REPO = Path(__file__).resolve().parents[2]
OLD_ARG_KEYS = ["image_size", "lin1_size", "lin2_size", "p_dropout", "pixel_mean", "pixel_std",
                "num_classes"]


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _toy(n: int, side: int = 64) -> SplitData:
    gen = torch.Generator().manual_seed(n)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 1, side, side, generator=gen) * 0.3
    for i, label in enumerate(labels.tolist()):
        images[i, 0, 10:30, 4 + 20 * label:16 + 20 * label] += 0.6
    return SplitData(images.clamp(0, 1), labels)


def test_default_args_build_the_original_network_and_save_the_old_format(
        tmp_path: Path) -> None:
    model = XrayCNN(ModelArgs(image_size=64, lin1_size=80, lin2_size=40, p_dropout=0.1))
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 6), (6, 16)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert [k for k in model.state_dict() if k.startswith("features")] == [
        "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]
    save_model(model, tmp_path / "model.pt")
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert list(payload["args"]) == OLD_ARG_KEYS  # a default model.pt keeps its bytes


def test_an_old_format_model_file_still_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = XrayCNN(ModelArgs(image_size=64, lin1_size=70, lin2_size=35, p_dropout=0.0))
    old_args = {k: v for k, v in dataclasses.asdict(model.args).items() if k in OLD_ARG_KEYS}
    torch.save({"args": old_args, "state_dict": model.state_dict()}, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.args == model.args
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(loaded(x), model.eval()(x))


def test_batchnorm_and_widths_train_save_and_predict(tmp_path: Path, phantom_data: Path) -> None:
    hp = HParams(lin1_size=32, lin2_size=16, p_dropout=0.0, lr=3e-3, batch_size=8,
                 conv1_width=8, conv2_width=24, batch_norm=True, weight_decay=1e-4)
    result = train(hp, TrainConfig(epochs=1, seed=0), _toy(24), _toy(12))
    model = result.model
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 2
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 24] and convs[0].bias is None
    # One step moved the BatchNorm statistics away from their initial values.
    assert not torch.equal(model.features[1].running_mean, torch.zeros(8))
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.args == model.args and loaded.args.batch_norm is True
    x = torch.rand(3, 1, 64, 64)
    assert torch.equal(loaded(x), model(x))

    out = tmp_path / "predictions.csv"
    image = next(p for p in sorted(phantom_data.rglob("*.png")))
    assert cli_main(["predict", str(image), "--model", str(path), "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(io.StringIO(out.read_text())))
    assert row["prediction"] in ("normal", "bacterial", "viral") and not row["error"]


def test_default_hparams_keep_five_keys_and_extended_ones_round_trip() -> None:
    default = HParams(lin1_size=64, lin2_size=32, p_dropout=0.1, lr=0.01, batch_size=4)
    assert list(default.as_dict()) == list(HYPERPARAMETERS)
    wide = default.model_copy(update={"conv1_width": 12, "batch_norm": True,
                                      "augment_strength": 0.3})
    assert wide.as_dict()["conv1_width"] == 12 and wide.as_dict()["batch_norm"] is True
    assert HParams.model_validate(wide.as_dict()) == wide


def test_the_extended_space_validates_and_samples(raw: dict[str, Any]) -> None:
    raw["tune"]["extended"] = True
    config = config_from_dict(raw)
    space = config.tune.active_space
    assert set(space) == set(HYPERPARAMETERS) | set(EXTENDED_HYPERPARAMETERS)
    assert set(config_from_dict(yaml.safe_load(
        (REPO / "params.yaml").read_text())).tune.active_space) == set(HYPERPARAMETERS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(12):
        trial = study.ask()
        hparams = suggest_hparams(trial, space)
        drawn.append(hparams)
        study.tell(trial, 0.5)
    assert all(h.conv1_width in (6, 12, 16) and h.conv2_width in (16, 24, 32) for h in drawn)
    assert all(0.0 <= (h.augment_strength or 0.0) <= 1.0 for h in drawn)
    assert all(1e-6 <= (h.weight_decay or 0.0) <= 1e-2 for h in drawn)
    assert {h.batch_norm for h in drawn} == {False, True}
    # The trials table gains the extended columns and reads back the same values.
    text = trials_csv(study.trials)
    assert "batch_norm" in text.splitlines()[0]
    back = trials_from_csv(text, space)
    assert [t.params for t in back] == [t.params for t in study.trials]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["train"]["augment"].update(strength=1.5),
         "train.augment.strength: expected a number in [0, 1], got 1.5"),
        (lambda r: r["tune"].update(extended=True, extension={}), "tune.extension"),
        (lambda r: r["train"]["augment"].update(rotation_degrees=-3),
         "train.augment.rotation_degrees: expected a number in [0, 45]"),
        (lambda r: r["train"]["augment"].update(noise_std="loud"),
         "train.augment.noise_std"),
        (lambda r: r["train"]["augment"].update(horizontal_flip="yes"),
         "train.augment.horizontal_flip"),
        (lambda r: r["train"]["augment"].update(shear=5), "train.augment.shear"),
        (lambda r: r["tune"]["extension"].update(momentum={"type": "float", "low": 0,
                                                           "high": 1}),
         "tune.extension.momentum"),
        (lambda r: r["tune"]["extension"]["augment_strength"].update(high=2.0),
         "tune.extension.augment_strength"),
        (lambda r: r["tune"]["extension"]["batch_norm"].update(choices=[0, 1]),
         "tune.extension.batch_norm"),
        (lambda r: r["tune"]["extension"]["conv1_width"].update(choices=[0.5]),
         "tune.extension.conv1_width"),
    ],
)
def test_bad_augment_and_extension_settings_are_one_line_errors(
        raw: dict[str, Any], mutate: Any, expected: str) -> None:
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(ConfigError) as info:
        config_from_dict(broken)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
