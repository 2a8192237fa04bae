"""Benchmark: the default `dvc repro` on the built-in data, stage by stage.

Copies the project into a temporary folder, runs the full pipeline with the committed
params.yaml (tracking off, so only the pipeline is timed), prints a table and records it
in bench/RESULTS_pipeline.md. Goal: the whole run in at most 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from common import copy_project, machine, run_command

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS_pipeline.md"
GOAL_S = 300.0


def main() -> None:
    from xray_hpo.data.phantoms.generate import PhantomSpec, generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copy_project(root)
        generate_dataset(root / "data", PhantomSpec())
        for cmd in (("git", "init", "-q"), ("dvc", "init", "-q"), ("dvc", "add", "-q", "data")):
            run_command(root, *cmd)
        started = time.perf_counter()
        run_command(root, "dvc", "repro")
        total = time.perf_counter() - started
        stages = [json.loads(line) for line in (root / "runs/timings.jsonl").read_text()
                  .splitlines()]
        tune = json.loads((root / "metrics/tune.json").read_text())
        evaluation = json.loads((root / "metrics/eval.json").read_text())

    rows = [(s["stage"], f"{s['seconds']:.1f}") for s in stages]
    rows.append(("**dvc repro total**", f"**{total:.1f}** (goal <= {GOAL_S:.0f})"))
    table = ["| stage | seconds |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows]]
    quality = [
        "| result | value |", "|---|---|",
        f"| best trial val accuracy | {tune['best_val_accuracy']:.3f} |",
        f"| worst completed trial val accuracy | {tune['worst_complete_val_accuracy']:.3f} |",
        f"| trials complete / pruned / failed | {tune['trials']['complete']} / "
        f"{tune['trials']['pruned']} / {tune['trials']['failed']} |",
        f"| test accuracy (95% CI) | {evaluation['accuracy']:.3f} "
        f"({evaluation['accuracy_ci_low']:.3f}-{evaluation['accuracy_ci_high']:.3f}), "
        f"n={evaluation['n_test']} |",
        f"| test macro F1 | {evaluation['macro_f1']:.3f} |",
    ]
    text = "\n".join([
        "# Default pipeline benchmark (`python bench/bench_pipeline.py`)", "",
        f"Machine: {machine()}. Measured {time.strftime('%Y-%m-%d')}, ClearML off, "
        "built-in phantom data, committed params.yaml.", "", *table, "", *quality, "",
    ])
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
