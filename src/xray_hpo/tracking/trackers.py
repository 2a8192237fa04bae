"""ClearML tracking: one optimizer task per study, one training task per trial, runs for the
final training and the evaluation.

The process model (why trials live in worker processes) and the tracking modes are
described in :mod:`xray_hpo.tracking.settings`, which owns them. Tracking never changes
results and never stops a run. Nothing here runs at import time; clearml is imported
lazily on the first tracker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from xray_hpo.tracking.settings import (
    ENV_MODE,
    FRAMEWORKS,
    PROCESS_VARS,
    PROJECT,
    TrackingMode,
    mask,
    parent_task_id,
    prepare_process,
    quiet,
    resolve_mode,
    server_problem_once,
    take_config_problem,
)

if TYPE_CHECKING:
    import optuna

    from xray_hpo.training import EpochStats

_STATE_CODES = {"complete": 1.0, "pruned": 0.0, "failed": -1.0, "interrupted": -2.0}

log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    """Tracking must never fail a run: the first error disables the tracker with a warning."""

    def wrapper(self: _Tracker, *args: Any, **kwargs: Any) -> Any:
        if self._task is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # broad on purpose: any SDK failure
            log.warning("ClearML: tracking stopped for %s: %s", self.label, mask(str(err)))
            self._task = None
            return None

    return wrapper  # type: ignore[return-value]


class _Tracker:
    """Opens one ClearML task (or none when mode is off) and closes it exactly once."""

    _announce = True  # print the one "where are the session files" line
    _restore_env = True  # a worker keeps its settings for its next trial
    _saved_env: dict[str, str | None]

    def __init__(
        self, label: str, name: str, task_type: str, *, detect_repository: bool, project: str
    ) -> None:
        self.label = label
        self._task: Any = None
        self.mode: TrackingMode = resolve_mode()
        self.id: str | None = None
        if self.mode == "off":
            return  # no clearml import at all
        self._saved_env = {k: os.environ.get(k) for k in PROCESS_VARS}
        self.run_dir = prepare_process(self.mode, label)
        config_problem = take_config_problem()  # the user's clearml.conf, left out if broken
        from clearml.utilities.check_updates import CheckPackageUpdates

        # Repository detection would also ask updates.clear.ml for a newer SDK: a network
        # call offline, and an upgrade nag in a pipeline's log. Mark it done.
        CheckPackageUpdates._package_version_checked = True
        problem = config_problem or (server_problem_once() if self.mode == "online" else None)
        if problem:  # one warning in place of the offline line, naming the user's file
            self._degrade(problem)
        frameworks: dict[str, bool] = dict.fromkeys(FRAMEWORKS, False)
        frameworks["detect_repository"] = detect_repository
        try:
            self._task = self._init_task(project, name, task_type, frameworks)
        except Exception as err:  # e.g. the server went away between check and init
            if self.mode == "online":  # still worth keeping: log offline, upload later
                self._degrade(f"the ClearML server failed ({mask(str(err))[:200]})")
                with contextlib.suppress(Exception):
                    self._task = self._init_task(project, name, task_type, frameworks)
            if self._task is None:
                log.warning("ClearML: tracking off for %s: %s", label, mask(str(err)))
                self.mode = "off"
                os.environ[ENV_MODE] = "off"
                return
        self.id = str(self._task.id)
        if self.mode == "offline" and self._announce:
            print(
                f"ClearML offline: session files in {self.run_dir}; upload them with "
                f"`xray-hpo clearml-upload {self.run_dir}`",
                file=sys.stderr,
                flush=True,
            )

    def _init_task(self, project: str, name: str, task_type: str,
                   frameworks: dict[str, bool]) -> Any:
        from clearml import Task

        if self.mode == "offline":
            Task.set_offline(True)
            # ClearML's task-reuse cache defaults to ~/.clearml: keep a run's traces in its folder.
            from clearml.config.cache import SessionCache

            SessionCache.SESSION_CACHE_FOLDER = str(self.run_dir)
        with quiet(self.mode == "offline"):
            return Task.init(
                project_name=project,
                task_name=name,
                task_type=task_type,
                reuse_last_task_id=False,
                auto_connect_frameworks=frameworks,
                auto_connect_arg_parser=False,
                auto_connect_streams=False,
                auto_resource_monitoring=False,
            )

    def _degrade(self, problem: str) -> None:
        """Online but no usable server: log offline (uploadable later), say so once."""
        self._announce = False
        self.mode = "offline"
        run_dir = self.run_dir = prepare_process("offline", self.label)  # workers follow
        log.warning(
            "ClearML: %s; logging offline instead: session files in %s, upload later with "
            "`xray-hpo clearml-upload %s`",
            problem,
            run_dir,
            run_dir,
        )

    @property
    def logger(self) -> Any:
        return self._task.get_logger()

    def _log_epoch(self, stats: EpochStats) -> None:
        lg = self.logger
        lg.report_scalar(
            title="loss", series="train", value=stats.train_loss, iteration=stats.epoch
        )
        lg.report_scalar(title="loss", series="val", value=stats.val_loss, iteration=stats.epoch)
        lg.report_scalar(
            title="accuracy", series="train", value=stats.train_acc, iteration=stats.epoch
        )
        lg.report_scalar(title="accuracy", series="val", value=stats.val_acc, iteration=stats.epoch)
        lg.report_scalar(title="learning rate", series="lr", value=stats.lr, iteration=stats.epoch)

    def _close_task(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            try:
                with quiet(self.mode == "offline"):
                    task.close()
            except Exception as err:
                log.warning("ClearML: close failed for %s: %s", self.label, mask(str(err)))
        if self._restore_env:
            for key, value in getattr(self, "_saved_env", {}).items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            self._saved_env = {}


class OptimizerTracker(_Tracker):
    """The study's ``optimizer`` task, held by the tune coordinator for the whole study."""

    def __init__(
        self, study_name: str, configuration: dict[str, Any], *, project: str = PROJECT
    ) -> None:
        # Repository state belongs here (once per study), not on every trial task.
        super().__init__(
            study_name, study_name, "optimizer", detect_repository=True, project=project
        )
        self._connect(configuration)

    @_guarded
    def _connect(self, configuration: dict[str, Any]) -> None:
        self._task.connect_configuration(configuration, name="optimization")
        self._task.add_tags(["optimizer"])

    def __enter__(self) -> OptimizerTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_guarded
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

    @_guarded
    def report_summary(
        self, study: optuna.Study, importances: Mapping[str, float] | None = None
    ) -> None:
        from xray_hpo.tracking.summary import report_study_summary

        report_study_summary(self.logger, study, importances)

    def close(self) -> None:
        self._close_task()


