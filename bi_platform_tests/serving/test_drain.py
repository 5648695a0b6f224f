"""Graceful drain: ``bi-platform serve`` (1 and 2 workers, real processes) under a
keep-alive load from an asyncio HTTP/1.1 client is sent SIGTERM. Every request sent gets
its full answer (in flight or already on the wire), each connection is told
``Connection: close`` and closed by the server, ``/readyz`` answers 503 at once, new
connections are refused, and the process exits 0 within the drain timeout."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bi_platform.serving.app import DEFAULT_DRAIN_SECONDS, ServingConfig
from bi_platform_tests.conftest import bi_platform_cli
from bi_platform_tests.serving import SmallLake
from bi_platform_tests.serving.conftest import build_test_warehouse

logger = logging.getLogger(__name__)

#: Uncached queries: every request does real work, so many are in flight at SIGTERM.
PATHS = [
    "/api/v1/queries/sales_by_une",
    "/api/v1/queries/top_products_by_segment?segmento=PAPELARIA",
    "/api/v1/queries/critical_rupture?limite=50",
    "/api/v1/queries/abc_distribution",
    "/api/v1/queries/segment_sales_evolution?segmento=TECIDOS",
    "/api/v1/queries/near_reorder_point?margem=0.25",
]
CONNECTIONS = 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tally:
    """What the load generator saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    #: Requests sent that got no complete answer (reset, EOF, timeout).
    dropped: list[str] = field(default_factory=list)
    #: Answers received after SIGTERM was sent.
    after_signal: int = 0
    #: Connections the server ended with ``Connection: close``.
    closed_by_server: int = 0
    readyz_after_signal: list[int] = field(default_factory=list)
    refused_after_signal: int = 0
    accepted_after_signal: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise AssertionError(f"no content-length: {headers}")
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


