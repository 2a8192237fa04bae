"""DVC stage prepare: validate the raw tree and decode every image once into arrays."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from xray_hpo.atomic import atomic_directory, atomic_write_json
from xray_hpo.config import load_config
from xray_hpo.data.dataset import prepare_split, save_prepared, scan_raw_tree
from xray_hpo.data.manifest import CLASSES, SPLITS, read_split_protocol
from xray_hpo.stage_util import run_stage

SUMMARY = Path("metrics/data.json")


def main() -> None:
    config = load_config()
    raw_root = Path(config.data.dir)
    prepared_dir = Path(config.data.prepared_dir)
    images = scan_raw_tree(raw_root)  # fails before any decoding if a class is missing
    protocol = read_split_protocol(raw_root)  # None for generated data (no such record)
    counts: dict[str, dict[str, int]] = {}
    # Every split into a staging folder swapped in whole: a bad image in test/ leaves the
    # previous prepared/ as it was, not new train/val beside an old test.
    with atomic_directory(prepared_dir) as staging:
        for split in SPLITS:
            members = [item for item in images if item.split == split]
            prepared = prepare_split(raw_root, members, config.prepare.image_size)
            save_prepared(prepared, staging / f"{split}.npz")
            per_class = Counter(CLASSES[label] for label in prepared.labels.tolist())
            counts[split] = {cls: per_class.get(cls, 0) for cls in CLASSES}
    summary = {"image_size": config.prepare.image_size, "counts": counts}
    if protocol is not None:  # how the splits were made: the report states it with test scores
        summary["split_protocol"] = protocol
    atomic_write_json(SUMMARY, summary)


if __name__ == "__main__":
    run_stage("prepare", main)
