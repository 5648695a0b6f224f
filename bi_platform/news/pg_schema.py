"""The news domain's PostgreSQL schema: numbered SQL migrations and the ``schema_version`` table.

Migrations are the files ``sql/NNNN_name.sql`` next to this module, numbered from 0001
without gaps. :func:`migrate` applies the pending ones in order, each in its own
transaction together with its ``schema_version`` row, so a failing file leaves nothing
behind. Every transaction first takes a transaction-level advisory lock: concurrent
callers serialise, and whoever comes second finds the work done. Applied files are
immutable: their checksum is recorded, and an edited file is refused by name.

Pure psycopg 3 (no Dagster): usable from assets, the CLI and tests alike.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "sql"

#: Table recording applied migrations (created by :func:`migrate` itself).
VERSION_TABLE = "schema_version"

#: Key of the transaction-level advisory lock that serialises :func:`migrate` callers.
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"bi_platform.news.pg_schema").digest()[:8], "big", signed=True
)

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")

_CREATE_VERSION_TABLE = sql.SQL(
    """
    CREATE TABLE IF NOT EXISTS {} (
        version      integer PRIMARY KEY CHECK (version > 0),
        name         text NOT NULL,
        checksum     text NOT NULL,
        applied_at   timestamptz NOT NULL DEFAULT now(),
        applied_by   text NOT NULL DEFAULT current_user,
        duration_ms  integer
    )
    """
).format(sql.Identifier(VERSION_TABLE))

ConnOrInfo = str | psycopg.Connection[Any]


class MigrationError(RuntimeError):
    """The migrations cannot be discovered or applied."""


class ChecksumMismatchError(MigrationError):
    """An already-applied migration file was edited afterwards."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return self.path.name


def checksum(text: str) -> str:
    """sha256 of the SQL text, line endings normalised (a CRLF checkout is not an edit)."""
    normalised = text.replace("\r\n", "\n")
    return hashlib.sha256(normalised.encode()).hexdigest()


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The ``NNNN_name.sql`` files of ``directory``, by version.

    Versions must run 1, 2, 3, ... without gaps or duplicates; any ``.sql`` file not named
    that way is an error too (rather than a migration silently skipped).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    by_version: dict[int, list[Path]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: migration files are named NNNN_name.sql "
                "(four digits, then lower-case letters, digits and underscores)"
            )
        by_version.setdefault(int(match["version"]), []).append(path)

    duplicates = {v: paths for v, paths in by_version.items() if len(paths) > 1}
    if duplicates:
        listed = "; ".join(
            f"{v:04d}: {', '.join(p.name for p in paths)}"
            for v, paths in sorted(duplicates.items())
        )
        raise MigrationError(f"duplicate migration versions in {directory}: {listed}")
    expected = list(range(1, len(by_version) + 1))
    if sorted(by_version) != expected:
        missing = sorted(set(range(1, max(by_version) + 1)) - set(by_version))
        raise MigrationError(
            f"migration versions in {directory} must be numbered 0001, 0002, ... without "
            f"gaps; missing: {', '.join(f'{v:04d}' for v in missing)}"
        )

    migrations = []
    for version in expected:
        path = by_version[version][0]
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise MigrationError(f"migration {path} is empty")
        name = _FILE_NAME.match(path.name)["name"]  # type: ignore[index]
        migrations.append(Migration(version, name, path, text, checksum(text)))
    return migrations


@contextmanager
def _connection(conninfo_or_conn: ConnOrInfo) -> Iterator[psycopg.Connection[Any]]:
    """The caller's connection as is, or a new one closed on exit."""
    if isinstance(conninfo_or_conn, psycopg.Connection):
        yield conninfo_or_conn
        return
    with psycopg.connect(conninfo_or_conn) as conn:
        yield conn


def _version_table_exists(conn: psycopg.Connection[Any]) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    return bool(row and row[0])


def applied_versions(conn: ConnOrInfo) -> dict[int, str]:
    """Applied migration versions and their checksums; empty before the first migration."""
    with _connection(conn) as c:
        if not _version_table_exists(c):
            return {}
        query = sql.SQL("SELECT version, checksum FROM {} ORDER BY version").format(
            sql.Identifier(VERSION_TABLE)
        )
        with c.cursor(row_factory=tuple_row) as cur:
            return {version: digest for version, digest in cur.execute(query)}


