"""Independent, seeded trainings (robust selection's re-runs) on a pool of processes.

Each training is seeded and the per-process torch settings are those of a serial run
with the same ``threads``, so the pool's accuracies equal serial ones, in the same order.
Processes are spawned, not forked: a fork of a process with torch's thread pools running
can deadlock, and a spawned process starts from exactly a worker's state.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from xray_hpo.config import HParams, TrainConfig

# One training context per pool process, set by its initializer.
_context: dict[str, Any] = {}


def _start(prepared_dir: Path, config: TrainConfig) -> None:
    from xray_hpo.training import configure_torch, load_splits

    _context["config"] = config
    _context["device"] = configure_torch(config)
    _context["data"] = load_splits(prepared_dir, "train", "val")


def _train(job: tuple[HParams, int]) -> float:
    from xray_hpo.training import train

    hparams, seed = job
    data = _context["data"]
    return train(hparams, _context["config"], data["train"], data["val"],
                 device=_context["device"], seed=seed).best_val_acc


def train_many(jobs: Sequence[tuple[HParams, int]], config: TrainConfig, prepared_dir: Path,
               workers: int, threads: int) -> Iterator[float]:
    """Best-epoch val accuracy of each ``(hparams, seed)``, yielded in order as they finish
    in order; on ``workers`` processes of ``threads`` torch threads (1 worker: in-process)."""
    config = config.model_copy(update={"num_threads": threads})
    if workers <= 1 or len(jobs) <= 1:
        _start(prepared_dir, config)
        try:
            yield from (_train(job) for job in jobs)
        finally:
            _context.clear()
        return
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
            initializer=_start, initargs=(prepared_dir, config)) as pool:
        yield from pool.map(_train, jobs)
