"""dvc.yaml takes its data folders from params.yaml (DVC templating): renaming one works."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import run_command

pytestmark = pytest.mark.slow


def test_prepared_dir_from_params_is_what_dvc_tracks(make_project: Any,
                                                     prepared_template: Path) -> None:
    project = make_project({"data.prepared_dir": "prep2"}, prepared=False)
    root = project.root
    run_command(root, "git", "init", "-q")
    run_command(root, "dvc", "init", "-q")
    run_command(root, "dvc", "repro", "prepare")
    for name in ("train.npz", "val.npz", "test.npz"):
        assert (root / "prep2" / name).read_bytes() == (prepared_template / name).read_bytes()
    assert not (root / "prepared").exists()
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert "prep2" in [out["path"] for out in lock["prepare"]["outs"]]
    assert "check_params" in lock
    # every later stage reads the renamed folder too: its deps follow the param
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        paths = {stage.name: [str(dep) for dep in stage.deps] for stage in repo.index.stages}
    for stage in ("tune", "train_best", "evaluate", "report"):
        assert any(p.startswith("prep2/") for p in paths[stage]), (stage, paths[stage])
        assert not any(p.startswith("prepared") for p in paths[stage]), (stage, paths[stage])
