"""Run the query API under uvicorn (``bi-platform serve``), with a graceful drain.

:func:`serve` passes the :class:`~bi_platform.serving.app.ServingConfig` to the worker
processes through the environment (:data:`CONFIG_ENV`, JSON without secrets); every
worker builds its own app (:func:`app_factory`: connection pool, cache client, rate
limiter, metrics). With several workers the Prometheus metrics are multiprocess:
``PROMETHEUS_MULTIPROC_DIR`` is set to a fresh directory unless the environment already
names one.

Stopping (SIGTERM or SIGINT), :class:`DrainingServer`:

1. marks the process as draining at once (:data:`~bi_platform.serving.drain.PROCESS_DRAIN`):
   ``/readyz`` answers 503 and every response carries ``Connection: close``;
2. stops listening: new connections are refused;
3. lets the open connections finish: requests in flight and requests already sent on a
   keep-alive connection are answered (with ``Connection: close``, after which the
   connection closes); idle keep-alive connections close at their keep-alive timeout;
4. at ``drain_seconds`` closes what is left (idle connections at once, busy ones after
   their response), cancels what still runs at the deadline, runs the app's shutdown and
   exits 0 (uvicorn alone would re-raise the signal: exit 143).

With several workers, :class:`Supervisor` (instead of uvicorn's) binds the socket, starts
the workers and restarts one that dies; on SIGTERM it closes its own copy of the
listening socket (so the socket closes -- connections refused -- as soon as the workers
close theirs), forwards SIGTERM to every worker, waits up to ``drain_seconds`` + 5 s for
them (then kills) and exits 0 when every worker exited 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn._subprocess import get_subprocess
from uvicorn.config import STARTUP_FAILURE

from bi_platform.serving.app import ServingConfig, create_app
from bi_platform.serving.drain import PROCESS_DRAIN, DrainState
from bi_platform.serving.warehouse import default_threads

logger = logging.getLogger(__name__)

#: Environment variable carrying the config (JSON) from :func:`serve` to the workers.
CONFIG_ENV = "BI_SERVING_CONFIG_JSON"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds the supervisor waits for its workers beyond their drain timeout.
SUPERVISOR_GRACE = 5.0
_POLL = 0.05

__all__ = [
    "CONFIG_ENV",
    "DrainingServer",
    "Supervisor",
    "app_factory",
    "serve",
    "with_worker_threads",
]


def app_factory() -> FastAPI:
    """The app of one worker: the config :func:`serve` exported, else the settings; it
    follows this process's drain state.

    Returns:
        The app (:func:`~bi_platform.serving.app.create_app`).
    """
    text = os.environ.get(CONFIG_ENV)
    return create_app(ServingConfig.from_json(text) if text else None, drain=PROCESS_DRAIN)


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains its connections on SIGTERM/SIGINT and exits normally
    (see the module docstring).

    Args:
        config: The uvicorn config.
        drain_seconds: Seconds from the signal to the exit, at most (plus the app's
            shutdown).
        drain: The drain state the app follows; default: this process's
            (:data:`~bi_platform.serving.drain.PROCESS_DRAIN`).
    """

    def __init__(
        self, config: uvicorn.Config, drain_seconds: float, drain: DrainState | None = None
    ) -> None:
        super().__init__(config)
        if drain_seconds <= 0:
            raise ValueError(f"drain_seconds must be > 0 (got {drain_seconds})")
        self.drain_seconds = drain_seconds
        self._drain = drain
        self.drain_report: dict[str, float | int] = {}

    @property
    def drain(self) -> DrainState:
        return self._drain if self._drain is not None else PROCESS_DRAIN

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start draining at once (``/readyz`` 503), then let uvicorn stop its loop."""
        self.drain.begin()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal capture, without re-raising the signal after a completed
        drain: the process exits 0, not 128 + signal. A forced exit (a second SIGINT)
        keeps uvicorn's behaviour."""
        with super().capture_signals():
            yield
            if not self.force_exit:
                if self._captured_signals:
                    logger.info("drained after signal %s; exiting 0", self._captured_signals)
                self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, drain the connections within ``drain_seconds``, then run the
        app's shutdown."""
        loop = asyncio.get_running_loop()
        self.drain.begin()
        started = loop.time()
        deadline = started + self.drain_seconds
        state = self.server_state
        logger.info(
            "draining: %d connection(s), %d request(s) in flight; up to %.1f s",
            len(state.connections),
            len(state.tasks),
            self.drain_seconds,
        )
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # busy connections answer with Connection: close; idle ones close at their
        # keep-alive timeout (or below, at the deadline)
        final = max(0.0, deadline - min(1.0, self.drain_seconds / 4))
        while state.connections and loop.time() < final and not self.force_exit:
            await asyncio.sleep(_POLL)
        left = len(state.connections)
        for connection in list(state.connections):
            connection.shutdown()  # idle: closed now; busy: closed after its response
        while (state.connections or state.tasks) and loop.time() < deadline:
            if self.force_exit:
                break
            await asyncio.sleep(_POLL)
        cancelled = len(state.tasks)
        for task in list(state.tasks):
            task.cancel(msg="drain timeout")
        self.drain_report = {
            "seconds": round(loop.time() - started, 3),
            "connections_closed_at_deadline": left,
            "requests_cancelled": cancelled,
        }
        if cancelled:
            logger.error(
                "drain: cancelled %d request(s) at the %.1f s deadline",
                cancelled,
                self.drain_seconds,
            )
        logger.info("drained in %.2f s", loop.time() - started)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=0.5)
        if not self.force_exit:
            await self.lifespan.shutdown()


