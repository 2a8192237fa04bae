"""The report stage on the real pipeline, and the interactive figures in a real browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest

from conftest import REPO
from xray_hpo.config import HYPERPARAMETERS, load_config
from xray_hpo.reporting.figures import write_figures
from xray_hpo.tuning.assessment import assess
from xray_hpo.tuning.search_space import suggest_hparams
from xray_hpo.tuning.trials import curves_csv, trials_csv, trials_from_csv, with_curves

SPACE = load_config(REPO / "params.yaml").tune.search_space
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
                  "--virtual-time-budget=15000")
# Recorded into the DOM before any other script runs, so --dump-dom shows every error.
ERROR_PROBE = ("<script>window.addEventListener('error',function(e){var h=document."
               "documentElement;h.setAttribute('data-js-errors',(h.getAttribute("
               "'data-js-errors')||'')+e.message+';')});</script>")


def _study(n_trials: int = 12) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: 0.5 + 0.1 * math.sin(suggest_hparams(t, SPACE).lr * 50),
                   n_trials=n_trials)
    return study


def test_trials_round_trip_through_the_tune_csv() -> None:
    study = _study()
    back = trials_from_csv(trials_csv(study.trials), SPACE)
    assert [t.number for t in back] == [t.number for t in study.trials]
    assert [t.params for t in back] == [t.params for t in study.trials]
    assert [t.value for t in back] == [t.value for t in study.trials]


def _pruned_study(n_trials: int = 15) -> optuna.Study:
    """Trials reporting 6 epochs each, most stopped by successive halving at epoch 2 or 4."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3))

    def objective(trial: optuna.Trial) -> float:
        hp = suggest_hparams(trial, SPACE)
        for epoch in range(1, 7):
            trial.report(0.5 + 0.05 * epoch * math.sin(hp.lr * 50), epoch)
            if epoch < 6 and trial.should_prune():
                raise optuna.TrialPruned()
        return 0.5 + 0.3 * math.sin(hp.lr * 50)

    study.optimize(objective, n_trials=n_trials)
    return study


def test_trials_and_their_curves_round_trip_through_the_tune_csvs() -> None:
    study = _pruned_study()
    back = with_curves(trials_from_csv(trials_csv(study.trials), SPACE),
                       curves_csv(study.trials))
    assert [t.intermediate_values for t in back] == [t.intermediate_values
                                                     for t in study.trials]
    assert [t.state for t in back] == [t.state for t in study.trials]


def test_the_report_figures_show_every_trial_and_the_intervals() -> None:
    """Parallel coordinates and slices hold the pruned trials too (by state), valued at
    the common epoch; the importance bars carry both evaluators with their intervals."""
    from xray_hpo.reporting.figures import _plotly_figures
    from xray_hpo.tuning.importance import study_of

    study = _pruned_study()
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned and len(pruned) < len(study.trials)
    importance = assess(study, n_resamples=4, n_trees=4).metrics()
    figures = _plotly_figures(study_of(study.trials), importance, 2)
    parcoords = figures["parallel_coordinates"].data[0]
    assert parcoords.type == "parcoords"
    assert [d.label for d in parcoords.dimensions] == [
        "stopped at epoch", *HYPERPARAMETERS, "val accuracy at epoch 2"]
    assert len(parcoords.dimensions[0]["values"]) == len(study.trials)
    assert sorted(set(parcoords.dimensions[0]["values"])) == sorted(
        {len(t.intermediate_values) for t in study.trials})
    assert list(parcoords.line.color) == [t.intermediate_values[2] for t in study.trials]
    groups = {trace.name for trace in figures["slice"].data}
    assert "complete" in groups and any(g.startswith("pruned at epoch") for g in groups)
    assert sum(len(tr.x) for tr in figures["slice"].data) == len(study.trials) * 5
    bars = figures["importance"].data
    assert [b.name for b in bars] == ["fANOVA", "PED-ANOVA"]
    common = importance["details"]["common_epoch"]["fanova"]
    top = bars[0].y[-1]  # drawn bottom up: the largest median last
    assert bars[0].x[-1] == common[top]["median"]
    assert bars[0].error_x.array[-1] == pytest.approx(common[top]["high"] - common[top]["median"])


def render(html: Path) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console lines) from headless Chromium with a fresh profile."""
    assert CHROMIUM is not None
    probe = html.with_name(f"probe-{html.name}")
    probe.write_text(html.read_text().replace("<head>", "<head>" + ERROR_PROBE, 1))
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def rendered_problems(dom: str, console: list[str], div_ids: list[str]) -> list[str]:
    problems = [f"console: {line}" for line in console
                if re.search(r"error|uncaught|failed", line, re.IGNORECASE)]
    errors = re.search(r'data-js-errors="([^"]*)"', dom)
    if errors:
        problems.append(f"script errors: {errors.group(1)}")
    for div_id in div_ids:
        tag = re.search(rf'<div id="{div_id}"[^>]*>', dom)
        if not tag or "js-plotly-plot" not in tag.group(0):
            problems.append(f"{div_id}: not rendered by plotly")
    if dom.count('class="main-svg"') < len(div_ids):
        problems.append("fewer plot SVGs than figures")
    return problems


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                    "(apt-get install -y chromium): cannot render the HTML figures")
def test_figures_html_renders_in_headless_chromium_without_script_errors(
        tmp_path: Path) -> None:
    trials = _pruned_study().trials
    importance = assess(trials, n_resamples=4, n_trees=4).metrics()
    html = tmp_path / "figures.html"
    figures = write_figures(trials, importance, tmp_path / "figures", html)
    page = html.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly.js embedded, nothing fetched
    div_ids = re.findall(r'<div id="(fig-[a-z-]+)"', page)
    assert len(div_ids) == len(figures) == 4
    dom, console = render(html)
    assert rendered_problems(dom, console, div_ids) == []

    # The check can fail: the same page without a usable plotly.js (as when it is loaded
    # from a CDN on a machine offline) renders nothing, and is reported.
    broken = tmp_path / "no-plotlyjs.html"
    broken.write_text(page.replace("<script>/**\n* plotly.js",
                                   '<script type="text/plain">/**\n* plotly.js', 1))
    assert broken.read_text() != page
    dom, console = render(broken)
    assert rendered_problems(dom, console, div_ids)


def test_imported_files_are_one_source_group_not_one_per_file() -> None:
    from xray_hpo.reporting.page import IMPORTED, data_sources, describe_sources

    manifest = ("split,class,path,patient_id,sha256,source\n"
                "train,normal,a.png,p1,h1,chest_xray/train/NORMAL/IM-0001-0001.jpeg\n"
                "val,viral,b.png,p2,h2,chest_xray/train/PNEUMONIA/person1_virus_6.jpeg\n")
    sources = data_sources(manifest)
    assert sources == {IMPORTED: 2}
    assert describe_sources(sources).startswith("**Real data**")
    assert data_sources(manifest.replace("chest_xray/train/NORMAL/IM-0001-0001.jpeg",
                                         "synthetic-phantom v1")) == {
        IMPORTED: 1, "synthetic-phantom v1": 1}
