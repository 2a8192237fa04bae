"""The server side of ``clearml-upload``, through the ClearML SDK: import a session, check
that a task exists, delete a failed import's draft, set what the import cannot (final
status, output model), re-send events. Kept apart so the order and re-linking logic in
:mod:`xray_hpo.tracking.upload` reads without SDK details.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Protocol


class Server(Protocol):
    def import_session(self, folder: str, previous_task_id: str | None) -> str | None: ...

    def task_exists(self, task_id: str) -> bool: ...

    def delete_tagged(self, tag: str, keep: str | None = None,
                      with_files: bool = True) -> int: ...

    def finish(self, task_id: str, *, state: str | None, remove_tags: list[str],
               model: dict[str, Any] | None) -> None: ...

    def send_events(self, task_id: str, events: list[dict[str, Any]]) -> None: ...


class ClearMLServer:
    """The configured ClearML server (credentials from the user's config or environment)."""

    def __init__(self) -> None:
        from clearml import Task

        Task.set_offline(False)
        self._task_class = Task

    def import_session(self, folder: str, previous_task_id: str | None) -> str | None:
        from xray_hpo.tracking.settings import quiet

        with quiet(True):  # the SDK prints a results page per task; we print one line
            return self._task_class.import_offline_session(
                folder, previous_task_id=previous_task_id, iteration_offset=0)

    def task_exists(self, task_id: str) -> bool:
        return bool(self._task_class.get_tasks(task_ids=[task_id]))

    def delete_tagged(self, tag: str, keep: str | None = None,
                      with_files: bool = True) -> int:
        """Delete the tasks tagged ``tag`` but ``keep``; ``with_files``: their artifacts and
        models too (not when the kept task now points at them)."""
        drafts = [t for t in self._task_class.get_tasks(tags=[tag]) if t.id != keep]
        for task in drafts:
            task.delete(delete_artifacts_and_models=with_files, raise_on_error=False)
        return len(drafts)

    def finish(self, task_id: str, *, state: str | None, remove_tags: list[str],
               model: dict[str, Any] | None) -> None:
        from xray_hpo.tracking.trackers import set_final_status

        task = self._task_class.get_task(task_id=task_id)
        if remove_tags:
            task.set_tags([t for t in task.get_tags() if t not in remove_tags])
        if model and not any(m.name == model["name"] for m in task.models["output"]):
            # The SDK attaches a model to a running task only: reopen it for that.
            task.mark_started(force=True)
            try:
                self._register_model(task, model)
            finally:
                task.mark_completed(force=True)
        if state:
            set_final_status(task, state, f"{state} (uploaded offline session)")

    def _register_model(self, task: Any, model: dict[str, Any]) -> None:
        from clearml import OutputModel
        from clearml.backend_api.session import Session

        output = OutputModel(task=task, name=model["name"], tags=model.get("tags"),
                             comment=model.get("comment"), framework=model.get("framework"),
                             config_dict=model.get("config"))
        destination = task.output_uri or Session.get_files_server_host()
        output.update_weights(weights_filename=model["weights"], upload_uri=destination,
                              auto_delete_file=False)

    def send_events(self, task_id: str, events: list[dict[str, Any]]) -> None:
        from clearml.backend_interface.metrics import Metrics

        task = self._task_class.get_task(task_id=task_id)
        with tempfile.TemporaryDirectory(prefix="xray-hpo-events-") as tmp:
            (Path(tmp) / "metrics.jsonl").write_text(json.dumps(events) + "\n",
                                                     encoding="utf-8")
            Metrics.report_offline_session(task, tmp, iteration_offset=0)
