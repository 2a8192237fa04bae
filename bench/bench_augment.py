"""Benchmark: what training-time augmentation costs per epoch, inside the one ``train()``.

Trains the default network for one epoch on ``--images`` real 64 px training images (the
shared Kermany copy, decoded here once, as prepare does) with augmentation off and at
``--strength``, alternating the two ``--repeats`` times so both see the same machine load,
and reports the median epoch time of each and the overhead. Also times ``augment_batch``
alone over the same batches.

    python bench/bench_augment.py [--images 1200] [--batch-size 4] [--strength 0.5]
                                  [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from common import REPO, SHARED_REAL_DATA, load_average, machine
from xray_hpo.augment import augment_batch, augmentation_generator
from xray_hpo.config import AugmentConfig, HParams, TrainConfig
from xray_hpo.training import SplitData, train

SHARED = SHARED_REAL_DATA
RESULTS = REPO / "bench" / "RESULTS_augment.md"


def real_images(n: int) -> SplitData:
    """``n`` training images evenly spaced in name order (every class; labels 0/1/2)."""
    paths = sorted(SHARED.glob("train/*/*.png"))
    step = max(1, len(paths) // n)
    picked = paths[::step][:n]
    pixels = np.stack([np.asarray(Image.open(p).convert("L").resize((64, 64)))
                       for p in picked])
    labels = np.array([0 if p.parent.name == "NORMAL" else (1 if "bacteria" in p.name else 2)
                       for p in picked])
    return SplitData.from_arrays(pixels, labels)


def epoch_seconds(data: SplitData, strength: float, batch_size: int) -> float:
    hp = HParams(lin1_size=100, lin2_size=48, p_dropout=0.1, lr=2e-3, batch_size=batch_size)
    config = TrainConfig(epochs=1, seed=0, num_threads=1,
                         augment=AugmentConfig(strength=strength))
    started = time.perf_counter()
    train(hp, config, data, data)
    return time.perf_counter() - started


def augment_only_seconds(data: SplitData, strength: float, batch_size: int) -> float:
    generator = augmentation_generator(0, 1)
    settings = AugmentConfig(strength=strength)
    started = time.perf_counter()
    for start in range(0, len(data), batch_size):
        augment_batch(data.images[start:start + batch_size], settings, strength, generator)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = real_images(args.images)
    load_before = load_average()
    off, on, alone = [], [], []
    for _ in range(args.repeats):
        off.append(epoch_seconds(data, 0.0, args.batch_size))
        on.append(epoch_seconds(data, args.strength, args.batch_size))
        alone.append(augment_only_seconds(data, args.strength, args.batch_size))
    m_off, m_on, m_alone = (statistics.median(x) for x in (off, on, alone))
    per_3650 = 3650 / len(data)
    text = "\n".join([
        "# Augmentation cost per epoch (`python bench/bench_augment.py`)", "",
        f"Machine: {machine(f'torch {torch.__version__} (CPU)')}. Load average before "
        f"{load_before}, after {load_average()} (2 shared cores: absolute times are noisy; "
        "off and on alternate, so their ratio is the figure to read).", "",
        f"One epoch of `train()` (default network, batch size {args.batch_size}, 1 torch "
        f"thread) over {len(data)} real 64 px images, median of {args.repeats}:", "",
        "| augmentation | epoch seconds (median) | all runs | scaled to 3,650 images |",
        "|---|---|---|---|",
        f"| off (strength 0) | {m_off:.2f} | {', '.join(f'{x:.2f}' for x in off)} "
        f"| {m_off * per_3650:.1f} |",
        f"| on (strength {args.strength}) | {m_on:.2f} | {', '.join(f'{x:.2f}' for x in on)} "
        f"| {m_on * per_3650:.1f} |",
        f"| `augment_batch` alone | {m_alone:.2f} | {', '.join(f'{x:.2f}' for x in alone)} "
        f"| {m_alone * per_3650:.1f} |", "",
        f"Overhead: {100 * (m_on - m_off) / m_off:+.0f} % per epoch "
        f"(augment_batch alone: {100 * m_alone / m_off:.0f} % of an unaugmented epoch).", "",
    ])
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
