"""Every trial in the study's figures: parallel coordinates drawn by state, slices at the
common epoch, and importance bars with intervals; each as plotly (figures.html) and as a
matplotlib figure (the report's PNG).

Pruned trials are three quarters of a default study; these figures show them next to the
complete ones. Lines and points are coloured by the validation accuracy at the common epoch
(the value every counted trial has), and drawn by state: complete solid, pruned dashed
(parallel coordinates) or hollow (slices), with the epoch each stopped at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from xray_hpo.config import HYPERPARAMETERS
from xray_hpo.tuning.assessment import COMMON

COLORSCALE = "Viridis"  # low values stay visible on white (Blues fades them out)
METHOD_COLOURS = {"fanova": "#4c72b0", "pedanova": "#dd8452"}
METHOD_NAMES = {"fanova": "fANOVA", "pedanova": "PED-ANOVA"}


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                  key=lambda t: t.number)


def value_at(trial: FrozenTrial, epoch: int | None) -> float | None:
    """Validation accuracy at ``epoch``; the trial's value when there is no common epoch."""
    if epoch is not None and epoch in trial.intermediate_values:
        return float(trial.intermediate_values[epoch])
    return float(trial.value) if trial.value is not None else None


def stopped(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get("epochs_run", max(trial.intermediate_values, default=0)))


def state_label(trial: FrozenTrial) -> str:
    if trial.state == TrialState.COMPLETE:
        return "complete"
    return f"pruned at epoch {stopped(trial)}"


def axis(trials: Sequence[FrozenTrial], name: str
         ) -> tuple[list[float], list[float], list[str]]:
    """Plot coordinates of ``name`` per trial, and tick positions with their labels:
    log10 for log-scaled ranges, choice index for categorical ones."""
    dist = next((t.distributions[name] for t in trials if name in t.distributions), None)
    raw = [t.params.get(name) for t in trials]
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        return ([float(choices.index(v)) for v in raw], [float(i) for i in range(len(choices))],
                [str(c) for c in choices])
    if dist is not None and getattr(dist, "log", False):
        lo, hi = math.floor(math.log10(dist.low)), math.ceil(math.log10(dist.high))
        ticks = [float(v) for v in range(lo, hi + 1)]
        return [math.log10(v) for v in raw], ticks, [f"{10.0 ** v:g}" for v in ticks]
    values = [float(v) for v in raw]
    lo, hi = (dist.low, dist.high) if dist is not None else (min(values), max(values))
    ticks = [lo + (hi - lo) * i / 4 for i in range(5)]
    return values, ticks, [f"{v:.3g}" for v in ticks]


def _target(epoch: int | None) -> str:
    return f"val accuracy at epoch {epoch}" if epoch is not None else "val accuracy"


# --- parallel coordinates ------------------------------------------------------------------

def parcoords_plotly(trials: Sequence[FrozenTrial], epoch: int | None) -> Any:
    """One line per counted trial; the first axis is the epoch it stopped at (its state)."""
    import plotly.graph_objects as go

    shown = counted(trials)
    epochs = sorted({stopped(t) for t in shown})
    dims = [{"label": "stopped at epoch", "values": [stopped(t) for t in shown],
             "tickvals": epochs, "ticktext": [str(e) for e in epochs]}]
    for name in HYPERPARAMETERS:
        values, ticks, labels = axis(shown, name)
        dims.append({"label": name, "values": values, "tickvals": ticks, "ticktext": labels})
    colour = [value_at(t, epoch) for t in shown]
    dims.append({"label": _target(epoch), "values": colour})
    line = {"color": colour, "colorscale": COLORSCALE, "showscale": True,
            "colorbar": {"title": {"text": _target(epoch)}}}
    fig = go.Figure(go.Parcoords(line=line, dimensions=dims, labelfont={"size": 13}))
    fig.update_layout(title=f"parallel coordinates: all {len(shown)} trials "
                      f"(colour: {_target(epoch)})")
    return fig


