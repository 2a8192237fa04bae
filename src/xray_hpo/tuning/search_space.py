"""The search space is data (``tune.search_space`` in params.yaml): this makes Optuna calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from xray_hpo.config import HParams, ParamSpec


def suggest_hparams(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> HParams:
    """Ask the trial for one value per hyperparameter, in a fixed (sorted) order."""
    values: dict[str, Any] = {}
    for name in sorted(space):
        spec = space[name]
        if spec.type == "int":
            assert spec.low is not None and spec.high is not None  # validated by config
            values[name] = trial.suggest_int(name, int(spec.low), int(spec.high),
                                             step=int(spec.step or 1), log=spec.log)
        elif spec.type == "float":
            assert spec.low is not None and spec.high is not None
            values[name] = trial.suggest_float(name, spec.low, spec.high, step=spec.step,
                                               log=spec.log)
        else:
            assert spec.choices is not None
            values[name] = trial.suggest_categorical(name, list(spec.choices))
    return hparams_from_values(values)


def hparams_from_values(values: Mapping[str, Any]) -> HParams:
    """Optuna hands back categorical choices as stored; cast to the types the model needs."""
    extended: dict[str, Any] = {}
    for name, cast in (("weight_decay", float), ("augment_strength", float),
                       ("conv1_width", int), ("conv2_width", int), ("batch_norm", bool)):
        if name in values:
            extended[name] = cast(values[name])
    return HParams(
        lin1_size=int(values["lin1_size"]),
        lin2_size=int(values["lin2_size"]),
        p_dropout=float(values["p_dropout"]),
        lr=float(values["lr"]),
        batch_size=int(values["batch_size"]),
        **extended,
    )


def space_as_dict(space: Mapping[str, ParamSpec]) -> dict[str, dict[str, Any]]:
    """JSON-friendly form, for the study fingerprint and the ClearML configuration."""
    return {
        name: {key: (list(value) if isinstance(value, tuple) else value)
               for key, value in space[name].model_dump().items() if value is not None}
        for name in sorted(space)
    }


def distributions(space: Mapping[str, ParamSpec]) -> dict[str, BaseDistribution]:
    """The Optuna distributions ``search_space.suggest_hparams`` samples from."""
    out: dict[str, BaseDistribution] = {}
    for name, spec in space.items():
        if spec.type == "int":
            assert spec.low is not None and spec.high is not None
            out[name] = IntDistribution(int(spec.low), int(spec.high),
                                        step=int(spec.step or 1), log=spec.log)
        elif spec.type == "float":
            assert spec.low is not None and spec.high is not None
            out[name] = FloatDistribution(spec.low, spec.high, step=spec.step, log=spec.log)
        else:
            assert spec.choices is not None
            out[name] = CategoricalDistribution(list(spec.choices))
    return out
