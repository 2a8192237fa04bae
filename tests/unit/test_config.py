"""params.yaml is validated at the edge: bad input stops before any work, in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

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


SS = "tune.search_space"
TRAIN_KEYS = ("['augment', 'class_weighting', 'device', 'epochs', 'fast_kernels', "
              "'lr_schedule', 'num_threads', 'optimizer', 'seed', 'weight_decay']")
PATH_RULE = ("expected a non-empty relative path inside the project (letters, digits, _ . - "
             "and /; no '..')")
PREFIX_RULE = "expected 1 to 64 letters, digits, _ . - (starting with a letter or digit)"


def _set(dotted: str, value: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value
    return mutate


# One case per bad value (issue 11): the whole one-line message is asserted.
BAD = [
    # unknown keys and wrong types
    (_set("train.epoch", 5), f"train.epoch: unknown key; expected one of {TRAIN_KEYS}"),
    (_set("train.foo", 1), f"train.foo: unknown key; expected one of {TRAIN_KEYS}"),
    (_set("surprise", 1), "surprise: unknown key; expected one of ['data', 'evaluate', "
                          "'kermany', 'prepare', 'select', 'train', 'tune']"),
    (_set(f"{SS}.lr.lowx", 1), f"{SS}.lr.lowx: unknown key; expected one of ['choices', "
                               "'high', 'log', 'low', 'step', 'type']"),
    (_set("tune.n_workers", "two"),
     "tune.n_workers: expected an integer in 1..64 or 'auto', got 'two' (str)"),
    (_set("train.epochs", "5"), "train.epochs: expected an integer in 1..10000, got '5' (str)"),
    (_set("train.epochs", True), "train.epochs: expected an integer in 1..10000, got True (bool)"),
    (_set("train.weight_decay", "0"), "train.weight_decay: expected a number >= 0, got '0' (str)"),
    (_set("kermany.all", "yes"), "kermany.all: expected true or false, got 'yes' (str)"),
    (_set("tune", [1, 2]), "tune: expected a mapping, got [1, 2] (list)"),
    (_set("train.lr_schedule", "step"),
     "train.lr_schedule: expected one of ['constant', 'cosine'], got 'step'"),
    (_set("tune.pruner.name", "asha"), "tune.pruner.name: expected one of "
     "['successive_halving', 'median', 'hyperband', 'none'], got 'asha'"),
    # bounds that follow from the model, and sane maxima
    (_set("prepare.image_size", 8), "prepare.image_size: expected an integer in 16..512, got 8"),
    (_set("prepare.image_size", 15), "prepare.image_size: expected an integer in 16..512, got 15"),
    (_set("prepare.image_size", 513),
     "prepare.image_size: expected an integer in 16..512, got 513"),
    (_set("train.epochs", 0), "train.epochs: expected an integer in 1..10000, got 0"),
    (_set("train.epochs", 10**9), "train.epochs: expected an integer in 1..10000, got 1000000000"),
    (_set("train.seed", 2**70),
     "train.seed: expected an integer in 0..4294967295, got 1180591620717411303424"),
    (_set("train.seed", -1), "train.seed: expected an integer in 0..4294967295, got -1"),
    (_set("train.seed", 2**32 - 2), "train.seed: expected an integer in 0..4294967293 with "
     "select.seeds: 3 (selection adds up to seeds-1), got 4294967294"),
    (_set("tune.sampler.seed", -1),
     "tune.sampler.seed: expected an integer in 0..4294967295, got -1"),
    (_set("evaluate.seed", -1), "evaluate.seed: expected an integer in 0..4294967295, got -1"),
    (_set("tune.n_workers", 500),
     "tune.n_workers: expected an integer in 1..64 or 'auto', got 500"),
    (_set("tune.n_workers", 0), "tune.n_workers: expected an integer in 1..64 or 'auto', got 0"),
    (_set("tune.n_trials", 0), "tune.n_trials: expected an integer in 1..100000, got 0"),
    (_set("tune.sampler.n_startup_trials", -1),
     "tune.sampler.n_startup_trials: expected an integer in 0..100000, got -1"),
    (_set("tune.study_prefix", ""), f"tune.study_prefix: {PREFIX_RULE}, got ''"),
    (_set("tune.study_prefix", "my study"), f"tune.study_prefix: {PREFIX_RULE}, got 'my study'"),
    (_set("evaluate.bootstrap_samples", 10**12),
     "evaluate.bootstrap_samples: expected an integer in 100..1000000, got 1000000000000"),
    (_set("evaluate.bootstrap_samples", 99),
     "evaluate.bootstrap_samples: expected an integer in 100..1000000, got 99"),
    (_set("evaluate.confidence", 1.0),
     "evaluate.confidence: expected a number in [0.5, 1), got 1.0"),
    (_set("data.dir", ""), f"data.dir: {PATH_RULE}, got ''"),
    (_set("data.dir", "/abs/data"), f"data.dir: {PATH_RULE}, got '/abs/data'"),
    (_set("data.prepared_dir", "../out"), f"data.prepared_dir: {PATH_RULE}, got '../out'"),
    (_set("data.prepared_dir", "data"),
     "data.prepared_dir: expected a folder apart from data.dir ('data'), got 'data'"),
    (_set("tune.pruner.reduction_factor", 1),
     "tune.pruner.reduction_factor: expected an integer in 2..100, got 1"),
    (_set("tune.pruner.min_resource", 0),
     "tune.pruner.min_resource: expected an integer in 1..10000, got 0"),
    (_set("tune.pruner.stop_at_chance_after", -1),
     "tune.pruner.stop_at_chance_after: expected an integer in 0..10000, got -1"),
    (_set("train.weight_decay", float("nan")),
     "train.weight_decay: expected a number >= 0, got nan"),
    (_set("kermany.test", -1), "kermany.test: expected an integer >= 0 or 'max', got -1"),
    (_set("kermany.fractions", [1, 2]), "kermany.fractions: expected three numbers >= 0 (train, "
     "val, test), not all zero, got [1.0, 2.0]"),
    # the search space: each spec against its HParams field, choices like ranges
    (_set(f"{SS}.batch_size.choices", [-4]), f"{SS}.batch_size.choices: expected each choice "
     "to be an integer in 1..4096 for batch_size, got -4"),
    (_set(f"{SS}.batch_size.choices", [0]), f"{SS}.batch_size.choices: expected each choice "
     "to be an integer in 1..4096 for batch_size, got 0"),
    (_set(f"{SS}.batch_size.choices", [4, "8"]), f"{SS}.batch_size.choices: expected each "
     "choice to be an integer in 1..4096 for batch_size, got '8'"),
    (_set(f"{SS}.batch_size.choices", []),
     f"{SS}.batch_size.choices: expected a non-empty list, got []"),
    (_set(f"{SS}.lin1_size", {"type": "categorical", "choices": [0]}), f"{SS}.lin1_size.choices: "
     "expected each choice to be an integer in 1..4096 for lin1_size, got 0"),
    (_set(f"{SS}.lin2_size.high", 10**6), f"{SS}.lin2_size.high: expected high to be an "
     "integer in 1..4096 for lin2_size, got 1000000"),
    (_set(f"{SS}.lr", {"type": "categorical", "choices": [-0.01]}), f"{SS}.lr.choices: "
     "expected each choice to be a number in (0, 10) for lr, got -0.01"),
    (_set(f"{SS}.lr", {"type": "float", "low": -1, "high": 1}),
     f"{SS}.lr.low: expected low to be a number in (0, 10) for lr, got -1.0"),
    (_set(f"{SS}.p_dropout", {"type": "categorical", "choices": [1.5]}), f"{SS}.p_dropout.choices: "
     "expected each choice to be a number in [0, 1) for p_dropout, got 1.5"),
    (_set(f"{SS}.p_dropout.high", 1.0),
     f"{SS}.p_dropout.high: expected high to be a number in [0, 1) for p_dropout, got 1.0"),
    (_set(f"{SS}.lr.low", 0.5), f"{SS}.lr: low (0.5) > high (0.1); expected low <= high"),
    (_set(f"{SS}.lr.low", 0.0), f"{SS}.lr.low: expected a number > 0 with log: true, got 0.0"),
    (_set(f"{SS}.lin1_size.type", "float"),
     f"{SS}.lin1_size.type: expected int or categorical for lin1_size, got float"),
    (_set(f"{SS}.momentum", {"type": "float", "low": 0, "high": 1}), f"{SS}.momentum: unknown "
     "hyperparameter; expected one of ['lin1_size', 'lin2_size', 'p_dropout', 'lr', "
     "'batch_size', 'weight_decay', 'augment_strength', 'conv1_width', 'conv2_width', "
     "'batch_norm']"),
    (lambda r: r["tune"]["search_space"].pop("p_dropout"), f"{SS}.p_dropout: missing; expected "
     "a spec for every hyperparameter (fix one with type categorical and one choice)"),
    (lambda r: r.pop("tune"), "tune: missing; expected a mapping"),
]


@pytest.mark.parametrize(("mutate", "expected"), BAD)
def test_bad_params_name_the_key(raw: dict[str, Any], mutate: Any, expected: str) -> None:
    broken = copy.deepcopy(raw)
    mutate(broken)
    assert _error(broken) == f"params.yaml: {expected}"


def test_bounds_accept_their_edges(raw: dict[str, Any]) -> None:
    edges = copy.deepcopy(raw)
    for dotted, value in [("prepare.image_size", 16), ("train.seed", 2**32 - 3),
                          ("tune.sampler.seed", 2**32 - 1), ("evaluate.seed", 0),
                          ("tune.n_workers", 64), ("tune.sampler.n_startup_trials", 0),
                          ("evaluate.bootstrap_samples", 100), ("data.prepared_dir", "prep2"),
                          (f"{SS}.batch_size.choices", [1, 4096]),
                          (f"{SS}.p_dropout.low", 0)]:
        _set(dotted, value)(edges)
    config = config_from_dict(edges)
    assert config.tune.search_space["p_dropout"].low == 0.0
    assert config.data.prepared_dir == "prep2"


def test_smallest_image_size_is_the_models_true_minimum() -> None:
    import torch

    from xray_hpo.config import IMAGE_SIZE_MIN
    from xray_hpo.model import ModelArgs, XrayCNN

    XrayCNN(ModelArgs(image_size=IMAGE_SIZE_MIN, lin1_size=4, lin2_size=4, p_dropout=0.0))
    with pytest.raises(RuntimeError):
        XrayCNN(ModelArgs(image_size=IMAGE_SIZE_MIN - 1, lin1_size=4, lin2_size=4,
                          p_dropout=0.0))
    assert torch.get_num_threads() >= 1


def test_hyperparameters_are_defined_once() -> None:
    from xray_hpo.config import EXTENDED_HYPERPARAMETERS, HYPERPARAMETERS, HParams

    assert tuple(HParams.model_fields) == HYPERPARAMETERS + EXTENDED_HYPERPARAMETERS
    with pytest.raises(ValidationError):
        HParams(lin1_size=64, lin2_size=32, p_dropout=0.1, lr=0.01, batch_size=True)


def test_models_are_frozen(raw: dict[str, Any]) -> None:
    config = config_from_dict(raw)
    with pytest.raises(ValidationError):
        config.train.epochs = 3  # type: ignore[misc]


def _stored_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """What the tune stage stores in the study, through JSON as the storage keeps it."""
    from xray_hpo.tuning.study import study_spec

    spec = study_spec(config_from_dict(raw), {"train": "0" * 64, "val": "1" * 64})
    loaded: dict[str, Any] = json.loads(json.dumps(spec))
    return loaded


def test_worker_reads_the_stored_spec_through_the_same_models(raw: dict[str, Any]) -> None:
    from xray_hpo.tuning.study import settings_from_spec

    config = config_from_dict(raw)
    settings = settings_from_spec(_stored_spec(raw), "xray-hpo-abc", num_threads=2)
    assert settings.search_space == config.tune.search_space
    assert settings.pruner == config.tune.pruner and settings.sampler == config.tune.sampler
    assert settings.train == config.train.model_copy(update={"num_threads": 2})


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["train"].update(epochs=0), "train.epochs: expected an integer in 1..10000, "
                                                "got 0"),
        (lambda s: s["pruner"].update(name="asha"), "pruner.name: expected one of "
         "['successive_halving', 'median', 'hyperband', 'none'], got 'asha'"),
        (lambda s: s["search_space"]["batch_size"].update(choices=[-4]),
         "search_space.batch_size.choices: expected each choice to be an integer in 1..4096 "
         "for batch_size, got -4"),
        (lambda s: s["sampler"].update(seed=-1), "sampler.seed: expected an integer in "
                                                 "0..4294967295, got -1"),
        (lambda s: s.pop("pruner"), "pruner: missing; expected a mapping"),
    ],
)
def test_worker_rejects_a_bad_stored_spec_in_one_line(raw: dict[str, Any], mutate: Any,
                                                      expected: str) -> None:
    from xray_hpo.tuning.study import settings_from_spec

    spec = _stored_spec(raw)
    mutate(spec)
    with pytest.raises(ConfigError) as info:
        settings_from_spec(spec, "xray-hpo-abc", num_threads=1)
    assert str(info.value) == f"study xray-hpo-abc: stored spec: {expected}"


def test_worker_threads_are_validated_too(raw: dict[str, Any]) -> None:
    from xray_hpo.tuning.study import settings_from_spec

    with pytest.raises(ConfigError, match=r"stored spec: train.num_threads: expected an "
                                          r"integer in 0..1024, got -1$"):
        settings_from_spec(_stored_spec(raw), "s", num_threads=-1)


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
    assert load_hparams(path) == HParams(lin1_size=64, lin2_size=32, p_dropout=0.1, lr=0.01,
                                         batch_size=4)


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
