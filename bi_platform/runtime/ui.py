"""Run ``dagster dev`` (webserver + daemon + code server) so that one stop request stops it once.

``dagster dev`` turns SIGINT and SIGTERM into a ``KeyboardInterrupt`` and then shuts its
webserver and daemon down through their shutdown pipes. A second signal that arrives during
that shutdown interrupts it half-way ("Aborted!"), and it arrives in practice: a terminal's
Ctrl-C reaches every process of the foreground group, and GNU make forwards a SIGTERM it
receives to its children, so under ``make ui`` dagster dev was signalled twice. Here dagster
dev runs in a session of its own, and this supervisor forwards the first SIGINT/SIGTERM it
receives as exactly one SIGINT; further signals are absorbed. If dagster dev has not exited
``grace_s`` seconds after the request, its whole process group is killed.

Once a stop was requested, dagster dev exiting by itself within the grace period is a
clean stop whatever its status: an interrupt that lands while it is still starting up
escapes its shutdown handler and click reports it as "Aborted!" with status 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)

#: Seconds dagster dev gets to stop its webserver, daemon and code server after a request.
DEFAULT_GRACE_S = 15.0


def dagster_dev_command(host: str, port: int, workspace: Path) -> list[str]:
    """The ``dagster dev`` command line of this virtual environment.

    Args:
        host: Interface the webserver binds.
        port: Port of the webserver.
        workspace: The ``workspace.yaml`` that names the code location.

    Returns:
        The argv to start.
    """
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "dev", "-h", host, "-p", str(port), "-w", str(workspace)]


def run_supervised(argv: Sequence[str], *, grace_s: float = DEFAULT_GRACE_S) -> int:
    """Run ``argv`` in its own session until it exits; forward one stop request to it.

    Args:
        argv: The command (``dagster dev ...``).
        grace_s: Seconds between the forwarded SIGINT and a SIGKILL of its process group.

    Returns:
        The command's exit status; 0 when it exited by itself after a stop request,
        -9 when it had to be killed.
    """
    stop_requested_at: list[float] = []
    killed = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if not stop_requested_at:
            stop_requested_at.append(time.monotonic())
            logger.info("%s received: stopping dagster dev", signal.Signals(signum).name)
            _signal_group(process.pid, signal.SIGINT)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # children must start with default dispositions even when ours were ignored
    # (a background job of a script inherits SIGINT ignored)
    process = subprocess.Popen(
        list(argv),
        start_new_session=True,
        preexec_fn=_default_signal_dispositions,
    )
    try:
        for sig in previous:
            signal.signal(sig, request_stop)
        while True:
            try:
                return_code = process.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if stop_requested_at and time.monotonic() - stop_requested_at[0] > grace_s:
                    logger.warning("dagster dev still running %.0f s after stop: killing", grace_s)
                    killed = True
                    _signal_group(process.pid, signal.SIGKILL)
        # what dagster dev leaves behind (a code server it lost track of) goes with it
        _signal_group(process.pid, signal.SIGKILL)
        if stop_requested_at and not killed:
            if return_code not in (0, -signal.SIGINT, 128 + signal.SIGINT):
                logger.info("dagster dev stopped on request (exit status %s)", return_code)
            return 0
        return return_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()


def _default_signal_dispositions() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
