"""The tune stage's coordinator: create or resume the study, run workers, watch, summarise.

The coordinator never trains. It holds the ClearML optimizer task, spawns
``tune.n_workers`` worker processes (see ``tune_worker``), reports trials as they
finish and returns once the study holds ``tune.n_trials`` counted trials.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from xray_hpo.atomic import sigterm_as_interrupt
from xray_hpo.config import Config, HParams
from xray_hpo.errors import UserError
from xray_hpo.tuning import storage as stores
from xray_hpo.tuning import study as studies
from xray_hpo.tuning.assessment import Assessment, study_assessment
from xray_hpo.tuning.rounds import ATTR_PARALLEL, REPRODUCIBLE_MODES, feed_rounds, feed_window
from xray_hpo.tuning.search_space import hparams_from_values
from xray_hpo.tuning.worker import LOST_CHECK_S


class TuneError(UserError):
    """The study could not produce a result (every trial failed, or every worker died)."""


@dataclass(frozen=True)
class TuneSummary:
    study_name: str
    best_trial: int
    best_value: float
    best_hparams: HParams
    complete: int
    pruned: int
    failed: int
    worst_complete_value: float
    # The headline importance shares (fANOVA medians over resamples), largest first, and
    # the assessment behind them (both views, both evaluators; tuning.assessment).
    importances: dict[str, float] = field(default_factory=dict)
    assessment: Assessment | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "best_val_accuracy": round(self.best_value, 6),
            "best_trial": self.best_trial,
            "worst_complete_val_accuracy": round(self.worst_complete_value, 6),
            "trials": {"complete": self.complete, "pruned": self.pruned, "failed": self.failed},
        }


def prepare_study(config: Config, storage_spec: str, prepared_dir: Path) -> optuna.Study:
    """Create the study (or load the one these settings already have) before any worker."""
    hashes = {split: studies.file_sha256(prepared_dir / f"{split}.npz")
              for split in ("train", "val")}
    spec = studies.study_spec(config, hashes)
    name = studies.study_name(config.tune.study_prefix, spec)
    study = optuna.create_study(study_name=name, storage=stores.open_storage(storage_spec),
                                direction="maximize", load_if_exists=True)
    if studies.ATTR_SPEC not in study.user_attrs:
        study.set_user_attr(studies.ATTR_SPEC, spec)
    study.set_user_attr(studies.ATTR_TARGET, config.tune.n_trials)
    study.set_user_attr(ATTR_PARALLEL, parallel_mode(config))
    lost = studies.fail_lost_trials(study)  # a previous run killed with -9
    if lost:
        print(f"study {name}: trial(s) {lost} lost their worker; failed, to be replaced",
              file=sys.stderr)
    return study


def worker_count(config: Config) -> int:
    """``tune.n_workers``, with ``auto`` the cores this process may use."""
    value = config.tune.n_workers
    return len(os.sched_getaffinity(0)) if value == "auto" else int(value)


def parallel_mode(config: Config) -> str:
    """``window``, ``rounds`` or ``free``. One worker runs as it always did: its own order
    is a reproducible one, and slots of one worker would only change the sampler's seeds."""
    return config.tune.parallel if worker_count(config) > 1 else "free"


