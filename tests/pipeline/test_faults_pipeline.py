"""A failed stage under the real `dvc repro` keeps the previous committed results: every
output is ``persist: true`` (DVC does not delete it first) and written atomically (the
stage replaces it only on success), so after the failure `dvc status` is clean again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import common
from bad_files import oversized, tree_bytes
from conftest import copy_of, run_command, user_env

pytestmark = pytest.mark.slow  # one process runs the module (--dist loadfile): one fixture

OUTPUTS = ("best_params.yaml", "metrics/data.json", "metrics/tune.json",
           "metrics/importance.json", "metrics/selection.json", "metrics/train.json",
           "metrics/eval.json", "metrics/robustness.json", "plots/tune_trials.csv",
           "plots/importance.csv", "plots/train_history.csv", "plots/test_predictions.csv",
           "plots/reliability.csv", "plots/robustness.csv", "models/model.pt",
           "reports/index.md", "reports/figures.html")
DOWN = "postgresql://xray:pw@127.0.0.1:1/optuna"  # nothing listens on port 1


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, committed_baseline: Path) -> Path:
    return copy_of(committed_baseline, tmp_path_factory.mktemp("faults"))


def _outputs(root: Path) -> dict[str, bytes]:
    found = {name: (root / name).read_bytes() for name in OUTPUTS}
    for folder in ("prepared", "plots/roc", "reports/figures"):
        found.update({f"{folder}/{k}": v for k, v in tree_bytes(root / folder).items()})
    return found


def _repro_fails(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["dvc", "repro", *args], cwd=root, capture_output=True, text=True,
                          env={**user_env(root), **(env or {})}, timeout=600)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout + proc.stderr


def _clean(root: Path) -> None:
    # The work stages only: check_params has rightly recorded the edited params.yaml it
    # validated before the failure, so after the edit is undone it is due to rerun (0.1 s).
    status = run_command(root, "dvc", "status", "prepare", "tune", "train_best", "evaluate",
                         "report")
    assert "up to date" in status, status


def test_a_failed_tune_keeps_best_params_and_its_metrics(project: Path) -> None:
    before = _outputs(project)
    params = (project / "params.yaml").read_text()
    common.override_params(project / "params.yaml", {"tune.n_trials": 3})  # tune must rerun
    try:
        output = _repro_fails(project, env={"XRAY_HPO_STORAGE": DOWN})
    finally:
        (project / "params.yaml").write_text(params)
    assert "tune: error: postgresql://xray:***@127.0.0.1:1/optuna: cannot open the Optuna " \
           "storage: connection to server at" in output
    assert _outputs(project) == before
    _clean(project)


def test_a_failed_train_best_keeps_the_model(project: Path) -> None:
    before = _outputs(project)
    output = _repro_fails(project, "-f", "-s", "train_best",
                          env={"XRAY_HPO_CLEARML": "nonsense"})
    assert "train_best: error: XRAY_HPO_CLEARML='nonsense': expected off, offline, online " \
           "or auto" in output
    assert _outputs(project) == before
    _clean(project)


def test_a_failed_prepare_keeps_every_split(project: Path) -> None:
    before = _outputs(project)
    bad = project / "data/test/viral/zz-bomb.png"
    reason = oversized(bad)
    try:
        output = _repro_fails(project, "-f", "-s", "prepare")
    finally:
        bad.unlink()
    assert f"prepare: error: data/test/viral/zz-bomb.png: {reason}; not decoded" in output
    assert _outputs(project) == before
    assert not [p for p in project.iterdir() if p.name.startswith(".prepared")]
    _clean(project)
