"""The HF dataset -> PostgreSQL migration.

:func:`migrate_from_repo` loads every month shard of a dataset revision into ``news``
through :func:`~bi_platform.news.pg_write.write_records`, one transaction per shard, in
parallel (:data:`DEFAULT_MIGRATION_WORKERS` connections); a shard done before (a
``success`` row in ``sync_log``, operation :data:`~bi_platform.news.sync_log.MIGRATION_OPERATION`)
is skipped, so a migration is resumable. Into an empty ``news`` the indexes, keys and
foreign keys are dropped first and restored at the end (:func:`restore_deferred_indexes`).
It owns its connections and commits.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow.compute as pc
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from bi_platform.news.pg_write import (
    WRITE_LOCK_KEY,
    DirectCopyRefusedError,
    WriteResult,
    write_records,
)
from bi_platform.news.sync_log import (
    INDEX_OPERATION,
    MIGRATION_OPERATION,
    finish_log,
    start_log,
    succeeded_scopes,
)
from bi_platform.news.validation import Identity, Validated

if TYPE_CHECKING:
    from bi_platform.news.dataset_repo import DatasetRepo

log = logging.getLogger(__name__)


#: Session-level advisory lock held by a running :func:`migrate_from_repo` (the hashed
#: name is fixed, see docs/decisions.md).
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"bi_platform.news.pg_store.migration").digest()[:8], "big", signed=True
)

#: Shards migrated at once, each by its own connection (so its own server process).
DEFAULT_MIGRATION_WORKERS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ShardReport:
    """One month shard of a migration: ``migrated``, ``skipped`` (done before) or ``failed``."""

    month: str
    status: str
    result: WriteResult | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class MigrationReport:
    """The outcome of :func:`migrate_from_repo`."""

    revision: str | None
    shards: tuple[ShardReport, ...] = ()
    seconds: float = 0.0
    #: shards a bulk load deferred until after the rebuild (their keys collided)
    deferred: tuple[str, ...] = ()

    def _sum(self, name: str) -> int:
        return sum(getattr(s.result, name) for s in self.shards if s.result is not None)

    @property
    def migrated(self) -> list[str]:
        return [s.month for s in self.shards if s.status == "migrated"]

    @property
    def skipped(self) -> list[str]:
        return [s.month for s in self.shards if s.status == "skipped"]

    @property
    def failed(self) -> list[str]:
        return [s.month for s in self.shards if s.status == "failed"]

    @property
    def rows_in(self) -> int:
        return self._sum("rows_in")

    @property
    def inserted(self) -> int:
        return self._sum("inserted")

    @property
    def updated(self) -> int:
        return self._sum("updated")

    @property
    def unchanged(self) -> int:
        return self._sum("unchanged")

    @property
    def rejected(self) -> int:
        return self._sum("rejected")

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "migrated": self.migrated,
            "skipped": self.skipped,
            "failed": self.failed,
            "deferred": list(self.deferred),
            "rows_in": self.rows_in,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second),
        }


class MigrationError(RuntimeError):
    """Some shards of a migration failed (the others are committed); see ``report``."""

    def __init__(self, message: str, report: MigrationReport) -> None:
        super().__init__(message)
        self.report = report


def migrate_from_repo(
    conninfo: str,
    repo: DatasetRepo,
    *,
    revision: str | None = None,
    months: Iterable[str] | None = None,
    defer_indexes: bool = True,
    hook: Callable[[str, int], None] | None = None,
    workers: int = DEFAULT_MIGRATION_WORKERS,
) -> MigrationReport:
    """Copy the dataset at ``revision`` (default: the head, pinned at the start) into PG.

    Each month shard not yet migrated at that revision (``sync_log`` operation
    ``migration``, scope ``"<revision>:<month>"``, status ``success``) is migrated in ONE
    transaction: log row, :func:`write_records`, log finished, commit. So an interrupted
    run (killed connection, crash) loses only the shard in flight, and a rerun resumes
    with it; already-committed shards are skipped, and a re-migrated shard would be
    all ``unchanged`` anyway. ``months`` limits the shards; ``hook(month, backend_pid)``
    is called inside each shard's transaction just before it commits (tests use it to
    kill the connection there). ``workers`` shards are migrated at once, each in its own
    connection (:func:`_migrate_shards`).

    Initial load (``news`` empty, or the rerun of an initial load that died): each
    shard's rows are COPYed straight into ``news`` (``write_records(assume_new=True)``,
    falling back to the merge for a shard whose rows collide with stored ones).

    Bulk load (``defer_indexes``, only when ``news`` is empty), as pg_restore does it:
    every index, key and foreign key of ``news`` is dropped before the first shard and
    rebuilt after the last (index builds and one validating scan per foreign key,
    instead of per-row maintenance and trigger calls; every row was already checked
    against the same rules by :func:`validate_records`). The CHECK constraints stay.
    Without the unique indexes a COPY cannot detect a story stored twice, so each
    shard first claims its ``unique_id`` and (agency, url) keys (:class:`_KeyClaims`):
    a shard sharing a key with a shard already loaded is deferred, and loaded after the
    rebuild through the merge like any writer (same result, just slower). Other writers
    wait for the rebuild (the migration holds :data:`~bi_platform.news.pg_write.WRITE_LOCK_KEY`
    meanwhile). The definitions are kept in a ``sync_log`` row (operation
    :data:`INDEX_OPERATION`, ``running`` while they are missing), so a migration that
    dies in between has them rebuilt by its rerun: first the unique ones, before any
    row is loaded (:func:`restore_deferred_indexes` does it alone).

    A shard that fails for another reason (e.g. an unreadable file) is logged as
    ``failed`` and the others go on; :class:`MigrationError` is raised at the end. A
    lost connection is raised at once. Only one migration runs at a time (session
    advisory lock :data:`MIGRATION_LOCK_KEY`).
    """
    started = time.perf_counter()
    revision = revision or repo.head()
    if revision is None:
        log.info("migration: %r is empty, nothing to migrate", repo)
        return MigrationReport(None)
    available = repo.list_shards(revision)
    wanted = available if months is None else sorted(set(months) & set(available))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()
        if not (locked and locked[0]):
            raise RuntimeError("another HF -> PostgreSQL migration is running on this database")
        done = succeeded_scopes(conn, MIGRATION_OPERATION, prefix=f"{revision}:")
        todo = [m for m in wanted if f"{revision}:{m}" not in done]
        log.info(
            "migration of %r at %s: %d shard(s), %d already done",
            repo,
            revision[:12],
            len(wanted),
            len(wanted) - len(todo),
        )
        # an initial load (or the rerun of one that died): rows are expected to be new
        initial_load = conn.execute(
            "SELECT NOT EXISTS (SELECT FROM news) OR EXISTS (SELECT FROM sync_log "
            "WHERE operation = %s AND status = 'running')",
            (INDEX_OPERATION,),
        ).fetchone()
        assume_new = bool(initial_load and initial_load[0])
        if _unique_keys_missing(conn):  # a bulk load died: no load without its keys
            restore_deferred_indexes(conn, conninfo=conninfo, workers=workers)
        by_month = {m: ShardReport(m, "skipped") for m in wanted if m not in todo}
        bulk = False
        deferred: list[str] = []
        try:
            if defer_indexes and todo:
                conn.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK_KEY,))
                bulk = bool(_drop_secondary_indexes_if_empty(conn))
                if not bulk:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK_KEY,))
            claims = _KeyClaims() if bulk else None
            if todo:
                by_month.update(
                    _migrate_shards(
                        conninfo, repo, revision, todo, hook, assume_new, workers, claims
                    )
                )
            deferred = [m for m in todo if by_month[m].status == DEFERRED]
            if bulk:
                restore_deferred_indexes(conn, conninfo=conninfo, workers=workers)
                conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK_KEY,))
                bulk = False
            if deferred:
                log.info(
                    "migration: %d shard(s) deferred by key collisions: %s", len(deferred), deferred
                )
                by_month.update(
                    _migrate_shards(conninfo, repo, revision, deferred, hook, True, workers)
                )
        finally:
            if bulk and not (conn.broken or conn.closed):  # other writers may go on
                with suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK_KEY,))
        reports = [by_month[m] for m in wanted]
        for number, last in enumerate(reports, start=1):
            if last.result is not None:
                r = last.result
                log.info(
                    "migration %d/%d: shard %s: %d rows, %d inserted, %d updated, "
                    "%d unchanged, %d rejected in %.1fs (%.0f rows/s)",
                    number,
                    len(wanted),
                    last.month,
                    r.rows_in,
                    r.inserted,
                    r.updated,
                    r.unchanged,
                    r.rejected,
                    last.seconds,
                    r.rows_in / last.seconds if last.seconds else 0.0,
                )
        restore_deferred_indexes(conn, conninfo=conninfo, workers=workers)
    report = MigrationReport(
        revision, tuple(reports), time.perf_counter() - started, tuple(deferred)
    )
    log.info("migration at %s finished: %s", revision[:12], report.as_dict())
    if report.failed:
        raise MigrationError(
            f"migration at {revision}: shard(s) {report.failed} failed (see sync_log); "
            "rerun to retry them",
            report,
        )
    return report


#: The indexes of ``news`` that no constraint owns (the partial unique index on
#: (agency_key, url) included).
_STANDALONE_INDEXES = """
    SELECT c.relname, pg_get_indexdef(i.indexrelid)
    FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
    WHERE i.indrelid = 'news'::regclass
      AND NOT EXISTS (SELECT FROM pg_constraint AS k WHERE k.conindid = i.indexrelid)
    ORDER BY c.relname
