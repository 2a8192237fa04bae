"""What the optimizer task shows at the end of a study: the top-10 table, the parallel
coordinates plot and the importances. Pure builders (no ClearML) so tests can check them
directly; :func:`report_study_summary` hands them to a ClearML logger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

TOP_N = 10
METRIC_COLUMNS = ("best val accuracy", "val loss", "epochs run", "state")


def trial_accuracy(trial: optuna.trial.FrozenTrial) -> float | None:
    """A trial's best validation accuracy: its value when complete (the objective is the best
    epoch's accuracy), its best reported epoch when pruned, None when nothing was measured."""
    if trial.state.name == "COMPLETE" and trial.value is not None:
        return float(trial.value)
    values = [v for v in trial.intermediate_values.values() if v is not None and math.isfinite(v)]
    return max(values) if values else None


def ranked_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Best first: COMPLETE by value (desc), then PRUNED by best epoch (desc); ties by number.
    Failed and running trials have no accuracy to rank and are left out."""

    def key(t: optuna.trial.FrozenTrial) -> tuple[int, float, int]:
        acc = trial_accuracy(t)
        return (
            0 if t.state.name == "COMPLETE" else 1,
            -(acc if acc is not None else -1.0),
            t.number,
        )

    eligible = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    return sorted(eligible, key=key)


def param_names(trials: Sequence[optuna.trial.FrozenTrial]) -> list[str]:
    """Every hyperparameter any trial sampled, in first-seen (search space) order."""
    names: dict[str, None] = {}
    for t in trials:
        names.update(dict.fromkeys(t.params))
    return list(names)


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def top_trials_table(
    trials: Sequence[optuna.trial.FrozenTrial], limit: int = TOP_N
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: trial number, every hyperparameter, best val accuracy, val loss,
    epochs run, state; at most ``limit`` rows, best first."""
    params = param_names(trials)
    header = ["trial", *params, *METRIC_COLUMNS]
    rows = []
    for t in ranked_trials(trials)[:limit]:
        acc = trial_accuracy(t)
        epochs = t.user_attrs.get("epochs_run", len(t.intermediate_values))
        rows.append(
            [
                t.number,
                *(_round(t.params.get(p, "")) for p in params),
                _round(acc) if acc is not None else "",
                _round(t.user_attrs.get("val_loss", "")),
                epochs,
                t.state.name.lower(),
            ]
        )
    return header, rows


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """List of dicts -> header row + value rows (ClearML's report_table list form)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return [list(columns), *([_round(r.get(c, "")) for c in columns] for r in rows)]


def parallel_coordinates_figure(
    trials: Sequence[optuna.trial.FrozenTrial], params: Sequence[str] | None = None
) -> go.Figure:
    """A plotly Parcoords: one axis per hyperparameter (``params``, default every one sampled),
    then val accuracy; lines coloured by val accuracy. One line per complete trial and per
    pruned one at its best epoch (the optimizer task passes both: heavy pruning would leave
    the plot nearly empty otherwise; the report passes complete ones). Log-scaled params get
    a log10 axis with real-value ticks, categorical ones an index axis labelled with the
    choices. (Optuna 5's own plot_parallel_coordinate draws scatter traces, which ClearML
    shows as a plain line plot.) The ClearML task and the report's HTML page both use it."""
    import plotly.graph_objects as go
    from optuna.distributions import CategoricalDistribution

    ranked = ranked_trials(trials)
    dimensions = []
    for name in param_names(ranked) if params is None else params:
        dist = next((t.distributions[name] for t in ranked if name in t.distributions), None)
        if dist is None:
            continue  # no trial sampled it: no axis
        raw = [t.params.get(name) for t in ranked]
        if isinstance(dist, CategoricalDistribution):
            choices = list(dist.choices)
            values = [choices.index(v) if v in choices else None for v in raw]
            ticks = {"tickvals": list(range(len(choices))), "ticktext": [str(c) for c in choices]}
        elif getattr(dist, "log", False):
            values = [math.log10(v) if v else None for v in raw]
            lo, hi = math.floor(math.log10(dist.low)), math.ceil(math.log10(dist.high))
            tickvals = list(range(lo, hi + 1))
            ticks = {"tickvals": tickvals, "ticktext": [f"{10.0**v:g}" for v in tickvals]}
        else:
            values, ticks = raw, {}
        dimensions.append({"label": name, "values": values, **ticks})
    accuracy = [trial_accuracy(t) for t in ranked]
    dimensions.append({"label": "val accuracy", "values": accuracy})
    # Optuna's scale, as in the report's PNG of the same plot: darker is better.
    line = {"color": accuracy, "colorscale": "Blues", "showscale": True,
            "colorbar": {"title": {"text": "val accuracy"}}}  # fmt: skip
    fig = go.Figure(go.Parcoords(line=line, dimensions=dimensions))
    fig.update_layout(title="parallel coordinates (coloured by val accuracy)")
    return fig


def importance_figure(importances: Mapping[str, float]) -> go.Figure:
    """Horizontal bars, largest on top (ties by name): for the ClearML task and the report."""
    import plotly.graph_objects as go

    ordered = sorted(importances.items(), key=lambda kv: (kv[1], kv[0]))
    fig = go.Figure(go.Bar(x=[v for _, v in ordered], y=[k for k, _ in ordered], orientation="h"))
    fig.update_layout(title="Hyperparameter importance (fANOVA)", xaxis_title="importance")
    return fig


def report_study_summary(
    logger: Any, study: optuna.Study, importances: Mapping[str, float] | None = None
) -> None:
    """Report the end-of-study views to a ClearML ``Logger`` (arguments by name: the 2.x
    signatures differ from 1.x)."""
    trials = study.trials
    header, rows = top_trials_table(trials)
    logger.report_table(
        title=f"top {TOP_N} trials", series="best first", iteration=0, table_plot=[header, *rows]
    )
    if ranked_trials(trials):
        logger.report_plotly(
            title="parallel coordinates",
            series="val accuracy",
            figure=parallel_coordinates_figure(trials),
            iteration=0,
        )
    if importances:
        logger.report_plotly(
            title="hyperparameter importance",
            series="importance",
            figure=importance_figure(importances),
            iteration=0,
        )
        logger.report_table(
            title="hyperparameter importance",
            series="importance",
            iteration=0,
            table_plot=[
                ["hyperparameter", "importance"],
                *([k, round(float(v), 6)] for k, v in importances.items()),
            ],
        )
    counts = {
        s: sum(t.state.name == s.upper() for t in trials) for s in ("complete", "pruned", "failed")
    }
    for state, n in counts.items():
        logger.report_single_value(name=f"trials {state}", value=n)
    ranked = ranked_trials(trials)
    if ranked and ranked[0].state.name == "COMPLETE":
        logger.report_single_value(name="best val accuracy", value=float(ranked[0].value))
        logger.report_single_value(name="best trial", value=ranked[0].number)
