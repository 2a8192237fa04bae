"""Run every benchmark under bench/ in turn (each prints its table and writes its results)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = ("bench_pipeline.py", "bench_tune.py", "bench_clearml.py", "bench_import.py",
           "phantom_difficulty.py", "bench_gradcam.py")


def main() -> int:
    failed = []
    for name in SCRIPTS:
        if not (BENCH / name).is_file():
            continue
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(BENCH / name)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
