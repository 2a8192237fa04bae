"""Which hyperparameters mattered, with uncertainty: two evaluators, two views, resampled.

The default successive-halving pruner completes about a quarter of the trials, so an
importance over complete trials rests on a handful of points. Every trial reports its
validation accuracy epoch by epoch, though, so all counted trials (complete and pruned)
share a value at the *common epoch*: the last epoch every one of them reached (the first
rung, for successive halving). Two views are assessed:

- ``common_epoch``: every counted trial, valued at the common epoch (what the pruner judged);
- ``complete_best_epoch``: complete trials only, valued at their best epoch (the objective).

For each view, fANOVA (a seeded random forest) and PED-ANOVA (Parzen estimators of the best
trials against all) run on ``N_RESAMPLES`` bootstrap resamples of the trials, each with a
different forest seed. Per hyperparameter: the median share, a percentile interval, and how
often it ranks first. A winner is declared only when fANOVA's leader is first in at least
``WINNER_RATE`` of the resamples and PED-ANOVA's leader is the same hyperparameter.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from xray_hpo.config import HYPERPARAMETERS
from xray_hpo.tuning.importance import IMPORTANCE_SEED

# Settings of the assessment, not of the experiment (params.yaml stays the experiment's):
N_RESAMPLES = 20  # bootstrap resamples per view and evaluator; ~2 s on a 20-trial study
N_TREES = 16  # fANOVA forest size per resample (Optuna's default 64 is 8x slower)
INTERVAL = (2.5, 97.5)  # percentiles of the resampled shares: a 95% interval
WINNER_RATE = 0.8  # fANOVA's leader must rank first in this share of the resamples
# PED-ANOVA contrasts the top quarter with all trials: its authors advise >= 5 trials above
# the cut, which the default 20-trial study gives at 0.25 (and not at Optuna's 0.1).
PED_TARGET_QUANTILE = 0.25
METHODS = ("fanova", "pedanova")
COMMON, COMPLETE = "common_epoch", "complete_best_epoch"


@dataclass(frozen=True)
class Share:
    """One hyperparameter's importance under one evaluator, over the resamples."""

    median: float
    low: float
    high: float
    first_rate: float  # share of resamples in which it ranked first


@dataclass(frozen=True)
class MethodResult:
    method: str
    shares: dict[str, Share]  # every hyperparameter, largest median first

    @property
    def leader(self) -> str:
        """The hyperparameter ranked first most often (ties: larger median, then name)."""
        return min(self.shares, key=lambda n: (-self.shares[n].first_rate,
                                               -self.shares[n].median, n))


@dataclass(frozen=True)
class ViewResult:
    view: str
    n_trials: int
    n_complete: int
    epoch: int | None  # the common epoch; None for the complete-trials view
    methods: dict[str, MethodResult]

    @property
    def agree(self) -> bool:
        return len({m.leader for m in self.methods.values()}) == 1

    @property
    def winner(self) -> str | None:
        """fANOVA's leader when stable (>= WINNER_RATE first) and PED-ANOVA agrees."""
        fanova = self.methods["fanova"]
        if fanova.shares[fanova.leader].first_rate >= WINNER_RATE and self.agree:
            return fanova.leader
        return None


@dataclass(frozen=True)
class Assessment:
    views: dict[str, ViewResult]
    headline: str  # the view the report's sentence uses: the one with more trials
    n_resamples: int = N_RESAMPLES
    n_trees: int = N_TREES
    seed: int = IMPORTANCE_SEED

    @property
    def main(self) -> ViewResult:
        return self.views[self.headline]

    def shares(self) -> dict[str, float]:
        """The headline fANOVA medians, largest first (the ClearML task's bars)."""
        return {n: s.median for n, s in self.main.methods["fanova"].shares.items()}

    def metrics(self) -> dict[str, Any]:
        """``metrics/importance.json``: flat shares first (``dvc exp show`` compares them,
        one column per method, view and hyperparameter), then the evidence behind them."""
        flat: dict[str, Any] = {}
        for view in self.views.values():
            for method, result in view.methods.items():
                flat[f"{method}_{view.view}"] = {
                    n: round(result.shares[n].median, 6) for n in HYPERPARAMETERS
                    if n in result.shares}
        flat["headline"] = self.headline
        flat["winner"] = self.main.winner or "none"
        flat["details"] = {
            "resamples": self.n_resamples, "interval_percentiles": list(INTERVAL),
            "fanova_trees": self.n_trees, "seed": self.seed,
            "pedanova_target_quantile": PED_TARGET_QUANTILE, "winner_rate": WINNER_RATE,
            **{v.view: _view_details(v) for v in self.views.values()},
        }
        return flat


def _view_details(view: ViewResult) -> dict[str, Any]:
    out: dict[str, Any] = {"trials": view.n_trials, "complete": view.n_complete,
                           "epoch": view.epoch, "winner": view.winner or "none",
                           "methods_agree": view.agree}
    for method, result in view.methods.items():
        out[method] = {"leader": result.leader, **{
            n: {"median": round(s.median, 6), "low": round(s.low, 6),
                "high": round(s.high, 6), "first_rate": round(s.first_rate, 6)}
            for n, s in result.shares.items()}}
    return out


# --- the two views -------------------------------------------------------------------------

def common_epoch(trials: Sequence[FrozenTrial]) -> int | None:
    """The last epoch at which every counted trial reported a value (None if none did)."""
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if not counted:
        return None
    shared = set.intersection(*({e for e, v in t.intermediate_values.items()
                                 if v is not None and math.isfinite(v)} for t in counted))
    return max(shared) if shared else None


