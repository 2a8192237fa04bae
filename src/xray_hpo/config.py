"""Typed, validated configuration: ``params.yaml`` is read once here and nowhere else.

Every error names the file and the dotted key and says what was expected, in one line,
before any work starts.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from xray_hpo.errors import UserError

HYPERPARAMETERS: tuple[str, ...] = ("lin1_size", "lin2_size", "p_dropout", "lr", "batch_size")


class ConfigError(UserError):
    """A bad ``params.yaml``: the message is one line naming the key and what is expected."""


@dataclass(frozen=True)
class DataConfig:
    dir: str = "data"  # the raw tree versioned by data.dvc: <split>/<class>/<image>
    prepared_dir: str = "prepared"


@dataclass(frozen=True)
class PrepareConfig:
    image_size: int = 64


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    seed: int = 42
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    # The LR follows a fixed schedule; validation accuracy only selects the epoch, so one
    # small validation set never drives both the schedule and the model selection.
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    class_weighting: Literal["none", "balanced"] = "none"
    num_threads: int = 0  # 0: every core this process may use
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class ParamSpec:
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class SamplerConfig:
    name: Literal["tpe", "random"] = "tpe"
    seed: int = 42
    n_startup_trials: int = 5


@dataclass(frozen=True)
class PrunerConfig:
    """Early stopping of trials on their per-epoch validation accuracy.

    successive_halving (asynchronous, so it suits parallel workers): at epochs
    ``min_resource * reduction_factor**k`` a trial goes on only if it is among the best
    ``1/reduction_factor`` of the trials that reached that epoch. hyperband: several such
    brackets. median: stop a trial below the median of the completed trials at the same
    epoch, once ``n_startup_trials`` have completed and after ``n_warmup_steps`` epochs.
    Any pruner but none also stops a trial whose best validation accuracy after
    ``stop_at_chance_after`` epochs is no better than always guessing the most common class:
    a diverged run, which ties with every other diverged run, so no ranking pruner stops it.
    """

    name: Literal["successive_halving", "median", "hyperband", "none"] = "successive_halving"
    min_resource: int = 2
    reduction_factor: int = 3
    n_startup_trials: int = 5
    n_warmup_steps: int = 3
    stop_at_chance_after: int = 2  # epochs; 0 = never


@dataclass(frozen=True)
class TuneConfig:
    n_trials: int = 20
    n_workers: int = 1
    study_prefix: str = "xray-hpo"
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    search_space: dict[str, ParamSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectConfig:
    """Robust selection after tune: the top_k configurations, each trained with ``seeds``
    seeds (train.seed + 0..seeds-1); the best mean validation accuracy wins."""

    top_k: int = 3
    seeds: int = 3


@dataclass(frozen=True)
class EvaluateConfig:
    bootstrap_samples: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class KermanyConfig:
    """Defaults of ``xray-hpo import-kermany`` (its explicit options override them).

    Balanced mode (``all: false``): ``train``/``val``/``test`` images per split, balanced
    across the classes; ``test`` may be ``max`` (as many as balance allows). ``all: true``:
    every image, split per class by ``fractions`` (train, val, test).
    """

    train: int = 206  # the original study's sizes
    val: int = 45
    test: Any = "max"  # an integer >= 0 or "max"
    all: bool = False
    fractions: tuple[float, ...] = (0.70, 0.15, 0.15)
    seed: int = 42

    @property
    def sizes(self) -> tuple[int, int, int | None]:
        return (self.train, self.val, None if self.test == "max" else self.test)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    kermany: KermanyConfig = field(default_factory=KermanyConfig)


@dataclass(frozen=True)
class HParams:
    """One point of the search space: what a trial (or the final model) trains with."""

    lin1_size: int
    lin2_size: int
    p_dropout: float
    lr: float
    batch_size: int

    @classmethod
    def from_mapping(cls, values: typing.Mapping[str, Any], where: str) -> HParams:
        return _build(cls, dict(values), where)


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; expected the project's params.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: Any, source: str = "params.yaml") -> Config:
    config = _build(Config, raw, f"{source}:")
    _check_semantics(config, source)
    return config


def load_kermany_config(path: str | Path = "params.yaml") -> KermanyConfig:
    """Only the ``kermany`` section (the importer must not depend on the rest being valid);
    the built-in defaults when the file or the section is absent."""
    path = Path(path)
    if not path.is_file():
        return KermanyConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping, got {_show(raw)}")
    kermany = _build(KermanyConfig, raw.get("kermany") or {}, f"{path}: kermany")
    _check_kermany(kermany, str(path))
    return kermany


def load_hparams(path: str | Path = "best_params.yaml") -> HParams:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run the tune stage first (dvc repro tune)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or "hparams" not in raw:
        raise ConfigError(f"{path}: expected a mapping with key 'hparams'")
    return HParams.from_mapping(raw["hparams"], f"{path}: hparams")


# --- generic dataclass builder -------------------------------------------------------------

def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{_key(where, key)}: unknown key; expected one of {sorted(names)}")
    values = {}
    for f in dataclasses.fields(cls):
        key = _key(where, f.name)
        if f.name in raw:
            values[f.name] = _coerce(hints[f.name], raw[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing; expected {_describe(hints[f.name])}")
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {_show(value)}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        return tuple(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {key}")


def _key(where: str, name: str) -> str:
    return f"{where} {name}" if where.endswith(":") else f"{where}.{name}"


def _describe(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if typing.get_origin(hint) is Literal:
        return f"one of {list(typing.get_args(hint))}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, str(hint)
    )


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else f"{text} ({type(value).__name__})"


# --- semantic checks -----------------------------------------------------------------------

def _check_semantics(config: Config, source: str) -> None:
    def need(ok: bool, key: str, expected: str, got: Any) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key}: expected {expected}, got {got!r}")

    need(8 <= config.prepare.image_size <= 512, "prepare.image_size", "an integer in 8..512",
         config.prepare.image_size)
    need(config.train.epochs >= 1, "train.epochs", "an integer >= 1", config.train.epochs)
    need(config.train.weight_decay >= 0, "train.weight_decay", "a number >= 0",
         config.train.weight_decay)
    need(config.train.num_threads >= 0, "train.num_threads", "an integer >= 0 (0: all cores)",
         config.train.num_threads)
    need(config.tune.n_trials >= 1, "tune.n_trials", "an integer >= 1", config.tune.n_trials)
    need(config.tune.n_workers >= 1, "tune.n_workers", "an integer >= 1", config.tune.n_workers)
    pruner = config.tune.pruner
    need(pruner.min_resource >= 1, "tune.pruner.min_resource", "an integer >= 1 (epochs)",
         pruner.min_resource)
    need(pruner.reduction_factor >= 2, "tune.pruner.reduction_factor", "an integer >= 2",
         pruner.reduction_factor)
    need(pruner.n_startup_trials >= 0, "tune.pruner.n_startup_trials", "an integer >= 0",
         pruner.n_startup_trials)
    need(pruner.n_warmup_steps >= 0, "tune.pruner.n_warmup_steps", "an integer >= 0",
         pruner.n_warmup_steps)
    need(pruner.stop_at_chance_after >= 0, "tune.pruner.stop_at_chance_after",
         "an integer >= 0 (epochs; 0 = never)", pruner.stop_at_chance_after)
    need(config.select.top_k >= 1, "select.top_k", "an integer >= 1", config.select.top_k)
    need(config.select.seeds >= 1, "select.seeds", "an integer >= 1 (1: no re-runs)",
         config.select.seeds)
    need(config.evaluate.bootstrap_samples >= 100, "evaluate.bootstrap_samples",
         "an integer >= 100", config.evaluate.bootstrap_samples)
    need(0.5 <= config.evaluate.confidence < 1, "evaluate.confidence", "a number in [0.5, 1)",
         config.evaluate.confidence)

    _check_kermany(config.kermany, source)

    space = config.tune.search_space
    unknown = sorted(set(space) - set(HYPERPARAMETERS))
    need(not unknown, f"tune.search_space.{unknown[0] if unknown else ''}",
         f"one of {list(HYPERPARAMETERS)}", "an unknown hyperparameter")
    missing = [name for name in HYPERPARAMETERS if name not in space]
    need(not missing, f"tune.search_space.{missing[0] if missing else ''}",
         "a spec for every hyperparameter (fix one with type categorical and one choice)",
         "nothing")
    for name, spec in space.items():
        _check_spec(f"{source}: tune.search_space.{name}", name, spec)


def _check_kermany(kermany: KermanyConfig, source: str) -> None:
    for name in ("train", "val"):
        value = getattr(kermany, name)
        if value < 0:
            raise ConfigError(f"{source}: kermany.{name}: expected an integer >= 0, got {value!r}")
    test = kermany.test
    if test != "max" and (isinstance(test, bool) or not isinstance(test, int) or test < 0):
        raise ConfigError(f"{source}: kermany.test: expected an integer >= 0 or 'max', "
                          f"got {test!r}")
    fractions = kermany.fractions
    if (len(fractions) != 3
            or any(isinstance(f, bool) or not isinstance(f, int | float) or f < 0
                   for f in fractions)
            or sum(fractions) <= 0):
        raise ConfigError(f"{source}: kermany.fractions: expected three numbers >= 0 (train, "
                          f"val, test), not all zero, got {list(fractions)!r}")


def _check_spec(key: str, name: str, spec: ParamSpec) -> None:
    integral = name in ("lin1_size", "lin2_size", "batch_size")
    if spec.type == "categorical":
        if not spec.choices:
            raise ConfigError(f"{key}.choices: expected a non-empty list for type categorical")
        for choice in spec.choices:
            if isinstance(choice, bool) or not isinstance(choice, int | float):
                raise ConfigError(f"{key}.choices: expected numbers, got {choice!r}")
            if integral and not float(choice).is_integer():
                raise ConfigError(f"{key}.choices: expected integers for {name}, got {choice!r}")
        if spec.low is not None or spec.high is not None:
            raise ConfigError(f"{key}: low/high do not apply to type categorical; use choices")
        return
    if spec.choices is not None:
        raise ConfigError(f"{key}.choices: only for type categorical; use low/high")
    if integral and spec.type != "int":
        raise ConfigError(f"{key}.type: expected int or categorical for {name}, got {spec.type}")
    for bound in ("low", "high"):
        if getattr(spec, bound) is None:
            raise ConfigError(f"{key}.{bound}: missing; expected a number for type {spec.type}")
    assert spec.low is not None and spec.high is not None
    if spec.low > spec.high:
        raise ConfigError(f"{key}: low ({spec.low}) > high ({spec.high}); expected low <= high")
    if spec.type == "int" and not (float(spec.low).is_integer() and float(spec.high).is_integer()):
        raise ConfigError(f"{key}: expected integer low/high for type int")
    if spec.log and spec.low <= 0:
        raise ConfigError(f"{key}.low: expected a number > 0 with log: true, got {spec.low}")
    if spec.log and spec.step is not None:
        raise ConfigError(f"{key}: step and log: true cannot be combined (Optuna forbids it)")
    if spec.step is not None and spec.step <= 0:
        raise ConfigError(f"{key}.step: expected a number > 0, got {spec.step}")
    if name == "p_dropout" and not (spec.low >= 0 and spec.high < 1):
        raise ConfigError(f"{key}: expected 0 <= low <= high < 1 for a dropout probability")
    if name in ("lin1_size", "lin2_size", "batch_size") and spec.low < 1:
        raise ConfigError(f"{key}.low: expected an integer >= 1 for {name}, got {spec.low}")
