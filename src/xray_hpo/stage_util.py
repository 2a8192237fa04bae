"""What every stage script shares: one-line errors, params loading, timings kept aside."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from xray_hpo.atomic import sigterm_as_interrupt
from xray_hpo.errors import UserError

TIMINGS = Path("runs/timings.jsonl")  # git-ignored: wall-clock never goes into metrics/


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main(): user errors become one line and exit 2; time goes to TIMINGS."""
    started = time.perf_counter()
    try:
        with sigterm_as_interrupt():  # kill: temporary files removed, outputs as they were
            main()
    except UserError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{name}: interrupted; outputs left as they were", file=sys.stderr)
        raise SystemExit(130) from None
    seconds = time.perf_counter() - started
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    with TIMINGS.open("a") as handle:
        handle.write(json.dumps({"stage": name, "seconds": round(seconds, 2),
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    print(f"{name}: done in {seconds:.1f} s", file=sys.stderr)
