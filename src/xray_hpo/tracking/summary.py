"""What the optimizer task shows during and at the end of a study: the top-10 table
(rows linked to the trials' tasks), the parallel coordinates plot, the importances, its
description and hyperparameters. Pure builders (no ClearML) so tests can check them
directly; :func:`report_study_summary` hands them to a ClearML logger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

TOP_N = 10
TASK_ATTR = "clearml_task_id"  # = settings.TRIAL_ATTR_TASK (summary imports no settings)
TABLE_TITLE = f"top {TOP_N} trials"
# (task id, text) -> an HTML link to the task's page, as ClearML's own optimizer links rows
Link = Callable[[str, str | None], str]
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
    trials: Sequence[optuna.trial.FrozenTrial], limit: int = TOP_N, link: Link | None = None
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: trial number, every hyperparameter, best val accuracy, val loss,
    epochs run, state; at most ``limit`` rows, best first. With ``link``, a second column
    links each row to its trial's task (the id its worker recorded on the trial)."""
    params = param_names(trials)
    header = ["trial", *(["task"] if link else []), *params, *METRIC_COLUMNS]
    rows = []
    for t in ranked_trials(trials)[:limit]:
        acc = trial_accuracy(t)
        epochs = t.user_attrs.get("epochs_run", len(t.intermediate_values))
        task_id = t.user_attrs.get(TASK_ATTR)
        rows.append(
            [
                t.number,
                *([link(str(task_id), None) if task_id else ""] if link else []),
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
    trials: Sequence[optuna.trial.FrozenTrial], params: Sequence[str] | None = None,
    *, states: bool = False
) -> go.Figure:
    """A plotly Parcoords: one axis per hyperparameter (``params``, default every one sampled),
    then val accuracy; lines coloured by val accuracy. One line per complete trial and per
    pruned one at its best epoch (the optimizer task passes both: heavy pruning would leave
    the plot nearly empty otherwise; the report passes complete ones). Log-scaled params get
    a log10 axis with real-value ticks, categorical ones an index axis labelled with the
    choices. (Optuna 5's own plot_parallel_coordinate draws scatter traces, which ClearML
    shows as a plain line plot.) The ClearML task and the report's HTML page both use it.
    ``states`` (the optimizer task) adds a state axis (pruned / complete) and an epochs-run
    axis, so a pruned trial's early accuracy is told apart from a complete one's."""
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
    if states:
        dimensions.append({"label": "state", "values": [int(t.state.name == "COMPLETE")
                                                         for t in ranked],
                           "tickvals": [0, 1], "ticktext": ["pruned", "complete"],
                           "range": [0, 1]})
        dimensions.append({"label": "epochs run", "values": [
            t.user_attrs.get("epochs_run", len(t.intermediate_values)) for t in ranked]})
    accuracy = [trial_accuracy(t) for t in ranked]
    dimensions.append({"label": "val accuracy", "values": accuracy})
    # Optuna's scale, as in the report's PNG of the same plot: darker is better.
    line = {"color": accuracy, "colorscale": "Blues", "showscale": True,
            "colorbar": {"title": {"text": "val accuracy"}}}  # fmt: skip
    fig = go.Figure(go.Parcoords(line=line, dimensions=dimensions))
    title = "parallel coordinates (coloured by val accuracy)"
    if states:
        title = "parallel coordinates (pruned trials at their best epoch, see state axis)"
    fig.update_layout(title=title)
    return fig


def importance_figure(importances: Mapping[str, float]) -> go.Figure:
    """Horizontal bars, largest on top (ties by name): for the ClearML task and the report."""
    import plotly.graph_objects as go

    ordered = sorted(importances.items(), key=lambda kv: (kv[1], kv[0]))
    fig = go.Figure(go.Bar(x=[v for _, v in ordered], y=[k for k, _ in ordered], orientation="h"))
    fig.update_layout(title="Hyperparameter importance (fANOVA)", xaxis_title="importance")
    return fig


def optimizer_hyperparameters(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer task's flat hyperparameter section: sampler, pruner, n_trials, objective
    and each search-space bound as its own value (an int parameter's bounds as ints)."""
    flat: dict[str, Any] = {}
    for key in ("study", "n_trials", "n_workers", "objective"):
        if key in configuration:
            flat[key] = configuration[key]
    for group in ("sampler", "pruner"):
        settings = configuration.get(group)
        if isinstance(settings, Mapping):
            flat.update({f"{group}/{key}": value for key, value in settings.items()})
        elif settings is not None:
            flat[group] = settings
    for name, spec in (configuration.get("search_space") or {}).items():
        kind = spec.get("type")
        flat[f"space/{name}/type"] = kind
        for key in ("low", "high"):
            if key in spec:
                flat[f"space/{name}/{key}"] = int(spec[key]) if kind == "int" else spec[key]
        if spec.get("log"):
            flat[f"space/{name}/log"] = True
        if "choices" in spec:
            flat[f"space/{name}/choices"] = ", ".join(map(str, spec["choices"]))
    return flat


def optimizer_description(configuration: Mapping[str, Any]) -> str:
    """One paragraph for the optimizer task's description."""
    def name(group: str) -> Any:
        value = configuration.get(group, "?")
        return value.get("name", "?") if isinstance(value, Mapping) else value

    sampler, pruner = name("sampler"), name("pruner")
    space = ", ".join(configuration.get("search_space") or {})
    epochs = (configuration.get("train") or {}).get("epochs", "?")
    return (f"Optuna study {configuration.get('study', '?')}: "
            f"{configuration.get('n_trials', '?')} trials of up to {epochs} epochs, "
            f"{configuration.get('objective', 'maximize val accuracy')}; sampler {sampler}, "
            f"pruner {pruner}; searching {space}. Each trial is a child task (training); "
            f"the table '{TABLE_TITLE}' links to them. The shipped model is the robust "
            "selection's choice (table 'selection').")


def report_study_summary(
    logger: Any, trials: Sequence[optuna.trial.FrozenTrial],
    importances: Mapping[str, float] | None = None, link: Link | None = None
) -> None:
    """Report the study's views to a ClearML ``Logger`` (arguments by name: the 2.x
    signatures differ from 1.x). Titles and series are distinct: the server keeps one
    event per (iteration, title, series), so a shared pair would replace a figure."""
    header, rows = top_trials_table(trials, link=link)
    logger.report_table(
        title=TABLE_TITLE, series="best first", iteration=0, table_plot=[header, *rows]
    )
    ranked = ranked_trials(trials)
    if ranked:
        logger.report_plotly(
            title="parallel coordinates",
            series="val accuracy",
            figure=parallel_coordinates_figure(trials, states=True),
            iteration=0,
        )
    if importances:
        logger.report_plotly(
            title="hyperparameter importance",
            series="bar chart",
            figure=importance_figure(importances),
            iteration=0,
        )
        logger.report_table(
            title="hyperparameter importance (table)",
            series="values",
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
    if ranked and ranked[0].state.name == "COMPLETE":
        best = ranked[0]
        logger.report_single_value(name="best val accuracy", value=float(best.value))
        logger.report_single_value(name="best trial", value=best.number)
        task_id = best.user_attrs.get(TASK_ATTR)
        if link and task_id:
            logger.report_table(
                title="best trial", series="single best run", iteration=0,
                table_plot=[["trial", "val accuracy", "task"],
                            [best.number, _round(float(best.value)), link(str(task_id), None)]])


def importance_interval_rows(importance: Mapping[str, Any]) -> list[list[Any]]:
    """The evidence behind the importance bars, as ``metrics/importance.json`` holds it:
    one row per view, evaluator and hyperparameter (median share, interval, rank rate)."""
    details = importance.get("details", {})
    rows: list[list[Any]] = [["view", "evaluator", "hyperparameter", "median share", "low",
                              "high", "ranked first", "trials"]]
    for view in ("common_epoch", "complete_best_epoch"):
        entry = details.get(view)
        if not entry:
            continue
        for method in ("fanova", "pedanova"):
            shares = {k: v for k, v in entry.get(method, {}).items() if isinstance(v, dict)}
            for name, share in sorted(shares.items(), key=lambda kv: -kv[1]["median"]):
                rows.append([view, method, name, share["median"], share["low"], share["high"],
                             share["first_rate"], entry["trials"]])
    return rows
