"""How the run launcher tells run monitoring whether a run's worker lives: the process
of an in-process run (host, pid, start time), the code server of a launched run."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

from bi_platform.runtime.postgres import free_port
from bi_platform.runtime.run_launcher import (
    RUN_WORKER_TAG,
    MonitoredRunLauncher,
    run_worker_tags,
    worker_status,
)


def test_this_process_is_alive() -> None:
    assert worker_status("r", run_worker_tags()).status == WorkerStatus.RUNNING


def test_an_exited_process_is_dead_and_named() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    tags = run_worker_tags(child.pid)
    assert worker_status("r", tags).status == WorkerStatus.RUNNING
    child.kill()
    child.wait()
    health = worker_status("r", tags)
    assert health.status == WorkerStatus.FAILED
    assert f"pid {child.pid}" in (health.msg or "")


def test_a_reused_pid_is_not_the_run_worker() -> None:
    host, pid, started = run_worker_tags()[RUN_WORKER_TAG].split(":")
    tags = {RUN_WORKER_TAG: f"{host}:{pid}:{float(started) - 3600:.3f}"}  # same pid, older
    assert worker_status("r", tags).status == WorkerStatus.FAILED


def test_another_host_or_no_record_is_never_failed_on_a_guess() -> None:
    other = {RUN_WORKER_TAG: "elsewhere:1:1.0"}
    assert worker_status("r", other).status == WorkerStatus.RUNNING
    assert worker_status("r", {}).status == WorkerStatus.RUNNING


def test_a_code_server_that_is_gone_took_its_run_worker_with_it() -> None:
    grpc = {GRPC_INFO_TAG: json.dumps({"host": "127.0.0.1", "port": free_port()})}
    health = worker_status("r", grpc)
    assert health.status == WorkerStatus.FAILED
    assert "code server" in (health.msg or "")


def test_the_instance_uses_it_and_supports_health_checks(tmp_path) -> None:
    launcher_config = {
        "run_launcher": {
            "module": "bi_platform.runtime.run_launcher",
            "class": "MonitoredRunLauncher",
        }
    }
    with dg.instance_for_test(overrides=launcher_config) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, MonitoredRunLauncher)
        assert launcher.supports_check_run_worker_health
