"""Where news records are written and read: PostgreSQL, the HF dataset repo, or both.

:class:`StorageAdapter` is the seam the ingest goes through while the source of truth
moves from the HuggingFace dataset to PostgreSQL:

* ``postgres`` (default): :func:`~bi_platform.news.pg_store.write_records` plus the
  parse-time rejections into ``news_rejected``, with an ``ingest`` ``sync_log`` row, all
  in ONE transaction.
* ``huggingface``: the records are validated against the packaged reference data and
  merged into their month shards (rows with the same ``unique_id`` replaced, new ones
  appended, sorted) in ONE commit of the repo. Rejected records are recorded in
  PostgreSQL's ``news_rejected`` when a ``conninfo`` is given, else appended to a JSON
  lines dead-letter file: ``dead_letter_path``, by default ``news_rejected.jsonl`` next
  to a :class:`~bi_platform.news.dataset_repo.LocalDatasetRepo`'s directory
  (``<repo root>/../news_rejected.jsonl``). They are recorded after the commit, so a
  failed write leaves no trace and can simply be retried. No ``(agency, url)``
  uniqueness check on this path (the repo has no index to check it against).
* ``dual_write``: PostgreSQL first, committed (a failure raises and nothing goes to
  the repo); then the batch's rows are read back from ``news_hf`` and merged into the
  repo in one commit; on success they are marked synced (``synced_to_hf_at``,
  ``hf_revision``) with the compare-and-set on ``updated_at`` of 0002_news.sql. If the
  repo write fails, the outcome says ``hf_written=False`` with the error and the rows
  stay pending (``synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at``) for the HF
  sync to pick up; nothing is raised.

Reads (:meth:`StorageAdapter.read_month`) come from ``news_hf`` or from the repo's
shard, as ``STORAGE_READ_FROM`` says; both return ``HF_SCHEMA`` tables.

Configuration: ``STORAGE_BACKEND`` (``huggingface`` | ``postgres`` | ``dual_write``,
default ``postgres``) and ``STORAGE_READ_FROM`` (``huggingface`` | ``postgres``, default
``postgres``), read through :class:`~bi_platform.settings.Settings` (fields
``storage_backend`` / ``storage_read_from``) by :meth:`StorageAdapter.from_settings`;
:func:`storage_mode` parses explicit values. Pure: no Dagster.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.rows import tuple_row

from bi_platform.news import pg_store
from bi_platform.news.ingest import Rejected
from bi_platform.news.records import HF_COLUMNS, HF_SCHEMA, TIMEZONE

if TYPE_CHECKING:
    from bi_platform.news.dataset_repo import CommitInfo, DatasetRepo
    from bi_platform.settings import Settings

log = logging.getLogger(__name__)

#: Environment variables (read via Settings) choosing the write and read backends.
ENV_STORAGE_BACKEND = "STORAGE_BACKEND"
ENV_STORAGE_READ_FROM = "STORAGE_READ_FROM"
#: ``sync_log.operation`` of a batch written by the adapter (scope: the batch's source).
INGEST_OPERATION = "ingest"
DEAD_LETTER_NAME = "news_rejected.jsonl"

_ZONE = ZoneInfo(TIMEZONE)
_SORT_KEYS = [("published_at", "ascending"), ("unique_id", "ascending")]


class StorageBackend(StrEnum):
    """Where writes go."""

    HUGGINGFACE = "huggingface"
    POSTGRES = "postgres"
    DUAL_WRITE = "dual_write"


class ReadFrom(StrEnum):
    """Where reads come from."""

    HUGGINGFACE = "huggingface"
    POSTGRES = "postgres"


def storage_mode(
    backend: str | None = None, read_from: str | None = None
) -> tuple[StorageBackend, ReadFrom]:
    """Parse ``STORAGE_BACKEND`` / ``STORAGE_READ_FROM`` values (None or blank: defaults).

    Case and surrounding spaces are ignored; anything else raises ``ValueError`` naming
    the variable and the accepted values.
    """

    def parse(enum: type[StrEnum], value: str | None, default: StrEnum, env: str) -> Any:
        if value is None or not str(value).strip():
            return default
        try:
            return enum(str(value).strip().lower())
        except ValueError:
            accepted = ", ".join(e.value for e in enum)
            raise ValueError(f"{env}={value!r}: expected one of {accepted}") from None

    return (
        parse(StorageBackend, backend, StorageBackend.POSTGRES, ENV_STORAGE_BACKEND),
        parse(ReadFrom, read_from, ReadFrom.POSTGRES, ENV_STORAGE_READ_FROM),
    )


@dataclass(frozen=True)
class WriteOutcome:
    """What :meth:`StorageAdapter.write` did.

    ``result``: the records' fate (PostgreSQL's counts for ``postgres``/``dual_write``,
    the merge's for ``huggingface``); ``rejected_recorded``: the parse-time rejections
    stored. ``hf_*``: the repo commit (``hf_revision`` is the head after it; ``hf_months``
    the shards it rewrote). ``marked_synced``: PG rows marked exported. ``error``: why the
    HF part (or marking the rows synced) failed; the write itself did not raise.
    """

    backend: StorageBackend
    result: pg_store.WriteResult
    rejected_recorded: int = 0
    pg_written: bool = False
    hf_written: bool = False
    hf_revision: str | None = None
    hf_months: tuple[str, ...] = ()
    marked_synced: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (e.g. for Dagster metadata)."""
        return {
            "backend": self.backend.value,
            **self.result.as_dict(),
            "rejected_recorded": self.rejected_recorded,
            "pg_written": self.pg_written,
            "hf_written": self.hf_written,
            "hf_revision": self.hf_revision,
            "hf_months": list(self.hf_months),
            "marked_synced": self.marked_synced,
            "error": self.error,
        }


