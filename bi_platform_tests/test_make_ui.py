"""`make ui` as users run it: the UI answers, and Ctrl-C (or a SIGTERM) stops webserver,
daemon and code server within seconds, even when make was started from a script whose
background jobs ignore SIGINT (the shell's default for `cmd &`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from bi_platform.runtime.postgres import free_port
from bi_platform_tests.conftest import REPO_ROOT, Platform

STOP_WITHIN_S = 20


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_ui_serves_and_stops_within_seconds(platform: Platform, sig: signal.Signals) -> None:
    env_link = REPO_ROOT / ".env"
    had_env = env_link.exists() or env_link.is_symlink()
    port = free_port()
    log = platform.home / f"make-ui-{sig.name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["make", "ui", f"UI_PORT={port}", f"BI_PLATFORM_HOME={platform.home}"],
            cwd=REPO_ROOT,
            env=platform.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_ignore_sigint,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                        break
                except OSError:
                    assert process.poll() is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "make ui did not serve in 180 s"
                    time.sleep(1)
            os.killpg(process.pid, sig)  # what a terminal's Ctrl-C (or a supervisor) does
            started = time.monotonic()
            process.wait(timeout=STOP_WITHIN_S + 40)
            stopped_after = time.monotonic() - started
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            left_running = _dagster_processes_of(platform.home)
            for pid in left_running:
                os.kill(pid, signal.SIGKILL)
            if not had_env and env_link.is_symlink():
                env_link.unlink()  # `make up` links it; leave the checkout as it was
    output = log.read_text()
    assert stopped_after < STOP_WITHIN_S, f"stopped only after {stopped_after:.0f} s"
    # make itself may die of the SIGTERM it was sent; its recipe must not fail
    assert process.returncode in (0, -sig), output[-3000:]
    assert "] Error" not in output, output[-3000:]
    assert "Dagster services shut down" in output, output[-3000:]
    assert "Aborted!" not in output, output[-3000:]
    assert left_running == {}, "processes left running after the stop"


def _dagster_processes_of(home: Path) -> dict[int, str]:
    """The live dagster processes started with BI_PLATFORM_HOME=home: pid -> command line."""
    marker = f"BI_PLATFORM_HOME={home}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"dagster" in cmdline and marker in environ.split(b"\0") and state != "Z":
            found[int(proc.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found
