"""Benchmark ``import-kermany`` on the 5,216 shared real images: wall time and peak memory.

Each run is a fresh child process; inside it a sampler thread sums the RSS of the process
and its decoding workers every 10 ms, because the workers' peaks coincide and ``getrusage``
only reports the largest single child (and ``ru_maxrss`` survives exec, so a child started
from a big parent inherits its peak: VmHWM is used for the main process instead).
CPU seconds (user + sys, all processes) are reported too: unlike wall time they hardly
change when other jobs share the cores. Goal: <= 30 s and <= 1 GiB.

    .venv/bin/python bench/bench_import.py [--repeats 3] [--large 120]

Writes bench/RESULTS_import.md. The page cache is warm after the first run (reported as is).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from common import machine

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared/data/chest_xray_64"
RESULTS = Path(__file__).with_name("RESULTS_import.md")
GOAL_SECONDS, GOAL_BYTES = 30.0, 1 << 30


def _status_bytes(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass  # a worker that just exited
    return 0


def _tree_pids(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            pids += _tree_pids(int(child))
    return pids


def run_once(source: Path, out: Path, use_all: bool, jobs: int) -> dict[str, float]:
    """One import in this process; returns seconds and memory peaks (bytes)."""
    from xray_hpo.data.kermany.importer import ImportOptions, import_kermany

    peak = child_peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, child_peak
        while not done.is_set():
            me, *children = _tree_pids(os.getpid())
            child_rss = [_status_bytes(pid, "VmRSS") for pid in children]
            peak = max(peak, _status_bytes(me, "VmRSS") + sum(child_rss))
            child_peak = max([child_peak, *child_rss])
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    result = import_kermany(ImportOptions(source, out, use_all=use_all, jobs=jobs))
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    done.set()
    sampler.join()
    images = sum(sum(per_class.values()) for per_class in result.counts.values())
    return {"seconds": seconds, "cpu": cpu, "tree_peak": float(peak),
            "self_peak": float(_status_bytes("self", "VmHWM")), "child_peak": float(child_peak),
            "images": float(images), "load": os.getloadavg()[0]}


def _cpu_seconds() -> float:
    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _in_child(source: Path, use_all: bool, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        code = [sys.executable, __file__, "--one", str(source), str(Path(tmp) / "data"),
                "all" if use_all else "balanced", str(jobs)]
        completed = subprocess.run(code, check=True, capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def make_large_jpegs(target: Path, count: int) -> Path:
    """Full-size-like originals (2048x1664 RGB JPEG), to show memory stays flat while shrinking."""
    rng = np.random.default_rng(0)
    base = np.linspace(0, 200, 2048, dtype=np.float32)[None, :] + np.zeros((1664, 1))
    for index in range(count):
        folder, name = (("NORMAL", f"IM-{index:04d}-0001.jpeg") if index % 2 == 0
                        else ("PNEUMONIA", f"person{index}_bacteria_{index}.jpeg"))
        pixels = (base + rng.normal(0, 20, base.shape)).clip(0, 255).astype(np.uint8)
        path = target / "train" / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert("RGB").save(path, format="JPEG", quality=90)
    return target


def bench_machine() -> str:
    return machine(f"Pillow {PIL.__version__}, NumPy {np.__version__}; no GPU")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=120, help="synthetic 2k JPEGs (0: skip)")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child mode: one import, JSON on stdout
        source, out, mode, jobs = args.one
        print(json.dumps(run_once(Path(source), Path(out), mode == "all", int(jobs))))
        return 0
    if not (SHARED / "train").is_dir():
        print(f"shared images not found at {SHARED}", file=sys.stderr)
        return 1

    rows = []
    cases = [("shared 64 px, --all (every image)", SHARED, True, 2),
             ("shared 64 px, --all, --jobs 1", SHARED, True, 1),
             ("shared 64 px, default 206/45/max", SHARED, False, 2)]
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        if args.large:
            large = make_large_jpegs(Path(tmp), args.large)
            cases.append((f"{args.large} synthetic 2048x1664 RGB JPEGs, --all", large, True, 1))
        for label, source, use_all, jobs in cases:
            runs = [_in_child(source, use_all, jobs) for _ in range(args.repeats)]
            seconds = [run["seconds"] for run in runs]
            peak = max(run["tree_peak"] for run in runs)
            ok = max(seconds) <= GOAL_SECONDS and peak <= GOAL_BYTES
            rows.append(
                f"| {label} | {jobs} | {int(runs[0]['images'])} | {statistics.median(seconds):.2f}"
                f" ({min(seconds):.2f}-{max(seconds):.2f}) "
                f"| {statistics.median(r['cpu'] for r in runs):.2f} | {peak / 2**20:.0f} "
                f"| {max(r['self_peak'] for r in runs) / 2**20:.0f} / "
                f"{max(r['child_peak'] for r in runs) / 2**20:.0f} "
                f"| {max(r['load'] for r in runs):.1f} | {'yes' if ok else 'NO'} |"
            )
            print(rows[-1], flush=True)

    table = "\n".join([
        "| case | jobs | images written | wall s, median (min-max) | CPU s, median | peak RSS, "
        "all processes (MiB) | peak RSS main / largest worker (MiB) | load avg (1 min, max) "
        "| within 30 s and 1 GiB |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    text = (
        "# Import benchmark (`bench/bench_import.py`)\n\n"
        f"Machine: {bench_machine()}.\n\n"
        f"Source: the 5,216 shared real images (`../shared/data/chest_xray_64`, 64x64 PNG), "
        f"{args.repeats} runs per case, each in a fresh process, into a temporary folder on "
        "the same disk; page cache warm after the first run. Peak RSS of all processes is "
        "sampled every 10 ms (main + decoding workers, summed); main = VmHWM, worker = sampled. "
        "CPU s = user + sys of all processes. The load average shows how much else ran on the "
        "2 cores at the time (wall time grows with it; CPU time hardly does). Every image is "
        "decoded (hashes need pixels) even when the balanced default writes only part of them. "
        "Fewer than 500 files are decoded in-process (a pool costs ~0.5 s to start). "
        "Goal: <= 30 s and <= 1 GiB.\n\n"
        f"{table}\n"
    )
    RESULTS.write_text(text)
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
