"""The ``sync_log`` table: one row per ingest, sync or migration run.

* :func:`start_log` opens a ``running`` row recording the PostgreSQL backend that runs
  it (:data:`BACKEND_KEY`), after closing the rows of runs whose process died
  (:func:`close_abandoned_logs`);
* :func:`finish_log` closes a row with its status, counts and error;
* :func:`succeeded_scopes`: the scopes an operation already finished (what a resumable
  run skips).

Every function works in the caller's transaction and never commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from bi_platform.news.pg_common import jsonable

log = logging.getLogger(__name__)


#: ``sync_log.operation`` of the HF -> PG migration; its scopes are ``"<revision>:<month>"``.
MIGRATION_OPERATION = "migration"
#: ``sync_log.operation`` of the indexes dropped by the initial-load fast path.
INDEX_OPERATION = "migration_indexes"
#: Key of ``sync_log.details`` naming the PostgreSQL backend that started a row,
#: ``{"pid": ..., "backend_start": ...}`` (:func:`start_log`); :func:`close_abandoned_logs`
#: closes a ``running`` row once that backend is gone.
BACKEND_KEY = "pg_backend"

#: Start of the ``error`` of a row closed by :func:`close_abandoned_logs`.
ABANDONED_ERROR = "abandoned: the process that started this run ended without finishing it"

_START_LOG = sql.SQL(
    """
    INSERT INTO sync_log (operation, scope, details)
    VALUES (%(operation)s, %(scope)s, %(details)s || jsonb_build_object(
        {key}::text, jsonb_build_object(
            'pid', pg_backend_pid(),
            'backend_start',
            (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()))))
    RETURNING id
    """
)

# A row is abandoned when no live backend matches the one it recorded. A backend whose
# start time this role may not read (another role's session: pg_stat_activity shows its
# pid, backend_start is NULL) matches on its pid alone, so a live run is never closed.
# FOR UPDATE re-checks the conditions on a row finished meanwhile (READ COMMITTED), and
# SKIP LOCKED keeps concurrent closers (and a finish_log in progress) out of each
# other's way: no waiting, no deadlock.
_CLOSE_ABANDONED = sql.SQL(
    """
    WITH abandoned AS (
        SELECT l.id
        FROM sync_log AS l
        WHERE l.status = 'running' AND l.operation <> %(keep)s
          AND NOT EXISTS (
              SELECT FROM pg_stat_activity AS a
              WHERE a.pid = (l.details -> {key} ->> 'pid')::integer
                AND coalesce(
                    a.backend_start = (l.details -> {key} ->> 'backend_start')::timestamptz,
                    true))
        ORDER BY l.id
        FOR UPDATE OF l SKIP LOCKED
    )
    UPDATE sync_log AS l
    SET status = 'failed',
        finished_at = greatest(clock_timestamp(), l.started_at),
        error = %(error)s || ' ('
            || CASE WHEN l.details -> {key} ->> 'pid' IS NULL
                    THEN 'no PostgreSQL backend recorded'
                    ELSE format('its PostgreSQL backend, pid %%s started %%s, is gone',
                                l.details -> {key} ->> 'pid',
                                coalesce(l.details -> {key} ->> 'backend_start', '?'))
               END
            || '); ' || %(closed_by)s,
        details = l.details || jsonb_build_object('abandoned', jsonb_build_object(
            'closed_at', clock_timestamp(),
            'closed_by_row', %(row)s::bigint,
            'closed_by_pid', pg_backend_pid()))
    FROM abandoned
    WHERE l.id = abandoned.id
    RETURNING l.id, l.operation, l.scope
    """
)


def start_log(
    conn: psycopg.Connection[Any],
    operation: str,
    scope: str | None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Insert a ``running`` row into ``sync_log``; its id.

    The row records in ``details[BACKEND_KEY]`` the PostgreSQL backend that started it
    (``pg_backend_pid()`` and its ``backend_start``). Then the rows that killed processes
    left ``running`` are closed as ``failed`` (:func:`close_abandoned_logs`, in a
    savepoint: a failure there is logged, never raised, and leaves the new row alone).
    So a row must be finished on the connection that started it, or at least while that
    connection's backend lives; :data:`INDEX_OPERATION` rows are exempt.
    """
    row = conn.execute(
        _START_LOG.format(key=sql.Literal(BACKEND_KEY)),
        {
            "operation": operation,
            "scope": scope,
            "details": Jsonb(jsonable(dict(details or {}))),
        },
    ).fetchone()
    assert row is not None
    log_id = int(row[0])
    try:
        with conn.transaction():  # a savepoint when the caller has a transaction open
            close_abandoned_logs(conn, closed_by=log_id)
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise
        log.warning("sync_log: could not close abandoned runs when row %d started: %s", log_id, exc)
    return log_id


