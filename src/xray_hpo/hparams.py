"""The hyperparameters, defined once: :class:`HParams` fields are the names, the types and
the bounds that every search-space spec (``tune.search_space``) is checked against."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, model_validator

from xray_hpo.validation import AtKey, StrictModel, describe, show

LAYER_MAX = 4096  # units of a hidden layer, and images per batch: far past this data's size


class HParams(StrictModel):
    """One point of the search space: what a trial (or the final model) trains with."""

    lin1_size: int = Field(ge=1, le=LAYER_MAX)
    lin2_size: int = Field(ge=1, le=LAYER_MAX)
    p_dropout: float = Field(ge=0, lt=1)
    lr: float = Field(gt=0, lt=10)
    batch_size: int = Field(ge=1, le=LAYER_MAX)


HYPERPARAMETERS: tuple[str, ...] = tuple(HParams.model_fields)


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
    """Every hyperparameter has a spec, and every value a spec can give satisfies its
    HParams field: both ends of a range, each choice of a categorical."""
    unknown = sorted(set(space) - set(HYPERPARAMETERS))
    if unknown:
        raise AtKey(unknown[0], f"unknown hyperparameter; expected one of {list(HYPERPARAMETERS)}")
    for name in HYPERPARAMETERS:
        if name not in space:
            raise AtKey(name, "missing; expected a spec for every hyperparameter (fix one with "
                              "type categorical and one choice)")
    for name, spec in space.items():
        field = HParams.model_fields[name]
        adapter = TypeAdapter(Annotated[(field.annotation, *field.metadata)],
                              config={"strict": True, "allow_inf_nan": False})
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
