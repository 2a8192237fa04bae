"""DVC stage check_params: validate the whole params.yaml before any other stage runs.

It depends on the whole file, so any edit (also an unknown or misspelled key, which no
other stage depends on) reruns it and fails ``dvc repro`` in one line. Its output is the
same for every valid file, so a valid edit reruns only the stages that read the edited key.
"""

from __future__ import annotations

from pathlib import Path

from xray_hpo.atomic import atomic_write_json
from xray_hpo.config import load_config
from xray_hpo.stage_util import run_stage

PARAMS = Path("params.yaml")
RESULT = Path("metrics/check_params.json")


def main() -> None:
    load_config(PARAMS)
    atomic_write_json(RESULT, {"params": str(PARAMS), "valid": True})


if __name__ == "__main__":
    run_stage("check_params", main)
