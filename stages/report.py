"""DVC stage report: reports/index.md (Markdown, PNG figures) and reports/figures.html."""

from __future__ import annotations

import sys

from xray_hpo.config import load_config
from xray_hpo.reporting.page import ReportError, build_report
from xray_hpo.stage_util import run_stage


def main() -> None:
    try:
        index = build_report(load_config())
    except ReportError as exc:  # a missing input: one line naming it, no traceback
        raise SystemExit(f"report: error: {exc}") from None
    print(f"report: {index} (interactive figures: {index.parent / 'figures.html'})",
          file=sys.stderr)


if __name__ == "__main__":
    run_stage("report", main)
