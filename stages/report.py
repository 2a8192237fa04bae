"""DVC stage report: reports/index.md (Markdown, PNG figures) and reports/figures.html."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from xray_hpo.config import load_config
from xray_hpo.reporting.page import Inputs, ReportError, build_report
from xray_hpo.stage_util import run_stage


def main() -> None:
    config = load_config()
    data, prepared = Path(config.data.dir), Path(config.data.prepared_dir)
    inputs = replace(Inputs(), manifest=data / "manifest.csv",
                     import_report=data / "import_report.json",
                     test_images=prepared / "test.npz")
    try:
        index = build_report(config, inputs=inputs)
    except ReportError as exc:  # a missing input: one line naming it, no traceback
        raise SystemExit(f"report: error: {exc}") from None
    print(f"report: {index} (interactive figures: {index.parent / 'figures.html'})",
          file=sys.stderr)


if __name__ == "__main__":
    run_stage("report", main)
