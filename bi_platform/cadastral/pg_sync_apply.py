"""Applying a change set to PostgreSQL from Spark tasks (used by :mod:`.pg_sync`).

Each apply task opens one psycopg connection and, per attempt (tenacity, exponential
backoff), runs one transaction that COPYs its rows ``(op, *columns)`` into a temp table,
upserts the rows whose ``row_hash`` differs and deletes the ``D`` keys. Replaying a task
is harmless, so a retry or a rerun after a crash converges. Every task returns one row
``(partition, rows, attempts)`` (:data:`APPLY_STATS_SCHEMA`), so retries are counted
without accumulators.

Two ways to feed the tasks, both through ``mapInArrow`` (no RDD API, so Spark Connect
works too):

* :func:`partition_applier` — the rows are a DataFrame's partition (a Spark join of the
  source with the changed keys);
* :func:`file_applier` — the source is a set of Parquet files (a Delta version) and the
  changed keys are few: each task reads its share of the files with pyarrow and keeps
  the rows whose key changed, so Spark never decodes the unchanged rows' columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from bi_platform.cadastral.row_hash import ROW_HASH, quote_ident

SCHEMA = "cadastral"

#: What each apply task returns (one row): its id, rows applied, attempts made.
APPLY_STATS_SCHEMA = "partition int, rows long, attempts int"
#: Rows per Arrow batch when an apply task reads a Parquet file.
FILE_BATCH_ROWS = 262_144


class TransientSyncError(Exception):
    """An injected transient failure (see :class:`SyncFaults`); retried like a lost link."""


@dataclass(frozen=True)
class SyncFaults:
    """Fault injection for tests.

    ``fail_partition``/``fail_times``: that apply partition raises a transient error on its
    first ``fail_times`` attempts (after its COPY, before commit, so the transaction rolls
    back). ``stall_after_partitions``/``stall_seconds``: partitions with index >=
    ``stall_after_partitions`` sleep that long before applying, so a test can kill the
    process with some partitions committed and others not.
    """

    fail_partition: int | None = None
    fail_times: int = 0
    stall_after_partitions: int | None = None
    stall_seconds: float = 0.0


def _connect(pg_url: str, **kwargs: Any) -> psycopg.Connection:
    """psycopg connection whose errors never carry the password."""
    try:
        conn = psycopg.connect(pg_url, connect_timeout=30, **kwargs)
    except psycopg.Error as exc:
        message = str(exc)
        password = urlsplit(pg_url).password
        if password:
            message = message.replace(unquote(password), "***").replace(password, "***")
        raise type(exc)(message) from None
    conn.execute("SET DateStyle = 'ISO, YMD'")
    if not conn.autocommit:
        conn.commit()  # so that conn.transaction() starts a real transaction
    return conn


def _apply_sql(table: str, columns: list[tuple[str, str]], key: str) -> list[str]:
    """Statements run after the COPY into the temp table ``_sync_changes``."""
    target = f"{quote_ident(SCHEMA)}.{quote_ident(table)}"
    names = [quote_ident(n) for n, _ in columns]
    k = quote_ident(key)
    updates = ", ".join(
        f"{quote_ident(n)} = excluded.{quote_ident(n)}" for n, _ in columns if n != key
    )
    return [
        f"INSERT INTO {target} AS t ({', '.join(names)}) SELECT {', '.join(names)}"
        f" FROM _sync_changes WHERE op <> 'D' ON CONFLICT ({k}) DO UPDATE SET {updates}"
        f" WHERE t.{quote_ident(ROW_HASH)} IS DISTINCT FROM excluded.{quote_ident(ROW_HASH)}",
        f"DELETE FROM {target} AS t USING _sync_changes c WHERE c.op = 'D' AND t.{k} = c.{k}",
    ]


def apply_rows(
    conn: psycopg.Connection,
    table: str,
    columns: list[tuple[str, str]],
    key: str,
    rows: Iterable[tuple],
    before_commit: Callable[[], None] | None = None,
    *,
    inserts_only: bool = False,
) -> None:
    """One transaction: COPY ``rows`` (op, *columns) into a temp table, upsert, delete.

    Idempotent: an upsert only touches rows whose ``row_hash`` differs; deleting a
    missing key does nothing.

    Args:
        conn: an open connection (not in a transaction).
        table: the target, ``cadastral.<table>``.
        columns: ``(name, pg type)`` of the target, in order.
        key: the primary key column.
        rows: ``(op, *values)`` with op ``I``/``U`` (upsert) or ``D`` (delete the key).
        before_commit: called after the statements, before the commit (fault injection).
        inserts_only: the target was empty when the diff was taken and the advisory lock
            keeps other syncs out: COPY straight into the target.
    """
    defs = ", ".join(f"{quote_ident(n)} {t}" for n, t in columns)
    names = ", ".join(quote_ident(n) for n, _ in columns)
    with conn.transaction():
        if inserts_only:
            target = f"{quote_ident(SCHEMA)}.{quote_ident(table)}"
            with conn.cursor().copy(f"COPY {target} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row[1:])
            if before_commit is not None:
                before_commit()
            return
        conn.execute(f"CREATE TEMP TABLE _sync_changes (op char(1), {defs}) ON COMMIT DROP")
        with conn.cursor().copy(f"COPY _sync_changes (op, {names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        for statement in _apply_sql(table, columns, key):
            conn.execute(statement)
        if before_commit is not None:
            before_commit()


def _stats(partition: int, rows: int, attempts: int):
    import pyarrow as pa

    return pa.RecordBatch.from_pydict(
        {
            "partition": pa.array([partition], pa.int32()),
            "rows": pa.array([rows], pa.int64()),
            "attempts": pa.array([attempts], pa.int32()),
        }
    )


def _apply_with_retries(
    pg_url: str,
    table: str,
    columns: list[tuple[str, str]],
    key: str,
    rows: list[tuple],
    partition: int,
    retries: int,
    faults: SyncFaults,
    inserts_only: bool,
) -> int:
    """Apply ``rows`` as one transaction, retried on lost connections; returns attempts."""
    import time

    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    if not rows:
        return 0
    if faults.stall_after_partitions is not None and partition >= faults.stall_after_partitions:
        time.sleep(faults.stall_seconds)
    conn = None
    attempts = 0

    def fail_injected() -> None:
        if partition == faults.fail_partition and attempts <= faults.fail_times:
            raise TransientSyncError(f"injected failure, partition {partition}")

    try:
        for attempt in Retrying(
            stop=stop_after_attempt(max(0, retries) + 1),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=10),
            retry=retry_if_exception_type(
                (psycopg.OperationalError, psycopg.InterfaceError, TransientSyncError)
            ),
            reraise=True,
        ):
            with attempt:
                attempts += 1
                if conn is None or conn.closed or conn.broken:
                    conn = _connect(pg_url)
                apply_rows(
                    conn,
                    table,
                    columns,
                    key,
                    rows,
                    before_commit=fail_injected,
                    inserts_only=inserts_only,
                )
    finally:
        if conn is not None:
            conn.close()
    return attempts


def _rows_of(record_batch) -> list[tuple]:
    """The rows of an Arrow batch as tuples of the values a Row would hold (str, date,
    Decimal, list, bool...)."""
    values = [column.to_pylist() for column in record_batch.columns]
    return list(zip(*values, strict=True))


def _member(values, wanted):
    """Boolean mask: which of ``values`` (an Arrow string column) are in ``wanted``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.fill_null(pc.is_in(values.cast(pa.string()), value_set=wanted), False)