class TrialTracker(_Tracker):
    """One ``training`` task per trial, opened and closed in a worker process."""

    _announce = False  # the coordinator already printed where the sessions go
    _restore_env = False

    def __init__(self, study_name: str, trial_number: int, hparams: Mapping[str, Any]) -> None:
        name = f"trial {trial_number:03d} · {study_name}"
        super().__init__(name, name, "training", detect_repository=False, project=PROJECT)
        self._best: float | None = None
        self._setup(study_name, trial_number, hparams)

    @_guarded
    def _setup(self, study_name: str, trial_number: int, hparams: Mapping[str, Any]) -> None:
        parent = parent_task_id()
        if parent:
            self._task.set_parent(parent)
        self._task.connect(dict(hparams), name="General")
        self._task.connect({"study": study_name, "number": trial_number}, name="trial")
        self._task.add_tags(["trial"])

    def __enter__(self) -> TrialTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(*trial_outcome(exc))

    @_guarded
    def log_epoch(self, stats: EpochStats) -> None:
        self._best = stats.val_acc if self._best is None else max(self._best, stats.val_acc)
        self._log_epoch(stats)

    def close(self, state: str, reason: str | None = None) -> None:
        self._finish(state, reason)
        self._close_task()

    @_guarded
    def _finish(self, state: str, reason: str | None) -> None:
        if state not in _STATE_CODES:
            raise ValueError(f"trial state {state!r}: expected one of {sorted(_STATE_CODES)}")
        self._task.add_tags([state])
        self._task.set_comment(f"{state}: {mask(reason)}" if reason else state)
        code = _STATE_CODES[state]
        self.logger.report_single_value(
            name="state (1 complete, 0 pruned, -1 failed, -2 interrupted)", value=code
        )
        if self._best is not None:
            self.logger.report_single_value(name="best val accuracy", value=self._best)
        if state == "failed" and self.mode == "online":
            self._task.mark_failed(status_reason=mask(reason or "failed"), force=True)


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


class RunTracker(_Tracker):
    """train_best (``training``) or evaluate (``testing``): one task in its own process."""

    def __init__(
        self,
        name: str,
        task_type: Literal["training", "testing"],
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name, name, task_type, detect_repository=True, project=PROJECT)
        if hparams:
            self._connect(hparams)

    @_guarded
    def _connect(self, hparams: Mapping[str, Any]) -> None:
        self._task.connect(dict(hparams), name="General")

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_guarded
    def log_epoch(self, stats: EpochStats) -> None:
        self._log_epoch(stats)

    @_guarded
    def register_model(self, path: Path) -> None:
        if self.mode == "online":
            from clearml import OutputModel

            model = OutputModel(task=self._task, name=Path(path).stem, framework="PyTorch")
            model.update_weights(weights_filename=str(path), auto_delete_file=False)
        else:  # offline the SDK has no output models (AttributeError): keep it as an artifact
            self._task.upload_artifact(
                name="model", artifact_object=Path(path), wait_on_upload=True
            )

    @_guarded
    def report_confusion(self, matrix: list[list[int]], labels: Sequence[str]) -> None:
        self.logger.report_confusion_matrix(
            title="confusion matrix",
            series="test",
            matrix=matrix,
            iteration=0,
            xaxis="predicted",
            yaxis="true",
            xlabels=list(labels),
            ylabels=list(labels),
            yaxis_reversed=True,
        )

    @_guarded
    def report_table(self, title: str, rows: list[dict[str, Any]]) -> None:
        from xray_hpo.tracking.summary import rows_to_table

        self.logger.report_table(
            title=title, series=title, iteration=0, table_plot=rows_to_table(rows)
        )

    @_guarded
    def report_single(self, name: str, value: float) -> None:
        self.logger.report_single_value(name=name, value=float(value))

    def close(self) -> None:
        self._close_task()