def _worker_main(
    config: uvicorn.Config, drain_seconds: float, sockets: list[socket.socket]
) -> None:
    """Entry point of a worker process (spawned): serve ``sockets`` until drained."""
    DrainingServer(config, drain_seconds).run(sockets=sockets)


class Supervisor:
    """Several :class:`DrainingServer` worker processes on one listening socket.

    Args:
        config: The uvicorn config (``app`` an import string: workers import it).
        workers: Worker processes (>= 2 makes sense; 1 works).
        drain_seconds: Each worker's drain timeout.
    """

    def __init__(self, config: uvicorn.Config, workers: int, drain_seconds: float) -> None:
        self.config = config
        self.workers = workers
        self.drain_seconds = drain_seconds
        self._stop = threading.Event()
        self._signals: list[int] = []

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self._signals.append(sig)
        self._stop.set()

    def _spawn(self, sock: socket.socket) -> SpawnProcess:
        target = functools.partial(_worker_main, self.config, self.drain_seconds)
        process = get_subprocess(self.config, target=target, sockets=[sock])
        process.start()
        logger.info("started worker process [%s]", process.pid)
        return process

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then drain every worker.

        Returns:
            0 when every worker exited 0, else 1 (a worker that failed to start, was
            killed after the grace, or exited with an error).
        """
        sock = self.config.bind_socket()
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        failed = False
        processes: list[SpawnProcess] = []
        try:
            processes = [self._spawn(sock) for _ in range(self.workers)]
            while not self._stop.wait(0.2):
                for index, process in enumerate(processes):
                    if process.is_alive():
                        continue
                    _mark_dead(process.pid)
                    if process.exitcode == STARTUP_FAILURE:
                        logger.error("worker [%s] failed to start; stopping", process.pid)
                        failed = True
                        self._stop.set()
                        break
                    logger.warning(
                        "worker [%s] died (exit %s); starting another",
                        process.pid,
                        process.exitcode,
                    )
                    processes[index] = self._spawn(sock)
            logger.info(
                "supervisor: signal %s, draining %d worker(s)", self._signals, len(processes)
            )
        finally:
            sock.close()  # the socket closes once the workers close their copies
            for process in processes:
                if process.is_alive() and process.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.drain_seconds + SUPERVISOR_GRACE
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    logger.error("worker [%s] did not drain in time; killing it", process.pid)
                    process.kill()
                    process.join(5)
                    failed = True
                elif process.exitcode not in (0, None) and not failed:
                    logger.error("worker [%s] exited with %s", process.pid, process.exitcode)
                    failed = True
                _mark_dead(process.pid)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if failed else 0


def _mark_dead(pid: int | None) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics (if any)."""
    if pid is None or not os.environ.get(_MULTIPROC_ENV):
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(Exception):
        multiprocess.mark_process_dead(pid)


def _prepare_multiprocess_metrics(workers: int) -> Path | None:
    if workers <= 1:
        return None
    existing = os.environ.get(_MULTIPROC_ENV)
    if existing:
        directory = Path(existing)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # counters of an earlier run
            stale.unlink()
        return None
    directory = Path(tempfile.mkdtemp(prefix="bi_serving_prom_"))
    os.environ[_MULTIPROC_ENV] = str(directory)
    return directory


def with_worker_threads(config: ServingConfig, workers: int) -> ServingConfig:
    """``config`` with DuckDB threads for one of ``workers`` processes on this machine
    when it names none: the usable cores shared out (at least 1), so that the workers'
    DuckDB instances together run one thread per core instead of ``workers`` per core
    (the queries over the pre-aggregates are too small to gain from parallelism; the
    requests of a worker run concurrently on its pooled connections anyway)."""
    if config.duckdb_threads is not None:
        return config
    return dataclasses.replace(config, duckdb_threads=max(1, default_threads() // workers))


def serve(
    config: ServingConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    *,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the API on ``host:port`` with ``workers`` processes until SIGTERM/SIGINT,
    then drain for at most ``config.drain_seconds`` and return.

    Args:
        config: What to serve.
        host: Bind address.
        port: Port.
        workers: uvicorn worker processes (>= 1).
        log_level: uvicorn's log level.
        access_log: Log every request.

    Raises:
        SystemExit: The server could not start (uvicorn's startup failure code), or a
            worker did not drain cleanly (1).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    config = with_worker_threads(config, workers)
    os.environ[CONFIG_ENV] = config.to_json()
    created = _prepare_multiprocess_metrics(workers)
    logger.info(
        "serving the BI query API on http://%s:%d with %d worker(s); warehouse %s; drain %.1f s",
        host,
        port,
        workers,
        config.warehouse_path,
        config.drain_seconds,
    )
    uv_config = uvicorn.Config(
        "bi_platform.serving.server:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(config.drain_seconds) + 1,
    )
    try:
        if workers == 1:
            server = DrainingServer(uv_config, config.drain_seconds)
            server.run()
            if not server.started:
                raise SystemExit(STARTUP_FAILURE)
        else:
            code = Supervisor(uv_config, workers, config.drain_seconds).run()
            if code:
                raise SystemExit(code)
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
            os.environ.pop(_MULTIPROC_ENV, None)
