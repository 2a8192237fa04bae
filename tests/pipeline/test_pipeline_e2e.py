"""The real `dvc repro`, in a temporary copy of the repo, shrunk to 2 trials x 2 epochs: what
it writes, the report it builds, a fresh study's byte-identical rerun, an experiment."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Project, copy_of, run_command, user_env
from xray_hpo.config import HYPERPARAMETERS
from xray_hpo.reporting.page import _fmt

# One process runs the module (make test: --dist loadfile): its tests share, in order, one
# dvc repro.
pytestmark = pytest.mark.slow

TRACKED = ("best_params.yaml", "metrics/data.json", "metrics/tune.json", "metrics/train.json",
           "metrics/eval.json", "metrics/importance.json", "metrics/selection.json",
           "plots/train_history.csv", "plots/test_predictions.csv", "plots/importance.csv",
           "plots/tune_trials.csv", "plots/tune_curves.csv", "reports/index.md")


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory, committed_baseline: Path) -> Path:
    return copy_of(committed_baseline, tmp_path_factory.mktemp("e2e"))


def _read(root: Path, name: str) -> Any:
    text = (root / name).read_text()
    return json.loads(text) if name.endswith(".json") else text


def test_repro_writes_every_tracked_output(dvc_project: Path) -> None:
    root = dvc_project
    for name in (*TRACKED, "models/model.pt", "reports/figures.html", "prepared/train.npz",
                 "prepared/val.npz", "prepared/test.npz"):
        assert (root / name).is_file(), name
    tune = _read(root, "metrics/tune.json")
    assert tune["trials"]["complete"] + tune["trials"]["pruned"] == 2
    best = yaml.safe_load(_read(root, "best_params.yaml"))
    assert set(best["hparams"]) == {"lin1_size", "lin2_size", "p_dropout", "lr", "batch_size"}
    assert best["val_accuracy"] <= tune["best_val_accuracy"]
    train = _read(root, "metrics/train.json")
    # train_best calls the same train() with the same seed: it reproduces the chosen trial.
    assert train["val_accuracy"] == best["val_accuracy"]
    evaluation = _read(root, "metrics/eval.json")
    assert evaluation["n_test"] == 150
    assert evaluation["accuracy_ci_low"] <= evaluation["accuracy"] <= evaluation["accuracy_ci_high"]
    assert set(evaluation["per_class"]) == {"normal", "bacterial", "viral"}
    history = _read(root, "plots/train_history.csv").splitlines()
    assert history[0].startswith("epoch,train_loss,val_loss") and len(history) == 3
    assert not list((root / "metrics").glob(".*tmp"))  # atomic writes leave no debris
    status = run_command(root, "dvc", "status")
    assert "up to date" in status, status


def test_report_stage_builds_the_page_and_names_the_best_parameters(dvc_project: Path) -> None:
    root = dvc_project  # TINY: 2 trials, each re-run with a second seed

    importance = json.loads((root / "metrics/importance.json").read_text())
    shares = importance[f"fanova_{importance['headline']}"]
    assert list(shares) == list(HYPERPARAMETERS) and all(0 <= v <= 1 for v in shares.values())
    assert importance["details"]["common_epoch"]["trials"] == 2
    selection = json.loads((root / "metrics/selection.json").read_text())
    assert all({"val_accuracy_mean", "val_accuracy_std"} <= set(c)
               for c in selection["candidates"])
    best = yaml.safe_load((root / "best_params.yaml").read_text())
    assert {"hparams", "study", "trial", "val_accuracy", "selection"} <= set(best)
    assert best["trial"] == selection["chosen_trial"]
    gap = json.loads((root / "metrics/eval.json").read_text())["generalization"]
    assert gap["val_accuracy_seed_mean"] == best["selection"]["val_accuracy_mean"]

    text = (root / "reports/index.md").read_text()
    params_table = text.split("## 2.")[1].split("## 3.")[0]
    for name, value in best["hparams"].items():
        assert f"| `{name}` | {_fmt(value)} |" in params_table, name
    assert "Synthetic data" in text and "| val | 15 | 15 | 15 | 45 |" in text
    assert re.search(r"\| \*\*test\*\* \| \*\*[\d.]+%\*\* \| [\d.]+% – [\d.]+% \|", text)
    assert "## 4. Which hyperparameters mattered" in text and f"`{best['study']}`" in text
    assert "matters most**" in text or "the study cannot tell" in text
    assert "built-in synthetic phantoms (not patient images), scored on 45 validation" in text
    assert "## 6. Top 10 trials" in text and "clearml-upload" in text
    for png in re.findall(r"\]\((figures/[a-z_]+\.png)\)", text):
        assert (root / "reports" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert len(re.findall(r"\]\(figures/", text)) == 4 + 3  # the study's, a gallery per class
    assert "## 10. What the model looked at (Grad-CAM)" in text and "Where attention" in text

    before = {p: p.read_bytes() for p in (root / "reports").rglob("*") if p.is_file()}
    Project(root).run("report")
    assert {p: p.read_bytes() for p in (root / "reports").rglob("*") if p.is_file()} == before


def test_unknown_key_fails_repro_when_all_is_up_to_date(dvc_project: Path) -> None:
    """No stage reads ``train.epoch``: check_params, which depends on the whole file, still
    fails ``dvc repro`` in one line, and every previous output stays as it was."""
    root = dvc_project
    params = root / "params.yaml"
    original = params.read_text()
    before = {name: (root / name).read_bytes() for name in (*TRACKED, "models/model.pt")}
    broken = yaml.safe_load(original)
    broken["train"]["epoch"] = 5
    params.write_text(yaml.safe_dump(broken, sort_keys=False))
    try:
        proc = subprocess.run(["dvc", "repro"], cwd=root, env=user_env(root),
                              capture_output=True, text=True, timeout=600)
    finally:
        params.write_text(original)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "check_params: error:" in line]
    assert errors == [
        "check_params: error: params.yaml: train.epoch: unknown key; expected one of "
        "['augment', 'class_weighting', 'device', 'epochs', 'fast_kernels', 'lr_schedule', "
        "'num_threads', 'optimizer', 'seed', 'weight_decay']"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert {name: (root / name).read_bytes() for name in before} == before
    assert "up to date" in run_command(root, "dvc", "status")


def test_repro_is_byte_identical_from_a_fresh_study(dvc_project: Path) -> None:
    root = dvc_project
    before = {name: (root / name).read_bytes() for name in TRACKED}
    shutil.rmtree(root / ".optuna")  # the rerun must reproduce, not read back, the study
    run_command(root, "dvc", "repro", "-f")
    after = {name: (root / name).read_bytes() for name in TRACKED}
    assert after == before


def test_experiment_with_more_trials_continues_the_study(dvc_project: Path) -> None:
    root = dvc_project
    run_command(root, "dvc", "exp", "run", "-S", "tune.n_trials=3")
    tune = _read(root, "metrics/tune.json")
    assert sum(tune["trials"].values()) == 3
    shown = json.loads(run_command(root, "dvc", "exp", "show", "--json"))
    # The table leads with what users compare: test accuracy and its interval, then the
    # final model's val accuracy and the chosen trial; tune bookkeeping after them.
    header = run_command(root, "dvc", "exp", "show", "--csv").splitlines()[0].split(",")
    columns = header[header.index("parent") + 1:]
    assert columns[:3] == ["accuracy", "accuracy_ci_low", "accuracy_ci_high"], columns
    first = {name: columns.index(name) for name in ("macro_f1", "chosen_trial", "best_trial",
                                                     "fanova_common_epoch.lr", "winner")}
    assert list(first.values()) == sorted(first.values()), first
    assert "tune.n_trials" in json.dumps(shown) or "n_trials" in json.dumps(shown)
    diff = run_command(root, "dvc", "params", "diff")
    assert "tune.n_trials" in diff
    run_command(root, "dvc", "metrics", "diff")