"""

#: Foreign keys of ``news``: the constraints a bulk load defers besides its keys. Its
#: CHECKs stay in force during the load: each costs the load's backends a cheap test per
#: row, in parallel, where adding them back would be one more serial scan of the heap.
_FOREIGN_KEYS = """
    SELECT conname, pg_get_constraintdef(oid)
    FROM pg_constraint
    WHERE conrelid = 'news'::regclass AND contype = 'f'
    ORDER BY conname
"""

#: The primary key and unique constraints of ``news``: name -> [kind, index definition].
_KEY_CONSTRAINTS = """
    SELECT k.conname,
           CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
           pg_get_indexdef(k.conindid)
    FROM pg_constraint AS k
    WHERE k.conrelid = 'news'::regclass AND k.contype IN ('p', 'u')
    ORDER BY k.conname
"""

#: Status of a shard whose keys collided with another shard's during a bulk load.
DEFERRED = "deferred"


class _KeyClaims:
    """The ``unique_id`` and (agency, url) keys of the shards bulk-loaded so far.

    :meth:`claim` is the ``claim`` of :func:`write_records` during a bulk load: the
    unique indexes are missing, so a shard sharing a key with a shard already claimed
    must not be COPYed. Keys are kept as Python hashes (a hash collision only defers a
    shard, it never lets a duplicate through); the url key is null only for a null url,
    as in the partial unique index ``news_agency_url_key``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self._keys: set[int] = set()

    def claim(self, validated: Validated) -> bool:
        """Record the keys of ``validated``; False (nothing recorded) if one is taken."""
        table = validated.table
        ids = {hash(u) for u in table.column("unique_id").to_pylist()}
        joined = pc.binary_join_element_wise(table.column("agency"), table.column("url"), "\x1f")
        keys = {hash(k) for k in joined.to_pylist() if k is not None}
        with self._lock:
            if not (self._ids.isdisjoint(ids) and self._keys.isdisjoint(keys)):
                return False
            self._ids |= ids
            self._keys |= keys
        return True


