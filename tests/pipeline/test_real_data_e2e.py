"""Real data end to end: import the shared Kermany images, `dvc add`, the real `dvc repro`.

Also the importer's defaults from params.yaml (``kermany:``), which the end-to-end run uses:
the temporary project sets ``kermany.train/val/test`` and imports with no size options.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, SHARED_REAL_DATA, TINY, init_dvc_project, run_command
from xray_hpo.config import ConfigError, KermanyConfig, config_from_dict, load_kermany_config
from xray_hpo.data.kermany.importer import resolve_defaults

SIZES = {"kermany.train": 30, "kermany.val": 15, "kermany.test": 30}  # 10/5/10 per class
needs_real_data = pytest.mark.skipif(not SHARED_REAL_DATA.is_dir(),
                                     reason=f"shared real images not found at {SHARED_REAL_DATA}")


# --- kermany: defaults from params.yaml -----------------------------------------------------

def _args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"seed": None, "sizes": None, "use_all": None,
                                 "fractions": None, **given})


def _params(tmp_path: Path, kermany: dict[str, Any] | None) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if kermany is None:
        raw.pop("kermany")
    else:
        raw["kermany"] = kermany
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_repo_params_hold_the_original_study_defaults() -> None:
    assert load_kermany_config(REPO / "params.yaml") == KermanyConfig()
    assert KermanyConfig().sizes == (206, 45, None)


def test_params_give_the_defaults_and_options_override(tmp_path: Path) -> None:
    params = _params(tmp_path, {"train": 9, "val": 3, "test": 6, "seed": 7,
                                "fractions": [0.6, 0.2, 0.2]})
    resolved = resolve_defaults(_args(), params)
    assert (resolved.sizes, resolved.seed, resolved.use_all) == ((9, 3, 6), 7, False)
    assert resolved.fractions == (0.6, 0.2, 0.2)
    given = resolve_defaults(_args(sizes=[12, 6, None], seed=1), params)
    assert (given.sizes, given.seed) == ((12, 6, None), 1)
    assert resolve_defaults(_args(use_all=True), params).use_all is True
    # kermany.all: true selects every image unless --sizes asks for the balanced mode
    every = _params(tmp_path, {"all": True})
    assert resolve_defaults(_args(), every).use_all is True
    assert resolve_defaults(_args(sizes=[6, 3, 3]), every).use_all is False
    # no params.yaml, or no kermany section: the built-in defaults
    for path in (tmp_path / "absent.yaml", _params(tmp_path, None)):
        resolved = resolve_defaults(_args(), path)
        assert (resolved.sizes, resolved.seed, resolved.use_all) == ((206, 45, None), 42, False)


@pytest.mark.parametrize(("kermany", "expected"), [
    ({"test": "lots"}, "kermany.test: expected an integer >= 0 or 'max'"),
    ({"val": -1}, "kermany.val: expected an integer >= 0"),
    ({"train": 2.5}, "kermany.train: expected an integer"),
    ({"fractions": [0.5, 0.5]}, "kermany.fractions: expected three numbers >= 0"),
    ({"fractions": [0, 0, 0]}, "kermany.fractions: expected three numbers >= 0"),
    ({"all": "yes"}, "kermany.all: expected true or false"),
    ({"size": 3}, "kermany.size: unknown key"),
])
def test_bad_kermany_params_name_the_key(tmp_path: Path, kermany: dict[str, Any],
                                         expected: str) -> None:
    path = _params(tmp_path, kermany)
    for load in (load_kermany_config,
                 lambda p: config_from_dict(yaml.safe_load(p.read_text()), str(p))):
        with pytest.raises(ConfigError) as info:
            load(path)
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_cli_reports_a_bad_kermany_section_in_one_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from xray_hpo.cli import main

    _params(tmp_path, {"test": "lots"})
    monkeypatch.chdir(tmp_path)
    assert main(["import-kermany", str(tmp_path / "anything")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kermany.test" in err
    assert not (tmp_path / "data").exists()


# --- the real dvc repro on imported real data -----------------------------------------------

@pytest.fixture(scope="module")
def real_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if not SHARED_REAL_DATA.is_dir():
        pytest.skip(f"shared real images not found at {SHARED_REAL_DATA}")
    root = tmp_path_factory.mktemp("real-e2e")
    init_dvc_project(root, {**TINY, "select.seeds": 1, **SIZES})
    # No size options: they come from the project's params.yaml (kermany: 30 / 15 / 30).
    printed = run_command(root, sys.executable, "-m", "xray_hpo.cli", "import-kermany",
                  str(SHARED_REAL_DATA), "--dvc-add")
    run_command(root, "dvc", "repro")
    return root, printed


def _manifest_counts(root: Path) -> dict[str, dict[str, int]]:
    with (root / "data/manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and not any("synthetic" in row["source"] for row in rows)
    counted = Counter((row["split"], row["class"]) for row in rows)
    return {split: {cls: counted[(split, cls)] for cls in ("normal", "bacterial", "viral")}
            for split in ("train", "val", "test")}


@pytest.mark.slow
@needs_real_data
def test_repro_on_imported_real_data(real_project: tuple[Path, str]) -> None:
    root, printed = real_project
    assert "train 30 (10/10/10), val 15 (5/5/5), test 30 (10/10/10)" in printed
    assert "balanced, sizes 30 15 30, seed 42" in printed
    assert (root / "data.dvc").is_file()  # --dvc-add
    expected = {"train": {"normal": 10, "bacterial": 10, "viral": 10},
                "val": {"normal": 5, "bacterial": 5, "viral": 5},
                "test": {"normal": 10, "bacterial": 10, "viral": 10}}
    assert _manifest_counts(root) == expected
    report = json.loads((root / "data/import_report.json").read_text())
    assert report["counts"] == expected and report["mode"] == "balanced"
    # The shared copy has no test/ folder: a re-split, said so with its caveat.
    assert report["protocol"] == "resplit" and "split protocol: resplit" in printed
    assert json.loads((root / "metrics/data.json").read_text())["counts"] == expected

    tune = json.loads((root / "metrics/tune.json").read_text())
    assert sum(tune["trials"].values()) == TINY["tune.n_trials"]
    history = (root / "plots/train_history.csv").read_text().splitlines()
    assert len(history) == 1 + TINY["train.epochs"]
    evaluation = json.loads((root / "metrics/eval.json").read_text())
    assert evaluation["n_test"] == 30
    assert evaluation["accuracy_ci_low"] <= evaluation["accuracy"] <= evaluation["accuracy_ci_high"]
    assert {c: v["support"] for c, v in evaluation["per_class"].items()} == expected["test"]
    predictions = (root / "plots/test_predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + 30

    index = (root / "reports/index.md").read_text()
    assert "**Real data**" in index and "Synthetic data" not in index
    assert "**Split protocol: `resplit`**" in index and "overstates accuracy" in index
    assert (root / "models/model.pt").is_file()
    status = run_command(root, "dvc", "status")
    assert "up to date" in status, status
