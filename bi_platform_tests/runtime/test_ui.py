"""The ``bi-platform ui`` supervisor: one stop request, a clean exit status, a kill at the
end of the grace period (real child processes, real signals)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from bi_platform.runtime.ui import run_supervised

#: A child that behaves like ``dagster dev`` interrupted during start-up: click turns the
#: KeyboardInterrupt into "Aborted!" and exit status 1.
ABORTS_ON_SIGINT = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *a: sys.exit(1))\n"
    "time.sleep(60)\n"
)
IGNORES_SIGINT = (
    "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)\n"
)


def _terminate_self_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    return timer


def test_a_requested_stop_is_clean_even_when_the_child_reports_aborted() -> None:
    timer = _terminate_self_after(1.5)
    try:
        assert run_supervised([sys.executable, "-c", ABORTS_ON_SIGINT], grace_s=20) == 0
    finally:
        timer.cancel()


def test_a_child_that_ignores_the_stop_is_killed_and_reported() -> None:
    timer = _terminate_self_after(1.5)
    try:
        status = run_supervised([sys.executable, "-c", IGNORES_SIGINT], grace_s=1)
    finally:
        timer.cancel()
    assert status == -signal.SIGKILL


def test_a_failure_nobody_asked_for_keeps_its_status() -> None:
    assert run_supervised([sys.executable, "-c", "raise SystemExit(3)"], grace_s=1) == 3
