"""How hard is the built-in phantom dataset? Train a few fixed configurations and compare.

The dataset is meant to make the hyperparameter search matter: a good configuration well
above chance but below 100%, a poor one near chance (33%), mid ones in between. Run after
changing anything in ``xray_hpo.phantom*``:

    .venv/bin/python bench/phantom_difficulty.py --seeds 20261201 1 2

It generates each seed's dataset into a temporary folder (timing it and measuring its size),
decodes and resizes the images the way the prepare stage does, trains every configuration
with the project's shared ``train()`` and prints one table row per (seed, configuration).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from xray_hpo.config import HParams, TrainConfig
from xray_hpo.data.manifest import CLASSES, SPLITS, ManifestRow
from xray_hpo.data.phantoms.generate import PhantomSpec, generate_dataset
from xray_hpo.training import SplitData, configure_torch, evaluate_split, train

CONFIGS: dict[str, HParams] = {
    "good   lr=1e-3 bs=4": HParams(lin1_size=100, lin2_size=48, p_dropout=0.2, lr=1e-3,
                                  batch_size=4),
    "good   lr=1e-3 bs=8": HParams(lin1_size=100, lin2_size=48, p_dropout=0.2, lr=1e-3,
                                  batch_size=8),
    "mid    lr=3e-3 bs=8": HParams(lin1_size=80, lin2_size=40, p_dropout=0.1, lr=3e-3,
                                  batch_size=8),
    "mid    lr=6e-3 bs=4": HParams(lin1_size=64, lin2_size=32, p_dropout=0.3, lr=6e-3,
                                  batch_size=4),
    "mid    lr=1e-2 bs=8": HParams(lin1_size=80, lin2_size=40, p_dropout=0.1, lr=1e-2,
                                  batch_size=8),
    "poor   lr=1e-1 bs=2": HParams(lin1_size=64, lin2_size=32, p_dropout=0.0, lr=1e-1,
                                  batch_size=2),
}


def load_split(root: Path, rows: list[ManifestRow], split: str, size: int) -> SplitData:
    """Decode and resize as the prepare stage does: grayscale, bilinear to size x size."""
    chosen = [row for row in rows if row.split == split]
    images = np.stack([
        np.asarray(Image.open(root / row.path).convert("L").resize((size, size),
                                                                   Image.BILINEAR))
        for row in chosen
    ])
    labels = np.array([CLASSES.index(row.cls) for row in chosen])
    return SplitData.from_arrays(images, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[PhantomSpec().seed])
    parser.add_argument("--image-size", type=int, default=64, help="training resolution")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-seeds", type=int, default=1,
                        help="training seeds per configuration (results are averaged)")
    parser.add_argument("--only", default="", help="run configurations whose name contains this")
    args = parser.parse_args()
    configs = {name: hp for name, hp in CONFIGS.items() if args.only in name}

    device = configure_torch(TrainConfig(num_threads=2))
    print(f"{'gen seed':>9}  {'config':<20} {'best val':>8} {'test':>6} {'val+test':>8}")
    summary: dict[str, list[float]] = {name: [] for name in configs}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "data"
            start = time.perf_counter()
            rows = generate_dataset(root, dataclasses.replace(PhantomSpec(), seed=seed))
            elapsed = time.perf_counter() - start
            size_mb = sum(p.stat().st_size for p in root.rglob("*.png")) / 1e6
            print(f"# seed {seed}: {len(rows)} images in {elapsed:.1f} s, {size_mb:.2f} MB PNG")
            splits = {split: load_split(root, rows, split, args.image_size) for split in SPLITS}
        for name, hparams in configs.items():
            val_accs, test_accs, joint_accs = [], [], []
            for train_seed in range(args.train_seeds):
                result = train(hparams, TrainConfig(epochs=args.epochs, seed=train_seed),
                               splits["train"], splits["val"], device=device)
                _, test_acc, _ = evaluate_split(result.model, splits["test"], device)
                n_val, n_test = len(splits["val"]), len(splits["test"])
                val_accs.append(result.best_val_acc)
                test_accs.append(test_acc)
                joint_accs.append((result.best_val_acc * n_val + test_acc * n_test)
                                  / (n_val + n_test))
            summary[name].append(statistics.mean(joint_accs))
            print(f"{seed:>9}  {name:<20} {statistics.mean(val_accs):>8.3f} "
                  f"{statistics.mean(test_accs):>6.3f} {statistics.mean(joint_accs):>8.3f}",
                  flush=True)
    print("# mean val+test accuracy over generator seeds")
    for name, values in summary.items():
        print(f"#   {name:<20} {statistics.mean(values):.3f}")


if __name__ == "__main__":
    main()