def _unique_keys_missing(conn: psycopg.Connection[Any]) -> bool:
    """Whether a bulk load that died left ``news`` without its unique indexes."""
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM sync_log WHERE operation = %s AND status = 'running' "
        "AND jsonb_typeof(details -> 'keys') = 'object' AND details -> 'keys' <> '{}')",
        (INDEX_OPERATION,),
    ).fetchone()
    return bool(row and row[0])


def _drop_secondary_indexes_if_empty(conn: psycopg.Connection[Any]) -> list[str]:
    """If ``news`` is empty: record, then drop, all its indexes, keys and foreign keys
    (one transaction); the names dropped."""
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("LOCK TABLE news IN SHARE ROW EXCLUSIVE MODE")  # no writer gets in
        if cur.execute("SELECT EXISTS (SELECT FROM news)").fetchone() != (False,):
            return []
        indexes = dict(cur.execute(_STANDALONE_INDEXES).fetchall())
        constraints = dict(cur.execute(_FOREIGN_KEYS).fetchall())
        keys = {name: [kind, ddl] for name, kind, ddl in cur.execute(_KEY_CONSTRAINTS).fetchall()}
        if not indexes and not constraints and not keys:
            return []
        # the record stays 'running' until restore_deferred_indexes rebuilds them
        log_id = start_log(
            conn,
            INDEX_OPERATION,
            "news",
            {"indexes": indexes, "constraints": constraints, "keys": keys},
        )
        for name in [*constraints, *keys]:  # foreign keys first
            cur.execute(sql.SQL("ALTER TABLE news DROP CONSTRAINT {}").format(sql.Identifier(name)))
        for name in indexes:
            cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    dropped = sorted([*indexes, *constraints, *keys])
    log.info(
        "migration: news is empty; %d index(es), %d key(s) and %d foreign key(s) deferred "
        "for the load (sync_log %d): %s",
        len(indexes),
        len(keys),
        len(constraints),
        log_id,
        dropped,
    )
    return dropped