def partition_applier(
    pg_url: str,
    table: str,
    columns: list[tuple[str, str]],
    key: str,
    retries: int,
    faults: SyncFaults,
    inserts_only: bool = False,
) -> Callable[[Iterator], Iterator]:
    """The ``mapInArrow`` function applying one partition of ``(op, *columns)`` rows.

    Args:
        pg_url: psycopg URL of the target database.
        table: the target, ``cadastral.<table>``.
        columns: ``(name, pg type)`` of the target, in order.
        key: the primary key column.
        retries: extra attempts per partition on transient errors.
        faults: fault injection (tests).
        inserts_only: COPY straight into the (empty) target.

    Returns:
        A function from the partition's Arrow batches to one stats batch.
    """

    def apply_partition(batches: Iterator) -> Iterator:
        from pyspark import TaskContext

        rows: list[tuple] = []  # replayable on retry
        for record_batch in batches:
            rows.extend(_rows_of(record_batch))
        partition = TaskContext.get().partitionId()
        attempts = _apply_with_retries(
            pg_url, table, columns, key, rows, partition, retries, faults, inserts_only
        )
        yield _stats(partition, len(rows), attempts)

    return apply_partition


def file_applier(
    pg_url: str,
    table: str,
    columns: list[tuple[str, str]],
    key: str,
    retries: int,
    faults: SyncFaults,
    files: list[list[str]],
    upsert_keys: Any,
    delete_keys: list[list[str]],
) -> Callable[[Iterator], Iterator]:
    """The ``mapInArrow`` function of apply task ``i`` (= its partition id) over files.

    Task ``i`` reads ``files[i]`` with pyarrow, one row group at a time (skipped when its
    key column holds no changed key), keeps the rows whose key is in
    ``upsert_keys`` (op ``U``: the upsert is the same statement for inserts and
    updates), adds ``delete_keys[i]`` as op ``D`` rows, and applies them in one
    transaction. Columns missing from a file are read as nulls.

    Args:
        pg_url: psycopg URL of the target database.
        table: the target, ``cadastral.<table>``.
        columns: ``(name, pg type)`` of the target, in order.
        key: the primary key column.
        retries: extra attempts per task on transient errors.
        faults: fault injection (tests).
        files: per task, the local paths of the Parquet files it reads.
        upsert_keys: a pyarrow string array of the inserted or updated keys.
        delete_keys: per task, the deleted keys it applies.

    Returns:
        A function from the task's (ignored) input batches to one stats batch.
    """
    names = [n for n, _ in columns]
    key_at = names.index(key)

    def apply_files(batches: Iterator) -> Iterator:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        for _ in batches:  # the task's id row; the partition id says the same
            pass
        partition = TaskContext.get().partitionId()
        rows: list[tuple] = []
        wanted = pa.chunked_array([upsert_keys]) if len(upsert_keys) else None
        for path in files[partition] if wanted is not None else []:
            parquet = pq.ParquetFile(path)
            present = set(parquet.schema_arrow.names)
            for group in range(parquet.metadata.num_row_groups):
                # The key column first: a row group without a changed key is not decoded.
                group_keys = parquet.read_row_group(group, columns=[key], use_threads=False)
                if not pc.any(_member(group_keys.column(0), wanted)).as_py():
                    continue
                for batch in parquet.iter_batches(
                    batch_size=FILE_BATCH_ROWS,
                    row_groups=[group],
                    columns=[n for n in names if n in present],
                    use_threads=False,
                ):
                    keep = batch.filter(_member(batch.column(key), wanted))
                    if not keep.num_rows:
                        continue
                    arrays = [
                        keep.column(n) if n in present else pa.nulls(keep.num_rows) for n in names
                    ]
                    arrays.insert(0, pa.array(["U"] * keep.num_rows, pa.string()))
                    rows.extend(_rows_of(pa.RecordBatch.from_arrays(arrays, ["op", *names])))
        empty = [None] * len(names)
        for deleted in delete_keys[partition]:
            row = list(empty)
            row[key_at] = deleted
            rows.append(("D", *row))
        attempts = _apply_with_retries(
            pg_url, table, columns, key, rows, partition, retries, faults, False
        )
        yield _stats(partition, len(rows), attempts)

    return apply_files