def view_points(trials: Sequence[FrozenTrial], view: str
                ) -> tuple[list[tuple[dict[str, Any], dict[str, Any], float]], int | None]:
    """(params, distributions, value) per trial of ``view``, and its epoch."""
    names = set(HYPERPARAMETERS)
    usable = [t for t in trials if names <= set(t.params)]
    if view == COMPLETE:
        return ([(t.params, t.distributions, float(t.value)) for t in usable
                 if t.state == TrialState.COMPLETE and t.value is not None], None)
    epoch = common_epoch(usable)
    if epoch is None:
        return [], None
    return ([(t.params, t.distributions, float(t.intermediate_values[epoch])) for t in usable
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED)], epoch)


# --- resampled evaluators ------------------------------------------------------------------

def _evaluator(method: str, seed: int, n_trees: int) -> Any:
    if method == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
    return optuna.importance.PedAnovaImportanceEvaluator(target_quantile=PED_TARGET_QUANTILE)


def _shares_once(points: Sequence[tuple[dict[str, Any], dict[str, Any], float]],
                 method: str, seed: int, n_trees: int) -> dict[str, float] | None:
    """Normalized importances of one sample of points; None when there is nothing to
    attribute (fewer than 2 points, one value only, or an evaluator that finds nothing)."""
    if len(points) < 2 or len({v for _, _, v in points}) < 2:
        return None
    study = optuna.create_study(direction="maximize",
                                storage=optuna.storages.InMemoryStorage())
    study.add_trials([create_trial(state=TrialState.COMPLETE, value=v, params=p,
                                   distributions=d) for p, d, v in points])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "too few trials / equal importances": handled below
        raw = optuna.importance.get_param_importances(
            study, evaluator=_evaluator(method, seed, n_trees), params=list(HYPERPARAMETERS),
            normalize=False)
    values = {n: max(0.0, float(raw.get(n, 0.0))) for n in HYPERPARAMETERS}
    values = {n: (v if math.isfinite(v) else 0.0) for n, v in values.items()}
    total = sum(values.values())
    return {n: v / total for n, v in values.items()} if total > 0 else None


def resampled(points: Sequence[tuple[dict[str, Any], dict[str, Any], float]], method: str,
              n_resamples: int = N_RESAMPLES, seed: int = IMPORTANCE_SEED,
              n_trees: int = N_TREES) -> MethodResult:
    """``method``'s shares over bootstrap resamples of ``points`` (resample b uses forest
    seed ``seed + b``). A resample with nothing to attribute counts as uniform shares and
    no hyperparameter first: it is evidence of nothing."""
    rng = np.random.default_rng(seed)
    uniform = 1.0 / len(HYPERPARAMETERS)
    samples: list[dict[str, float]] = []
    firsts: list[str | None] = []
    for b in range(n_resamples):
        picks = rng.integers(0, len(points), len(points)) if points else []
        shares = _shares_once([points[i] for i in picks], method, seed + b, n_trees)
        samples.append(shares or dict.fromkeys(HYPERPARAMETERS, uniform))
        firsts.append(min(shares, key=lambda n: (-shares[n], n)) if shares else None)
    table = {}
    for name in HYPERPARAMETERS:
        values = np.array([s[name] for s in samples])
        low, high = np.percentile(values, INTERVAL)
        table[name] = Share(float(np.median(values)), float(low), float(high),
                            firsts.count(name) / max(1, n_resamples))
    ordered = dict(sorted(table.items(), key=lambda kv: (-kv[1].median, kv[0])))
    return MethodResult(method, ordered)


def assess_view(trials: Sequence[FrozenTrial], view: str, n_resamples: int = N_RESAMPLES,
                seed: int = IMPORTANCE_SEED, n_trees: int = N_TREES) -> ViewResult:
    points, epoch = view_points(trials, view)
    methods = {m: resampled(points, m, n_resamples, seed, n_trees) for m in METHODS}
    n_complete = sum(t.state == TrialState.COMPLETE and t.value is not None for t in trials)
    return ViewResult(view, len(points), n_complete, epoch, methods)


def assess(trials: Iterable[FrozenTrial] | optuna.Study, n_resamples: int = N_RESAMPLES,
           seed: int = IMPORTANCE_SEED, n_trees: int = N_TREES) -> Assessment:
    """Both views of ``trials`` (or of a study's trials: pass the counted ones to leave
    replaced or surplus trials out), and which one the report's sentence uses."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per resample's study
    listed = list(trials.trials if isinstance(trials, optuna.Study) else trials)
    views = {v: assess_view(listed, v, n_resamples, seed, n_trees) for v in (COMMON, COMPLETE)}
    # More trials, more evidence; with no pruning both views hold every trial, and the
    # objective itself (the best epoch) is then the better-founded value.
    headline = COMMON if views[COMMON].n_trials > views[COMPLETE].n_trials else COMPLETE
    return Assessment(views, headline, n_resamples, n_trees, seed)


def study_assessment(study: optuna.Study, n_trials: int, n_resamples: int = N_RESAMPLES,
                     n_trees: int = N_TREES) -> Assessment:
    """The assessment of the first ``n_trials`` counted trials of a stored study."""
    from xray_hpo.tuning.study import budget_trials

    return assess(budget_trials(study, n_trials), n_resamples=n_resamples, n_trees=n_trees)


def shares_of(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline fANOVA medians from a ``metrics/importance.json`` dict, largest first."""
    flat = metrics.get(f"fanova_{metrics.get('headline', COMMON)}", {})
    return dict(sorted(((k, float(v)) for k, v in flat.items()), key=lambda kv: (-kv[1], kv[0])))