def restore_deferred_indexes(
    conn: psycopg.Connection[Any], *, conninfo: str | None = None, workers: int = 1
) -> list[str]:
    """Rebuild the indexes and constraints a migration's fast path dropped and has not
    restored yet.

    Idempotent (``CREATE INDEX IF NOT EXISTS``, constraints added only when absent) from
    the recorded definitions, PostgreSQL's own ``pg_get_indexdef`` /
    ``pg_get_constraintdef`` output. The indexes are built ``workers`` at a time on
    connections to ``conninfo`` (index builds share their table lock), each committed on
    its own; then the constraints are added in one ``ALTER TABLE`` (each checked against
    every row once, instead of a trigger call per row during the load) in the
    transaction that closes the record as ``success``. A crash in between leaves the
    record ``running``, and the next call finishes the job. ``conn``: autocommit, no
    open transaction. Returns the names restored.
    """
    restored: list[str] = []
    with conn.cursor(row_factory=tuple_row) as cur:
        pending = cur.execute(
            "SELECT id, details -> 'indexes', details -> 'constraints', details -> 'keys' "
            "FROM sync_log WHERE operation = %s AND status = 'running' ORDER BY id",
            (INDEX_OPERATION,),
        ).fetchall()
    for log_id, indexes, constraints, keys in pending:
        started = time.perf_counter()
        indexes, constraints, keys = indexes or {}, constraints or {}, keys or {}
        statements = [
            _create_index_if_missing(log_id, ddl)
            for ddl in [*indexes.values(), *(ddl for _, ddl in keys.values())]
        ]
        if conninfo is not None and workers > 1 and len(statements) > 1:
            with ThreadPoolExecutor(min(workers, len(statements))) as executor:
                list(executor.map(functools.partial(_run_maintenance, conninfo), statements))
        else:
            for statement in statements:
                _run_maintenance(conn, statement)
        restored += list(indexes)
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            present = {
                row[0]
                for row in cur.execute(
                    "SELECT conname FROM pg_constraint WHERE conrelid = 'news'::regclass"
                ).fetchall()
            }
            missing = [  # the keys take the unique indexes just built
                sql.SQL("ADD CONSTRAINT {} {} USING INDEX {}").format(
                    sql.Identifier(name),
                    sql.SQL(kind),  # type: ignore[arg-type]
                    sql.Identifier(name),
                )
                for name, (kind, _) in keys.items()
                if name not in present and kind in ("PRIMARY KEY", "UNIQUE")
            ]
            missing += [
                sql.SQL("ADD CONSTRAINT {} {}").format(
                    sql.Identifier(name),
                    sql.SQL(definition),  # type: ignore[arg-type]
                )
                for name, definition in constraints.items()
                if name not in present
            ]
            if missing:  # one statement (CHECKs a migration recorded: one scan)
                cur.execute(sql.SQL("ALTER TABLE news {}").format(sql.SQL(", ").join(missing)))
            restored += [*keys, *constraints]
            finish_log(
                conn,
                log_id,
                "success",
                details={"rebuilt": sorted([*indexes, *keys, *constraints])},
            )
        log.info(
            "migration: restored %d index(es), %d key(s) and %d constraint(s) of news in "
            "%.1fs (sync_log %d)",
            len(indexes),
            len(keys),
            len(constraints),
            time.perf_counter() - started,
            log_id,
        )
    return restored