@dataclass(frozen=True)
class ShardMerge:
    """The outcome of :func:`merge_into_repo`."""

    commit: CommitInfo | None
    months: tuple[str, ...]
    inserted: int
    updated: int
    unchanged: int

    @property
    def revision(self) -> str | None:
        return self.commit.revision if self.commit is not None else None


def _month_keys(published_at: pa.ChunkedArray) -> pa.ChunkedArray:
    local = published_at.cast(pa.timestamp("us", tz=TIMEZONE))
    return pc.strftime(local, format="%Y-%m")


def merge_into_repo(repo: DatasetRepo, table: pa.Table, *, message: str) -> ShardMerge:
    """Merge HF_SCHEMA rows (distinct ``unique_id``) into their month shards: ONE commit.

    Per month: the shard at the head is read, rows with an incoming ``unique_id`` are
    replaced, new ones appended, rows sorted by (published_at, unique_id). Months where
    nothing changes are left out; no commit at all when nothing changes
    (``commit=None``). Raises what the repo raises (e.g. ``ConflictError`` if the head
    moved meanwhile).
    """
    table = table.select(list(HF_COLUMNS)).cast(HF_SCHEMA)
    head = repo.head()
    months = _month_keys(table.column("published_at"))
    shards: dict[str, pa.Table] = {}
    inserted = updated = unchanged = 0
    for month in sorted(pc.unique(months).to_pylist()):
        incoming = table.filter(pc.equal(months, month))
        existing = repo.read_shard(month, head) if head is not None else HF_SCHEMA.empty_table()
        replaced = pc.is_in(existing.column("unique_id"), value_set=incoming.column("unique_id"))
        replaced_np = np.asarray(replaced.to_numpy(zero_copy_only=False), dtype=bool)
        old = {row["unique_id"]: row for row in existing.filter(replaced).to_pylist()}
        month_inserted = month_updated = 0
        for row in incoming.to_pylist():
            before = old.get(row["unique_id"])
            if before is None:
                month_inserted += 1
            elif before != row:
                month_updated += 1
            else:
                unchanged += 1
        inserted += month_inserted
        updated += month_updated
        if month_inserted or month_updated:
            kept = existing.filter(pa.array(~replaced_np))
            shards[month] = pa.concat_tables([kept, incoming]).sort_by(_SORT_KEYS)
    commit = repo.commit(shards, message=message, parent_revision=head) if shards else None
    return ShardMerge(commit, tuple(sorted(shards)), inserted, updated, unchanged)


