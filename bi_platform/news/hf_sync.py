"""Incremental sync PostgreSQL -> the HF dataset repo (PG is the source of truth).

What is exported:

* one shard per publication month, rewritten whole;
* a row is pending while ``synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at``
  (partial index ``news_hf_pending_idx``), and every month holding a pending row is
  re-exported, so edited records are synced again;
* a month's shard is PG's rows of that month (``unique_id`` is unique in PG), with no
  dedup lookup: edits merge and duplicates cannot arise;
* the shards are handed to :meth:`DatasetRepo.commit` as a LAZY mapping whose
  ``__getitem__`` exports the month from PG; commit reads one month at a time, so memory
  is bounded by one month.

A sync (:func:`sync_to_hf`):

0. brings the repo's working copy (what users read) to its ``HEAD``
   (:meth:`DatasetRepo.sync_working_copy`): a sync killed after the commit point heals here;
1. finds the affected months (:func:`pending_months`; all months with ``full=True``);
2. makes ONE commit with every affected shard (``parent_revision`` = the head read before
   exporting, so a concurrent writer makes it fail with ``ConflictError`` instead of being
   overwritten); while a month is exported the ``(id, updated_at)`` of its pending rows
   are kept (small), and PostgreSQL's row count of the month, read in the export's
   snapshot (REPEATABLE READ);
2b. before anything reaches the repo, validates the staged shards, the exact bytes about
   to be committed (:class:`PublicationCheck`): each month's row count equals
   PostgreSQL's, and no ``unique_id`` appears twice across the months written and the
   rest of the dataset at the parent revision. Otherwise it refuses with
   :class:`PublicationRefusedError` naming the months and ids and the repair
   (:data:`REPAIR_HINT`): nothing committed, nothing marked, ``sync_log`` ``failed``;
3. ONLY after the commit succeeded, marks exactly those rows synced, in one transaction
   together with the ``sync_log`` success row::

       UPDATE news SET synced_to_hf_at = clock_timestamp(), hf_revision = <revision>
       WHERE id = <id> AND updated_at = <the exported updated_at>

   An edit that landed after the row was exported fails the compare and stays pending.

If the commit fails, nothing is marked, the ``sync_log`` row is ``failed`` with the error
and the exception propagates: the next sync covers the same rows. If marking fails after
a successful commit, the rows stay pending; the next sync rebuilds identical shards, the
repo makes no new revision for them, and the rows are marked with the head revision.

Which rows are marked: the rows that were pending when exported. The other rows of a
rewritten month are unchanged in HF, so they keep their ``synced_to_hf_at`` and
``hf_revision`` (an earlier revision holding the same content) and are not rewritten in
PG (the marking UPDATE cannot be HOT, see 0002_news.sql: marking all 300k rows took
~28 s here, more than exporting them, ~17 s). ``full=True`` marks every exported row with
the baseline revision (except rows that already carry it). An empty repo (new or
recreated) gets every month, as with ``full=True``.

Memory: measured peak RSS ~360 MB for a full export of 300k rows (~0.9 GB in Arrow) and
~350 MB for two months of it; the start RSS is ~120 MB, and most of the rest is the Arrow
allocator's (mimalloc) retained pages, not data.

Known limits (both repaired by a ``full=True`` sync, :data:`REPAIR_HINT`): a row DELETEd
from PG, or whose ``published_at`` moved to another month after it was synced, stays in
its old month's shard until that month is re-exported (PG keeps no tombstone nor the old
month). The second would publish the story twice: the publication check refuses that
sync instead, naming the id and both months.

Crash tests: :func:`~bi_platform.news.dataset_repo.crash_point` marks ``sync:exported``
(everything staged, nothing committed) and ``sync:committed`` (committed, nothing marked)
here; the repo marks the steps in between.

Pure psycopg 3 + pyarrow; no Dagster.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from bi_platform.news import sync_log
from bi_platform.news.dataset_repo import crash_point, shard_path
from bi_platform.news.pg_common import transaction
from bi_platform.news.records import HF_COLUMNS, HF_SCHEMA, TIMEZONE

if TYPE_CHECKING:
    from bi_platform.news.dataset_repo import DatasetRepo

logger = logging.getLogger(__name__)

#: ``sync_log.operation`` of a sync run; its scope is the comma-separated months.
SYNC_OPERATION = "hf_sync"

#: Session-level advisory lock held by a running :func:`sync_to_hf`: one sync at a time.
SYNC_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"bi_platform.news.hf_sync").digest()[:8], "big", signed=True
)

#: Rows fetched per round trip from the server-side cursor of an export.
FETCH_ROWS = 2_000

#: Seconds between two RSS samples while a sync runs.
RSS_SAMPLE_SECONDS = 0.02

#: The "row needs export" predicate; the same text as news_hf_pending_idx's predicate,
#: so the planner can use that index.
_PENDING = sql.SQL("synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at")

_MONTH_OF = sql.SQL("to_char(published_at AT TIME ZONE %(tz)s, 'YYYY-MM')")

#: Type of the captured ``updated_at`` values.
_UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")

#: The repair of the HF copy: a full re-sync, every month rebuilt from PostgreSQL.
REPAIR_COMMAND = "bi-platform news resync"
#: The same from Dagster: the run config of ``news/hf_news_sync`` (launchpad).
REPAIR_RUN_CONFIG: dict[str, Any] = {"ops": {"news__hf_news_sync": {"config": {"full": True}}}}
#: One sentence naming both, for errors and check metadata.
REPAIR_HINT = (
    f"repair: a full re-sync from PostgreSQL, `{REPAIR_COMMAND}`, or materialize "
    "news/hf_news_sync with config `full: true` (launchpad run config: ops: "
    "news__hf_news_sync: config: full: true)"
)

#: Ids or months listed in a refusal's message.
SHOWN = 10


class SyncInProgressError(RuntimeError):
    """Another :func:`sync_to_hf` holds the sync lock on this database."""


class PublicationRefusedError(RuntimeError):
    """The shards a sync was about to commit failed validation; nothing was committed.

    ``count_mismatches``: month -> (rows in PostgreSQL, rows in the staged shard).
    ``duplicates``: unique_id -> the months holding it (a month listed twice: twice in
    that shard). ``months``: every month involved. The message names them (the first
    :data:`SHOWN`) and :data:`REPAIR_HINT`.
    """

    def __init__(
        self,
        count_mismatches: Mapping[str, tuple[int | None, int]],
        duplicates: Mapping[str, list[str]],
    ) -> None:
        self.count_mismatches = dict(sorted(count_mismatches.items()))
        self.duplicates = dict(sorted(duplicates.items()))
        parts = []
        if self.duplicates:
            shown = "; ".join(
                f"{uid} in {', '.join(months)}"
                for uid, months in list(self.duplicates.items())[:SHOWN]
            )
            parts.append(
                f"{len(self.duplicates)} unique_id(s) would appear more than once in the "
                f"dataset ({shown})"
            )
        if self.count_mismatches:
            shown = "; ".join(
                f"{m}: pg={pg} hf={hf}"
                for m, (pg, hf) in list(self.count_mismatches.items())[:SHOWN]
            )
            parts.append(f"row counts differ from PostgreSQL for month(s) {shown}")
        super().__init__(
            "refused to publish to HF: "
            + "; and ".join(parts)
            + f". Nothing was committed and no row was marked synced; {REPAIR_HINT}"
        )

    @property
    def months(self) -> list[str]:
        """Every month involved, sorted."""
        months = set(self.count_mismatches)
        months.update(m for ms in self.duplicates.values() for m in ms)
        return sorted(months)


# --------------------------------------------------------------------------------------
# Reading PostgreSQL
# --------------------------------------------------------------------------------------
def _months_query(where: sql.Composable | None) -> sql.Composed:
    return sql.SQL(
        "SELECT {month} AS month, count(*) FROM {table}{where} GROUP BY 1 ORDER BY 1"
    ).format(
        month=_MONTH_OF,
        table=sql.Identifier("news"),
        where=sql.SQL(" WHERE ") + where if where is not None else sql.SQL(""),
    )


def pending_months(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Month ``"YYYY-MM"`` (São Paulo time of ``published_at``) -> rows needing sync.

    The filter is news_hf_pending_idx's predicate, so only the pending rows are read.
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(_months_query(_PENDING), {"tz": TIMEZONE})
        return {month: int(n) for month, n in cur}


def all_months(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Month -> rows, for every month with rows in ``news`` (a full scan of published_at)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(_months_query(None), {"tz": TIMEZONE})
        return {month: int(n) for month, n in cur}


def _month_range(month: str) -> dict[str, Any]:
    """Parameters of the month's [start, end) in São Paulo time (the shard's rows)."""
    shard_path(month)  # validates "YYYY-MM"
    year, mon = int(month[:4]), int(month[5:7])
    end_year, end_mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return {"tz": TIMEZONE, "y0": year, "m0": mon, "y1": end_year, "m1": end_mon}


def _export_query() -> sql.Composed:
    # Timestamps come back as aware datetimes and are converted in Arrow; unique_id is
    # ordered with the C collation, i.e. bytewise like Arrow's sort (ids are hex anyway).
    return sql.SQL(
        """
        SELECT {columns}, {id}, {updated_at}, ({pending}) AS pending
        FROM {view}
        WHERE published_at >= make_timestamptz(%(y0)s, %(m0)s, 1, 0, 0, 0, %(tz)s)
          AND published_at < make_timestamptz(%(y1)s, %(m1)s, 1, 0, 0, 0, %(tz)s)
        ORDER BY published_at, unique_id COLLATE "C"
        """
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in HF_COLUMNS),
        id=sql.Identifier("id"),
        updated_at=sql.Identifier("updated_at"),
        pending=_PENDING,
        view=sql.Identifier("news_hf"),
    )


_EXPORT = _export_query()
_N_HF = len(HF_COLUMNS)

#: Rows of a month in the ``news`` table itself (not the view the export reads).
_COUNT = sql.SQL(
    """
    SELECT count(*) FROM {news}
    WHERE published_at >= make_timestamptz(%(y0)s, %(m0)s, 1, 0, 0, 0, %(tz)s)
      AND published_at < make_timestamptz(%(y1)s, %(m1)s, 1, 0, 0, 0, %(tz)s)
    """
).format(news=sql.Identifier("news"))


@dataclass(frozen=True)
class ExportedKeys:
    """``(id, updated_at, pending)`` of every exported row of a month: what marking needs.

    ``pg_rows``: the month's rows in the ``news`` table, counted in the export's snapshot
    (what the publication check compares the staged shard with).
    """

    ids: pa.Array
    updated_at: pa.Array
    pending: pa.Array
    pg_rows: int = -1

    def select(self, *, all_rows: bool) -> tuple[list[int], list[Any]]:
        """ids and updated_at (aware datetimes) of the rows to mark."""
        ids, updated = self.ids, self.updated_at
        if not all_rows:
            ids, updated = ids.filter(self.pending), updated.filter(self.pending)
        return ids.to_pylist(), updated.to_pylist()


def _export(conn: psycopg.Connection[Any], month: str) -> tuple[pa.Table, ExportedKeys]:
    """The month's rows (HF_SCHEMA, sorted) and the keys of the rows, streamed.

    A server-side cursor fetches :data:`FETCH_ROWS` rows per round trip; each batch
    becomes an Arrow record batch at once, so memory is the month in Arrow plus one batch
    of Python tuples. On an idle autocommit connection the export runs in its own
    REPEATABLE READ, READ ONLY transaction, so ``pg_rows`` (the month's count in
    ``news``) and the rows come from one snapshot; in the caller's transaction they come
    from its isolation level.
    """
    batches: list[pa.RecordBatch] = []
    ids: list[pa.Array] = []
    updated: list[pa.Array] = []
    pending: list[pa.Array] = []
    params = _month_range(month)
    own = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
    with (
        transaction(conn),
        conn.cursor(name=f"hf_export_{month}", row_factory=tuple_row) as cur,
    ):
        if own:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        counted = conn.execute(_COUNT, params).fetchone()
        pg_rows = int(counted[0]) if counted else 0
        cur.itersize = FETCH_ROWS
        cur.execute(_EXPORT, params)
        while rows := cur.fetchmany(FETCH_ROWS):
            columns = list(zip(*rows, strict=True))
            del rows
            arrays = [
                pa.array(values, type=f.type)
                for values, f in zip(columns[:_N_HF], HF_SCHEMA, strict=True)
            ]
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=HF_SCHEMA))
            ids.append(pa.array(columns[_N_HF], type=pa.int64()))
            updated.append(pa.array(columns[_N_HF + 1], type=_UTC_TIMESTAMP))
            pending.append(pa.array(columns[_N_HF + 2], type=pa.bool_()))
            del columns, arrays
    table = pa.Table.from_batches(batches, schema=HF_SCHEMA)
    keys = ExportedKeys(
        pa.concat_arrays(ids) if ids else pa.array([], pa.int64()),
        pa.concat_arrays(updated) if updated else pa.array([], _UTC_TIMESTAMP),
        pa.concat_arrays(pending) if pending else pa.array([], pa.bool_()),
        pg_rows,
    )
    return table, keys


def export_month(conn: psycopg.Connection[Any], month: str) -> pa.Table:
    """Every row of ``month`` from ``news_hf``: HF_SCHEMA, sorted by (published_at, unique_id).

    Timestamps in America/Sao_Paulo, ``tags`` list<string>. Streamed through a
    server-side cursor (memory ~ one month). Works in the caller's transaction; on an
    idle autocommit connection it opens its own.
    """
    return _export(conn, month)[0]


# --------------------------------------------------------------------------------------
# The lazy shard mapping
# --------------------------------------------------------------------------------------
class LazyMonthShards(Mapping[str, pa.Table]):
    """``month -> export_month(conn, month)``, computed on access and never cached.

    :meth:`DatasetRepo.commit` reads each month once, so at most one exported month is
    alive at a time. The keys of every exported row are kept in :attr:`exported` (the last
    export wins if a month is read twice), and ``on_exported(month, rows)`` is called
    after each export.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        months: Collection[str],
        on_exported: Callable[[str, int], None] | None = None,
    ) -> None:
        self._conn = conn
        self._months = tuple(sorted(set(months)))
        self._on_exported = on_exported
        self.exported: dict[str, ExportedKeys] = {}
        self.export_seconds = 0.0

    def __getitem__(self, month: str) -> pa.Table:
        if month not in self._months:
            raise KeyError(month)
        started = time.perf_counter()
        table, keys = _export(self._conn, month)
        self.exported[month] = keys
        seconds = time.perf_counter() - started
        self.export_seconds += seconds
        logger.info(
            "exported %s: %d rows (%d pending) in %.2fs",
            month,
            table.num_rows,
            keys.pending.true_count,
            seconds,
        )
        if self._on_exported is not None:
            self._on_exported(month, table.num_rows)
        return table

    def __contains__(self, month: object) -> bool:  # Mapping's default would export
        return month in self._months

    def __iter__(self) -> Iterator[str]:
        return iter(self._months)

    def __len__(self) -> int:
        return len(self._months)

    @property
    def rows_exported(self) -> int:
        return sum(len(k.ids) for k in self.exported.values())


