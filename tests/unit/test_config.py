"""params.yaml is validated at the edge: bad input stops before any work, in one line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from xray_hpo.config import ConfigError, HParams, config_from_dict, load_config, load_hparams

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_load_into_typed_config() -> None:
    config = load_config(REPO / "params.yaml")
    assert config.prepare.image_size == 64
    assert config.tune.search_space["batch_size"].choices == (2, 4, 8)
    assert config.tune.search_space["lr"].log is True
    assert isinstance(config.train.epochs, int)


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["train"].update(epochz=3), "train.epochz: unknown key"),
        (lambda r: r["train"].update(epochs="ten"), "train.epochs: expected an integer"),
        (lambda r: r["train"].update(epochs=0), "train.epochs: expected an integer >= 1"),
        (lambda r: r["train"].update(lr_schedule="step"), "train.lr_schedule: expected one of"),
        (lambda r: r["tune"]["search_space"]["lr"].update(low=0.5, high=0.1),
         "tune.search_space.lr: low (0.5) > high (0.1)"),
        (lambda r: r["tune"]["search_space"]["batch_size"].update(choices=[]),
         "tune.search_space.batch_size.choices: expected a non-empty list"),
        (lambda r: r["tune"]["search_space"]["lr"].update(low=0.0),
         "tune.search_space.lr.low: expected a number > 0 with log: true"),
        (lambda r: r["tune"]["search_space"].pop("p_dropout"), "tune.search_space.p_dropout"),
        (lambda r: r["tune"]["search_space"].update(momentum={"type": "float", "low": 0,
                                                             "high": 1}),
         "tune.search_space.momentum"),
        (lambda r: r["tune"]["search_space"]["lin1_size"].update(type="float"),
         "tune.search_space.lin1_size.type: expected int or categorical"),
        (lambda r: r.update(tune=[1, 2]), "tune expected a mapping"),
        (lambda r: r["tune"]["pruner"].update(name="asha"),
         "tune.pruner.name: expected one of ['successive_halving', 'median', 'hyperband', "
         "'none'], got 'asha'"),
        (lambda r: r["tune"]["pruner"].update(reduction_factor=1),
         "tune.pruner.reduction_factor: expected an integer >= 2, got 1"),
        (lambda r: r["tune"]["pruner"].update(min_resource=0),
         "tune.pruner.min_resource: expected an integer >= 1 (epochs), got 0"),
        (lambda r: r["tune"]["pruner"].update(stop_at_chance_after=-1),
         "tune.pruner.stop_at_chance_after: expected an integer >= 0 (epochs; 0 = never)"),
    ],
)
def test_bad_params_name_the_key(raw: dict[str, Any], mutate: Any, expected: str) -> None:
    broken = copy.deepcopy(raw)
    mutate(broken)
    assert expected in _error(broken)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="run the tune stage first"):
        load_hparams(tmp_path / "best_params.yaml")


def test_hparams_are_validated_too(tmp_path: Path) -> None:
    path = tmp_path / "best_params.yaml"
    path.write_text(yaml.safe_dump({"hparams": {"lin1_size": 64, "lin2_size": 32,
                                                "p_dropout": 0.1, "lr": 0.01}}))
    with pytest.raises(ConfigError, match=r"hparams.batch_size: missing"):
        load_hparams(path)
    path.write_text(yaml.safe_dump({"hparams": {"lin1_size": 64, "lin2_size": 32, "p_dropout": 0.1,
                                                "lr": 0.01, "batch_size": 4}}))
    assert load_hparams(path) == HParams(64, 32, 0.1, 0.01, 4)


def test_a_stage_with_bad_params_stops_before_work(make_project: Any) -> None:
    project = make_project(prepared=False)
    params = project.params()
    params["tune"]["search_space"]["lr"]["low"] = 1.0
    (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    proc = project.run("prepare", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "tune.search_space.lr" in lines[0] and "low" in lines[0]
    assert not (project.root / "prepared").exists()