def _changed(applied: dict[int, str], migrations: list[Migration]) -> list[Migration]:
    return [m for m in migrations if m.version in applied and applied[m.version] != m.checksum]


def _check_unchanged(applied: dict[int, str], migrations: list[Migration]) -> None:
    changed = _changed(applied, migrations)
    if changed:
        details = "; ".join(
            f"{m.path} (applied checksum {applied[m.version][:12]}, file now {m.checksum[:12]})"
            for m in changed
        )
        raise ChecksumMismatchError(
            f"applied migration(s) changed since they ran: {details}. Applied migrations are "
            "immutable: restore the file and put the change in a new numbered migration."
        )


def migrate(
    conninfo_or_conn: ConnOrInfo,
    *,
    directory: Path = MIGRATIONS_DIR,
    target: int | None = None,
) -> list[int]:
    """Apply the pending migrations up to ``target`` (default: all); return their versions.

    Each migration runs in its own transaction with its ``schema_version`` row, under a
    transaction-level advisory lock (:data:`LOCK_KEY`). A rerun returns ``[]``. Raises
    :class:`ChecksumMismatchError` when an applied file was edited, and
    :class:`MigrationError` (chained to the database error) when a migration fails; that
    migration is rolled back entirely, the ones before it stay applied.

    A connection passed in must have no transaction open; it is left idle.
    """
    migrations = discover_migrations(directory)
    known = {m.version for m in migrations}
    if target is not None and target not in known:
        raise ValueError(f"target {target} is not a migration version in {directory}")

    done: list[int] = []
    with _connection(conninfo_or_conn) as conn:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            raise MigrationError(
                "migrate() needs a connection without an open transaction: each migration "
                "commits on its own"
            )
        while True:
            with conn.transaction():
                migration = _apply_next(conn, migrations, target)
            if migration is None:
                break
            done.append(migration.version)
    if done:
        log.info("news schema migrated to version %d (applied %s)", done[-1], done)
    else:
        log.debug("news schema up to date")
    return done


def _apply_next(
    conn: psycopg.Connection[Any], migrations: list[Migration], target: int | None
) -> Migration | None:
    """In the caller's transaction: lock, find the next pending migration, apply it."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        return _apply_next_locked(conn, cur, migrations, target)


def _apply_next_locked(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    migrations: list[Migration],
    target: int | None,
) -> Migration | None:
    if not _version_table_exists(conn):
        cur.execute(_CREATE_VERSION_TABLE)
    applied = applied_versions(conn)
    _check_unchanged(applied, migrations)
    pending = [
        m
        for m in migrations
        if m.version not in applied and (target is None or m.version <= target)
    ]
    if not pending:
        unknown = sorted(set(applied) - {m.version for m in migrations})
        if unknown:
            log.warning("database has migrations this code does not know: %s", unknown)
        return None
    migration = pending[0]
    started = time.perf_counter()
    try:
        cur.execute(migration.sql.encode())
    except psycopg.Error as exc:
        raise MigrationError(f"migration {migration.path} failed: {exc}") from exc
    duration_ms = round((time.perf_counter() - started) * 1000)
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (version, name, checksum, duration_ms) VALUES (%s, %s, %s, %s)"
        ).format(sql.Identifier(VERSION_TABLE)),
        (migration.version, migration.name, migration.checksum, duration_ms),
    )
    log.info("applied migration %s in %d ms", migration.filename, duration_ms)
    return migration


def schema_status(conn: ConnOrInfo, *, directory: Path = MIGRATIONS_DIR) -> dict[str, Any]:
    """Where the database stands against the migration files.

    Keys: ``current_version`` (highest applied, 0 if none), ``latest_version`` (highest
    file), ``applied`` and ``pending`` (version lists), ``changed`` (file names of applied
    migrations edited since), ``unknown`` (applied versions without a file) and
    ``up_to_date`` (nothing pending, changed or unknown).
    """
    migrations = discover_migrations(directory)
    applied = applied_versions(conn)
    pending = [m.version for m in migrations if m.version not in applied]
    changed = [m.filename for m in _changed(applied, migrations)]
    unknown = sorted(set(applied) - {m.version for m in migrations})
    return {
        "current_version": max(applied, default=0),
        "latest_version": max((m.version for m in migrations), default=0),
        "applied": sorted(applied),
        "pending": pending,
        "changed": changed,
        "unknown": unknown,
        "up_to_date": not (pending or changed or unknown),
    }
