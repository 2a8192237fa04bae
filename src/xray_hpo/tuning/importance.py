"""One fANOVA importance estimate over a study's complete trials, and the in-memory study
copies the figures use.

This single estimate is what the project reported before ``tuning.assessment`` (which
resamples, adds pruned trials and a second evaluator); the benchmark
``bench/bench_importance.py`` keeps it as the baseline. fANOVA fits a random forest to
(hyperparameters -> val accuracy) and splits the variance of its prediction by parameter.
The forest is seeded, so the same trials give the same numbers. Only the trials that count
toward ``tune.n_trials`` are used (a study continued to more trials, or replaced trials,
never leak in), and every hyperparameter appears in the result, summing to 1, even one the
forest never split on (importance 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from xray_hpo.config import HYPERPARAMETERS

IMPORTANCE_SEED = 0  # fANOVA's forest; fixed so `dvc repro -f` gives identical numbers


def study_of(trials: Iterable[FrozenTrial]) -> optuna.Study:
    """An in-memory study holding copies of ``trials`` (for importance and plots).

    A study numbers added trials 0, 1, ...; numbers missing from ``trials`` (failed or
    replaced trials) are filled with empty failed trials, which every analysis and plot
    skips, so each trial keeps its own number.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shadow = optuna.create_study(direction="maximize",
                                 storage=optuna.storages.InMemoryStorage())
    by_number = {t.number: t for t in trials}
    filler = optuna.trial.create_trial(state=TrialState.FAIL)
    shadow.add_trials([by_number.get(n, filler) for n in range(max(by_number, default=-1) + 1)])
    return shadow


def param_importances(trials: Sequence[FrozenTrial], *, seed: int = IMPORTANCE_SEED,
                      names: Sequence[str] = HYPERPARAMETERS) -> dict[str, float]:
    """fANOVA importance of every name in ``names`` (largest first), summing to 1.

    With fewer than two complete trials, or no variation to explain, the importances are
    uniform: nothing was learned, and that is stated as "no parameter stands out".
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                and all(n in t.params for n in names)]
    raw: dict[str, float] = {}
    if len(complete) >= 2 and len({t.value for t in complete}) > 1:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
        raw = optuna.importance.get_param_importances(
            study_of(complete), evaluator=evaluator, params=list(names))
    values = {n: max(0.0, float(raw.get(n, 0.0))) for n in names}
    values = {n: (v if math.isfinite(v) else 0.0) for n, v in values.items()}
    total = sum(values.values())
    if total <= 0:
        values = dict.fromkeys(names, 1.0)
        total = float(len(names))
    normalized = {n: v / total for n, v in values.items()}
    return dict(sorted(normalized.items(), key=lambda kv: (-kv[1], kv[0])))


def importance_csv(importances: Mapping[str, float]) -> str:
    """The DVC bar plot's data: one row per hyperparameter, largest first."""
    lines = ["hyperparameter,importance"]
    lines += [f"{name},{value:.6f}" for name, value in importances.items()]
    return "\n".join(lines) + "\n"