def _create_index_if_missing(log_id: int, ddl: str) -> sql.SQL:
    for prefix in ("CREATE INDEX ", "CREATE UNIQUE INDEX "):
        if ddl.startswith(prefix):
            # the definition is PostgreSQL's own pg_get_indexdef() output
            return sql.SQL(f"{prefix}IF NOT EXISTS {ddl[len(prefix) :]}")  # type: ignore[arg-type]
    raise RuntimeError(f"sync_log {log_id}: unexpected index definition {ddl!r}")


def _run_maintenance(target: str | psycopg.Connection[Any], statement: sql.SQL) -> None:
    """``statement`` in its own transaction with a maintenance-sized ``work_mem``, on
    ``target`` (a connection, or a conninfo to open one for it)."""
    with (
        psycopg.connect(target, autocommit=True)
        if isinstance(target, str)
        else nullcontext(target) as conn,
        conn.transaction(),
    ):
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute(statement)


def _migrate_shards(
    conninfo: str,
    repo: DatasetRepo,
    revision: str,
    months: Sequence[str],
    hook: Callable[[str, int], None] | None,
    assume_new: bool,
    workers: int,
    claims: _KeyClaims | None = None,
) -> dict[str, ShardReport]:
    """:func:`_migrate_shard` for each month, ``workers`` at a time (threads, one
    pooled connection each: the server does the heavy part, in one process per
    connection, and pyarrow and psycopg release the GIL while they wait). A lost
    connection stops the submission of new shards and is raised once the running ones
    have finished."""
    workers = max(1, min(workers, len(months)))
    with ConnectionPool(
        conninfo,
        min_size=workers,
        max_size=workers,
        kwargs={"autocommit": True},
        open=True,
        name="news-migration",
    ) as pool:
        stop = threading.Event()  # set by a lost connection: start no further shard

        def run(month: str) -> ShardReport | None:
            if stop.is_set():
                return None
            try:
                with pool.connection() as conn:
                    return _migrate_shard(conn, repo, revision, month, hook, assume_new, claims)
            except BaseException:
                stop.set()
                raise

        done: dict[str, ShardReport] = {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(workers, thread_name_prefix="news-migration") as executor:
            futures = {executor.submit(run, month): month for month in months}
            for future in as_completed(futures):
                try:
                    shard = future.result()
                except BaseException as exc:
                    errors.append(exc)
                    continue
                if shard is not None:
                    done[futures[future]] = shard
        if errors:
            raise errors[0]
    return done


def _migrate_shard(
    conn: psycopg.Connection[Any],
    repo: DatasetRepo,
    revision: str,
    month: str,
    hook: Callable[[str, int], None] | None,
    assume_new: bool = False,
    claims: _KeyClaims | None = None,
) -> ShardReport:
    scope = f"{revision}:{month}"
    started = time.perf_counter()
    try:
        table = repo.read_shard(month, revision)
        with conn.transaction():
            log_id = start_log(
                conn, MIGRATION_OPERATION, scope, {"revision": revision, "month": month}
            )
            result = write_records(
                conn,
                table,
                source=f"shard {month}",
                log_id=log_id,
                assume_new=assume_new or claims is not None,
                identity=Identity.KEEP,  # the dataset's ids are the stories' identity
                claim=None if claims is None else claims.claim,
            )
            if hook is not None:
                hook(month, conn.info.backend_pid)
            finish_log(
                conn,
                log_id,
                "success",
                rows_in=result.rows_in,
                rows_written=result.written,
                rows_rejected=result.rejected,
                details=result.as_dict(),
                revision=revision,
            )
    except DirectCopyRefusedError:  # rolled back; loaded after the unique indexes are back
        return ShardReport(month, DEFERRED, None, time.perf_counter() - started)
    except Exception as exc:
        if conn.broken or conn.closed:
            log.error("migration: connection lost during shard %s: %s", month, exc)
            raise
        log.exception("migration: shard %s failed", month)
        with conn.transaction():
            log_id = start_log(
                conn, MIGRATION_OPERATION, scope, {"revision": revision, "month": month}
            )
            finish_log(conn, log_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return ShardReport(month, "failed", None, time.perf_counter() - started, str(exc))
    return ShardReport(month, "migrated", result, time.perf_counter() - started)
