"""ClearML as its users meet it: the real SDK talking HTTP to the recording stand-in server
(clearml_standin.py; no real server can run here), online and after an offline upload.

Each test reads the server's state (tasks, models, events, files) as the web app would
show it, so every point of issue 13 is asserted where a user would look.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from clearml_standin import StandIn

from xray_hpo.tracking import upload
from xray_hpo.tracking.upload_server import ClearMLServer

pytestmark = pytest.mark.filterwarnings("ignore:.*parseAll.*")

TUNE = {"tune.n_trials": 3, "train.epochs": 3, "select.top_k": 2, "select.seeds": 2,
        "tune.sampler": {"name": "random", "seed": 1, "n_startup_trials": 1},
        "tune.search_space.lr": {"type": "categorical", "choices": [1.0e-3, 0.1]}}
PROJECT = "xray-hpo-standin"
# The SDK's own second, unforced tasks.started when it continues a task (its first one is
# forced); the server refuses it and the SDK ignores that. Nothing else may be refused.
SDK_REDUNDANT = "tasks.started: invalid status change in_progress -> in_progress"


def _env(mode: str, tmp_path: Path, server: StandIn) -> dict[str, str]:
    """A stage's environment: the mode, the stand-in's address and keys (the projects'
    user environment drops inherited CLEARML_* variables), an empty HOME."""
    return {**server.env(), "XRAY_HPO_CLEARML": mode, "XRAY_HPO_CLEARML_PROJECT": PROJECT,
            "XRAY_HPO_CLEARML_DIR": str(tmp_path / "runs"), "HOME": str(tmp_path / "home")}


def _plot(server: StandIn, task_id: str, metric: str) -> dict[str, Any]:
    (event,) = server.state.plots(task_id, metric)
    return json.loads(event["plot_str"])


def _table(server: StandIn, task_id: str, metric: str) -> dict[str, list[Any]]:
    table = _plot(server, task_id, metric)["data"][0]
    return dict(zip(table["header"]["values"], table["cells"]["values"], strict=True))


def _params(task: dict[str, Any], section: str) -> dict[str, str]:
    return {k: v["value"] for k, v in task["hyperparams"].get(section, {}).items()}


def _only_expected_refusals(server: StandIn) -> None:
    assert all(msg == SDK_REDUNDANT for _, msg in server.state.refused), server.state.refused


def _check_study(server: StandIn, root: Path, n_trials: int) -> tuple[dict[str, Any], list]:
    """One optimizer task for the study, described, with flat hyperparameters; every trial
    a child with the status it ended in; the table links every row to its trial's task."""
    assert server.state.project_id(PROJECT)
    (optimizer,) = [t for t in server.state.tasks.values() if t["type"] == "optimizer"]
    study_name = optimizer["name"]
    assert "Optuna study" in optimizer["comment"] and "sampler random" in optimizer["comment"]
    flat = _params(optimizer, "optimization")
    assert flat["sampler/name"] == "random" and flat["pruner/name"] == "successive_halving"
    assert flat["space/lin1_size/low"] == "64" and flat["space/lin1_size/high"] == "128"
    assert flat["space/lr/choices"] == "0.001, 0.1"
    trials = [t for t in server.state.tasks.values() if t["type"] == "training"
              and t["name"].startswith("trial ")]
    assert len(trials) == n_trials
    assert {t["parent"] for t in trials} == {optimizer["id"]}
    for trial in trials:
        expected = {"complete": "completed", "pruned": "stopped", "failed": "failed"}
        (state,) = [s for s in expected if s in trial["tags"]]
        assert trial["status"] == expected[state], (trial["name"], trial["status"])
    columns = _table(server, optimizer["id"], "top 10 trials")
    linked = {t["id"] for t in trials if any(t["id"] in cell for cell in columns["task"])}
    assert len(linked) == len(columns["task"]) == min(n_trials, 10)
    # Parallel coordinates: pruned trials told apart from complete ones.
    dims = {d["label"]: d for d in _plot(server, optimizer["id"],
                                         "parallel coordinates")["data"][0]["dimensions"]}
    assert dims["state"]["ticktext"] == ["pruned", "complete"] and "epochs run" in dims
    # The bar chart and the importance table both survive (distinct title/series).
    assert _plot(server, optimizer["id"], "hyperparameter importance")["data"][0]["type"] == "bar"
    assert _table(server, optimizer["id"], "hyperparameter importance (table)")["hyperparameter"]
    # The same evidence as metrics/importance.json: intervals for both views and evaluators.
    intervals = _table(server, optimizer["id"], "hyperparameter importance (intervals)")
    assert set(intervals["view"]) == {"common_epoch", "complete_best_epoch"}
    assert set(intervals["evaluator"]) == {"fanova", "pedanova"}
    for low, median, high in zip(intervals["low"], intervals["median share"], intervals["high"],
                                 strict=True):
        assert float(low) <= float(median) <= float(high)
    # The optimizer points to the best single run and to the robust selection's choice.
    best = _table(server, optimizer["id"], "best trial")
    assert any(t["id"] in best["task"][0] for t in trials)
    artifacts = {a["key"]: a for a in optimizer["execution"].get("artifacts", [])}
    assert server.file(artifacts["summary"]["uri"]) is not None
    assert server.file(artifacts["importance"]["uri"]) is not None
    chosen = dict(zip(*_table(server, optimizer["id"], "selection").values(), strict=True))
    assert chosen["study"] == study_name and chosen["seeds"] == "[42, 43]"
    return optimizer, trials


