"""The evaluate stage on the tiny project: the reviewer's metrics, the robustness pass and
their plots are written, reproducibly, and the report shows them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from conftest import Project, copy_of

pytestmark = pytest.mark.slow

OUTPUTS = ("metrics/eval.json", "metrics/robustness.json", "plots/reliability.csv",
           "plots/robustness.csv", "plots/test_predictions.csv", "plots/roc/normal.csv",
           "plots/roc/bacterial.csv", "plots/roc/viral.csv", "plots/roc/pneumonia.csv")


def test_evaluate_writes_clinical_metrics_and_robustness_reproducibly(
        committed_baseline: Path, tmp_path: Path) -> None:
    # The outputs of the baseline's dvc repro (tune, train_best, evaluate, report ran once).
    project = Project(copy_of(committed_baseline, tmp_path))
    root = project.root
    first = {name: (root / name).read_bytes() for name in OUTPUTS}

    evaluation = json.loads(first["metrics/eval.json"])
    assert list(evaluation)[:3] == ["accuracy", "accuracy_ci_low", "accuracy_ci_high"]
    for cls in ("normal", "bacterial", "viral"):
        entry = evaluation["clinical"]["per_class"][cls]
        for name in ("sensitivity", "specificity", "ppv", "npv", "auc"):
            if entry[name] is not None:
                assert entry[f"{name}_ci_low"] <= entry[name] <= entry[f"{name}_ci_high"]
        # sensitivity is recall, PPV is precision: the two reports agree.
        assert entry["sensitivity"] == evaluation["per_class"][cls]["recall"]
    assert 0.0 <= evaluation["clinical"]["macro_auc"] <= 1.0
    assert 0.0 <= evaluation["calibration"]["ece"] <= 1.0
    assert 0.0 <= evaluation["calibration"]["brier"] <= 2.0
    assert 0.0 <= evaluation["pneumonia"]["auc"] <= 1.0

    robustness = json.loads(first["metrics/robustness.json"])
    assert robustness["unshifted_accuracy"] == evaluation["accuracy"]
    assert set(robustness["shifts"]) == {"gamma", "contrast", "blur", "noise", "zoom",
                                         "rotation"}
    plot = list(csv.DictReader(io.StringIO(first["plots/robustness.csv"].decode())))
    assert [row["severity"] for row in plot] == ["0", "1", "2", "3"]
    assert float(plot[2]["gamma"]) == robustness["shifts"]["gamma"]["2"]["accuracy"]
    roc = first["plots/roc/normal.csv"].decode().splitlines()
    assert roc[0] == "fpr,tpr" and roc[1] == "0.000000,0.000000" and roc[-1] == "1.000000,1.000000"

    project.run("evaluate")  # again, in a fresh process: the same bytes
    assert {name: (root / name).read_bytes() for name in OUTPUTS} == first

    text = (root / "reports/index.md").read_text()
    for heading in ("### Per class, as a radiologist reads it", "### Normal vs pneumonia",
                    "### Calibration", "### Robustness to acquisition shift"):
        assert heading in text
    assert text.count("built-in phantoms, generated split") >= 5