def _rows_to_table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Rows of HF_COLUMNS from PostgreSQL as an HF_SCHEMA table."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in HF_COLUMNS]
    arrays = [
        pa.array(list(values), type=f.type) for f, values in zip(HF_SCHEMA, columns, strict=False)
    ]
    return pa.Table.from_arrays(arrays, schema=HF_SCHEMA)


def _hf_select(where: sql.Composable, extra: Sequence[str] = ()) -> sql.Composed:
    return sql.SQL("SELECT {} FROM news_hf WHERE {} ORDER BY published_at, unique_id").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in (*HF_COLUMNS, *extra)), where
    )


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of a ``YYYY-MM`` month in São Paulo time."""
    year, mon = (int(p) for p in month.split("-"))
    if not 1 <= mon <= 12:
        raise ValueError(f"not a month (YYYY-MM): {month!r}")
    start = datetime(year, mon, 1, tzinfo=_ZONE)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=_ZONE)
    return start, end


class StorageAdapter:
    """Writes and reads news through the configured backend (see the module docstring)."""

    def __init__(
        self,
        backend: StorageBackend | str = StorageBackend.POSTGRES,
        read_from: ReadFrom | str = ReadFrom.POSTGRES,
        conninfo: str | None = None,
        repo: DatasetRepo | None = None,
        *,
        dead_letter_path: Path | str | None = None,
    ) -> None:
        self.backend, self.read_from = storage_mode(backend, read_from)
        self.conninfo = conninfo
        self.repo = repo
        needs_pg = self.backend != StorageBackend.HUGGINGFACE or self.read_from == ReadFrom.POSTGRES
        needs_repo = (
            self.backend != StorageBackend.POSTGRES or self.read_from == ReadFrom.HUGGINGFACE
        )
        if needs_pg and not conninfo:
            raise ValueError(
                f"storage backend {self.backend} / read from {self.read_from} needs a "
                "PostgreSQL conninfo"
            )
        if needs_repo and repo is None:
            raise ValueError(
                f"storage backend {self.backend} / read from {self.read_from} needs a dataset repo"
            )
        if dead_letter_path is None and repo is not None and hasattr(repo, "root"):
            dead_letter_path = Path(repo.root).parent / DEAD_LETTER_NAME
        self.dead_letter_path = Path(dead_letter_path) if dead_letter_path else None
        if self.backend == StorageBackend.HUGGINGFACE and not conninfo and not dead_letter_path:
            raise ValueError(
                "storage backend huggingface without PostgreSQL records rejections in a "
                "dead-letter file: pass dead_letter_path"
            )

    def __repr__(self) -> str:
        return (
            f"StorageAdapter(backend={self.backend.value!r}, read_from={self.read_from.value!r},"
            f" repo={self.repo!r})"
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        conninfo: str | None = None,
        repo: DatasetRepo | None = None,
        dead_letter_path: Path | str | None = None,
    ) -> StorageAdapter:
        """Backends from ``settings.storage_backend`` / ``storage_read_from``
        (``STORAGE_BACKEND`` / ``STORAGE_READ_FROM``, both default ``postgres``)."""
        backend, read_from = storage_mode(
            getattr(settings, "storage_backend", None), getattr(settings, "storage_read_from", None)
        )
        return cls(backend, read_from, conninfo, repo, dead_letter_path=dead_letter_path)

    # -- writing --------------------------------------------------------------------------
    def write(
        self,
        records: pa.Table,
        rejected: Sequence[Rejected] = (),
        *,
        source: str,
        row_sources: Sequence[str] | None = None,
    ) -> WriteOutcome:
        """Write one batch: ``records`` (HF columns) and the ``rejected`` found parsing it.

        ``source`` names the batch (e.g. ``"inbox 2026-11-01.jsonl"``); ``row_sources``
        optionally names each record (e.g. its line) for rejections found here.
        """
        if self.backend == StorageBackend.POSTGRES:
            return self._write_postgres(records, rejected, source, row_sources)
        if self.backend == StorageBackend.HUGGINGFACE:
            return self._write_huggingface(records, rejected, source, row_sources)
        return self._write_dual(records, rejected, source, row_sources)

    def _pg_transaction(
        self,
        conn: psycopg.Connection[Any],
        records: pa.Table,
        rejected: Sequence[Rejected],
        source: str,
        row_sources: Sequence[str] | None,
    ) -> tuple[pg_store.WriteResult, int]:
        with conn.transaction():
            log_id = pg_store.start_log(
                conn, INGEST_OPERATION, source, {"backend": self.backend.value}
            )
            result = pg_store.write_records(
                conn, records, source=source, log_id=log_id, row_sources=row_sources
            )
            recorded = pg_store.insert_rejected(conn, rejected, log_id)
            pg_store.finish_log(
                conn,
                log_id,
                "success",
                rows_in=result.rows_in + recorded,
                rows_written=result.written,
                rows_rejected=result.rejected + recorded,
                details={**result.as_dict(), "parse_rejected": recorded},
            )
        return result, recorded

    def _write_postgres(
        self,
        records: pa.Table,
        rejected: Sequence[Rejected],
        source: str,
        row_sources: Sequence[str] | None,
    ) -> WriteOutcome:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
            result, recorded = self._pg_transaction(conn, records, rejected, source, row_sources)
        log.info("%s -> postgres: %s, %d parse rejections", source, result, recorded)
        return WriteOutcome(self.backend, result, recorded, pg_written=True)

    def _write_huggingface(
        self,
        records: pa.Table,
        rejected: Sequence[Rejected],
        source: str,
        row_sources: Sequence[str] | None,
    ) -> WriteOutcome:
        from bi_platform.news.reference_data import load_agencies, load_themes

        assert self.repo is not None
        started = time.perf_counter()
        reference = pg_store.ReferenceSets.from_reference_data(load_agencies(), load_themes())
        validated = pg_store.validate_records(
            records, reference, source=source, row_sources=row_sources
        )
        merge = merge_into_repo(
            self.repo, validated.table, message=f"ingest {source}: {validated.table.num_rows} rows"
        )
        # after the commit: a failed write leaves no trace and can be retried as is
        self._record_rejections([*validated.rejected, *rejected])
        recorded = len(rejected)
        result = pg_store.WriteResult(
            rows_in=records.num_rows,
            inserted=merge.inserted,
            updated=merge.updated,
            unchanged=merge.unchanged + validated.duplicates,
            rejected=len(validated.rejected),
            duplicates=validated.duplicates,
            rejected_by_reason=pg_store.count_reasons(validated.rejected),
            seconds=time.perf_counter() - started,
        )
        log.info(
            "%s -> huggingface: %s, months %s, revision %s",
            source,
            result,
            merge.months,
            merge.revision,
        )
        return WriteOutcome(
            self.backend,
            result,
            recorded,
            hf_written=True,
            hf_revision=merge.revision or self.repo.head(),
            hf_months=merge.months,
        )

    def _record_rejections(self, rejected: Sequence[Rejected]) -> int:
        """Rejections into ``news_rejected`` (if PostgreSQL is configured) or the
        dead-letter file; returns how many."""
        if not rejected:
            return 0
        if self.conninfo:
            with psycopg.connect(self.conninfo, autocommit=True) as conn, conn.transaction():
                return pg_store.insert_rejected(conn, rejected)
        assert self.dead_letter_path is not None
        now = datetime.now(UTC).isoformat()
        lines = "".join(
            json.dumps(
                pg_store.jsonable(
                    {
                        "source": r.source,
                        "reason": r.reason,
                        "raw": r.raw,
                        "raw_text": r.raw_text,
                        "unique_id": r.unique_id,
                        "rejected_at": now,
                    }
                ),
                ensure_ascii=False,
            )
            + "\n"
            for r in rejected
        )
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_path.open("a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        log.info("%d rejection(s) appended to %s", len(rejected), self.dead_letter_path)
        return len(rejected)

    def _write_dual(
        self,
        records: pa.Table,
        rejected: Sequence[Rejected],
        source: str,
        row_sources: Sequence[str] | None,
    ) -> WriteOutcome:
        assert self.repo is not None
        records = pg_store.with_ids(records)
        ids = [u for u in records.column("unique_id").to_pylist() if u]
        with psycopg.connect(self.conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
            # 1. PostgreSQL, committed; any failure raises before the repo is touched
            result, recorded = self._pg_transaction(conn, records, rejected, source, row_sources)
            # 2. the repo, from what PostgreSQL now holds for these records
            try:
                with conn.cursor(row_factory=tuple_row) as cur:
                    rows = cur.execute(
                        _hf_select(sql.SQL("unique_id = ANY(%s)"), ("id", "updated_at")),
                        (ids,),
                    ).fetchall()
                n = len(HF_COLUMNS)
                exported = _rows_to_table([r[:n] for r in rows])
                merge = merge_into_repo(
                    self.repo, exported, message=f"ingest {source}: {exported.num_rows} rows"
                )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "%s: written to PostgreSQL, HF write failed (%s); the rows stay pending "
                    "for the HF sync",
                    source,
                    error,
                )
                return WriteOutcome(
                    self.backend, result, recorded, pg_written=True, hf_written=False, error=error
                )
            revision = merge.revision or self.repo.head()
            # 3. mark exported: only rows still as exported (updated_at unchanged)
            marked, error = 0, None
            try:
                with conn.transaction():
                    marked = conn.execute(
                        """
                        UPDATE news AS n
                        SET synced_to_hf_at = clock_timestamp(), hf_revision = %s
                        FROM unnest(%s::bigint[], %s::timestamptz[]) AS u(id, updated_at)
                        WHERE n.id = u.id AND n.updated_at = u.updated_at
                        """,
                        (revision, [r[n] for r in rows], [r[n + 1] for r in rows]),
                    ).rowcount
            except psycopg.Error as exc:
                error = f"marking rows synced failed: {type(exc).__name__}: {exc}"
                log.warning("%s: %s; they stay pending for the HF sync", source, error)
        log.info(
            "%s -> dual_write: %s; HF %s months %s; %d marked synced",
            source,
            result,
            revision,
            merge.months,
            marked,
        )
        return WriteOutcome(
            self.backend,
            result,
            recorded,
            pg_written=True,
            hf_written=True,
            hf_revision=revision,
            hf_months=merge.months,
            marked_synced=marked,
            error=error,
        )

    # -- reading --------------------------------------------------------------------------
    def read_month(self, month: str) -> pa.Table:
        """The month's records (São Paulo months) as HF_SCHEMA, by (published_at, unique_id)."""
        if self.read_from == ReadFrom.HUGGINGFACE:
            assert self.repo is not None
            return self.repo.read_shard(month)
        start, end = month_bounds(month)
        with (
            psycopg.connect(self.conninfo) as conn,  # type: ignore[arg-type]
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            where = sql.SQL("published_at >= %s AND published_at < %s")
            rows = cur.execute(_hf_select(where), (start, end)).fetchall()
        return _rows_to_table(rows)