def worker_threads(config: Config) -> int:
    if config.train.num_threads > 0:
        return config.train.num_threads
    return max(1, len(os.sched_getaffinity(0)) // worker_count(config))


def run_study(config: Config, storage_spec: str, prepared_dir: Path, poll_s: float = 0.5,
              after: Callable[[TuneSummary, Any], None] | None = None) -> TuneSummary:
    """The study to its n_trials. ``after(summary, tracker)`` runs while the optimizer task
    is still open (the tune stage's robust selection reports its choice there)."""
    from xray_hpo.tracking import settings as tracking
    from xray_hpo.tracking.trackers import OptimizerTracker

    tracking.resolve_mode()  # a bad $XRAY_HPO_CLEARML is one line before the study is touched
    with sigterm_as_interrupt():  # workers are told to stop, trials marked interrupted
        study = prepare_study(config, storage_spec, prepared_dir)
        target = config.tune.n_trials
        already = len(studies.budget_trials(study, target))
        print(f"study {study.study_name} in {stores.redact(storage_spec)}: "
              f"{already}/{target} trials done", file=sys.stderr)
        mode = parallel_mode(config)
        configuration = {"study": study.study_name, "n_trials": target,
                         "n_workers": worker_count(config), "parallel": mode,
                         **study.user_attrs[studies.ATTR_SPEC]}
        feed = (_feeder(study, target, config, mode) if mode in REPRODUCIBLE_MODES else None)
        previous = study.user_attrs.get(tracking.STUDY_ATTR_OPTIMIZER)
        with OptimizerTracker(study.study_name, configuration,
                              previous_task=previous) as tracker:
            if tracker.id:  # one optimizer task per study: a resumed run continues it
                if tracker.id != previous:
                    study.set_user_attr(tracking.STUDY_ATTR_OPTIMIZER, tracker.id)
                tracking.remember_optimizer(study.study_name, tracker.id, tracker.mode)
            # A study that already holds its n_trials (n_trials lowered, or a rerun after
            # the outputs were deleted) needs no worker: nothing is trained again.
            workers = (_spawn_workers(config, storage_spec, study.study_name, prepared_dir,
                                      tracking.worker_environment(tracker.id))
                       if already < target else [])
            _watch(study, target, workers, tracker, poll_s if feed is None else 0.1, feed)
            started = time.perf_counter()
            assessment = study_assessment(study, target)
            print(f"importance: {len(assessment.views)} views x 2 evaluators x resamples "
                  f"took {time.perf_counter() - started:.1f} s", file=sys.stderr)
            summary = replace(summarize(study, target), importances=assessment.shares(),
                              assessment=assessment)
            tracker.report_progress(studies.budget_trials(study, target),
                                    importances=summary.importances)
            tracker.report_importance(assessment.metrics())
            tracker.report_artifact("summary", {**summary.metrics(),
                                                "importances": summary.importances})
            if after is not None:
                after(summary, tracker)
    return summary


def _feeder(study: optuna.Study, target: int, config: Config,
            mode: str) -> Callable[[], None]:
    """What the watch loop calls each poll in a reproducible mode: replace lost trials
    (checked every few seconds, as workers do), enqueue the slots whose turn has come."""
    last_lost_check = [-math.inf]
    width = worker_count(config)
    feed_slots = feed_window if mode == "window" else feed_rounds

    def feed() -> None:
        if time.monotonic() - last_lost_check[0] >= LOST_CHECK_S:
            studies.fail_lost_trials(study)
            last_lost_check[0] = time.monotonic()
        feed_slots(study, target, width, config.tune.active_space, config.tune.sampler)

    return feed


def _watch(study: optuna.Study, target: int, workers: list[subprocess.Popen[bytes]],
           tracker: Any, poll_s: float, feed: Callable[[], None] | None = None) -> None:
    """Report trials as they are counted until the study holds ``target`` and the local
    workers have exited; on any exit path but success, the workers are stopped."""
    from tqdm import tqdm

    reported: set[int] = set()
    progress = tqdm(total=target, desc="tune", unit="trial", file=sys.stderr)
    try:
        while True:
            if feed is not None:
                feed()
            done = studies.budget_trials(study, target)
            if _report_new(done, reported, tracker, progress):
                # Live views (upstream re-reports them periodically): an interrupted study
                # still shows its table and plot; each replaces the last at iteration 0.
                tracker.report_progress(done)
            alive = [w for w in workers if w.poll() is None]
            if len(done) >= target and not alive:
                break
            if not alive and len(done) < target:
                codes = [w.returncode for w in workers]
                raise TuneError(f"every tune worker exited (codes {codes}) with "
                                f"{len(done)}/{target} trials done; see the errors above")
            time.sleep(poll_s)
    except BaseException:
        _stop_workers(workers)
        raise
    finally:
        progress.close()


def _report_new(done: list[FrozenTrial], reported: set[int], tracker: Any,
                progress: Any) -> bool:
    """Report the trials counted since the last call; whether there were any."""
    before = len(reported)
    for trial in done:
        if trial.number in reported:
            continue
        reported.add(trial.number)
        values = [t.value for t in done if t.state == TrialState.COMPLETE and t.value is not None
                  and t.number <= trial.number]
        best = max(values) if values else None
        tracker.report_trial(trial, best)
        progress.update(1)
        if best is not None:
            progress.set_postfix(best_val_acc=f"{best:.3f}")
    return len(reported) > before


def _spawn_workers(config: Config, storage_spec: str, study_name: str, prepared_dir: Path,
                   env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    threads = worker_threads(config)
    # Through the environment, not argv: a URL's password would show in any user's `ps`.
    env = {**env, stores.ENV_STORAGE: storage_spec}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "xray_hpo.tuning.worker",
             "--study", study_name, "--prepared", str(prepared_dir),
             "--worker-index", str(index), "--threads", str(threads),
             "--parent-pid", str(os.getpid())],
            env=env,
        )
        for index in range(worker_count(config))
    ]


def _stop_workers(workers: list[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    """SIGTERM lets each worker mark its running trial as interrupted; SIGKILL is the backstop."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def summarize(study: optuna.Study, n_trials: int) -> TuneSummary:
    trials = studies.budget_trials(study, n_trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not complete:
        reasons = [t.user_attrs["fail_reason"] for t in trials if "fail_reason" in t.user_attrs]
        first = reasons[0] if reasons else "no trial completed (all were pruned)"
        raise TuneError(f"study {study.study_name}: no trial completed; first failure: {first}")
    # Ties go to the earlier trial, so the winner does not depend on worker timing.
    best = max(complete, key=lambda t: (t.value, -t.number))
    assert best.value is not None
    return TuneSummary(
        study_name=study.study_name,
        best_trial=best.number,
        best_value=float(best.value),
        best_hparams=hparams_from_values(best.params),
        complete=len(complete),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        worst_complete_value=float(min(t.value for t in complete if t.value is not None)),
    )