def _check_final_model(server: StandIn, root: Path, optimizer: dict[str, Any]) -> None:
    """train_best: the shipped model as an output model whose weights are on the files
    server, named with study and trial; selection and settings shown; linked to the
    optimizer (tag + configuration); evaluate linked to the same."""
    best = yaml.safe_load((root / "best_params.yaml").read_text())
    (train_best,) = server.state.tasks_named("^train_best$")
    selection = _params(train_best, "selection")
    assert selection["study"] == best["study"] == optimizer["name"]
    assert selection["trial"] == str(best["trial"])
    assert selection["seeds"] == "42, 43"
    assert selection["val_accuracy_mean"] == str(best["selection"]["val_accuracy_mean"])
    settings = _params(train_best, "training settings")
    assert settings["epochs"] == "3" and settings["seed"] == "42"
    assert f"optimizer:{optimizer['id']}" in train_best["tags"]
    lineage = train_best["configuration"]["lineage"]["value"]
    assert optimizer["id"] in lineage
    (model,) = [m for m in server.state.models.values() if m.get("task") == train_best["id"]]
    assert model["name"] == f"{best['study']} · trial {best['trial']:03d}"
    assert f"optimizer:{optimizer['id']}" in model["tags"]
    assert model["uri"].startswith(server.files_host), model["uri"]
    stored = server.file(model["uri"])
    weights = (root / "models" / "model.pt").read_bytes()
    assert stored is not None and hashlib.sha256(stored).digest() == hashlib.sha256(
        weights).digest()
    assert any(m["model"] == model["id"] for m in train_best["models"]["output"])
    (evaluate,) = server.state.tasks_named("^evaluate$")
    assert f"optimizer:{optimizer['id']}" in evaluate["tags"]


