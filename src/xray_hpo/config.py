"""Typed, validated configuration: ``params.yaml`` is read once here and nowhere else.

pydantic models (frozen, strict, no unknown keys, bounds on every number) define what each
key accepts. Every error names the file and the dotted key and says what was expected, in
one line, before any work starts (:mod:`xray_hpo.validation`).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, StrictFloat, field_validator, model_validator

from xray_hpo.hparams import (
    ALL_HYPERPARAMETERS,
    EXTENDED_HYPERPARAMETERS,
    HPARAM_DEFAULTS,
    HYPERPARAMETERS,
    ExtensionSpace,
    HParams,
    ParamSpec,
    SearchSpace,
    searched,
)
from xray_hpo.validation import SEED_MAX, AtKey, ConfigError, StrictModel, parse, show

__all__ = [
    "ALL_HYPERPARAMETERS", "EXTENDED_HYPERPARAMETERS", "HPARAM_DEFAULTS", "HYPERPARAMETERS",
    "AugmentConfig", "Config", "ConfigError", "DataConfig", "EvaluateConfig", "ExtensionSpace",
    "HParams", "KermanyConfig", "ParamSpec", "PrepareConfig", "PrunerConfig", "SamplerConfig",
    "SearchSpace", "SelectConfig", "TrainConfig", "TuneConfig", "config_from_dict",
    "load_config", "load_hparams", "load_kermany_config", "parse", "searched",
]

PATH_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/")
# The smallest input the network takes: conv5 (-4), pool /2, conv5 (-4), pool /2 leaves
# floor((floor((n - 4) / 2) - 4) / 2) >= 1 pixel only from n = 16 on (xray_hpo.model).
IMAGE_SIZE_MIN = 16
EPOCHS_MAX = 10_000


def _relative_folder(value: str) -> str:
    parts = PurePosixPath(value).parts
    if (not value or not set(value) <= PATH_CHARS or value.startswith("/")
            or any(p in (".", "..") for p in value.split("/")) or not parts):
        raise ValueError(f"expected a non-empty relative path inside the project (letters, "
                         f"digits, _ . - and /; no '..'), got {show(value)}")
    return value


Folder = Annotated[str, AfterValidator(_relative_folder)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Count = Annotated[int, Field(ge=0, le=100_000)]


class DataConfig(StrictModel):
    dir: Folder = "data"  # the raw tree versioned by data.dvc: <split>/<class>/<image>
    prepared_dir: Folder = "prepared"

    @model_validator(mode="after")
    def _apart(self) -> DataConfig:
        a, b = PurePosixPath(self.dir), PurePosixPath(self.prepared_dir)
        if a == b or a in b.parents or b in a.parents:
            raise AtKey("prepared_dir", f"expected a folder apart from data.dir "
                                        f"({self.dir!r}), got {self.prepared_dir!r}")
        return self


class PrepareConfig(StrictModel):
    image_size: int = Field(64, ge=IMAGE_SIZE_MIN, le=512)


class AugmentConfig(StrictModel):
    """Training-time augmentation (xray_hpo.augment). ``strength`` scales every magnitude
    below, each given at strength 1; 0 turns augmentation off (the original study)."""

    strength: float = Field(0.0, ge=0, le=1)
    rotation_degrees: float = Field(15.0, ge=0, le=45)  # rotation within +-this
    translate: float = Field(0.08, ge=0, le=0.25)  # shift within +-this share of the side
    crop_scale: float = Field(0.5, ge=0.25, le=1)  # random resized crop: least area kept
    crop_ratio: float = Field(0.15, ge=0, le=1)  # ...aspect ratio within (1 + this) of square
    brightness: float = Field(0.3, ge=0, le=0.9)  # factor within 1 +- this
    contrast: float = Field(0.5, ge=0, le=0.9)
    gamma: float = Field(1.0, ge=0, le=2)  # gamma within (1 + this) ** +-1
    noise_std: float = Field(0.08, ge=0, le=0.5)  # Gaussian sigma (pixels in [0, 1])
    horizontal_flip: bool = False  # off: a flip mirrors the heart to the right


# Where and how fast a run trains, not what it computes: outside a study's name and the
# training stages' DVC params.
RUNTIME_TRAIN_KEYS = ("num_threads", "device")


class TrainConfig(StrictModel):
    epochs: int = Field(10, ge=1, le=EPOCHS_MAX)
    seed: Seed = 42
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = Field(0.0, ge=0)
    # The LR follows a fixed schedule; validation accuracy only selects the epoch, so one
    # small validation set never drives both the schedule and the model selection.
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    class_weighting: Literal["none", "balanced"] = "none"
    num_threads: int = Field(0, ge=0, le=1024)  # 0: every core this process may use
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Fused optimizer step, channels-last convolutions and denormals flushed to zero: faster
    # epochs at this model's small batches (bench/bench_epoch.py). Other kernels, so other
    # float roundings: false reproduces studies made before this setting existed.
    fast_kernels: bool = True
    augment: AugmentConfig = AugmentConfig()


class SamplerConfig(StrictModel):
    name: Literal["tpe", "random"] = "tpe"
    seed: Seed = 42
    n_startup_trials: Count = 5


class PrunerConfig(StrictModel):
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
    min_resource: int = Field(2, ge=1, le=EPOCHS_MAX)  # epochs
    reduction_factor: int = Field(3, ge=2, le=100)
    n_startup_trials: Count = 5
    n_warmup_steps: int = Field(3, ge=0, le=EPOCHS_MAX)
    stop_at_chance_after: int = Field(2, ge=0, le=EPOCHS_MAX)  # epochs; 0 = never


class TuneConfig(StrictModel):
    n_trials: int = Field(20, ge=1, le=100_000)
    # auto: one worker per core this process may use (xray_hpo.tuning.coordinator).
    # The round width is part of the study, so the default is a number, not the core count.
    n_workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        2, description="an integer in 1..64 or 'auto'")
    # window, rounds: several workers give the same study whatever the timing (window
    # waits less); free: each worker samples when it is free (xray_hpo.tuning.rounds).
    parallel: Literal["window", "rounds", "free"] = "window"
    # Part of the study name, hence of storage keys and ClearML project names.
    study_prefix: str = Field("xray-hpo", min_length=1, max_length=64,
                              pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                              description="1 to 64 letters, digits, _ . - (starting with a "
                                          "letter or digit)")
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    search_space: SearchSpace
    extended: bool = False  # true: search tune.extension's entries too
    extension: ExtensionSpace = Field(default_factory=dict)

    @model_validator(mode="after")
    def _extension(self) -> TuneConfig:
        if self.extended and not self.extension:
            raise AtKey("extension", "expected at least one entry when tune.extended is true")
        twice = sorted(set(self.search_space) & set(self.extension))
        if self.extended and twice:
            raise AtKey(f"extension.{twice[0]}", "also in tune.search_space; expected it in "
                                                 "one of the two")
        return self

    @property
    def active_space(self) -> dict[str, ParamSpec]:
        """What the study searches: search_space, plus extension when extended."""
        return {**self.search_space, **(self.extension if self.extended else {})}


class SelectConfig(StrictModel):
    """Robust selection after tune: the top_k configurations, each trained with ``seeds``
    seeds (train.seed + 0..seeds-1); the best mean validation accuracy wins."""

    top_k: int = Field(3, ge=1, le=1000)
    seeds: int = Field(3, ge=1, le=1000)  # 1: no re-runs


class EvaluateConfig(StrictModel):
    bootstrap_samples: int = Field(2000, ge=100, le=1_000_000)
    confidence: float = Field(0.95, ge=0.5, lt=1)
    seed: Seed = 0


class KermanyConfig(StrictModel):
    """Defaults of ``xray-hpo import-kermany`` (its explicit options override them).

    Balanced mode (``all: false``): ``train``/``val``/``test`` images per split, balanced
    across the classes; ``test`` may be ``max`` (as many as balance allows). ``all: true``:
    every image, split per class by ``fractions`` (train, val, test).
    """

    train: int = Field(206, ge=0)  # the original study's sizes
    val: int = Field(45, ge=0)
    test: Any = "max"  # an integer >= 0 or "max"
    all: bool = False
    fractions: Annotated[tuple[StrictFloat, ...], Field(strict=False)] = (0.70, 0.15, 0.15)
    seed: Seed = 42

    @field_validator("test", mode="after")
    @classmethod
    def _test(cls, value: Any) -> Any:
        if value != "max" and (isinstance(value, bool) or not isinstance(value, int)
                               or value < 0):
            raise ValueError(f"expected an integer >= 0 or 'max', got {show(value)}")
        return value

    @field_validator("fractions", mode="after")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) != 3 or min(value) < 0 or sum(value) <= 0:
            raise ValueError(f"expected three numbers >= 0 (train, val, test), not all zero, "
                             f"got {list(value)!r}")
        return value

    @property
    def sizes(self) -> tuple[int, int, int | None]:
        return (self.train, self.val, None if self.test == "max" else self.test)


class Config(StrictModel):
    data: DataConfig = DataConfig()
    prepare: PrepareConfig = PrepareConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig
    select: SelectConfig = SelectConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    kermany: KermanyConfig = KermanyConfig()

    @model_validator(mode="after")
    def _selection_seeds(self) -> Config:
        # Selection trains with train.seed + 0..select.seeds-1: all of them must be seeds.
        top = SEED_MAX - self.select.seeds + 1
        if self.train.seed > top:
            raise AtKey("train.seed", f"expected an integer in 0..{top} with select.seeds: "
                                      f"{self.select.seeds} (selection adds up to seeds-1), "
                                      f"got {self.train.seed}")
        return self


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc


def load_config(path: str | Path = "params.yaml") -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; expected the project's params.yaml")
    return config_from_dict(_read_yaml(path), source=str(path))


def config_from_dict(raw: Any, source: str = "params.yaml") -> Config:
    config: Config = parse(Config, raw, source)
    return config


def load_kermany_config(path: str | Path = "params.yaml") -> KermanyConfig:
    """Only the ``kermany`` section (the importer must not depend on the rest being valid);
    the built-in defaults when the file or the section is absent."""
    path = Path(path)
    if not path.is_file():
        return KermanyConfig()
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping, got {show(raw, with_type=True)}")
    kermany: KermanyConfig = parse(KermanyConfig, raw.get("kermany") or {}, str(path),
                                   ("kermany",))
    return kermany


def load_hparams(path: str | Path = "best_params.yaml") -> HParams:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run the tune stage first (dvc repro tune)")
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or "hparams" not in raw:
        raise ConfigError(f"{path}: expected a mapping with key 'hparams'")
    hparams: HParams = parse(HParams, raw["hparams"], str(path), ("hparams",))
    return hparams
