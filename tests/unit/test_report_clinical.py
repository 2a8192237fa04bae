"""The reviewer's report sections: the split protocol beside each test number, intervals,
undefined values, and which robustness changes count as real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xray_hpo.reporting.clinical import (
    LEGACY_IMPORT,
    PHANTOM_PROTOCOL,
    PROTOCOL_WORDS,
    calibration_section,
    clinical_section,
    pneumonia_section,
    robustness_section,
    sections,
    split_protocol,
)

MANIFEST = "split,class,path,patient_id,sha256,source\ntest,normal,test/normal/a.png,p1,x,{}\n"
PHANTOMS = {"synthetic-phantom v1": 450}
IMPORTED = {"files imported with xray-hpo import-kermany": 450}


def test_protocol_of_phantoms_and_of_an_old_import(tmp_path: Path) -> None:
    missing = tmp_path / "import_report.json"
    assert split_protocol(MANIFEST.format("synthetic-phantom v1"), missing,
                          PHANTOMS) == PHANTOM_PROTOCOL
    assert split_protocol(MANIFEST.format("chest_xray/test/NORMAL/a.jpeg"), missing,
                          IMPORTED) == LEGACY_IMPORT
    missing.write_text("{not json")  # unreadable: the same fallback, no crash
    assert split_protocol(MANIFEST.format("x/y.jpeg"), missing, IMPORTED) == LEGACY_IMPORT


@pytest.mark.parametrize(("recorded", "expected"), [
    ("official", PROTOCOL_WORDS["official"]),
    ("resplit", PROTOCOL_WORDS["resplit"]),
    ("something new", "something new"),
    ({"name": "official"}, PROTOCOL_WORDS["official"]),
    ({"name": "official", "description": "kept test/ as is"}, "kept test/ as is"),
])
def test_protocol_recorded_by_the_import(tmp_path: Path, recorded: object,
                                         expected: str) -> None:
    report = tmp_path / "import_report.json"
    report.write_text(json.dumps({"mode": "all", "protocol": recorded}))
    assert split_protocol(MANIFEST.format("x/y.jpeg"), report, IMPORTED) == expected


def test_a_manifest_protocol_column_wins(tmp_path: Path) -> None:
    manifest = ("split,class,path,patient_id,sha256,source,protocol\n"
                "test,normal,test/normal/a.png,p1,x,s/a.jpeg,official\n")
    report = tmp_path / "import_report.json"
    report.write_text(json.dumps({"protocol": "resplit"}))
    assert split_protocol(manifest, report, IMPORTED) == PROTOCOL_WORDS["official"]


def rates(value: float | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in ("sensitivity", "specificity", "ppv", "npv", "auc"):
        out[name] = value
        out[f"{name}_ci_low"] = None if value is None else value - 0.1
        out[f"{name}_ci_high"] = None if value is None else value + 0.05
    return out


EVALUATION = {
    "accuracy": 0.7, "confidence": 0.95, "n_test": 30,
    "clinical": {"per_class": {"normal": rates(0.8), "bacterial": rates(0.6),
                               "viral": {**rates(0.7), "ppv": None}},
                 "macro_auc": 0.9, "macro_auc_ci_low": 0.85, "macro_auc_ci_high": 0.95},
    "pneumonia": {"threshold": 0.5, "accuracy": 0.8, "accuracy_ci_low": 0.7,
                  "accuracy_ci_high": 0.9, "auc": 0.88, "sensitivity": 0.9,
                  "specificity": 0.6},
    "calibration": {"brier": 0.4, "ece": 0.12, "ece_bins": 10, "mean_confidence": 0.86},
}
RELIABILITY = ("bin_low,bin_high,confidence,accuracy,perfect,count\n"
               "0.8,0.9,0.850000,0.600000,0.850000,10\n")


def test_clinical_sections_state_the_protocol_and_the_intervals() -> None:
    text = clinical_section(EVALUATION, "PROTO")
    assert "split protocol: PROTO" in text
    assert "| normal | 0.800 [0.700, 0.850] |" in text
    assert "| viral | 0.700 [0.600, 0.750] | 0.700 [0.600, 0.750] | – |" in text
    assert "**0.900 [0.850, 0.950]**" in text
    pneu = pneumonia_section(EVALUATION, "PROTO")
    assert "PROTO" in pneu and "| 0.800 [0.700, 0.900] | 0.880 | 0.900 | 0.600 |" in pneu
    cal = calibration_section(EVALUATION, RELIABILITY, "PROTO")
    assert "PROTO" in cal and "**0.400**" in cal and "**0.120**" in cal
    assert "over-confident" in cal and "| 0.8-0.9 | 10 | 0.850 | 0.600 | -0.250 |" in cal
    assert len(sections(EVALUATION, ROBUSTNESS, RELIABILITY, "PROTO")) == 4


def level(value: float, accuracy: float, low: float, high: float) -> dict[str, float]:
    return {"value": value, "accuracy": accuracy, "change": accuracy - 0.7,
            "change_ci_low": low, "change_ci_high": high}


ROBUSTNESS = {
    "unshifted_accuracy": 0.7, "confidence": 0.95, "n_test": 30,
    "middle_severity": {"mean_accuracy": 0.6, "worst_shift": "gamma", "worst_accuracy": 0.5,
                        "worst_change": -0.2},
    "shifts": {"gamma": {"parameter": "gamma", "1": level(1.25, 0.7, -0.05, 0.05),
                         "2": level(1.5, 0.5, -0.3, -0.1), "3": level(2.0, 0.4, -0.4, -0.2)}},
}


def test_robustness_table_bolds_only_changes_whose_interval_excludes_zero() -> None:
    text = robustness_section(ROBUSTNESS, "PROTO")
    assert "split protocol: PROTO" in text and "**70.0%**" in text
    assert "| gamma | gamma | 1.25: 70.0% (+0.0 pts) | **1.5: 50.0% (-20.0 pts)** |" in text
    assert "worst shift is *gamma* (50.0%, -20.0 pts)" in text
    assert "another hospital's images" in text