def test_online_study_resumed_remote_worker_and_shipped_model(
        make_project: Any, clearml_server: StandIn, tmp_path: Path) -> None:
    project = make_project(TUNE)
    env = _env("online", tmp_path, clearml_server)
    project.run("tune", env=env)
    optimizer, _ = _check_study(clearml_server, project.root, 3)
    # The table was re-reported while the study ran, not only at its end.
    # Counted per event, not per request: the SDK may send several reports in one batch.
    table_reports = [line for n, b in clearml_server.state.calls if n == "events.add_batch"
                     for line in (b if isinstance(b, str) else json.dumps(b)).splitlines()
                     if "top 10 trials" in line]
    assert len(table_reports) >= 2

    # A remote worker (no tune stage above it) finds the optimizer through the study.
    journal = project.root / ".optuna" / "journal.log"
    storage = f"journal:{journal}"
    study = optuna.load_study(study_name=optimizer["name"], storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    assert study.user_attrs["clearml_optimizer_task"] == optimizer["id"]
    study.set_user_attr("n_trials_target", 4)
    worker = subprocess.run(
        [sys.executable, "-m", "xray_hpo.tuning.worker", "--storage", storage, "--study",
         optimizer["name"], "--prepared", "prepared"], cwd=project.root,
        env=project.env(env), capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr
    trials = [t for t in clearml_server.state.tasks.values() if t["name"].startswith("trial ")]
    assert len(trials) == 4 and {t["parent"] for t in trials} == {optimizer["id"]}

    # Resuming the study (more n_trials) continues the same optimizer task.
    project.set_params({"tune.n_trials": 5})
    project.run("tune", env=env)
    optimizer, _ = _check_study(clearml_server, project.root, 5)

    project.run("train_best", env=env)
    project.run("evaluate", env=env)
    _check_final_model(clearml_server, project.root, optimizer)
    _only_expected_refusals(clearml_server)


def test_offline_study_uploaded_keeps_links_statuses_and_model(
        make_project: Any, clearml_server: StandIn, tmp_path: Path) -> None:
    project = make_project(TUNE)
    env = _env("offline", tmp_path, clearml_server)
    project.run("tune", env=env)
    project.set_params({"tune.n_trials": 4})  # resumed offline: a continuation session
    project.run("tune", env=env)
    project.run("train_best", env=env)
    project.run("evaluate", env=env)
    assert clearml_server.state.calls == []  # offline: nothing reached the server
    runs = tmp_path / "runs"
    new_ids = upload.upload_sessions(runs, ClearMLServer(), echo=lambda _: None)
    assert not any(v.startswith("offline-") for v in new_ids.values())
    optimizer, _ = _check_study(clearml_server, project.root, 4)
    assert not any("offline-" in json.dumps(e) for e in
                   clearml_server.state.plots(optimizer["id"], "top 10 trials"))
    _check_final_model(clearml_server, project.root, optimizer)
    assert not any(t.startswith("upload:") for task in clearml_server.state.tasks.values()
                   for t in task["tags"])
    # A second upload changes nothing: every session is marked uploaded.
    before = len(clearml_server.state.tasks)
    upload.upload_sessions(runs, ClearMLServer(), echo=lambda _: None)
    assert len(clearml_server.state.tasks) == before
    _only_expected_refusals(clearml_server)


class _FailingOnce(ClearMLServer):
    """Imports the session (the draft exists on the server), then fails, once."""

    failed = False

    def import_session(self, folder: str, previous_task_id: str | None) -> str | None:
        task_id = super().import_session(folder, previous_task_id)
        if not _FailingOnce.failed:
            _FailingOnce.failed = True
            raise ConnectionError("connection reset during the upload")
        return task_id


def test_upload_without_its_parent_and_after_a_failed_import(
        clearml_server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial whose optimizer session is missing (killed before its zip was written, or a
    subfolder uploaded) uploads without a parent, tagged, with a warning; a failed import
    deletes its draft, and the retry uploads each task once."""
    from xray_hpo.tracking.trackers import TrialTracker
    from xray_hpo.training import EpochStats

    monkeypatch.setenv("XRAY_HPO_CLEARML", "offline")
    monkeypatch.setenv("XRAY_HPO_CLEARML_PROJECT", PROJECT)
    monkeypatch.setenv("XRAY_HPO_CLEARML_RUN_DIR", str(tmp_path / "runs" / "one"))
    for number, state in ((0, "complete"), (1, "failed")):
        tracker = TrialTracker("study-x", number, {"lr": 0.01}, parent="offline-deadbeef")
        tracker.log_epoch(EpochStats(epoch=1, train_loss=1.0, train_acc=0.5, val_loss=1.0,
                                     val_acc=0.5, lr=0.01))
        tracker.close(state, "ValueError: boom" if state == "failed" else None)
    assert len(upload.find_sessions(tmp_path / "runs")) == 2
    said: list[str] = []
    with pytest.raises(upload.UploadError, match="1 draft"):
        upload.upload_sessions(tmp_path / "runs", _FailingOnce(), echo=said.append)
    assert clearml_server.state.deleted_tasks and not [
        t for t in clearml_server.state.tasks.values() if t["name"].startswith("trial ")]
    upload.upload_sessions(tmp_path / "runs", _FailingOnce(), echo=said.append)
    trials = {t["name"]: t for t in clearml_server.state.tasks.values()}
    assert len(trials) == 2
    for task in trials.values():
        assert task.get("parent") in (None, "")
        assert "parent-missing:offline-deadbeef" in task["tags"]
    assert trials["trial 001 · study-x"]["status"] == "failed"
    assert trials["trial 000 · study-x"]["status"] == "completed"
    assert sum("neither in this folder nor on the server" in line for line in said) >= 2
    for zip_path in (tmp_path / "runs").rglob("offline-*.zip"):
        with zipfile.ZipFile(zip_path) as zf:
            assert json.loads(zf.read("task.json"))["parent"] == "offline-deadbeef"
    _only_expected_refusals(clearml_server)