def close_abandoned_logs(conn: psycopg.Connection[Any], *, closed_by: int | None = None) -> int:
    """Close the ``sync_log`` rows that killed processes left ``running``.

    A row is abandoned when it is ``running``, its operation is not
    :data:`INDEX_OPERATION` (that row stays ``running`` on purpose until
    :func:`restore_deferred_indexes` rebuilds the indexes), and the backend recorded by
    :func:`start_log` (pid and ``backend_start``, so a reused pid does not count) is no
    longer in ``pg_stat_activity``; a row without a recorded backend (started before
    backends were recorded) counts as abandoned. Nobody can finish such a row any more.
    It becomes ``failed``: ``finished_at = greatest(clock_timestamp(), started_at)``, an
    ``error`` starting with :data:`ABANDONED_ERROR`, and ``details["abandoned"]``.

    A live backend whose start time the current role may not read (another role's
    session without ``pg_read_all_stats``) is matched on its pid alone: a live run is
    never closed. Rows locked by another transaction are skipped, not waited for.

    Works in the caller's transaction (expected READ COMMITTED) and never commits; the
    closed rows stay locked until that transaction ends. The transaction's cached
    ``pg_stat_activity`` snapshot is discarded first (``pg_stat_clear_snapshot()``), so
    backends started since it was taken are seen.

    Args:
        conn: connection to the news database.
        closed_by: id of the ``sync_log`` row whose start runs this cleanup, named in
            the ``error``; ``None`` when called on its own.

    Returns:
        The number of rows closed.
    """
    note = (
        f"closed when sync_log row {closed_by} started"
        if closed_by is not None
        else "closed by close_abandoned_logs"
    )
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        closed = cur.execute(
            _CLOSE_ABANDONED.format(key=sql.Literal(BACKEND_KEY)),
            {
                "keep": INDEX_OPERATION,
                "error": ABANDONED_ERROR,
                "closed_by": note,
                "row": closed_by,
            },
        ).fetchall()
    if closed:
        log.warning(
            "sync_log: closed %d abandoned run(s) left 'running' by ended processes: %s",
            len(closed),
            ", ".join(f"{log_id} ({operation} {scope})" for log_id, operation, scope in closed),
        )
    else:
        log.debug("sync_log: no abandoned runs to close")
    return len(closed)


def finish_log(
    conn: psycopg.Connection[Any],
    log_id: int,
    status: str,
    rows_in: int | None = None,
    rows_written: int | None = None,
    rows_rejected: int | None = None,
    details: Mapping[str, Any] | None = None,
    error: str | None = None,
    revision: str | None = None,
) -> None:
    """Close a ``sync_log`` row as ``success`` or ``failed``; ``details`` are merged in."""
    if status not in ("success", "failed"):
        raise ValueError(f"a finished run is 'success' or 'failed', not {status!r}")
    cur = conn.execute(
        """
        UPDATE sync_log SET status = %s, finished_at = greatest(clock_timestamp(), started_at),
            rows_in = %s, rows_written = %s, rows_rejected = %s,
            details = details || %s, error = %s, revision = coalesce(%s, revision)
        WHERE id = %s
        """,
        (
            status,
            rows_in,
            rows_written,
            rows_rejected,
            Jsonb(jsonable(dict(details or {}))),
            error,
            revision,
            log_id,
        ),
    )
    if cur.rowcount != 1:
        raise LookupError(f"no sync_log row {log_id}")


def succeeded_scopes(
    conn: psycopg.Connection[Any], operation: str, *, prefix: str | None = None
) -> set[str]:
    """Scopes of ``operation`` with a ``success`` row (optionally starting with ``prefix``)."""
    query = "SELECT DISTINCT scope FROM sync_log WHERE operation = %s AND status = 'success'"
    params: list[Any] = [operation]
    if prefix is not None:
        query += " AND starts_with(scope, %s)"
        params.append(prefix)
    with conn.cursor(row_factory=tuple_row) as cur:
        return {scope for (scope,) in cur.execute(query, params) if scope is not None}
