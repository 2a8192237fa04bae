"""Robust selection: re-train the tuning's top-k configurations with several seeds, choose by
the mean validation accuracy.

With 45 validation images one image is 2.2 points, and a configuration's single run moves
by more than that from seed to seed. Picking the study's single best run rewards luck;
the mean over seeds does not. Seed offset 0 is the trial's own run (a trial trains with
``train.seed``), so it is reused, not repeated: k configurations and s seeds cost
k * (s - 1) trainings.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from xray_hpo.config import HParams
from xray_hpo.tuning.search_space import hparams_from_values

# (hparams, seed) -> best-epoch validation accuracy
RunFn = Callable[[HParams, int], float]
# every (hparams, seed) -> their accuracies, in the same order
RunManyFn = Callable[[Sequence[tuple[HParams, int]]], Iterable[float]]
METHOD = "mean best-epoch val accuracy over seeds"


@dataclass(frozen=True)
class Candidate:
    trial: int
    tune_rank: int  # 1 = the study's best single run
    hparams: HParams
    tune_value: float  # the trial's own run, at seed train.seed


@dataclass(frozen=True)
class CandidateResult:
    candidate: Candidate
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        """Sample standard deviation (0 with one seed)."""
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.candidate.trial,
            "tune_rank": self.candidate.tune_rank,
            "hparams": self.candidate.hparams.as_dict(),
            "tune_val_accuracy": round(self.candidate.tune_value, 6),
            "seeds": list(self.seeds),
            "val_accuracies": [round(a, 6) for a in self.accuracies],
            "val_accuracy_mean": round(self.mean, 6),
            "val_accuracy_std": round(self.std, 6),
        }


@dataclass(frozen=True)
class Selection:
    results: tuple[CandidateResult, ...]  # in tune-rank order
    chosen: CandidateResult
    top_k: int
    n_seeds: int

    def metrics(self) -> dict[str, Any]:
        best_single = self.results[0]
        return {  # the choice first: `dvc exp show` lists the keys in this order
            "chosen_trial": self.chosen.candidate.trial,
            "chosen_val_accuracy_mean": round(self.chosen.mean, 6),
            "chosen_val_accuracy_std": round(self.chosen.std, 6),
            "changed_by_reseeding": self.chosen is not best_single,
            "tune_best_trial": best_single.candidate.trial,
            "method": METHOD,
            "top_k": self.top_k,
            "n_seeds": self.n_seeds,
            "candidates": [r.as_dict() for r in self.results],
        }

    def best_params_entry(self) -> dict[str, Any]:
        """The ``selection`` block of best_params.yaml."""
        return {
            "method": METHOD,
            "seeds": list(self.chosen.seeds),
            "val_accuracy_mean": round(self.chosen.mean, 6),
            "val_accuracy_std": round(self.chosen.std, 6),
            "top_k": self.top_k,
            "tune_best_trial": self.results[0].candidate.trial,
            "tune_best_val_accuracy": round(self.results[0].candidate.tune_value, 6),
        }


def top_candidates(trials: Sequence[FrozenTrial], k: int) -> list[Candidate]:
    """The k best complete trials (ties to the earlier trial), one per distinct configuration."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    ranked = sorted(complete, key=lambda t: (-float(t.value or 0.0), t.number))
    chosen: list[Candidate] = []
    seen: set[HParams] = set()
    for trial in ranked:
        hparams = hparams_from_values(trial.params)
        if hparams in seen:
            continue  # TPE may propose a point twice; re-running it twice adds nothing
        seen.add(hparams)
        chosen.append(Candidate(trial.number, len(chosen) + 1, hparams, float(trial.value or 0.0)))
        if len(chosen) == k:
            break
    return chosen


def choose(results: Sequence[CandidateResult]) -> CandidateResult:
    """Highest mean; ties go to the steadier one (lower std), then to the better tune rank."""
    if not results:
        raise ValueError("robust selection: no candidate to choose from")
    return min(results, key=lambda r: (-round(r.mean, 9), round(r.std, 9), r.candidate.tune_rank))


def robust_select(candidates: Sequence[Candidate], n_seeds: int, base_seed: int,
                  run: RunFn | None = None, *, top_k: int | None = None,
                  on_run: Callable[[Candidate, int, float], None] | None = None,
                  run_many: RunManyFn | None = None) -> Selection:
    """Seeds ``base_seed + s`` for s in 0..n_seeds-1; seed ``base_seed`` reuses the trial.

    The re-runs are independent and seeded: ``run_many`` may train them all at once (a
    process pool) and yield the accuracies in the order given; ``run`` trains one.
    """
    seeds = tuple(base_seed + s for s in range(n_seeds))
    jobs = [(candidate.hparams, seed) for candidate in candidates for seed in seeds[1:]]
    if run_many is not None:
        accuracies_in_order = iter(run_many(jobs))
    elif run is not None:
        accuracies_in_order = (run(hparams, seed) for hparams, seed in jobs)
    else:
        raise ValueError("robust selection: give run or run_many")
    results = []
    for candidate in candidates:
        accuracies = [candidate.tune_value]
        for seed in seeds[1:]:
            accuracy = float(next(accuracies_in_order))
            accuracies.append(accuracy)
            if on_run is not None:
                on_run(candidate, seed, accuracy)
        results.append(CandidateResult(candidate, seeds, tuple(accuracies)))
    chosen = choose(results)
    return Selection(tuple(results), chosen, top_k if top_k is not None else len(candidates),
                     n_seeds)
