"""A bounded, thread-safe pool of read-only DuckDB connections to the warehouse.

One *generation* per published warehouse file: a base connection
(:func:`~bi_platform.serving.warehouse.open_read_only`, the file ATTACHed read-only in a
fresh in-memory instance) whose ``.cursor()`` children are the pooled slots -- each
cursor is its own DuckDB connection to the shared database instance, so slots run
queries in parallel on the instance's worker threads (``threads``, one per core by
default).

At most ``size`` slots are leased at once; :meth:`ConnectionPool.acquire` waits up to a
timeout for one and reports how long it waited. Each acquire checks the warehouse
file's identity (device, inode, mtime, size): when the builder has swapped in a new file,
the pool opens a new generation for new leases; leases on the old one finish on the old
file, whose base connection closes when its last cursor comes back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from bi_platform.serving.warehouse import (
    CATALOG_ALIAS,
    default_threads,
    open_read_only,
    read_meta,
)

logger = logging.getLogger(__name__)

FileId = tuple[int, int, int, int]


class PoolTimeoutError(TimeoutError):
    """No connection became free within the timeout."""


class PoolClosedError(RuntimeError):
    """The pool was closed."""


def _file_id(path: Path) -> FileId:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class _Generation:
    """The connections to one published warehouse file."""

    number: int
    file_id: FileId
    base: duckdb.DuckDBPyConnection
    data_version: str
    tables: dict[str, int]
    idle: list[duckdb.DuckDBPyConnection] = field(default_factory=list)
    leased: int = 0
    retired: bool = False

    @property
    def table_names(self) -> frozenset[str]:
        return frozenset(self.tables)

    def close_all(self) -> None:
        for cursor in self.idle:
            cursor.close()
        self.idle.clear()
        self.base.close()


@dataclass(frozen=True)
class Lease:
    """A pooled connection lent by :meth:`ConnectionPool.acquire`."""

    connection: duckdb.DuckDBPyConnection
    #: Seconds spent waiting for a free slot.
    wait_seconds: float
    #: ``data_version`` of the warehouse file this connection reads.
    data_version: str
    generation: int
    #: Tables of the warehouse file this connection reads (from ``warehouse_meta``).
    tables: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PoolStats:
    size: int
    leased: int
    idle: int
    generation: int
    data_version: str | None
    acquired: int
    timeouts: int
    wait_seconds_total: float
    wait_seconds_max: float


class ConnectionPool:
    """At most ``size`` concurrent read-only connections to the warehouse at ``path``.

    ``threads``: DuckDB worker threads of each generation's instance (default: the
    machine's usable cores). ``timeout``: default seconds :meth:`acquire` waits.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        size: int = 8,
        threads: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"connection pool size must be >= 1 (got {size})")
        if timeout <= 0:
            raise ValueError(f"connection pool timeout must be > 0 (got {timeout})")
        self.path = Path(path)
        self.size = size
        self.threads = threads or default_threads()
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._current: _Generation | None = None
        self._generations = 0
        self._closed = False
        self._acquired = 0
        self._timeouts = 0
        self._wait_total = 0.0
        self._wait_max = 0.0

    # -- generations -------------------------------------------------------------------
    def _open_generation(self, file_id: FileId) -> _Generation:
        base = open_read_only(self.path, threads=self.threads)
        try:
            data_version, tables = read_meta(base)
        except BaseException:
            base.close()
            raise
        self._generations += 1
        logger.info(
            "connection pool: warehouse %s generation %d (data_version %s, %d threads)",
            self.path,
            self._generations,
            data_version,
            self.threads,
        )
        return _Generation(self._generations, file_id, base, data_version, tables)

    def _current_generation(self) -> _Generation:
        """The generation of the file now at ``path`` (caller holds the lock)."""
        try:
            file_id = _file_id(self.path)
        except FileNotFoundError:
            if self._current is not None:  # keep serving the last good file
                return self._current
            raise FileNotFoundError(
                f"no DuckDB warehouse at {self.path} (materialize serving/bi_warehouse)"
            ) from None
        current = self._current
        if current is not None and current.file_id == file_id:
            return current
        try:
            fresh = self._open_generation(file_id)
        except (duckdb.Error, OSError) as exc:
            if current is None:
                raise
            # e.g. the builder still holds the new file: keep serving the last good one
            logger.warning(
                "connection pool: cannot open the new warehouse file %s yet (%s); "
                "still serving data_version %s",
                self.path,
                exc,
                current.data_version,
            )
            return current
        if current is not None:
            current.retired = True
            if current.leased == 0:
                current.close_all()
        self._current = fresh
        return fresh

    # -- leasing -----------------------------------------------------------------------
    @contextlib.contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[Lease]:
        """Lease a connection for the ``with`` block; wait at most ``timeout`` seconds
        (default: the pool's) for a free slot, else raise :class:`PoolTimeoutError`."""
        limit = self.timeout if timeout is None else timeout
        if self._closed:
            raise PoolClosedError(f"connection pool of {self.path} is closed")
        started = time.perf_counter()
        if not self._slots.acquire(timeout=limit):
            with self._lock:
                self._timeouts += 1
            raise PoolTimeoutError(
                f"no free warehouse connection within {limit:.3f} s "
                f"(pool of {self.size} for {self.path})"
            )
        waited = time.perf_counter() - started
        try:
            with self._lock:
                if self._closed:
                    raise PoolClosedError(f"connection pool of {self.path} is closed")
                gen = self._current_generation()
                if gen.idle:
                    cursor = gen.idle.pop()
                else:
                    cursor = gen.base.cursor()
                    cursor.execute(f"USE {CATALOG_ALIAS}")
                gen.leased += 1
                self._acquired += 1
                self._wait_total += waited
                self._wait_max = max(self._wait_max, waited)
        except BaseException:
            self._slots.release()
            raise
        healthy = True
        try:
            yield Lease(cursor, waited, gen.data_version, gen.number, gen.table_names)
        except duckdb.FatalException:
            healthy = False
            raise
        finally:
            self._release(gen, cursor, healthy)

    def _release(self, gen: _Generation, cursor: duckdb.DuckDBPyConnection, healthy: bool) -> None:
        if healthy:
            try:  # DuckDB 2 refuses new work while a result of execute() is unfetched
                cursor.abort()
            except duckdb.Error as exc:
                logger.warning(
                    "connection pool: dropping a connection that failed to reset: %s", exc
                )
                healthy = False
        try:
            with self._lock:
                gen.leased -= 1
                if healthy and not gen.retired and not self._closed:
                    gen.idle.append(cursor)
                else:
                    cursor.close()
                    if gen.retired and gen.leased == 0:
                        gen.close_all()
                        logger.info("connection pool: closed generation %d", gen.number)
        finally:
            self._slots.release()

    # -- introspection and shutdown ----------------------------------------------------
    def data_version(self) -> str:
        """The ``data_version`` of the warehouse now at ``path`` (opens it if needed)."""
        with self._lock:
            return self._current_generation().data_version

    def current_data_version(self) -> str | None:
        """The ``data_version`` of the warehouse now at ``path`` when the pool already has
        it open, else ``None``; lock-free (one ``stat`` of the file, compared with the
        current generation -- an attribute swapped atomically when a new file is opened),
        so the event loop can call it. ``None`` means: ask :meth:`data_version`."""
        current = self._current
        if current is None or self._closed:
            return None
        try:
            file_id = _file_id(self.path)
        except OSError:
            return None
        return current.data_version if file_id == current.file_id else None

    def stats(self) -> PoolStats:
        with self._lock:
            gen = self._current
            return PoolStats(
                size=self.size,
                leased=gen.leased if gen else 0,
                idle=len(gen.idle) if gen else 0,
                generation=gen.number if gen else 0,
                data_version=gen.data_version if gen else None,
                acquired=self._acquired,
                timeouts=self._timeouts,
                wait_seconds_total=self._wait_total,
                wait_seconds_max=self._wait_max,
            )

    def close(self) -> None:
        """Close idle connections now and leased ones when they come back."""
        with self._lock:
            self._closed = True
            gen, self._current = self._current, None
            if gen is not None:
                gen.retired = True
                if gen.leased == 0:
                    gen.close_all()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