def parcoords_png(trials: Sequence[FrozenTrial], epoch: int | None) -> Any:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    shown = counted(trials)
    colour = [value_at(t, epoch) or 0.0 for t in shown] or [0.0]
    axes = [axis(shown, name) for name in HYPERPARAMETERS]
    target_ticks = [min(colour) + (max(colour) - min(colour)) * i / 4 for i in range(5)]
    axes.append((colour, target_ticks, [f"{v:.2f}" for v in target_ticks]))
    labels = [*HYPERPARAMETERS, _target(epoch)]
    scaled = []
    for values, ticks, _ in axes:
        lo, hi = min([*values, *ticks]), max([*values, *ticks])
        span = (hi - lo) or 1.0
        scaled.append(([(v - lo) / span for v in values], [(v - lo) / span for v in ticks]))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    cmap = plt.get_cmap("viridis")
    lo, hi = min(colour), max(colour)
    for i, t in enumerate(shown):
        ys = [s[0][i] for s in scaled]
        shade = cmap((colour[i] - lo) / ((hi - lo) or 1.0))
        complete = t.state == TrialState.COMPLETE
        ax.plot(range(len(labels)), ys, color=shade, linewidth=2.2 if complete else 1.1,
                linestyle="-" if complete else "--", alpha=0.95 if complete else 0.7,
                zorder=3 if complete else 2)
    for x, ((_, ticks), (_, _, names)) in enumerate(zip(scaled, axes, strict=True)):
        ax.axvline(x, color="#888888", linewidth=0.8, zorder=1)
        for y, text in zip(ticks, names, strict=True):
            ax.text(x + 0.03, y, text, fontsize=8, va="center", color="#333333")
    ax.set_xticks(range(len(labels)), labels, fontsize=10)
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(labels) - 0.6)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    n_complete = sum(t.state == TrialState.COMPLETE for t in shown)
    legend = [Line2D([], [], color="black", linewidth=2.2, label=f"complete ({n_complete})"),
              Line2D([], [], color="black", linewidth=1.1, linestyle="--",
                     label=f"pruned ({len(shown) - n_complete})")]
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2,
              frameon=False, fontsize=9)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(mappable, ax=ax, label=_target(epoch), fraction=0.03, pad=0.02)
    ax.set_title(f"Parallel coordinates: all {len(shown)} trials, colour = {_target(epoch)}")
    fig.tight_layout()
    return fig


# --- slices at the common epoch ------------------------------------------------------------

def _jitter(trial: FrozenTrial) -> float:
    """Spread categorical points a little, deterministically (no RNG: identical PNGs)."""
    return ((trial.number % 5) - 2) * 0.07


def slices_plotly(trials: Sequence[FrozenTrial], epoch: int | None) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shown = counted(trials)
    fig = make_subplots(rows=1, cols=len(HYPERPARAMETERS), shared_yaxes=True,
                        subplot_titles=list(HYPERPARAMETERS), horizontal_spacing=0.03)
    groups = sorted({state_label(t) for t in shown}, key=lambda s: (s != "complete", s))
    for col, name in enumerate(HYPERPARAMETERS, start=1):
        values, ticks, labels = axis(shown, name)
        categorical = isinstance(shown[0].distributions.get(name), CategoricalDistribution)
        for gi, group in enumerate(groups):
            idx = [i for i, t in enumerate(shown) if state_label(t) == group]
            xs = [values[i] + (_jitter(shown[i]) if categorical else 0.0) for i in idx]
            fig.add_trace(go.Scatter(
                x=xs, y=[value_at(shown[i], epoch) for i in idx], mode="markers",
                name=group, legendgroup=group, showlegend=col == 1,
                marker={"size": 9, "color": _group_colour(gi),
                        "symbol": "circle" if group == "complete" else "circle-open",
                        "line": {"width": 2}},
                text=[f"trial {shown[i].number}" for i in idx]), row=1, col=col)
        fig.update_xaxes(tickvals=ticks, ticktext=labels, row=1, col=col)
    fig.update_yaxes(title_text=_target(epoch), row=1, col=1)
    fig.update_layout(title=f"slices: all {len(shown)} trials at "
                      f"{_target(epoch).replace('val accuracy at ', '')}")
    return fig


def _group_colour(index: int) -> str:
    return ("#1f4e79", "#dd8452", "#55a868", "#c44e52", "#8172b3")[index % 5]


