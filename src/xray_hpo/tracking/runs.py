"""ClearML tasks of train_best (``training``) and evaluate (``testing``): each one task in
its own process, linked to the study's optimizer task, the shipped model registered.

The model that ships is the robust selection's choice, which may not be the study's best
single run, so the train_best task carries why (study, trial, seeds, mean) and the fixed
training settings, and links to the optimizer task by a tag (``optimizer:<id>``) and a
configuration entry (``lineage``). Online the weights go to the configured
``default_output_uri`` or the files server; offline the SDK has no output models, so the
model is an artifact plus a ``output model`` entry that ``clearml-upload`` registers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from xray_hpo.tracking.base import Tracker, guarded
from xray_hpo.tracking.settings import read_optimizers

OPTIMIZER_TAG = "optimizer:"
MODEL_ENTRY = "output model"  # offline: what the upload registers as the output model
LINEAGE_ENTRY = "lineage"

log = logging.getLogger(__name__)


def model_name(study: str | None, trial: int | None) -> str:
    if study is None:
        return "xray-hpo model"
    return f"{study} · trial {trial:03d}" if trial is not None else study


class RunTracker(Tracker):
    """train_best or evaluate. ``best``: the contents of best_params.yaml (hparams, study,
    trial, selection); ``settings``: the fixed training settings (epochs, seed, ...)."""

    def __init__(
        self,
        name: str,
        task_type: Literal["training", "testing"],
        hparams: Mapping[str, Any] | None = None,
        *,
        best: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.best = dict(best or {})
        self.study: str | None = self.best.get("study")
        self.trial: int | None = self.best.get("trial")
        super().__init__(name, name, task_type, detect_repository=True,
                         output_uri=task_type == "training")
        self.optimizer_id: str | None = None
        self._connect(hparams, settings)

    def _find_optimizer(self) -> str | None:
        """The study's optimizer task: recorded by tune in this checkout's run folder,
        else (online) the project's optimizer task named after the study."""
        if self.study is None:
            return None
        known = read_optimizers().get(self.study, {}).get("task_id")
        if known and (self.mode == "offline" or not known.startswith("offline-")):
            return known
        if self.mode == "online":
            from clearml import Task

            found = Task.get_tasks(project_name=self.project, tags=["optimizer"],
                                   task_name=f"^{re.escape(self.study)}$")
            if found:
                return str(found[-1].id)
        return known

    @guarded
    def _connect(self, hparams: Mapping[str, Any] | None,
                 settings: Mapping[str, Any] | None) -> None:
        if hparams:
            self._task.connect(dict(hparams), name="General")
        if settings:
            self._task.connect(dict(settings), name="training settings")
        if self.study is not None:
            selection = {"study": self.study, "trial": self.trial,
                         "val_accuracy": self.best.get("val_accuracy"),
                         **_flat(self.best.get("selection") or {})}
            self._task.connect(selection, name="selection")
        self.optimizer_id = self._find_optimizer()
        tags = [] if self.study is None else [f"study:{self.study}"]
        if self.optimizer_id:
            tags.append(OPTIMIZER_TAG + self.optimizer_id)
            self._task.connect_configuration(
                {"optimizer_task": self.optimizer_id, "study": self.study,
                 "trial": self.trial}, name=LINEAGE_ENTRY)
        if tags:
            self._task.add_tags(tags)

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @guarded
    def log_epoch(self, stats: Any) -> None:
        self._log_epoch(stats)

    def model_tags(self) -> list[str]:
        tags = [] if self.study is None else [f"study:{self.study}"]
        if self.trial is not None:
            tags.append(f"trial:{self.trial}")
        if self.optimizer_id:
            tags.append(OPTIMIZER_TAG + self.optimizer_id)
        return tags

    @guarded
    def register_model(self, path: Path) -> None:
        """The shipped model as an output model with uploaded weights (see module doc)."""
        name = model_name(self.study, self.trial)
        comment = (f"robust selection of study {self.study}: trial {self.trial}"
                   if self.study else "final model")
        config = {"selection": self.best.get("selection"), "hparams": self.best.get("hparams"),
                  "optimizer_task": self.optimizer_id}
        if self.mode == "online":
            from clearml import OutputModel

            model = OutputModel(task=self._task, name=name, framework="PyTorch",
                                tags=self.model_tags(), comment=comment, config_dict=config)
            model.update_weights(weights_filename=str(path), auto_delete_file=False)
            return
        self._task.upload_artifact(name="model", artifact_object=Path(path),
                                   wait_on_upload=True)
        self._task.connect_configuration(
            {"name": name, "tags": self.model_tags(), "comment": comment, "artifact": "model",
             "framework": "PyTorch", "config": config}, name=MODEL_ENTRY)

    @guarded
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

    @guarded
    def report_table(self, title: str, rows: list[dict[str, Any]]) -> None:
        from xray_hpo.tracking.summary import rows_to_table

        self.logger.report_table(
            title=title, series=title, iteration=0, table_plot=rows_to_table(rows)
        )

    @guarded
    def report_single(self, name: str, value: float) -> None:
        self.logger.report_single_value(name=name, value=float(value))

    def close(self) -> None:
        self._close_task()


def _flat(selection: Mapping[str, Any]) -> dict[str, Any]:
    """A flat section: lists as text (a ClearML hyperparameter is one value)."""
    return {k: (", ".join(map(str, v)) if isinstance(v, list | tuple) else v)
            for k, v in selection.items()}
