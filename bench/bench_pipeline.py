"""Benchmark: the default `dvc repro` on the built-in data, stage by stage.

Copies the project into a temporary folder, runs the full pipeline with the committed
params.yaml (tracking off, so only the pipeline is timed), prints a table and records it
in bench/RESULTS_pipeline.md. Goal: the whole run in at most 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS_pipeline.md"
GOAL_S = 300.0


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return f"{len(os.sched_getaffinity(0))} cores ({cpu}), Python {platform.python_version()}"


def run(cwd: Path, *cmd: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update(XRAY_HPO_CLEARML="off", XRAY_HPO_STORAGE="",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)


def main() -> None:
    from xray_hpo.data.phantoms.generate import PhantomSpec, generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("params.yaml", "dvc.yaml", "stages", "src", ".dvcignore", ".gitignore"):
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif source.exists():
                shutil.copy2(source, root / name)
        generate_dataset(root / "data", PhantomSpec())
        for cmd in (("git", "init", "-q"), ("dvc", "init", "-q"), ("dvc", "add", "-q", "data")):
            run(root, *cmd)
        started = time.perf_counter()
        run(root, "dvc", "repro")
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
