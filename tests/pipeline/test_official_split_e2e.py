"""The official-test protocol through the stages: prepare records it, evaluate scores exactly
the official folder, the report states it next to the data (stand-in tree, see kermany_stand_in).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from conftest import PROJECT_FILES, REPO, TINY, Project
from kermany_stand_in import SHARED, build_stand_in, class_of
from xray_hpo.data.kermany.importer import ImportOptions, import_kermany


@pytest.fixture(scope="module")
def official_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, list[str]]:
    if not (SHARED / "train").is_dir():
        pytest.skip(f"shared real images not found at {SHARED}")
    base = tmp_path_factory.mktemp("official-e2e")
    stand_in = build_stand_in(SHARED, base / "chest_xray")
    root = base / "project"
    root.mkdir()
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    project = Project(root)
    project.set_params({**TINY, "select.seeds": 1, "select.top_k": 1})
    import_kermany(ImportOptions(stand_in.root, root / "data", seed=1, sizes=(12, 6, None)))
    for stage in ("prepare", "tune", "train_best", "evaluate", "report"):
        project.run(stage)
    return project, stand_in.test_files


@pytest.mark.slow
def test_stages_score_the_official_test_and_say_so(
        official_project: tuple[Project, list[str]]) -> None:
    project, test_files = official_project
    natural = Counter(class_of(Path(name)) for name in test_files)
    data = json.loads((project.root / "metrics/data.json").read_text())
    assert data["split_protocol"]["protocol"] == "official-test"
    assert data["split_protocol"] == json.loads(
        (project.root / "data/split_protocol.json").read_text())
    assert data["counts"]["test"] == {cls: natural[cls] for cls in data["counts"]["test"]}
    evaluation = json.loads((project.root / "metrics/eval.json").read_text())
    assert evaluation["n_test"] == len(test_files)
    index = (project.root / "reports/index.md").read_text()
    data_part = index.split("## 1. The data", 1)[1].split("## 2.", 1)[0]
    assert "**Split protocol: `official-test`**" in data_part
    assert f"The official test holds {len(test_files)} images" in data_part
    assert "Caveat" not in data_part
