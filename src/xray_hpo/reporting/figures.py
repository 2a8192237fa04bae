"""The study's figures for people: Optuna's optimization history, parallel coordinates and
slices of the most important hyperparameters, plus the importance bars.

Each figure is written twice: a PNG (Optuna's matplotlib backend; kaleido would need a
browser download) for the Markdown report, and an interactive plotly figure in one
self-contained HTML page (plotly.js embedded once, no CDN: it opens offline).

The figures are rebuilt from ``plots/tune_trials.csv`` (a tune output), not from the
Optuna storage, so the report stage depends only on files DVC tracks. Output is
deterministic: fixed div ids, no timestamps, no PNG software tag.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from xray_hpo.atomic import atomic_path, atomic_write_text
from xray_hpo.config import ALL_HYPERPARAMETERS

TARGET = "val accuracy"
SLICE_PARAMS = 3  # slices of the k most important hyperparameters


@dataclass(frozen=True)
class Figure:
    name: str  # file stem
    title: str
    caption: str


# --- figures -------------------------------------------------------------------------------

def figure_list(importances: Mapping[str, float]) -> list[Figure]:
    top = top_params(importances)
    return [
        Figure("optimization_history", "Optimization history",
               "Validation accuracy of each completed trial and the best so far."),
        Figure("parallel_coordinates", "Parallel coordinates",
               "One line per completed trial across every hyperparameter, coloured by "
               "validation accuracy (darker is better)."),
        Figure("slice", "Slices of the most important hyperparameters",
               f"Validation accuracy against {', '.join(f'`{p}`' for p in top)}, one dot "
               "per completed trial (colour: trial number)."),
        Figure("importance", "Hyperparameter importance (fANOVA)",
               "Share of the variance in validation accuracy that each hyperparameter "
               "explains."),
    ]


def top_params(importances: Mapping[str, float], k: int = SLICE_PARAMS) -> list[str]:
    ranked = sorted(importances.items(), key=lambda kv: (-kv[1], kv[0]))
    return [name for name, _ in ranked[:k]]


def _plotly_figures(study: Any, importances: Mapping[str, float]) -> dict[str, Any]:
    from optuna import visualization as vis
    from optuna.trial import TrialState

    from xray_hpo.tracking.summary import importance_figure, parallel_coordinates_figure

    names = [n for n in ALL_HYPERPARAMETERS if n in importances]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return {
        "optimization_history": vis.plot_optimization_history(study, target_name=TARGET),
        # The ClearML task's builders: a real parcoords trace (Optuna's draws scatter lines).
        "parallel_coordinates": parallel_coordinates_figure(complete, params=names),
        "slice": vis.plot_slice(study, params=top_params(importances), target_name=TARGET),
        "importance": importance_figure(importances),
    }


def _matplotlib_figures(study: Any, importances: Mapping[str, float]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.visualization import matplotlib as mvis

    names = [n for n in ALL_HYPERPARAMETERS if n in importances]
    figures = {}
    ax = mvis.plot_optimization_history(study, target_name=TARGET)
    figures["optimization_history"] = ax.get_figure()
    ax = mvis.plot_parallel_coordinate(study, params=names, target_name=TARGET)
    figures["parallel_coordinates"] = ax.get_figure()
    axes = mvis.plot_slice(study, params=top_params(importances), target_name=TARGET)
    figures["slice"] = np.atleast_1d(axes).flat[0].get_figure()
    ordered = sorted(importances.items(), key=lambda kv: (kv[1], kv[0]))
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.barh([k for k, _ in ordered], [v for _, v in ordered], color="#4c72b0")
    for y, (_, value) in enumerate(ordered):
        ax.text(value, y, f" {value:.0%}", va="center")
    ax.set_xlim(0, max(1e-9, max(v for _, v in ordered)) * 1.2)
    ax.set_xlabel("importance (share of explained variance)")
    ax.set_title("Hyperparameter importance (fANOVA)")
    fig.tight_layout()
    figures["importance"] = fig
    return figures


def write_figures(trials: Sequence[FrozenTrial], importances: Mapping[str, float],
                  png_dir: Path, html_path: Path, extra_html: str = "") -> list[Figure]:
    """PNGs into ``png_dir`` and every interactive figure into one HTML page (followed by
    ``extra_html``: sections other modules render)."""
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    from xray_hpo.tuning.importance import study_of

    study = study_of(trials)  # trial numbers kept, so the history's x axis is the study's
    figures = figure_list(importances)
    png_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        for name, fig in _matplotlib_figures(study, importances).items():
            with atomic_path(png_dir / f"{name}.png") as tmp:
                # No "Software" tag: the PNG bytes depend only on the data.
                fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                            metadata={"Software": None})
            plt.close(fig)
        plotly_figs = _plotly_figures(study, importances)
    atomic_write_text(html_path, figures_html(figures, plotly_figs, extra_html))
    return figures


def figures_html(figures: Sequence[Figure], plotly_figs: Mapping[str, Any],
                 extra_html: str = "") -> str:
    import plotly.io as pio

    parts = []
    for index, fig in enumerate(figures):
        div = pio.to_html(plotly_figs[fig.name], full_html=False,
                          include_plotlyjs=index == 0,  # embedded once, never a CDN
                          div_id=f"fig-{fig.name.replace('_', '-')}",
                          default_height="520px")
        parts.append(f"<h2>{_escape(fig.title)}</h2>\n<p>{_escape(fig.caption)}</p>\n{div}")
    body = "\n".join([*parts, extra_html] if extra_html else parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<title>xray-hpo: study figures</title>\n"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "</style>\n</head>\n<body>\n<h1>xray-hpo: study figures</h1>\n"
            f"{body}\n</body>\n</html>\n")


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("`", ""))
