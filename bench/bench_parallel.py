"""Parallel tuning: today's serial settings against the new default, and the reproducible
modes (window, rounds) against free workers.

    python bench/bench_parallel.py [--part real|quality|both] [--modes window,free]
                                   [--no-write]

``real``: the shared real training copy (``../shared/data/chest_xray_64``, imported with
``--all``, ``train.class_weighting: balanced``) in temporary project copies; the tune stage
(``python stages/tune.py``: study, then robust selection) run back to back with
``tune.n_workers: 1, train.fast_kernels: false`` (the settings before issue 14) and with
the committed params (the new default),
tuning shrunk to fit a shared 2-core machine (``SHRINK``). Reports end-to-end stage time
and the study's best and the chosen val accuracy with 95 % Wilson intervals.

``quality``: what reproducibility costs in search quality and time: the study's best val
accuracy and the stage's wall time with 2 workers in each of ``--modes`` (default window,
rounds, free), for 3 sampler seeds, on the phantoms.

Results go to bench/RESULTS_parallel.md. Other jobs on the cores make wall times noisy:
the load average is recorded before and after each part.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_tune import prepare_data
from common import (
    copy_project,
    load_average,
    machine,
    override_params,
    prepared_real_data,
    run_command,
)
from xray_hpo.reporting.page import wilson

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS_parallel.md"
SHRINK = {"train.class_weighting": "balanced", "tune.n_trials": 10, "train.epochs": 5,
          "select.top_k": 2, "select.seeds": 2, "train.num_threads": 1}
# The new default is params.yaml's (2 workers, tune.parallel window, train.fast_kernels);
# ``quality`` compares it with rounds.
REAL_CASES = {"today: tune.n_workers 1, reference kernels":
              {"tune.n_workers": 1, "train.fast_kernels": False},
              "new default: 2 workers, parallel window, fast kernels": {}}
MODES = ("window", "rounds", "free")
QUALITY_SEEDS = (42, 43, 44)
QUALITY = {"tune.n_workers": 2, "select.top_k": 1, "select.seeds": 1, "train.num_threads": 1}


def project(root: Path, prepared: Path, overrides: dict[str, Any]) -> Path:
    root.mkdir(parents=True)
    copy_project(root)
    override_params(root / "params.yaml", overrides)
    shutil.copytree(prepared, root / "prepared")
    return root


def run_tune(root: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run_command(root, sys.executable, "stages/tune.py", timeout=7200)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the stage and its workers: the work done, which load does not inflate.
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    tune = json.loads((root / "metrics/tune.json").read_text())
    selection = json.loads((root / "metrics/selection.json").read_text())
    n_val = int(np.load(root / "prepared/val.npz")["labels"].shape[0])
    return {"wall": wall, "cpu": cpu, "best": tune["best_val_accuracy"], "trials": tune["trials"],
            "chosen": selection["chosen_val_accuracy_mean"], "n_val": n_val,
            "chosen_trial": selection["chosen_trial"]}


def interval(accuracy: float, n: int) -> str:
    low, high = wilson(accuracy, n)
    return f"{accuracy:.3f} [{low:.3f}, {high:.3f}]"


def real_part(work: Path) -> list[str]:
    (work / "import").mkdir()
    prepared = prepared_real_data(work / "import")
    load_before = load_average()
    rows = []
    for index, (title, overrides) in enumerate(REAL_CASES.items()):
        root = project(work / f"real{index}", prepared, {**SHRINK, **overrides})
        print(f"real: {title} ...", file=sys.stderr, flush=True)
        rows.append((title, run_tune(root)))
    base = rows[0][1]["wall"]
    lines = ["| settings | tune stage (s) | speed-up | CPU (s) | study best val acc [95 % Wilson] "
             "| chosen val acc (mean over seeds) | trials c/p/f |",
             "|---|---|---|---|---|---|---|"]
    for title, row in rows:
        t = row["trials"]
        lines.append(f"| {title} | {row['wall']:.0f} | {base / row['wall']:.2f}x "
                     f"| {row['cpu']:.0f} "
                     f"| {interval(row['best'], row['n_val'])} "
                     f"| {interval(row['chosen'], row['n_val'])} "
                     f"| {t['complete']}/{t['pruned']}/{t['failed']} |")
    return [f"Load average (1/5/15 min) before: {load_before}; after: {load_average()}. "
            f"Val images: {rows[0][1]['n_val']}. Shrunk settings: `{SHRINK}`.", "", *lines]


def quality_part(work: Path, modes: tuple[str, ...] = MODES) -> list[str]:
    prepared = prepare_data(work / "phantoms")
    load_before = load_average()
    lines = ["| sampler seed | " + " | ".join(f"{m}: best val acc [95 % Wilson]" for m in modes)
             + " | " + " | ".join(f"{m} (s)" for m in modes) + " |",
             "|---|" + "---|" * (2 * len(modes))]
    bests: dict[str, list[float]] = {mode: [] for mode in modes}
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    for seed in QUALITY_SEEDS:
        cells = {}
        for mode in modes:
            root = project(work / f"quality-{seed}-{mode}", prepared,
                           {**QUALITY, "tune.sampler.seed": seed, "tune.parallel": mode})
            print(f"quality: seed {seed} {mode} ...", file=sys.stderr, flush=True)
            cells[mode] = run_tune(root)
            bests[mode].append(cells[mode]["best"])
            walls[mode].append(cells[mode]["wall"])
        n = cells[modes[0]]["n_val"]
        lines.append(f"| {seed} | " + " | ".join(interval(cells[m]["best"], n) for m in modes)
                     + " | " + " | ".join(f"{cells[m]['wall']:.0f}" for m in modes) + " |")
    means = ", ".join(f"{m} {sum(v) / len(v):.3f}" for m, v in bests.items())
    totals = ", ".join(f"{m} {sum(v):.0f} s" for m, v in walls.items())
    return [f"Load average before: {load_before}; after: {load_average()}. Phantoms, "
            f"params.yaml's tuning (20 trials x 10 epochs), 2 workers, no re-seeding.", "",
            *lines, "", f"Mean best: {means}. Wall time in all: {totals}."]


def write(part: str, lines: list[str]) -> None:
    mark = f"<!-- bench_parallel {part} -->"
    old = RESULTS.read_text() if RESULTS.is_file() else "# Parallel tuning\n"
    block = "\n".join([mark, *lines, mark.replace("<!--", "<!-- end")])
    pattern = re.compile(re.escape(mark) + r".*?" + re.escape(mark.replace("<!--", "<!-- end")),
                         re.S)
    new = pattern.sub(lambda _: block, old) if mark in old else old.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(new.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("real", "quality", "both"), default="both")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="quality: the tune.parallel modes to compare, comma-separated")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    modes = tuple(args.modes.split(","))
    import torch

    print(machine(f"torch {torch.__version__}"))
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        parts = (("real", real_part), ("quality", lambda w: quality_part(w, modes)))
        for part, func in parts:
            if args.part not in (part, "both"):
                continue
            lines = [f"Machine: {machine(f'torch {torch.__version__}')}", "", *func(Path(tmp))]
            print("\n".join(lines))
            if not args.no_write:
                write(part, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
