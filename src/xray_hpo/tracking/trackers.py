"""ClearML tracking of a study: one optimizer task per study (continued when the study is
resumed), one training task per trial, parented to it.

The process model (why trials live in worker processes) and the tracking modes are
described in :mod:`xray_hpo.tracking.settings`; the shared task life in
:mod:`xray_hpo.tracking.base`; train_best and evaluate in :mod:`xray_hpo.tracking.runs`.
Nothing here runs at import time; clearml is imported lazily on the first tracker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from xray_hpo.tracking.base import Tracker, guarded
from xray_hpo.tracking.settings import mask, parent_task_id

if TYPE_CHECKING:
    import optuna

    from xray_hpo.training import EpochStats

_STATE_CODES = {"complete": 1.0, "pruned": 0.0, "failed": -1.0, "interrupted": -2.0}
CONTINUES_TAG = "continues:"  # offline optimizer session resuming an earlier one
PARENT_MISSING_TAG = "parent-missing:"

log = logging.getLogger(__name__)


class OptimizerTracker(Tracker):
    """The study's ``optimizer`` task, held by the tune coordinator for the whole study.

    ``previous_task``: the optimizer task id the study recorded on an earlier run. Online
    that task (or, failing that, the project's optimizer task of the same name) is
    continued; offline the new session is tagged as its continuation, and the upload
    appends it to the same server task.
    """

    def __init__(self, study_name: str, configuration: dict[str, Any], *,
                 previous_task: str | None = None, project: str | None = None) -> None:
        self.study_name = study_name
        self.previous_task = previous_task
        # Repository state belongs here (once per study), not on every trial task.
        super().__init__(study_name, study_name, "optimizer", detect_repository=True,
                         project=project)
        self._connect(configuration)

    def _previous_task(self, task_class: Any) -> str | None:
        try:
            if self.previous_task and not self.previous_task.startswith("offline-"):
                found = task_class.get_tasks(task_ids=[self.previous_task])
                if found:
                    return self.previous_task
            same = task_class.get_tasks(project_name=self.project, tags=["optimizer"],
                                        task_name=f"^{re.escape(self.study_name)}$")
            return str(same[-1].id) if same else None
        except Exception as err:
            log.warning("ClearML: could not look up the study's optimizer task: %s",
                        mask(str(err)))
            return None

    @guarded
    def _connect(self, configuration: dict[str, Any]) -> None:
        from xray_hpo.tracking.summary import optimizer_description, optimizer_hyperparameters

        if self.mode == "online":
            # Continuing a task offsets iterations by its last one; ours are trial numbers
            # (and 0 for the views that replace themselves), the same on every run.
            self._task.set_initial_iteration(0)
        self._task.connect_configuration(configuration, name="study spec")
        self._task.connect(optimizer_hyperparameters(configuration), name="optimization")
        self._task.set_comment(optimizer_description(configuration))
        tags = ["optimizer"]
        if self.mode == "offline" and self.previous_task and self.previous_task != self.id:
            tags.append(CONTINUES_TAG + self.previous_task)
        self._task.add_tags(tags)

    def __enter__(self) -> OptimizerTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @guarded
    def report_trial(self, trial: optuna.trial.FrozenTrial, best_value: float | None) -> None:
        from xray_hpo.tracking.summary import trial_accuracy

        value = trial_accuracy(trial)
        if value is not None:
            series = "val accuracy" if trial.state.name == "COMPLETE" else "pruned (best epoch)"
            self.logger.report_scalar(
                title="objective", series=series, value=value, iteration=trial.number
            )
        if best_value is not None:
            self.logger.report_scalar(
                title="objective", series="best so far", value=best_value, iteration=trial.number
            )

    @guarded
    def report_progress(self, trials: Sequence[optuna.trial.FrozenTrial],
                        importances: Mapping[str, float] | None = None) -> None:
        """The table, parallel coordinates, counts and best-trial link: re-reported as trials
        finish (each replaces the previous at iteration 0), so an interrupted study shows
        them too; with ``importances`` at the end."""
        from xray_hpo.tracking.summary import report_study_summary

        report_study_summary(self.logger, trials, importances, link=self._web_link)

    def report_summary(self, study: optuna.Study,
                       importances: Mapping[str, float] | None = None) -> None:
        if self.active:
            self.report_progress(study.trials, importances)

    @guarded
    def report_importance(self, importance: Mapping[str, Any]) -> None:
        """The importance intervals and rank stability (both views, both evaluators) next
        to the bars, and the whole ``metrics/importance.json`` as an artifact."""
        from xray_hpo.tracking.summary import importance_interval_rows

        self.logger.report_table(title="hyperparameter importance (intervals)",
                                 series="bootstrap resamples", iteration=0,
                                 table_plot=importance_interval_rows(importance))
        self._task.upload_artifact(name="importance", artifact_object=dict(importance),
                                   wait_on_upload=True)

    @guarded
    def report_artifact(self, name: str, content: Mapping[str, Any]) -> None:
        """A small JSON artifact (the study's summary), beside the plots."""
        self._task.upload_artifact(name=name, artifact_object=dict(content),
                                   wait_on_upload=True)

    @guarded
    def report_selection(self, chosen: Mapping[str, Any], task_id: str | None) -> None:
        """The robust selection's choice, which may differ from the best single run."""
        rows = [["what", "value"], *([k, str(v)] for k, v in chosen.items())]
        if task_id:
            rows.append(["task", self._web_link(task_id)])
        self.logger.report_table(title="selection", series="chosen trial", iteration=0,
                                 table_plot=rows)
        if "trial" in chosen:
            self.logger.report_single_value(name="chosen trial", value=int(chosen["trial"]))

    def close(self) -> None:
        self._close_task()


class TrialTracker(Tracker):
    """One ``training`` task per trial, opened and closed in a worker process.

    ``parent``: the optimizer task id (a remote worker finds it on the study); default
    the one the tune stage passed in the environment.
    """

    _announce = False  # the coordinator already printed where the sessions go
    _restore_env = False

    def __init__(self, study_name: str, trial_number: int, hparams: Mapping[str, Any],
                 parent: str | None = None) -> None:
        name = f"trial {trial_number:03d} · {study_name}"
        super().__init__(name, name, "training", detect_repository=False)
        self._best: float | None = None
        self._setup(study_name, trial_number, hparams, parent or parent_task_id())

    @guarded
    def _setup(self, study_name: str, trial_number: int, hparams: Mapping[str, Any],
               parent: str | None) -> None:
        tags = ["trial"]
        if parent and self.mode == "online" and parent.startswith("offline-"):
            tags.append(PARENT_MISSING_TAG + parent)  # a server refuses an unknown parent
        elif parent:
            self._task.set_parent(parent)
        self._task.connect(dict(hparams), name="General")
        self._task.connect({"study": study_name, "number": trial_number}, name="trial")
        self._task.add_tags(tags)

    def __enter__(self) -> TrialTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(*trial_outcome(exc))

    @guarded
    def log_epoch(self, stats: EpochStats) -> None:
        self._best = stats.val_acc if self._best is None else max(self._best, stats.val_acc)
        self._log_epoch(stats)

    def close(self, state: str, reason: str | None = None) -> None:
        if state not in _STATE_CODES:
            raise ValueError(f"trial state {state!r}: expected one of {sorted(_STATE_CODES)}")
        task = self._task
        self._finish(state, reason)
        self._close_task()
        if task is not None and self.mode == "online":
            set_final_status(task, state, reason)

    @guarded
    def _finish(self, state: str, reason: str | None) -> None:
        self._task.add_tags([state])
        self._task.set_comment(f"{state}: {mask(reason)}" if reason else state)
        code = _STATE_CODES[state]
        self.logger.report_single_value(
            name="state (1 complete, 0 pruned, -1 failed, -2 interrupted)", value=code
        )
        if self._best is not None:
            self.logger.report_single_value(name="best val accuracy", value=self._best)


def set_final_status(task: Any, state: str, reason: str | None) -> None:
    """A trial's ClearML status from how it ended: failed stays failed, pruned and
    interrupted are stopped (as ClearML's own optimizer stops early-stopped tasks).
    Set after close, which would mark the task completed; used by the upload too."""
    try:
        if state == "failed":
            task.mark_failed(status_reason=mask(reason or "failed"), force=True)
        elif state in ("pruned", "interrupted"):
            task.mark_stopped(force=True, status_message=state)
    except Exception as err:
        log.warning("ClearML: could not set %s status of %s: %s", state, task.id, mask(str(err)))


def trial_outcome(exc: BaseException | None) -> tuple[str, str | None]:
    """(state, reason) of a trial whose ``with`` block ended with ``exc``: the one rule the
    tune objective stores and a trial's task shows.

    Interrupted says nothing about the configuration: Ctrl-C or SIGTERM (KeyboardInterrupt,
    SystemExit), or a storage error (the database went away, or another process failed the
    trial when its heartbeat looked stale). Any other exception is a failure of the trial.
    """
    if exc is None:
        return "complete", None
    if not isinstance(exc, Exception):
        return "interrupted", None
    import optuna  # loaded already wherever a trial runs

    if isinstance(exc, optuna.TrialPruned):
        return "pruned", str(exc) or None
    if isinstance(exc, (optuna.exceptions.UpdateFinishedTrialError,
                        optuna.exceptions.StorageInternalError)):
        return "interrupted", None
    return "failed", f"{type(exc).__name__}: {exc}"[:500]
