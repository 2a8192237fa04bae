"""Simulated wall time of the parallel modes' schedules, without training anything.

Each slot may start once a worker is free and every slot below its bound has finished:
rounds bound ``n_workers * (slot // n_workers)``, window ``slot - n_workers``, free 0. Trial
lengths (in epochs) are drawn like a pruned study's: 2, 6 or 10 epochs with probabilities
0.5 / 0.25 / 0.25 (successive halving at epochs 2 and 6). Prints each mode's speed-up over
one worker, summed over ``--studies`` random studies.

    python bench/simulate_schedules.py [--workers 2] [--trials 20] [--studies 2000]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable

Bound = Callable[[int], int]


def makespan(lengths: list[int], workers: int, bound: Bound) -> float:
    """When the last slot finishes, slots started in order on the first free worker."""
    finish: list[float] = []
    free = [0.0] * workers
    for slot, length in enumerate(lengths):
        ready = max(finish[:bound(slot)], default=0.0)
        worker = min(range(workers), key=free.__getitem__)
        finish.append(max(free[worker], ready) + length)
        free[worker] = finish[-1]
    return max(finish)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--studies", type=int, default=2000)
    args = parser.parse_args()
    w = args.workers
    modes: dict[str, Bound] = {"rounds": lambda s: w * (s // w),
                               "window": lambda s: max(0, s - w), "free": lambda s: 0}
    rng = random.Random(0)
    serial, totals = 0.0, dict.fromkeys(modes, 0.0)
    for _ in range(args.studies):
        lengths = rng.choices([2, 6, 10], [0.5, 0.25, 0.25], k=args.trials)
        serial += sum(lengths)
        for name, bound in modes.items():
            totals[name] += makespan(lengths, w, bound)
    print(f"{args.studies} studies of {args.trials} trials, {w} workers: speed-up over one")
    for name, total in totals.items():
        print(f"  {name}: {serial / total:.2f}x")


if __name__ == "__main__":
    main()
