"""The study's figures for people: Optuna's optimization history, then every trial's
parallel coordinates and slices and the importance bars with intervals
(``reporting.study_figures``).

Each figure is written twice: a PNG (matplotlib; kaleido would need a browser download)
for the Markdown report, and an interactive plotly figure in one
self-contained HTML page (plotly.js embedded once, no CDN: it opens offline).

The figures are rebuilt from ``plots/tune_trials.csv``, ``plots/tune_curves.csv`` and
``metrics/importance.json`` (tune outputs), not from the Optuna storage, so the report
stage depends only on files DVC tracks. Output is deterministic: fixed div ids, no
timestamps, no PNG software tag.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from xray_hpo.atomic import atomic_path, atomic_write_text

TARGET = "val accuracy"


@dataclass(frozen=True)
class Figure:
    name: str  # file stem
    title: str
    caption: str


# --- figures -------------------------------------------------------------------------------

def figure_list(importance: Mapping[str, Any], epoch: int | None) -> list[Figure]:
    """The study's figures, captions naming the data they show (``importance``: the
    ``metrics/importance.json`` dict; ``epoch``: the common epoch of the trials)."""
    at = f"at epoch {epoch} (the last epoch every trial reached)" if epoch else "(final value)"
    return [
        Figure("optimization_history", "Optimization history",
               "Validation accuracy of each completed trial and the best so far."),
        Figure("parallel_coordinates", "Parallel coordinates, every trial",
               "One line per counted trial across every hyperparameter: solid lines "
               f"completed, dashed ones were pruned; colour is the validation accuracy {at} "
               "(yellow is better). The interactive version's first axis is the epoch each "
               "trial stopped at."),
        Figure("slice", "Slices, every trial at the common epoch",
               f"Validation accuracy {at} against each hyperparameter, one dot per trial "
               "(filled: completed; hollow: pruned, by the epoch it stopped at)."),
        Figure("importance", "Hyperparameter importance with intervals",
               "Median share of each hyperparameter over the bootstrap resamples, for fANOVA "
               "and PED-ANOVA, with 95% intervals and how often it ranked first "
               f"({_view_name(importance)})."),
    ]


def _view_name(importance: Mapping[str, Any]) -> str:
    from xray_hpo.tuning.assessment import COMMON

    return ("all counted trials at the common epoch"
            if importance.get("headline", COMMON) == COMMON
            else "complete trials at their best epoch")


def _plotly_figures(study: Any, importance: Mapping[str, Any],
                    epoch: int | None) -> dict[str, Any]:
    from optuna import visualization as vis

    from xray_hpo.reporting import study_figures as sf

    return {
        "optimization_history": vis.plot_optimization_history(study, target_name=TARGET),
        "parallel_coordinates": sf.parcoords_plotly(study.trials, epoch),
        "slice": sf.slices_plotly(study.trials, epoch),
        "importance": sf.importance_plotly(importance),
    }


def _matplotlib_figures(study: Any, importance: Mapping[str, Any],
                        epoch: int | None) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as mvis

    from xray_hpo.reporting import study_figures as sf

    ax = mvis.plot_optimization_history(study, target_name=TARGET)
    return {
        "optimization_history": ax.get_figure(),
        "parallel_coordinates": sf.parcoords_png(study.trials, epoch),
        "slice": sf.slices_png(study.trials, epoch),
        "importance": sf.importance_png(importance),
    }


def write_figures(trials: Sequence[FrozenTrial], importance: Mapping[str, Any],
                  png_dir: Path, html_path: Path, extra_html: str = "") -> list[Figure]:
    """PNGs into ``png_dir`` and every interactive figure into one HTML page (followed by
    ``extra_html``: sections other modules render). ``trials`` carry their per-epoch
    values (``tuning.trials.with_curves``); ``importance`` is ``metrics/importance.json``."""
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    from xray_hpo.tuning.assessment import common_epoch
    from xray_hpo.tuning.importance import study_of

    study = study_of(trials)  # trial numbers kept, so the history's x axis is the study's
    epoch = common_epoch(trials)
    figures = figure_list(importance, epoch)
    png_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        for name, fig in _matplotlib_figures(study, importance, epoch).items():
            with atomic_path(png_dir / f"{name}.png") as tmp:
                # No "Software" tag: the PNG bytes depend only on the data.
                fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight",
                            metadata={"Software": None})
            plt.close(fig)
        plotly_figs = _plotly_figures(study, importance, epoch)
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
