"""The shared life of every tracker: open one ClearML task (or none when tracking is off),
degrade to offline when the server is unusable, log epochs, close exactly once.

The process model and the modes are described in :mod:`xray_hpo.tracking.settings`.
Tracking never changes results and never stops a run: the first SDK error disables the
tracker with one warning (the task is still closed, so no draft is left running).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from xray_hpo.tracking.settings import (
    ENV_MODE,
    FRAMEWORKS,
    PROCESS_VARS,
    TrackingMode,
    mask,
    prepare_process,
    project_name,
    quiet,
    resolve_mode,
    server_problem_once,
    take_config_problem,
)

if TYPE_CHECKING:
    from xray_hpo.training import EpochStats

log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(method: _F) -> _F:
    """Tracking must never fail a run: the first error disables the tracker with a warning."""

    def wrapper(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        if self._task is None or self._broken:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # broad on purpose: any SDK failure
            log.warning("ClearML: tracking stopped for %s: %s", self.label, mask(str(err)))
            self._broken = True
            return None

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper  # type: ignore[return-value]


class Tracker:
    """Opens one ClearML task (or none when mode is off) and closes it exactly once."""

    _announce = True  # print the one "where are the session files" line
    _restore_env = True  # a worker keeps its settings for its next trial
    _saved_env: dict[str, str | None]

    def __init__(self, label: str, name: str, task_type: str, *, detect_repository: bool,
                 project: str | None = None, output_uri: bool = False) -> None:
        self.label = label
        self._task: Any = None
        self._broken = False
        self.mode: TrackingMode = resolve_mode()
        self.id: str | None = None
        self.project = project or project_name()
        if self.mode == "off":
            return  # no clearml import at all
        self._saved_env = {k: os.environ.get(k) for k in PROCESS_VARS}
        self.run_dir = prepare_process(self.mode, label)
        config_problem = take_config_problem()  # the user's clearml.conf, left out if broken
        from clearml import Task
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
            self._task = self._init_task(Task, name, task_type, frameworks, output_uri)
        except Exception as err:  # e.g. the server went away between check and init
            if self.mode == "online":  # still worth keeping: log offline, upload later
                self._degrade(f"the ClearML server failed ({mask(str(err))[:200]})")
                with contextlib.suppress(Exception):
                    self._task = self._init_task(Task, name, task_type, frameworks, output_uri)
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

    def _init_task(self, task_class: Any, name: str, task_type: str,
                   frameworks: dict[str, bool], output_uri: bool) -> Any:
        extra: dict[str, Any] = {}
        if self.mode == "offline":
            task_class.set_offline(True)
            # ClearML's task-reuse cache defaults to ~/.clearml: keep a run's traces in its folder.
            from clearml.config.cache import SessionCache

            SessionCache.SESSION_CACHE_FOLDER = str(self.run_dir)
        else:
            previous = self._previous_task(task_class)
            if previous:
                extra["continue_last_task"] = previous
            if output_uri:  # models to the configured default, else the files server
                extra["output_uri"] = True
        with quiet(self.mode == "offline"):
            return task_class.init(
                project_name=self.project,
                task_name=name,
                task_type=task_type,
                reuse_last_task_id=False,
                auto_connect_frameworks=frameworks,
                auto_connect_arg_parser=False,
                auto_connect_streams=False,
                auto_resource_monitoring=False,
                **extra,
            )

    def _previous_task(self, task_class: Any) -> str | None:
        """Online: the id of an existing task this one continues (none by default)."""
        return None

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
    def active(self) -> bool:
        return self._task is not None and not self._broken

    @property
    def logger(self) -> Any:
        return self._task.get_logger()

    def _web_link(self, task_id: str, text: str | None = None) -> str:
        """An HTML link to a task's page, as ClearML's own optimizer puts in its tables.
        Offline the web host is unknown: a path link, which the web app resolves itself."""
        href = f"/projects/*/experiments/{task_id}/output/log"
        if self.mode == "online":
            page = str(self._task.get_output_log_web_page())
            href = page.replace(f"/{self._task.project}/", "/*/").replace(
                f"/{self._task.id}/", f"/{task_id}/")
        return f'<a href="{href}"> {text or task_id} </a>'

    def _log_epoch(self, stats: EpochStats) -> None:
        lg = self.logger
        it = stats.epoch
        lg.report_scalar(title="loss", series="train", value=stats.train_loss, iteration=it)
        lg.report_scalar(title="loss", series="val", value=stats.val_loss, iteration=it)
        lg.report_scalar(title="accuracy", series="train", value=stats.train_acc, iteration=it)
        lg.report_scalar(title="accuracy", series="val", value=stats.val_acc, iteration=it)
        lg.report_scalar(title="learning rate", series="lr", value=stats.lr, iteration=it)

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