# --------------------------------------------------------------------------------------
# The publication check (before the commit)
# --------------------------------------------------------------------------------------
def read_unique_ids(path: Path) -> pa.Array:
    """The ``unique_id`` column of a Parquet shard (only that column is read)."""
    column = pq.ParquetFile(path).read(columns=["unique_id"]).column("unique_id")
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return array if array.type == pa.string() else array.cast(pa.string())


class PublicationCheck:
    """The ``verify`` callback a sync hands to :meth:`DatasetRepo.commit`.

    Called with the staged shards (month -> Parquet file: the bytes about to be
    committed) before anything reaches the repo, it raises :class:`PublicationRefusedError`
    unless

    * each staged month has as many rows as PostgreSQL's ``news`` table had for it in
      the export's snapshot (``shards.exported[month].pg_rows``), and
    * no ``unique_id`` appears twice across the staged months and the rest of the
      dataset: the shards of ``parent`` neither written nor deleted by this commit.

    Only ``unique_id`` columns and Parquet footers are read (~10 MB of Arrow per 300k
    rows). ``seconds``: time spent, for the report.
    """

    def __init__(
        self,
        repo: DatasetRepo,
        parent: str | None,
        shards: LazyMonthShards,
        delete: Collection[str],
    ) -> None:
        self._repo = repo
        self._parent = parent
        self._shards = shards
        self._delete = set(delete)
        self.seconds = 0.0
        self.rows_checked = 0

    def __call__(self, staged: Mapping[str, Path]) -> None:
        crash_point("sync:exported")
        started = time.perf_counter()
        mismatches: dict[str, tuple[int | None, int]] = {}
        parts: list[tuple[str, pa.Array]] = []
        for month, path in sorted(staged.items()):
            ids = read_unique_ids(path)
            keys = self._shards.exported.get(month)
            expected = keys.pg_rows if keys is not None and keys.pg_rows >= 0 else None
            if expected != len(ids):
                mismatches[month] = (expected, len(ids))
            parts.append((month, ids))
        for month in sorted(set(self._shards) - set(staged)):  # not staged: nothing written
            keys = self._shards.exported.get(month)
            mismatches[month] = (keys.pg_rows if keys is not None else None, 0)
        if self._parent is not None:
            for month in self._repo.list_shards(self._parent):
                if month not in staged and month not in self._delete:
                    parts.append(
                        (month, read_unique_ids(self._repo.download_shard(month, self._parent)))
                    )
        duplicates = find_duplicates(parts)
        self.rows_checked = sum(len(ids) for _, ids in parts)
        self.seconds = time.perf_counter() - started
        logger.info(
            "publication check: %d months staged, %d rows checked for duplicates in %.2fs",
            len(staged),
            self.rows_checked,
            self.seconds,
        )
        if mismatches or duplicates:
            raise PublicationRefusedError(mismatches, duplicates)