async def _keep_alive(
    port: int, paths: list[str], offset: int, tally: Tally, signalled: asyncio.Event
) -> None:
    """Requests back to back on one connection until the server says Connection: close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        index = offset
        while True:
            path = paths[index % len(paths)]
            index += 1
            writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            try:
                status, headers, _ = await asyncio.wait_for(_read_response(reader), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                tally.dropped.append(f"{path}: {exc!r}")
                return
            tally.statuses[status] += 1
            if path == "/readyz" and signalled.is_set():
                tally.readyz_after_signal.append(status)
                if status == 503:  # the LB's view; the statuses below are the load's
                    tally.statuses[status] -= 1
            if signalled.is_set():
                tally.after_signal += 1
            if headers.get("connection", "").lower() == "close":
                tally.closed_by_server += 1
                return
            if path == "/readyz":
                await asyncio.sleep(0.02)
    finally:
        writer.close()


async def _idle(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive connection after one request, left idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    status, headers, _ = await _read_response(reader)
    assert status == 200 and headers.get("connection") != "close"
    return reader, writer


async def _drive(
    port: int, process: subprocess.Popen[bytes], load_seconds: float
) -> tuple[Tally, float]:
    tally = Tally()
    signalled = asyncio.Event()
    # two idle keep-alive connections: one asks /readyz after the signal, the other keeps
    # the server draining (until its keep-alive timeout) while new connections are tried
    ready_reader, ready_writer = await _idle(port)
    _, held_writer = await _idle(port)
    workers = [
        asyncio.create_task(_keep_alive(port, PATHS, i, tally, signalled))
        for i in range(CONNECTIONS)
    ]
    probe = asyncio.create_task(_keep_alive(port, ["/readyz"], 0, tally, signalled))
    await asyncio.sleep(load_seconds)
    assert sum(tally.statuses.values()) > CONNECTIONS, tally  # the load is running
    process.send_signal(signal.SIGTERM)
    signalled.set()
    signal_at = time.monotonic()
    await asyncio.sleep(0.3)
    # new connections are refused while the server still drains
    for _ in range(5):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            tally.refused_after_signal += 1
        else:
            tally.accepted_after_signal += 1
            writer.close()
        await asyncio.sleep(0.05)
    assert process.poll() is None, "the server exited before the idle connection closed"
    # a request on an already-open keep-alive connection is answered: /readyz says 503
    ready_writer.write(b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n")
    status, headers, _ = await asyncio.wait_for(_read_response(ready_reader), 10)
    tally.readyz_after_signal.append(status)
    assert headers.get("connection") == "close"
    assert await ready_reader.read() == b""  # then the server closes it
    ready_writer.close()
    await asyncio.wait_for(asyncio.gather(*workers, probe), 30)
    held_writer.close()
    return tally, signal_at


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_keep_alive_load_and_exits_0(
    serving_lake: SmallLake, tmp_path: Path, workers: int
) -> None:
    warehouse = tmp_path / "bi_warehouse.duckdb"
    build_test_warehouse(serving_lake, warehouse)
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SERVING_") and k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        BI_PLATFORM_HOME=str(tmp_path / "home"),
        SERVING_WAREHOUSE_PATH=str(warehouse),
        SERVING_AUTH="false",
        SERVING_CACHE="false",
        SERVING_RATE_LIMIT="1000000/minute",
        SERVING_POOL_SIZE="4",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [bi_platform_cli(), "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        tally, signal_at = asyncio.run(_drive(port, process, load_seconds=2.0))
        code = process.wait(timeout=DEFAULT_DRAIN_SECONDS + 10)
        drained_in = time.monotonic() - signal_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    output = log.read_text(errors="replace")
    logger.info("drain with %d worker(s): %s; %.2f s", workers, tally, drained_in)
    assert code == 0, output[-3000:]
    assert tally.dropped == [], tally.dropped  # no reset, no EOF, no timeout
    assert set(+tally.statuses) <= {200}, tally.statuses  # only 2xx (no 4xx, no 5xx)
    # every load connection got answers after the signal, then Connection: close
    assert tally.closed_by_server == CONNECTIONS + 1, tally
    assert tally.after_signal >= CONNECTIONS, tally
    # /readyz: 503 for requests after the signal (one begun before may still say 200)
    assert tally.readyz_after_signal[-1] == 503, tally.readyz_after_signal
    assert set(tally.readyz_after_signal) <= {200, 503}
    assert tally.refused_after_signal == 5 and tally.accepted_after_signal == 0
    # within the drain timeout: the idle connection closed at uvicorn's keep-alive timeout
    assert drained_in < DEFAULT_DRAIN_SECONDS + 2, drained_in
    assert "Traceback" not in output and "ERROR" not in output, output[-3000:]


def test_the_drain_timeout_bounds_the_exit(serving_lake: SmallLake, tmp_path: Path) -> None:
    """An idle keep-alive connection that never closes does not hold the server past
    ``drain_seconds``: it is closed at the deadline and the process exits 0."""
    warehouse = tmp_path / "bi_warehouse.duckdb"
    build_test_warehouse(serving_lake, warehouse)
    config = ServingConfig(warehouse_path=warehouse, auth=False, pool_size=2, drain_seconds=1.5)
    port = _free_port()
    code = (
        "import logging, sys; logging.basicConfig(level='INFO', stream=sys.stderr);"
        "from bi_platform.serving.app import ServingConfig;"
        "from bi_platform.serving.server import serve;"
        f"serve(ServingConfig.from_json({config.to_json()!r}), '127.0.0.1', {port}, 1,"
        " log_level='warning')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port)) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                chunk = idle.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 OK")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=15)
            elapsed = time.monotonic() - started
            assert idle.recv(4096) == b""  # closed by the server, idle: nothing lost
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=10)
    assert returncode == 0, stderr[-3000:]
    assert 1.0 < elapsed < 1.5 + 1.5, elapsed
    assert "drained in" in stderr
