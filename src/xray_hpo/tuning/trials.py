"""The trials table: one CSV row per counted trial, written by tune and read back by report,
and the trials' learning curves (one row per trial and epoch).

The report stage rebuilds Optuna trials from ``plots/tune_trials.csv`` and
``plots/tune_curves.csv`` (tune outputs) and never opens the study's storage, so it depends
only on files DVC tracks.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from xray_hpo.config import HYPERPARAMETERS, ParamSpec, searched
from xray_hpo.tuning.search_space import distributions

CURVE_COLUMNS = ("number", "epoch", "val_accuracy")


def _columns(names: Sequence[str]) -> tuple[str, ...]:
    return ("number", "state", "value", "best_val_accuracy", "best_so_far", *names,
            "val_loss", "best_epoch", "epochs_run")


TRIAL_COLUMNS = _columns(HYPERPARAMETERS)  # the default study's


def _num(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return str(value).lower()  # batch_norm: true/false, as YAML writes it
    return repr(float(value)) if isinstance(value, float) else str(value)


def trials_csv(trials: Sequence[FrozenTrial]) -> str:
    """One row per counted trial: state, accuracy, every hyperparameter (exact values)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # The extended space's hyperparameters get columns only when the study searched them.
    names = searched(name for t in trials for name in t.params)
    writer.writerow(_columns(names))
    best: float | None = None
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.value is not None:
            best = t.value if best is None else max(best, t.value)
        accuracy = t.user_attrs.get("best_val_acc")
        if accuracy is None and t.state == TrialState.COMPLETE:
            accuracy = t.value
        writer.writerow([
            t.number, t.state.name.lower(), _num(t.value), _num(accuracy), _num(best),
            *(_num(t.params.get(name, "")) for name in names),
            _num(t.user_attrs.get("val_loss")), _num(t.user_attrs.get("best_epoch")),
            _num(t.user_attrs.get("epochs_run")),
        ])
    return buffer.getvalue()


def _parse(cell: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if str(choice) == cell or _num(choice) == cell:
                return choice
        raise ValueError(f"{cell!r} is not one of {dist.choices}")
    return int(cell) if isinstance(dist, IntDistribution) else float(cell)


def trials_from_csv(text: str, space: Mapping[str, ParamSpec]) -> list[FrozenTrial]:
    """Rebuild the trials (complete and pruned; failed ones carry no accuracy)."""
    dists = distributions(space)
    trials = []
    for row in csv.DictReader(io.StringIO(text)):
        state = TrialState[row["state"].upper()]
        if state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        params = {n: _parse(row[n], d) for n, d in dists.items() if row.get(n, "") != ""}
        attrs: dict[str, Any] = {}
        for key, cast in (("val_loss", float), ("best_epoch", int), ("epochs_run", int)):
            if row.get(key):
                attrs[key] = cast(row[key])
        intermediate = {}
        if state == TrialState.PRUNED and row.get("best_val_accuracy"):
            intermediate = {int(attrs.get("best_epoch", 1)): float(row["best_val_accuracy"])}
        trial = create_trial(
            state=state, value=float(row["value"]) if row["value"] else None, params=params,
            distributions={n: dists[n] for n in params}, user_attrs=attrs,
            intermediate_values=intermediate)
        trial.number = int(row["number"])
        trials.append(trial)
    return trials


def curves_csv(trials: Sequence[FrozenTrial]) -> str:
    """Every reported epoch of every trial: the validation accuracy the pruner saw."""
    lines = [",".join(CURVE_COLUMNS)]
    for t in sorted(trials, key=lambda t: t.number):
        lines += [f"{t.number},{epoch},{_num(float(value))}"
                  for epoch, value in sorted(t.intermediate_values.items())]
    return "\n".join(lines) + "\n"


def with_curves(trials: Sequence[FrozenTrial], text: str) -> list[FrozenTrial]:
    """``trials`` with their intermediate values replaced by the curves in ``text``."""
    curves: dict[int, dict[int, float]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        curves.setdefault(int(row["number"]), {})[int(row["epoch"])] = float(row["val_accuracy"])
    out = []
    for t in trials:
        copy = create_trial(state=t.state, value=t.value, params=t.params,
                            distributions=t.distributions, user_attrs=t.user_attrs,
                            intermediate_values=curves.get(t.number, t.intermediate_values))
        copy.number = t.number
        out.append(copy)
    return out
