"""The hyperparameters, defined once: :class:`HParams` fields are the names, the types and
the bounds that every search-space spec (``tune.search_space``) is checked against."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from xray_hpo.validation import AtKey, StrictModel, describe, show

LAYER_MAX = 4096  # units of a hidden layer, and images per batch: far past this data's size


WIDTH_MAX = 256  # channels of a convolution


class HParams(StrictModel):
    """One point of the search space: what a trial (or the final model) trains with.

    The first five are the original study's space (``tune.search_space`` needs a spec for
    each). The rest are the extended space's (``tune.extension``); their defaults are the
    original study's model and training, None meaning train.weight_decay and
    train.augment.strength.
    """

    lin1_size: int = Field(ge=1, le=LAYER_MAX)
    lin2_size: int = Field(ge=1, le=LAYER_MAX)
    p_dropout: float = Field(ge=0, lt=1)
    lr: float = Field(gt=0, lt=10)
    batch_size: int = Field(ge=1, le=LAYER_MAX)
    # Bounds on the float itself: None passes, and pydantic bounds no Optional.
    weight_decay: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="a number in [0, 1]")
    augment_strength: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="a number in [0, 1]")
    conv1_width: int = Field(6, ge=1, le=WIDTH_MAX)
    conv2_width: int = Field(16, ge=1, le=WIDTH_MAX)
    batch_norm: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The values to record: the extended ones only where they differ from the default,
        so the default study's best_params.yaml keeps its five keys."""
        return self.model_dump(exclude_defaults=True)


HYPERPARAMETERS: tuple[str, ...] = tuple(
    name for name, field in HParams.model_fields.items() if field.is_required())
EXTENDED_HYPERPARAMETERS: tuple[str, ...] = tuple(
    name for name in HParams.model_fields if name not in HYPERPARAMETERS)
ALL_HYPERPARAMETERS = HYPERPARAMETERS + EXTENDED_HYPERPARAMETERS
HPARAM_DEFAULTS: dict[str, Any] = {name: HParams.model_fields[name].default
                                   for name in EXTENDED_HYPERPARAMETERS}


def searched(names: Iterable[str]) -> tuple[str, ...]:
    """The columns of a study's tables: every default hyperparameter, then the extended ones
    among ``names``, in a fixed order."""
    present = set(names)
    return HYPERPARAMETERS + tuple(n for n in EXTENDED_HYPERPARAMETERS if n in present)


class ParamSpec(StrictModel):
    """How one hyperparameter is searched: a range (int, float) or a list of choices."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    # A list in YAML; each choice is checked against the hyperparameter (see check_space).
    choices: Annotated[tuple[Any, ...], Field(strict=False, min_length=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "categorical":
            if self.choices is None:
                raise AtKey("choices", "missing; expected a non-empty list for type categorical")
            if self.low is not None or self.high is not None:
                raise AtKey("", "low/high do not apply to type categorical; use choices")
            return self
        if self.choices is not None:
            raise AtKey("choices", f"only for type categorical; use low/high for {self.type}")
        for bound in ("low", "high"):
            if getattr(self, bound) is None:
                raise AtKey(bound, f"missing; expected a number for type {self.type}")
        assert self.low is not None and self.high is not None
        if self.low > self.high:
            raise AtKey("", f"low ({self.low}) > high ({self.high}); expected low <= high")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise AtKey("", "expected integer low/high for type int")
        if self.log and self.low <= 0:
            raise AtKey("low", f"expected a number > 0 with log: true, got {self.low}")
        if self.log and self.step is not None:
            raise AtKey("", "step and log: true cannot be combined (Optuna forbids it)")
        if self.step is not None and self.step <= 0:
            raise AtKey("step", f"expected a number > 0, got {self.step}")
        if self.type == "int" and self.step is not None and not self.step.is_integer():
            raise AtKey("step", f"expected an integer for type int, got {self.step}")
        return self


def check_space(space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
    """Every default hyperparameter has a spec (an extended one may), and every value a spec
    can give satisfies its HParams field: both ends of a range, each choice of a categorical."""
    _check_names(space, ALL_HYPERPARAMETERS)
    for name in HYPERPARAMETERS:
        if name not in space:
            raise AtKey(name, "missing; expected a spec for every hyperparameter (fix one with "
                              "type categorical and one choice)")
    return _check_values(space)


def check_extension(space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
    """``tune.extension``: specs of extended hyperparameters only, checked as above."""
    _check_names(space, EXTENDED_HYPERPARAMETERS)
    return _check_values(space)


def _check_names(space: dict[str, ParamSpec], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(space) - set(allowed))
    if unknown:
        raise AtKey(unknown[0], f"unknown hyperparameter; expected one of {list(allowed)}")


def _check_values(space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
    for name, spec in space.items():
        field = HParams.model_fields[name]
        hint = (Annotated[(field.annotation, *field.metadata)] if field.metadata
                else field.annotation)
        adapter = TypeAdapter(hint, config={"strict": True, "allow_inf_nan": False})
        integral = field.annotation is int
        if spec.type == "categorical":
            assert spec.choices is not None
            values = [("choices", c) for c in spec.choices]
        else:
            if integral and spec.type != "int":
                raise AtKey(f"{name}.type",
                            f"expected int or categorical for {name}, got {spec.type}")
            assert spec.low is not None and spec.high is not None
            values = [("low", spec.low), ("high", spec.high)]
        for where, value in values:
            if integral and where != "choices" and math.isfinite(value):
                value = int(value)  # an int range's ends are whole numbers (checked above)
            try:
                adapter.validate_python(value)
            except ValidationError:
                what = "each choice" if where == "choices" else where
                raise AtKey(f"{name}.{where}", f"expected {what} to be {describe(field)} for "
                                               f"{name}, got {show(value)}") from None
    return space


# What ``tune.search_space`` is, also when a tune worker reads it back from the study.
SearchSpace = Annotated[dict[str, ParamSpec], AfterValidator(check_space)]
ExtensionSpace = Annotated[dict[str, ParamSpec], AfterValidator(check_extension)]
