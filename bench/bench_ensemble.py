"""Benchmark: does averaging several seeds of one configuration lift test accuracy?

The capacity probe (bench/RESULTS_capacity.md) leaves the re-split's test accuracy at
0.79-0.84 for every configuration tried. The cheapest remaining lever is an ensemble:
this trains one capacity preset with ``--seeds`` train.seeds through the one ``train()``,
and scores each model and the average of their softmax probabilities (the ensemble of the
first 1, 2, ... models) on the test split and under the middle-severity shifts.

    python bench/bench_ensemble.py [--preset wide-noaug-20-unweighted] [--seeds 42 43 44 45 46]
                                   [--jobs 2] [--no-write]

Rows accumulate in bench/RESULTS_ensemble.md. One torch thread per training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench_capacity import PRESETS, hparams_and_config, middle_shift_views
from common import load_average, machine, prepared_real_data, record, recorded

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS_ensemble.md"
MARK = "<!-- bench_ensemble results: "


def train_and_predict(prepared: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One seed: the test probabilities, unshifted and under each middle-severity shift."""
    import torch

    from xray_hpo.training import SplitData, evaluate_split, load_splits, train

    torch.set_num_threads(1)
    hparams, config = hparams_and_config(spec)
    splits = load_splits(Path(prepared), "train", "val", "test")
    test = splits["test"]
    result = train(hparams, config, splits["train"], splits["val"])
    cpu = torch.device("cpu")
    probs = {name: evaluate_split(result.model, SplitData(images, test.labels), cpu)[2]
             for name, images in middle_shift_views(test.images).items()}
    return {"probs": probs, "labels": test.labels, "val": result.best_val_acc}


def accuracies(probs: dict[str, Any], labels: Any) -> dict[str, float]:
    return {name: round(float((p.argmax(dim=1) == labels).float().mean()), 4)
            for name, p in probs.items()}


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["# Seed ensembles on the real re-split (`python bench/bench_ensemble.py`)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| preset | models (seeds) | each model's test acc | ensemble test acc "
             "| ensemble middle severity: worst shift | measured |", "|---|---|---|---|---|---|"]
    for row in rows:
        ensemble = row["ensemble"][-1]
        worst = min((k for k in ensemble if k != "unshifted"), key=ensemble.get)
        singles = [m["unshifted"] for m in row["single"]]
        growing = " / ".join(f"{e['unshifted']:.3f}" for e in row["ensemble"])
        lines.append(
            f"| {row['preset']} | {len(row['seeds'])} ({', '.join(map(str, row['seeds']))}) "
            f"| {' / '.join(f'{a:.3f}' for a in singles)} "
            f"(mean {sum(singles) / len(singles):.3f}) "
            f"| {ensemble['unshifted']:.3f} (first 1..n: {growing}) "
            f"| {worst} {ensemble[worst]:.3f} | {row['date']}, load {row['load']}, "
            f"{row['seconds']} s |")
    lines += ["", f"Machine: {rows[-1]['machine']}.", "", record(MARK, rows)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="wide-noaug-20-unweighted")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    specs = [{**PRESETS[args.preset], "seed": seed} for seed in args.seeds]
    hparams_and_config(specs[0])  # a bad preset fails before the import and training
    import torch

    rows = recorded(RESULTS, MARK, [])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ensemble-") as tmp:
        prepared = prepared_real_data(Path(tmp))
        load = load_average()
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(train_and_predict, [str(prepared)] * len(specs), specs))
    labels = runs[0]["labels"]
    single = [accuracies(run["probs"], labels) for run in runs]
    ensemble = [accuracies({name: torch.stack([r["probs"][name] for r in runs[:n]]).mean(0)
                            for name in runs[0]["probs"]}, labels)
                for n in range(1, len(runs) + 1)]
    row = {"preset": args.preset, "spec": PRESETS[args.preset], "seeds": args.seeds,
           "val": [round(r["val"], 4) for r in runs], "single": single, "ensemble": ensemble,
           "seconds": round(time.perf_counter() - started), "date": time.strftime("%Y-%m-%d %H:%M"),
           "load": load, "machine": machine(f"torch {torch.__version__}")}
    print(json.dumps(row))
    if not args.no_write:
        rows.append(row)
        RESULTS.write_text(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
