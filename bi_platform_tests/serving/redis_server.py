"""A throwaway real Redis server for tests (Debian ``redis-server``, installed by
``make system-deps``): no persistence, loopback only, a free port, a temp dir.

    with RedisServer() as url:   # "redis://127.0.0.1:<port>/0"
        ...

:meth:`RedisServer.pause` / :meth:`RedisServer.resume` SIGSTOP / SIGCONT it (a hung
server, as a network partition looks).

:func:`redis_server` is a session fixture built on it; :func:`redis_url` gives each test
an empty database on that server.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import redis

logger = logging.getLogger(__name__)

REDIS_SERVER = "/usr/bin/redis-server"


def _redis_server_binary() -> str:
    found = shutil.which("redis-server") or (REDIS_SERVER if Path(REDIS_SERVER).exists() else None)
    if found is None:
        raise RuntimeError(
            "redis-server is not installed; the serving tests need a real Redis. "
            "Run `make system-deps` (installs the Debian redis-server package)."
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process; the context value is its URL."""

    def __init__(self, startup_timeout: float = 10.0) -> None:
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.url: str | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary = _redis_server_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="bi_test_redis_"))
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            log = self._dir / f"redis-{port}.log"
            self._process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self._dir),
                    "--logfile",
                    str(log),
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            url = f"redis://127.0.0.1:{port}/0"
            if self._wait_ready(url):
                self.port, self.url = port, url
                logger.info("test redis-server on %s (pid %d)", url, self._process.pid)
                return url
            last_error = log.read_text(errors="replace") if log.exists() else ""
            self._terminate()
        self.stop()
        raise RuntimeError(f"redis-server did not start; last log:\n{last_error[-2000:]}")

    @property
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its socket (connections still open, commands are
        queued unanswered), as a hung server or a network partition looks to clients."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the server."""
        os.kill(self.pid, signal.SIGCONT)

    def _wait_ready(self, url: str) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.RedisError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def _terminate(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGCONT)  # a paused server cannot exit
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def stop(self) -> None:
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The URL of a real Redis server for the whole session."""
    with RedisServer() as url:
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session server's URL, its database emptied before the test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushdb()
    finally:
        client.close()
    yield redis_server