def find_duplicates(parts: Collection[tuple[str, pa.Array]]) -> dict[str, list[str]]:
    """Ids held more than once across ``parts``.

    Args:
        parts: ``(month or file key, unique_id array)`` pairs.

    Returns:
        unique_id -> the keys holding it, sorted (a key listed twice: twice in that part),
        for every id held more than once.
    """
    if not parts:
        return {}
    everything = pa.chunked_array([ids for _, ids in parts], type=pa.string())
    counts = pc.value_counts(everything)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return {}
    where: dict[str, list[str]] = {}
    for month, ids in parts:
        for uid in ids.filter(pc.is_in(ids, value_set=repeated)).to_pylist():
            where.setdefault(uid, []).append(month)
    return {uid: sorted(months) for uid, months in sorted(where.items())}


# --------------------------------------------------------------------------------------
# Memory measurement
# --------------------------------------------------------------------------------------
class _RssSampler:
    """Peak resident set size of this process while the block runs (psutil, sampled).

    A thread samples every :data:`RSS_SAMPLE_SECONDS`, plus once at the start and end.
    ``ru_maxrss`` would be simpler but is the peak of the whole process lifetime (useless
    in a long-lived worker). Short spikes between two samples can be missed. Without
    psutil the values are None.
    """

    def __init__(self, interval: float = RSS_SAMPLE_SECONDS) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self.start_bytes: int | None = None
        self.peak_bytes: int | None = None

    def _sample(self) -> None:
        rss = int(self._process.memory_info().rss)
        self.peak_bytes = rss if self.peak_bytes is None else max(self.peak_bytes, rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> _RssSampler:
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil is a dependency
            return self
        self._process = psutil.Process(os.getpid())
        self._sample()
        self.start_bytes = self.peak_bytes
        self._thread = threading.Thread(target=self._run, name="hf-sync-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()

    @staticmethod
    def _mb(value: int | None) -> float | None:
        return None if value is None else round(value / 2**20, 1)

    @property
    def start_mb(self) -> float | None:
        return self._mb(self.start_bytes)

    @property
    def peak_mb(self) -> float | None:
        return self._mb(self.peak_bytes)


# --------------------------------------------------------------------------------------
# The sync
# --------------------------------------------------------------------------------------
@dataclass
class SyncReport:
    """The outcome of :func:`sync_to_hf`.

    ``months``: months written (exported) in the commit; ``deleted``: months removed
    (``full=True`` only). ``revision``: the revision the rows were marked with (the new
    head, or the unchanged head when the commit changed nothing or nothing was pending).
    ``committed``: a new revision was made. ``peak_rss_mb``: peak RSS of the process
    during the sync, ``start_rss_mb`` at its start (see :class:`_RssSampler`).
    ``timings``: seconds spent exporting from PG (``export``), checking what is about to
    be published (``check``, :class:`PublicationCheck`), in the rest of the commit
    (``commit``: validating, writing and uploading shards) and marking rows (``mark``).
    ``repaired``: working-copy files brought back to HEAD before the sync (a crash after
    an earlier commit point); ``full``: whether every month was rebuilt.
    """

    months: list[str]
    rows_exported: int
    rows_marked: int
    revision: str | None
    seconds: float
    peak_rss_mb: float | None
    deleted: list[str] = field(default_factory=list)
    committed: bool = False
    start_rss_mb: float | None = None
    log_id: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)
    full: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (seconds rounded to ms)."""
        return {
            "full": self.full,
            "months": self.months,
            "deleted": self.deleted,
            "rows_exported": self.rows_exported,
            "rows_marked": self.rows_marked,
            "revision": self.revision,
            "committed": self.committed,
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": self.peak_rss_mb,
            "start_rss_mb": self.start_rss_mb,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "repaired": self.repaired,
        }


_MARK = sql.SQL(
    """
    UPDATE {news} AS n SET synced_to_hf_at = clock_timestamp(), hf_revision = %(revision)s
    FROM unnest(%(ids)s::int8[], %(updated_at)s::timestamptz[]) AS e(id, exported_updated_at)
    WHERE n.id = e.id AND n.updated_at = e.exported_updated_at
      AND (n.hf_revision IS DISTINCT FROM %(revision)s OR {pending})
    """
).format(news=sql.Identifier("news"), pending=_PENDING)


def _mark_synced(
    conn: psycopg.Connection[Any],
    exported: Mapping[str, ExportedKeys],
    revision: str,
    *,
    all_rows: bool,
) -> int:
    """In the caller's transaction: compare-and-set the exported rows synced; how many.

    A row is marked only if its ``updated_at`` is still the exported one (an edit since
    keeps it pending) and the mark changes something (a row already synced with
    ``revision``, e.g. by a previous ``full`` sync that produced the same head, is left
    alone instead of being rewritten).
    """
    marked = 0
    with conn.cursor(row_factory=tuple_row) as cur:
        for month in sorted(exported):
            ids, updated = exported[month].select(all_rows=all_rows)
            if not ids:
                continue
            cur.execute(_MARK, {"revision": revision, "ids": ids, "updated_at": updated})
            marked += cur.rowcount
            if cur.rowcount != len(ids):
                logger.info(
                    "%s: %d of %d exported rows not marked (changed during the sync: they "
                    "stay pending; or already synced with %s)",
                    month,
                    len(ids) - cur.rowcount,
                    len(ids),
                    revision[:12],
                )
    return marked


def _plan(
    conn: psycopg.Connection[Any],
    repo: DatasetRepo,
    parent: str | None,
    months: Collection[str] | None,
    full: bool,
) -> tuple[list[str], list[str], dict[str, int]]:
    """(months to export, months to delete, month -> pending rows)."""
    pending = pending_months(conn)
    if months is None and not full:
        return sorted(pending), [], pending
    wanted = None if months is None else {str(m) for m in months}
    for month in wanted or ():
        _month_range(month)  # validate
    in_pg = all_months(conn)
    in_hf = set(repo.list_shards(parent)) if (full and parent is not None) else set()
    if wanted is None:
        wanted = set(in_pg) | in_hf
    export = sorted(m for m in wanted if m in in_pg)
    delete = sorted(m for m in wanted if m not in in_pg and m in in_hf) if full else []
    skipped = sorted(wanted - set(export) - set(delete))
    if skipped:
        logger.info("months without rows in PostgreSQL, not written: %s", skipped)
    return export, delete, pending


def _commit_message(export: list[str], delete: list[str], full: bool) -> str:
    touched = sorted(export + delete)
    span = touched[0] if len(touched) == 1 else f"{touched[0]}..{touched[-1]}"
    kind = "full re-export" if full else "sync"
    message = f"PostgreSQL {kind}: {len(export)} month(s) written"
    if delete:
        message += f", {len(delete)} deleted"
    return f"{message} ({span})"


def _log_failure(conninfo: str, conn: psycopg.Connection[Any], log_id: int, error: str) -> None:
    """Best effort: finish the sync_log row as failed (on a new connection if needed)."""
    try:
        if conn.broken or conn.closed:
            with psycopg.connect(conninfo, autocommit=True) as fresh:
                sync_log.finish_log(fresh, log_id, "failed", error=error)
        else:
            with transaction(conn):
                sync_log.finish_log(conn, log_id, "failed", error=error)
    except Exception:
        logger.exception("could not record the failure of sync_log row %d", log_id)


def sync_to_hf(
    conninfo: str,
    repo: DatasetRepo,
    *,
    months: Collection[str] | None = None,
    full: bool = False,
    on_month_exported: Callable[[str, int], None] | None = None,
) -> SyncReport:
    """Sync PG -> ``repo`` in ONE commit; mark the exported rows synced afterwards.

    First the repo's working copy is brought to its HEAD (healing a crash after an
    earlier commit point). Months written: those with pending rows (default; every month
    when the repo is empty); ``months``: exactly those (with rows in PG), pending or not;
    ``full=True``: every month of PG (the full re-export baseline and the repair, every
    exported row marked), and months of the repo without rows in PG are deleted in the
    same commit (only then: a month missing from PG otherwise means nothing to sync, not
    "delete"). ``full`` with ``months`` limits both to ``months``. Before the commit the
    staged shards are checked (:class:`PublicationCheck`).

    With nothing to write, no commit is made (no empty revisions). The run is logged in
    ``sync_log`` (operation :data:`SYNC_OPERATION`, scope = the months). On a failed or
    refused commit nothing is marked, the log row is ``failed`` and the exception
    propagates.

    Args:
        conninfo: PostgreSQL URL (the sync opens its own connection).
        repo: the dataset repo written.
        months: only these months (``"YYYY-MM"``).
        full: rebuild every month (or every month of ``months``) from PostgreSQL.
        on_month_exported: called with ``(month, rows)`` after each month's export
            (progress; tests use it to edit rows mid-sync).

    Returns:
        The :class:`SyncReport`.

    Raises:
        SyncInProgressError: another sync runs on the database.
        PublicationRefusedError: the shards about to be committed failed the check.
    """
    started = time.perf_counter()
    with _RssSampler() as rss, psycopg.connect(conninfo, autocommit=True) as conn:
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (SYNC_LOCK_KEY,)).fetchone()
        if not (locked and locked[0]):
            raise SyncInProgressError("another HF sync is running on this database")
        try:
            report = _sync(conninfo, conn, repo, months, full, on_month_exported)
        finally:
            if not (conn.broken or conn.closed):
                conn.execute("SELECT pg_advisory_unlock(%s)", (SYNC_LOCK_KEY,))
    report.seconds = time.perf_counter() - started
    report.peak_rss_mb = rss.peak_mb
    report.start_rss_mb = rss.start_mb
    logger.info("HF sync finished: %s", report.as_dict())
    return report


def _sync(
    conninfo: str,
    conn: psycopg.Connection[Any],
    repo: DatasetRepo,
    months: Collection[str] | None,
    full: bool,
    on_month_exported: Callable[[str, int], None] | None,
) -> SyncReport:
    repaired = repo.sync_working_copy()
    parent = repo.head()
    if parent is None and months is None and not full:
        # An empty repo (new, or recreated) needs everything, synced before or not.
        logger.info("HF sync: %r is empty; exporting every month (full)", repo)
        full = True
    export, delete, pending = _plan(conn, repo, parent, months, full)
    details: dict[str, Any] = {
        "full": full,
        "requested_months": sorted(months) if months is not None else None,
        "pending": pending,
        "written": export,
        "deleted": delete,
        "parent_revision": parent,
        "working_copy_repaired": repaired,
    }
    if not export and not delete:
        log_id = sync_log.start_log(conn, SYNC_OPERATION, None, details)
        sync_log.finish_log(conn, log_id, "success", 0, 0, 0, revision=parent)
        logger.info("HF sync: nothing to sync; head stays %s", parent)
        return SyncReport([], 0, 0, parent, 0.0, None, log_id=log_id, repaired=repaired, full=full)

    scope = ",".join(sorted(export + delete))
    log_id = sync_log.start_log(conn, SYNC_OPERATION, scope, details)  # committed: autocommit
    logger.info(
        "HF sync %d: writing %s, deleting %s onto %s (%d pending rows)",
        log_id,
        export,
        delete,
        parent,
        sum(pending.values()),
    )
    shards = LazyMonthShards(conn, export, on_month_exported)
    check = PublicationCheck(repo, parent, shards, delete)
    commit_started = time.perf_counter()
    try:
        info = repo.commit(
            shards,
            message=_commit_message(export, delete, full),
            delete=delete,
            parent_revision=parent,
            verify=check,
        )
    except Exception as exc:
        logger.error("HF sync %d: the commit failed, nothing marked synced: %s", log_id, exc)
        _log_failure(conninfo, conn, log_id, f"{type(exc).__name__}: {exc}")
        raise
    crash_point("sync:committed")

    rows_exported = shards.rows_exported
    timings = {
        "export": shards.export_seconds,
        "check": check.seconds,
        "commit": time.perf_counter() - commit_started - shards.export_seconds - check.seconds,
    }
    mark_started = time.perf_counter()
    try:
        with conn.transaction():
            marked = _mark_synced(conn, shards.exported, info.revision, all_rows=full)
            timings["mark"] = time.perf_counter() - mark_started
            sync_log.finish_log(
                conn,
                log_id,
                "success",
                rows_in=rows_exported,
                rows_written=marked,
                rows_rejected=0,
                details={
                    "added": list(info.added),
                    "deleted_done": list(info.deleted),
                    "committed": info.revision != parent,
                    "timings": {k: round(v, 3) for k, v in timings.items()},
                },
                revision=info.revision,
            )
    except Exception as exc:
        logger.error(
            "HF sync %d: committed %s but marking failed; the rows stay pending and the "
            "next sync re-exports them: %s",
            log_id,
            info.revision,
            exc,
        )
        _log_failure(
            conninfo,
            conn,
            log_id,
            f"committed {info.revision} but marking failed: {type(exc).__name__}: {exc}",
        )
        raise
    return SyncReport(
        months=export,
        rows_exported=rows_exported,
        rows_marked=marked,
        revision=info.revision,
        seconds=0.0,
        peak_rss_mb=None,
        deleted=list(info.deleted),
        committed=info.revision != parent,
        log_id=log_id,
        timings=timings,
        repaired=repaired,
        full=full,
    )
