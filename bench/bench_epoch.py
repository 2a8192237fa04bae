"""One training epoch on the real images: the reference kernels against ``train.fast_kernels``.

    python bench/bench_epoch.py [--epochs 2] [--no-write]

The shared real training copy (``../shared/data/chest_xray_64``, imported with ``--all``:
3,650 train / 783 val at 64 px) trains the seed CNN (lin 96/48, dropout 0.2, lr 0.003,
Adam, cosine schedule) with one torch thread, as a tune worker does, at batch sizes 2, 4
and 8, once with ``train.fast_kernels: false`` (per-tensor Adam, NCHW, denormals kept: the
reference) and twice with it on (fused Adam, channels-last, denormals flushed to zero).
Reports seconds per epoch, the speed-up, the best val accuracy, and whether the two fast
runs gave the same weights (determinism on this machine). Results go to the ``bench_epoch``
block of bench/RESULTS_parallel.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench_parallel import write
from common import load_average, machine, prepared_real_data

BATCH_SIZES = (2, 4, 8)
SEED_HPARAMS = {"lin1_size": 96, "lin2_size": 48, "p_dropout": 0.2, "lr": 0.003}


def timed_training(splits: dict, batch_size: int, fast: bool, epochs: int) -> dict:
    from xray_hpo.config import HParams, TrainConfig
    from xray_hpo.training import train

    hparams = HParams(**SEED_HPARAMS, batch_size=batch_size)
    config = TrainConfig(epochs=epochs, num_threads=1, class_weighting="balanced",
                         device="cpu", fast_kernels=fast)
    started = time.perf_counter()
    result = train(hparams, config, splits["train"], splits["val"])
    seconds = (time.perf_counter() - started) / epochs
    weights = sum(float(p.double().sum()) for p in result.model.state_dict().values())
    return {"seconds": seconds, "val": result.best_val_acc, "weights": weights,
            "contiguous": all(p.is_contiguous() for p in result.model.parameters())}


def measure(prepared: Path, epochs: int) -> list[str]:
    import torch

    from xray_hpo.training import load_splits

    torch.set_num_threads(1)
    splits = load_splits(prepared, "train", "val")  # once: every run reads the same arrays
    load_before = load_average()
    lines = ["| batch size | reference (s / epoch) | fast_kernels (s / epoch) | speed-up "
             "| best val acc: reference / fast | fast twice: same weights |",
             "|---|---|---|---|---|---|"]
    for batch_size in BATCH_SIZES:
        print(f"batch {batch_size} ...", file=sys.stderr, flush=True)
        reference = timed_training(splits, batch_size, False, epochs)
        fast = timed_training(splits, batch_size, True, epochs)
        again = timed_training(splits, batch_size, True, epochs)
        assert fast["contiguous"], "train() must hand back standard-layout weights"
        same = "yes" if fast["weights"] == again["weights"] else "**no**"
        best_fast = min(fast["seconds"], again["seconds"])
        lines.append(f"| {batch_size} | {reference['seconds']:.2f} | {best_fast:.2f} "
                     f"| {reference['seconds'] / best_fast:.2f}x "
                     f"| {reference['val']:.3f} / {fast['val']:.3f} | {same} |")
    return [f"Load average (1/5/15 min) before: {load_before}; after: {load_average()}. "
            f"{epochs} epochs per run (seconds are per epoch, validation included), 1 torch "
            f"thread, `train.class_weighting: balanced`, seed CNN `{SEED_HPARAMS}`.", "", *lines]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-epoch-") as tmp:
        prepared = prepared_real_data(Path(tmp) / "import")
        lines = [f"Machine: {machine(f'torch {torch.__version__}')}", "",
                 *measure(prepared, args.epochs)]
    print("\n".join(lines))
    if not args.no_write:
        write("epoch", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
