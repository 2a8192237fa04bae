"""The real tune stage with ClearML offline (3 trials, 3 epochs, one learning rate that
collapses and is pruned): what lands in the session files, that nothing touched the
network, and that tracking changes no result."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*parseAll.*")]

HPARAMS = ("lin1_size", "lin2_size", "p_dropout", "lr", "batch_size")

# Loaded by every Python process of the stage (coordinator and workers inherit PYTHONPATH):
# records, and refuses, any IP connection.
NET_GUARD = textwrap.dedent(
    """
    import os, socket
    _connect = socket.socket.connect
    def _guard(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            with open(os.environ["XRAY_TEST_NET_LOG"], "a") as log:
                log.write(f"{os.getpid()} {address!r}\\n")
            raise OSError("network blocked by the test")
        return _connect(self, address)
    socket.socket.connect = _guard
    """
)


def _events(session: Path) -> list[dict[str, Any]]:
    metrics = session / "metrics.jsonl"
    events: list[dict[str, Any]] = []
    for line in metrics.read_text().splitlines() if metrics.is_file() else []:
        item = json.loads(line)
        events.extend(item if isinstance(item, list) else [item])
    return events


def _tune(make_project: Any, mode: str, tmp_path: Path) -> tuple[Path, str]:
    # Random seed 1 draws lr 0.1 (the CNN collapses to one class: pruned after epoch 2 by
    # the chance rule) and 1e-3 (learns: complete after 3 epochs).
    # No re-seeded selection: its runs open no ClearML task (6 trainings a run for nothing).
    project = make_project({
        "tune.n_trials": 3, "train.epochs": 3, "select.top_k": 1, "select.seeds": 1,
        "tune.sampler": {"name": "random", "seed": 1, "n_startup_trials": 1},
        "tune.search_space.lr": {"type": "categorical", "choices": [1.0e-3, 0.1]}})
    guard = tmp_path / f"guard-{mode}"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    net_log = tmp_path / f"net-{mode}.log"
    net_log.touch()
    env = {
        "XRAY_HPO_CLEARML": mode,
        "PYTHONPATH": f"{guard}:{project.root / 'src'}",
        "XRAY_TEST_NET_LOG": str(net_log),
        "HOME": str(tmp_path / f"home-{mode}"),  # no clearml.conf, nothing written to ~
    }
    proc = project.run("tune", env=env)
    assert net_log.read_text() == "", f"network connection attempted:\n{net_log.read_text()}"
    return project.root, proc.stderr


def test_tune_offline_sessions_and_same_results_as_off(make_project: Any, tmp_path: Path) -> None:
    root, stderr = _tune(make_project, "offline", tmp_path)
    announced = [line for line in stderr.splitlines() if "ClearML" in line]
    assert len(announced) == 1 and "xray-hpo clearml-upload" in announced[0], stderr
    (run_dir,) = [p for p in (root / "runs" / "clearml").iterdir() if p.is_dir()]
    # the study's optimizer task, for train_best and evaluate to link to
    known = json.loads((root / "runs" / "clearml" / "studies.json").read_text())
    assert [v["mode"] for v in known.values()] == ["offline"]
    assert str(run_dir) in announced[0]
    assert not (tmp_path / "home-offline" / ".clearml").exists()

    sessions = {}
    for task_json in (run_dir / "offline").glob("offline-*/task.json"):
        sessions[task_json.parent.name] = (
            json.loads(task_json.read_text()),
            _events(task_json.parent),
        )
    assert len(list((run_dir / "offline").glob("offline-*.zip"))) == len(sessions)
    by_type: dict[str, list[str]] = {}
    for task_id, (task, _) in sessions.items():
        by_type.setdefault(task["type"], []).append(task_id)
    assert sorted(by_type) == ["optimizer", "training"]
    assert len(by_type["optimizer"]) == 1 and len(by_type["training"]) == 3
    (optimizer_id,) = by_type["optimizer"]
    opt_task, opt_events = sessions[optimizer_id]
    assert opt_task["project_name"] == "xray-hpo" and opt_task["name"].startswith("xray-hpo")

    states = set()
    for task_id in by_type["training"]:
        task, events = sessions[task_id]
        assert task["parent"] == optimizer_id
        assert task["name"].startswith("trial ") and opt_task["name"] in task["name"]
        assert set(HPARAMS) <= set(task["hyperparams"]["General"])
        scalars = [e for e in events if e["type"] == "training_stats_scalar"]
        curves = {
            (title, series): [
                e["iter"] for e in scalars if (e["metric"], e["variant"]) == (title, series)
            ]
            for title, series in (("loss", "train"), ("loss", "val"), ("accuracy", "val"))
        }
        epochs = curves["loss", "train"]
        assert all(points == epochs for points in curves.values()), curves  # one per epoch
        lr = float(task["hyperparams"]["General"]["lr"]["value"])
        state = "complete" if "complete" in task["tags"] else "pruned"
        assert state in task["tags"], task["tags"]
        if lr == 0.1:
            assert state == "pruned" and epochs == [1, 2], curves
            assert task["comment"] == "pruned: no better than chance (0.333) after epoch 2"
        elif state == "pruned":  # not the best at the first rung
            assert epochs == [1, 2], curves
            assert task["comment"] == "pruned: stopped by the successive_halving pruner after " \
                "epoch 2"
        else:
            assert epochs == [1, 2, 3], curves
        states.add((lr, state))
        assert not any(e["variant"] == "train_loss" for e in scalars)
    assert {(0.1, "pruned"), (1.0e-3, "complete")} <= states, "the seed draws both rates"

    plots = {e["metric"]: json.loads(e["plot_str"]) for e in opt_events if e["type"] == "plot"}
    table = plots["top 10 trials"]["data"][0]
    columns = dict(zip(table["header"]["values"], table["cells"]["values"], strict=True))
    assert set(HPARAMS) <= set(columns) and 1 <= len(columns["trial"]) <= 10
    states = columns["state"]
    assert states == sorted(states)  # complete before pruned
    for state in set(states):
        accs = [a for a, s in zip(columns["best val accuracy"], states, strict=True) if s == state]
        assert accs == sorted(accs, reverse=True)
    dims = [d["label"] for d in plots["parallel coordinates"]["data"][0]["dimensions"]]
    assert set(HPARAMS) <= set(dims)
    objective = [e for e in opt_events if e.get("metric") == "objective"]
    assert sorted({e["iter"] for e in objective}) == [0, 1, 2]

    # Tracking off: no ClearML files, and the same metrics and best params.
    off_root, off_stderr = _tune(make_project, "off", tmp_path)
    assert "ClearML" not in off_stderr
    assert not (off_root / "runs" / "clearml").exists()
    for name in ("metrics/tune.json", "best_params.yaml"):
        assert (off_root / name).read_text() == (root / name).read_text(), name