def slices_png(trials: Sequence[FrozenTrial], epoch: int | None) -> Any:
    import matplotlib.pyplot as plt

    shown = counted(trials)
    fig, axes = plt.subplots(1, len(HYPERPARAMETERS), figsize=(12, 3.4), sharey=True)
    groups = sorted({state_label(t) for t in shown}, key=lambda s: (s != "complete", s))
    for ax, name in zip(axes, HYPERPARAMETERS, strict=True):
        values, ticks, labels = axis(shown, name)
        categorical = isinstance(shown[0].distributions.get(name), CategoricalDistribution)
        for gi, group in enumerate(groups):
            idx = [i for i, t in enumerate(shown) if state_label(t) == group]
            xs = [values[i] + (_jitter(shown[i]) if categorical else 0.0) for i in idx]
            ys = [value_at(shown[i], epoch) for i in idx]
            filled = group == "complete"
            ax.scatter(xs, ys, s=36, label=group, edgecolors=_group_colour(gi),
                       facecolors=_group_colour(gi) if filled else "none", linewidths=1.5)
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(_target(epoch))
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"Slices: all {len(shown)} trials, {_target(epoch)}", fontsize=11)
    fig.tight_layout()
    return fig


# --- importance with intervals -------------------------------------------------------------

def _bars(importance: Mapping[str, Any]) -> tuple[list[str], dict[str, dict[str, Any]], str]:
    """Hyperparameters (smallest fANOVA median first: matplotlib and plotly draw bottom up),
    each method's shares, and a subtitle naming the view."""
    details = importance.get("details", {})
    view = details.get(importance.get("headline", COMMON), {})
    methods = {m: view[m] for m in METHOD_NAMES if m in view}
    names = sorted((n for n in HYPERPARAMETERS if n in methods.get("fanova", {})),
                   key=lambda n: (methods["fanova"][n]["median"], n))
    where = (f"all {view.get('trials')} trials at epoch {view.get('epoch')}"
             if importance.get("headline", COMMON) == COMMON
             else f"{view.get('trials')} complete trials")
    return names, methods, f"{where}, {details.get('resamples')} resamples"


def importance_plotly(importance: Mapping[str, Any]) -> Any:
    import plotly.graph_objects as go

    names, methods, where = _bars(importance)
    fig = go.Figure()
    for method, shares in methods.items():
        med = [shares[n]["median"] for n in names]
        fig.add_trace(go.Bar(
            y=names, x=med, orientation="h", name=METHOD_NAMES[method],
            marker_color=METHOD_COLOURS[method],
            error_x={"type": "data", "symmetric": False,
                     "array": [shares[n]["high"] - m for n, m in zip(names, med, strict=True)],
                     "arrayminus": [m - shares[n]["low"] for n, m in
                                    zip(names, med, strict=True)]},
            text=[f"first in {shares[n]['first_rate']:.0%}" for n in names],
            hovertemplate="%{y}: %{x:.0%} (%{text})<extra></extra>"))
    fig.update_layout(barmode="group", title=f"importance, median and 95% interval ({where})",
                      xaxis={"title": "share of importance", "tickformat": ".0%"})
    return fig


def importance_png(importance: Mapping[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    names, methods, where = _bars(importance)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    height = 0.8 / max(1, len(methods))
    for k, (method, shares) in enumerate(methods.items()):
        ys = [i - (k - (len(methods) - 1) / 2) * height for i in range(len(names))]  # fANOVA on top
        med = [shares[n]["median"] for n in names]
        err = [[m - shares[n]["low"] for n, m in zip(names, med, strict=True)],
               [shares[n]["high"] - m for n, m in zip(names, med, strict=True)]]
        ax.barh(ys, med, height=height, xerr=err, capsize=3, color=METHOD_COLOURS[method],
                label=METHOD_NAMES[method], error_kw={"elinewidth": 1, "ecolor": "#333333"})
        for y, n in zip(ys, names, strict=True):
            ax.text(shares[n]["high"] + 0.01, y, f"{shares[n]['median']:.0%} "
                    f"(first {shares[n]['first_rate']:.0%})", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=10)
    ax.set_xlim(0, 1.22)  # room for the labels right of a 100% interval
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of importance (median, bars: 95% interval)")
    ax.set_title(f"Hyperparameter importance ({where})", fontsize=11)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return fig
