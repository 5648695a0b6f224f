"""Run monitoring for the platform's instance: a run whose process died is marked failed.

Dagster's run monitoring (``run_monitoring`` in dagster.yaml, done by the daemon) asks
the run launcher whether a STARTED run's worker still lives. The default launcher cannot
tell, so a run whose process was killed stayed STARTED forever. :class:`MonitoredRunLauncher`
launches runs exactly as :class:`~dagster.DefaultRunLauncher` does and answers:

- runs launched through a code server (UI, schedules, sensors, automation) carry the
  server's address (``dagster/grpc_info``): the run lives while that server still runs
  it; a server that is gone (e.g. ``dagster dev`` killed) took its run workers with it;
- runs executed in a process of their own (``bi-platform materialize``) carry
  :data:`RUN_WORKER_TAG` (host, pid and start time of that process): on the same host,
  the run lives while that process does.

Anything else is reported as running (never failed on a guess). :func:`fail_dead_runs`
applies the same test without the daemon, at the start of ``bi-platform materialize``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping

import dagster as dg
import psutil
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

log = logging.getLogger(__name__)

#: ``<host>:<pid>:<process start time>`` of the process executing a run in-process.
RUN_WORKER_TAG = "bi_platform/run_worker"
#: Seconds to wait for a code server's answer.
GRPC_TIMEOUT = 10


def run_worker_tags(pid: int | None = None) -> dict[str, str]:
    """The :data:`RUN_WORKER_TAG` of this process (or of ``pid`` on this host)."""
    process = psutil.Process(pid or os.getpid())
    return {RUN_WORKER_TAG: f"{socket.gethostname()}:{process.pid}:{process.create_time():.3f}"}


def _local_worker_status(tag: str) -> CheckRunHealthResult:
    host, _, rest = tag.partition(":")
    pid_text, _, started_text = rest.partition(":")
    if host != socket.gethostname():
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker on another host ({host})")
    try:
        pid, started = int(pid_text), float(started_text)
    except ValueError:
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"unreadable {RUN_WORKER_TAG}: {tag}")
    try:
        process = psutil.Process(pid)
        alive = abs(process.create_time() - started) < 1.0 and process.status() != "zombie"
    except psutil.NoSuchProcess:
        alive = False
    if alive:
        return CheckRunHealthResult(WorkerStatus.RUNNING)
    return CheckRunHealthResult(
        WorkerStatus.FAILED, f"the process running it (pid {pid} on {host}) is gone"
    )


def _grpc_worker_status(run_id: str, grpc_info: str) -> CheckRunHealthResult:
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
    from dagster._serdes import deserialize_value

    info = json.loads(grpc_info)
    client = DagsterGrpcClient(
        port=info.get("port"),
        socket=info.get("socket"),
        host=info.get("host"),
        use_ssl=bool(info.get("use_ssl", False)),
    )
    try:
        answer = deserialize_value(
            client.can_cancel_execution(
                CanCancelExecutionRequest(run_id=run_id), timeout=GRPC_TIMEOUT
            ),
            CanCancelExecutionResult,
        )
    except DagsterUserCodeUnreachableError:
        return CheckRunHealthResult(
            WorkerStatus.FAILED, "the code server that launched it is gone, with its run worker"
        )
    if answer.can_cancel:
        return CheckRunHealthResult(WorkerStatus.RUNNING)
    return CheckRunHealthResult(
        WorkerStatus.FAILED, "its code server no longer runs it (the run worker exited)"
    )


def worker_status(run_id: str, tags: Mapping[str, str]) -> CheckRunHealthResult:
    """Whether the process executing run ``run_id`` (with these tags) still lives."""
    if RUN_WORKER_TAG in tags:
        return _local_worker_status(tags[RUN_WORKER_TAG])
    if GRPC_INFO_TAG in tags:
        return _grpc_worker_status(run_id, tags[GRPC_INFO_TAG])
    return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker recorded")


class MonitoredRunLauncher(DefaultRunLauncher):
    """:class:`~dagster.DefaultRunLauncher` that can tell run monitoring whether a run's
    worker still lives (see the module docstring)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        return worker_status(run.run_id, run.tags)


def fail_dead_runs(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """Mark failed the STARTED runs whose worker is gone; returns (run id, reason) of each."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        health = worker_status(run.run_id, run.tags)
        if health.status != WorkerStatus.FAILED:
            continue
        latest = instance.get_run_by_id(run.run_id)
        if latest is None or latest.status != dg.DagsterRunStatus.STARTED:
            continue  # it finished meanwhile
        message = f"Run worker died: {health.msg}. Marked failed by bi_platform run monitoring."
        instance.report_run_failed(latest, message)
        failed.append((run.run_id, health.msg or ""))
    return failed
