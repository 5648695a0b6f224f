"""Where news records are written and read: PostgreSQL, the HF dataset repo, or both.

:class:`StorageAdapter` is the seam the ingest goes through while the source of truth
moves from the HuggingFace dataset to PostgreSQL:

* ``postgres`` (default): :func:`~bi_platform.news.pg_write.write_records` plus the
  parse-time rejections into ``news_rejected``, with an ``ingest`` ``sync_log`` row, all
  in ONE transaction.
* ``huggingface``: the records are validated by the same
  :func:`~bi_platform.news.validation.validate_records` as the other backends, against the
  packaged reference data and the repo's head (:func:`repo_versions` reads the ids,
  agencies, urls and extraction times of every shard: the same duplicate-url,
  correction and older-version rules as PostgreSQL), then merged into their month
  shards (rows with the same ``unique_id`` replaced, the story a correction replaces
  removed from its shard, new ones appended, sorted) in ONE commit whose parent is the
  head that was read. Rejected records are recorded in PostgreSQL's ``news_rejected``
  when a ``conninfo`` is given, else appended to a JSON lines dead-letter file:
  ``dead_letter_path``, by default ``news_rejected.jsonl`` next to a
  :class:`~bi_platform.news.dataset_repo_local.LocalDatasetRepo`'s directory (``<repo
  root>/../news_rejected.jsonl``). They are recorded after the commit, so a failed write
  leaves no trace and can simply be retried. The unknown fields of a record (``extra``)
  are accepted as on the other backends but cannot be stored in the HF dataset (fixed
  schema): the outcome counts them (``extra_not_stored``) and a warning is logged.
* ``dual_write``: PostgreSQL first, committed (a failure raises and nothing goes to
  the repo); then the batch's rows are read back from ``news_hf`` and merged into the
  repo in one commit (the stories headline corrections replaced are removed from their
  shards); on success they are marked synced (``synced_to_hf_at``,
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
from collections.abc import Mapping, Sequence
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
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.rows import tuple_row

from bi_platform.news import pg_common, pg_reference, pg_write, sync_log, validation
from bi_platform.news.ingest import Rejected
from bi_platform.news.records import EXTRA_COLUMN, HF_COLUMNS, HF_SCHEMA, TIMEZONE, Version

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
    the merge's for ``huggingface``; the same on every backend for the same input and
    store); ``rejected_recorded``: the parse-time rejections stored. ``hf_*``: the repo
    commit (``hf_revision`` is the head after it; ``hf_months`` the shards it rewrote).
    ``marked_synced``: PG rows marked exported. ``extra_not_stored``: records whose
    unknown fields the store written could not keep (``huggingface`` only). ``error``:
    why the HF part (or marking the rows synced) failed; the write itself did not raise.

    Accounting of an inbox batch ``batch`` (:class:`~bi_platform.news.ingest.ParsedBatch`)
    written as ``write(batch.records, batch.rejected, ...)``::

        batch.lines == rows_stored + rows_rejected + batch.duplicates + rows_merged

    (every non-blank line is stored, rejected, or merged into another line).
    """

    backend: StorageBackend
    result: pg_write.WriteResult
    rejected_recorded: int = 0
    pg_written: bool = False
    hf_written: bool = False
    hf_revision: str | None = None
    hf_months: tuple[str, ...] = ()
    marked_synced: int = 0
    error: str | None = None
    extra_not_stored: int = 0

    @property
    def rows_stored(self) -> int:
        """Records the store now holds as given (inserted, updated or identical)."""
        return self.result.stored

    @property
    def rows_rejected(self) -> int:
        """Rejections: those passed in (parse time) and those of the validator."""
        return self.rejected_recorded + self.result.rejected

    @property
    def rows_merged(self) -> int:
        """Records merged into another record of the input by the validator."""
        return self.result.duplicates

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (e.g. for Dagster metadata)."""
        return {
            "backend": self.backend.value,
            **self.result.as_dict(),
            "rows_stored": self.rows_stored,
            "rows_rejected": self.rows_rejected,
            "rows_merged": self.rows_merged,
            "extra_not_stored": self.extra_not_stored,
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
    """The outcome of :func:`merge_into_repo` (``corrected``: part of ``updated``, rows
    that replaced the story a headline correction names)."""

    commit: CommitInfo | None
    months: tuple[str, ...]
    inserted: int
    updated: int
    unchanged: int
    corrected: int = 0

    @property
    def revision(self) -> str | None:
        return self.commit.revision if self.commit is not None else None


def _month_keys(published_at: pa.ChunkedArray) -> pa.ChunkedArray:
    local = published_at.cast(pa.timestamp("us", tz=TIMEZONE))
    return pc.strftime(local, format="%Y-%m")


_READ_HEAD: Any = object()  # merge_into_repo: read the head itself


def merge_into_repo(
    repo: DatasetRepo,
    table: pa.Table,
    *,
    message: str,
    replaces: Mapping[str, tuple[str, str]] | None = None,
    head: str | None = _READ_HEAD,
) -> ShardMerge:
    """Merge HF rows (distinct ``unique_id``) into their month shards: ONE commit.

    Per month: the shard at ``head`` is read, rows with an incoming ``unique_id`` are
    replaced, the stories ``replaces`` names removed, new rows appended, rows sorted by
    (published_at, unique_id). Months where nothing changes are left out; no commit at
    all when nothing changes (``commit=None``). Columns other than the HF ones (e.g.
    ``extra``) are not written.

    Args:
        repo: the dataset repo.
        table: the rows (at least the HF columns).
        message: the commit message.
        replaces: new ``unique_id`` -> (``unique_id`` it replaces, that row's month):
            headline corrections; the new row counts as updated when the old one was
            found, as inserted otherwise.
        head: the revision the caller validated against (the commit's parent: a repo
            moved since raises ``ConflictError``); by default the head, read here.

    Returns:
        The :class:`ShardMerge`.

    Raises:
        What the repo raises (e.g. ``ConflictError`` if the head moved meanwhile).
    """
    table = table.select(list(HF_COLUMNS)).cast(HF_SCHEMA)
    if head is _READ_HEAD:
        head = repo.head()
    replaces = dict(replaces or {})
    removals: dict[str, set[str]] = {}
    for old_id, old_month in replaces.values():
        removals.setdefault(old_month, set()).add(old_id)
    months = _month_keys(table.column("published_at"))
    touched = sorted(set(pc.unique(months).to_pylist()) | set(removals))
    existing = {
        month: repo.read_shard(month, head) if head is not None else HF_SCHEMA.empty_table()
        for month in touched
    }
    removed: set[str] = set()
    for month, ids in removals.items():
        present = existing[month].column("unique_id").to_pylist()
        removed.update(ids.intersection(present))
    shards: dict[str, pa.Table] = {}
    changed: set[str] = set()
    inserted = updated = unchanged = corrected = 0
    incoming_by_month = {
        month: table.filter(pc.equal(months, month)) for month in pc.unique(months).to_pylist()
    }
    for month in touched:
        incoming = incoming_by_month.get(month, HF_SCHEMA.empty_table())
        current = existing[month]
        dropped_ids = pa.array(
            [*incoming.column("unique_id").to_pylist(), *removals.get(month, ())], pa.string()
        )
        replaced = pc.is_in(current.column("unique_id"), value_set=dropped_ids)
        replaced_np = np.asarray(replaced.to_numpy(zero_copy_only=False), dtype=bool)
        old = {row["unique_id"]: row for row in current.filter(replaced).to_pylist()}
        for row in incoming.to_pylist():
            before = old.get(row["unique_id"])
            if before is None:
                replaced_story = replaces.get(row["unique_id"])
                if replaced_story is not None and replaced_story[0] in removed:
                    updated += 1
                    corrected += 1
                else:
                    inserted += 1
                changed.add(month)
            elif before != row:
                updated += 1
                changed.add(month)
            else:
                unchanged += 1
        if any(uid in old for uid in removals.get(month, ())):
            changed.add(month)
        if month in changed:
            kept = current.filter(pa.array(~replaced_np))
            shards[month] = pa.concat_tables([kept, incoming]).sort_by(_SORT_KEYS)
    commit = repo.commit(shards, message=message, parent_revision=head) if shards else None
    return ShardMerge(commit, tuple(sorted(shards)), inserted, updated, unchanged, corrected)


def repo_versions(
    repo: DatasetRepo,
    revision: str | None,
    unique_ids: Sequence[str],
    keys: Sequence[tuple[str, str]],
) -> list[Version]:
    """The versions the repo holds at ``revision`` of the stories with these ids or
    (agency, url) keys: the huggingface backend's lookup for
    :func:`~bi_platform.news.validation.validate_records`.

    Every shard is read, five columns only (the repo has no index by url; ~300k rows
    read this way take well under a second locally).

    Args:
        repo: the dataset repo.
        revision: the revision read (None: an empty repo).
        unique_ids: the ids looked up.
        keys: the (agency, url) pairs looked up.

    Returns:
        One :class:`~bi_platform.news.records.Version` per matching row.
    """
    if revision is None or not (unique_ids or keys):
        return []
    wanted_ids = pa.array(list(unique_ids), pa.string())
    wanted_urls = pa.array(list({url for _, url in keys}), pa.string())
    wanted_keys = set(keys)
    wanted_id_set = set(unique_ids)
    columns = ["unique_id", "agency", "url", "extracted_at", "published_at"]
    found: list[Version] = []
    for month in repo.list_shards(revision):
        path = repo.download_shard(month, revision)
        shard = pq.ParquetFile(path).read(columns=columns)
        hit = pc.or_(
            pc.is_in(shard.column("unique_id"), value_set=wanted_ids),
            pc.fill_null(pc.is_in(shard.column("url"), value_set=wanted_urls), False),
        )
        for row in shard.filter(hit).to_pylist():
            version = Version(
                row["unique_id"],
                row["agency"],
                row["url"],
                row["extracted_at"],
                row["published_at"],
            )
            if version.unique_id in wanted_id_set or version.key in wanted_keys:
                found.append(version)
    return found


#: Characters ``str.splitlines`` (and some JSON-lines readers) take for line breaks that
#: JSON leaves unescaped: escaped in the dead-letter file, one record per line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _dead_letter_line(entry: Mapping[str, Any]) -> str:
    """One dead-letter record: a JSON line (UTF-8 text kept readable)."""
    text = json.dumps(pg_common.jsonable(entry), ensure_ascii=False)
    return text.translate(_LINE_BREAKS) + "\n"


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
    ) -> tuple[pg_write.WriteResult, int]:
        with conn.transaction():
            log_id = sync_log.start_log(
                conn, INGEST_OPERATION, source, {"backend": self.backend.value}
            )
            result = pg_write.write_records(
                conn, records, source=source, log_id=log_id, row_sources=row_sources
            )
            recorded = pg_write.insert_rejected(conn, rejected, log_id)
            sync_log.finish_log(
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

        repo = self.repo
        assert repo is not None
        started = time.perf_counter()
        reference = pg_reference.ReferenceSets.from_reference_data(load_agencies(), load_themes())
        head = repo.head()
        validated = validation.validate_records(
            records,
            reference,
            source=source,
            row_sources=row_sources,
            stored=lambda ids, keys: repo_versions(repo, head, ids, keys),
        )
        replaces = {
            new: (old.unique_id, pg_write.month_of(old.published_at))
            for new, old in validated.replaces.items()
            if old.published_at is not None
        }
        merge = merge_into_repo(
            repo,
            validated.table,
            message=f"ingest {source}: {validated.table.num_rows} rows",
            replaces=replaces,
            head=head,
        )
        # after the commit: a failed write leaves no trace and can be retried as is
        self._record_rejections([*validated.rejected, *rejected])
        recorded = len(rejected)
        extra = validated.table.column(EXTRA_COLUMN)
        not_stored = len(extra) - extra.null_count
        if not_stored:
            log.warning(
                "%s -> huggingface: %d record(s) carry unknown fields (extra), which the HF "
                "dataset cannot hold (fixed schema); only PostgreSQL keeps them "
                "(STORAGE_BACKEND=postgres or dual_write)",
                source,
                not_stored,
            )
        result = pg_write.WriteResult(
            rows_in=records.num_rows,
            inserted=merge.inserted,
            updated=merge.updated,
            unchanged=merge.unchanged + validated.duplicates,
            rejected=len(validated.rejected),
            duplicates=validated.duplicates,
            rejected_by_reason=pg_common.count_reasons(validated.rejected),
            seconds=time.perf_counter() - started,
            corrected=merge.corrected,
            unique_ids=tuple(validated.table.column("unique_id").to_pylist()),
            replaced=replaces,
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
            hf_revision=merge.revision or repo.head(),
            hf_months=merge.months,
            extra_not_stored=not_stored,
        )

    def _record_rejections(self, rejected: Sequence[Rejected]) -> int:
        """Rejections into ``news_rejected`` (if PostgreSQL is configured) or the
        dead-letter file; returns how many."""
        if not rejected:
            return 0
        if self.conninfo:
            with psycopg.connect(self.conninfo, autocommit=True) as conn, conn.transaction():
                return pg_write.insert_rejected(conn, rejected)
        assert self.dead_letter_path is not None
        now = datetime.now(UTC).isoformat()
        lines = "".join(
            _dead_letter_line(
                {
                    "source": r.source,
                    "reason": r.reason,
                    "fields": list(r.fields),
                    "raw": pg_common.storable_raw(r.raw),
                    "raw_text": r.raw_text,
                    "unique_id": r.unique_id,
                    "rejected_at": now,
                }
            )
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
        with psycopg.connect(self.conninfo, autocommit=True) as conn:  # type: ignore[arg-type]
            # 1. PostgreSQL, committed; any failure raises before the repo is touched
            result, recorded = self._pg_transaction(conn, records, rejected, source, row_sources)
            ids = list(result.unique_ids)
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
                    self.repo,
                    exported,
                    message=f"ingest {source}: {exported.num_rows} rows",
                    replaces=result.replaced,
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
