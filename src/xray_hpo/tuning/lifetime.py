"""A local worker process's lifetime: it dies with the tune stage, stops cleanly on a
signal, and (tests only) can be made slow."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping

_PR_SET_PDEATHSIG = 1
ENV_TEST_DELAY = "XRAY_HPO_TEST_EPOCH_DELAY"


def epoch_delay_for_tests(worker_index: int | None,
                          environ: Mapping[str, str] = os.environ) -> float:
    """Seconds a local worker sleeps after each epoch: ``$ENV_TEST_DELAY`` = ``INDEX:SECONDS``.

    A test-only hook that makes one worker slow, to show the study does not depend on timing.
    """
    index, _, seconds = environ.get(ENV_TEST_DELAY, "").partition(":")
    return float(seconds) if seconds and index == str(worker_index) else 0.0


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when the process that spawned it dies.

    So a tune stage killed with -9 does not leave workers training on: each marks its
    trial interrupted and exits. Elsewhere the loop's parent check is the fallback.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


_interrupted = False


def raise_interrupt(signum: int, _frame: object) -> None:
    """First SIGTERM/SIGINT: stop the trial (it is marked interrupted). Later ones are
    ignored so they cannot cut that bookkeeping short; the coordinator's SIGKILL is the
    backstop."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    raise KeyboardInterrupt(f"signal {signum}")
