"""``bi-platform bench news``: the HF -> PostgreSQL migration and the PG -> HF sync.

All measured in the same run, on the same ``rows`` generated records, in scratch
databases (``bench_news_<random>``) created on the given server and dropped at the end
(the platform's own database is never touched):

- ``copy`` (the floor): COPY of the rows (news' content columns, serialised beforehand
  exactly as the write path does, :func:`~bi_platform.news.pg_write.copy_payload`) into
  an UNLOGGED copy of ``news`` without indexes nor constraints (same column
  storage/compression): the server's cost of storing the rows, nothing else;
- ``migration``: :func:`~bi_platform.news.pg_migration.migrate_from_repo` from a
  :class:`~bi_platform.news.dataset_repo_local.LocalDatasetRepo` holding the rows as month
  shards into an empty, freshly migrated ``news`` (reading, validation, COPY, index and
  constraint rebuild, rejects), in a fresh spawned process like a Dagster step (its
  time is the MigrationReport's: process start excluded). The floor and the migration
  run ``rounds`` times, alternating (floor, migration, floor, ...), each migration into
  a new database; their medians are reported, and every run's time;
- ``baseline``: a plain loader, batches of 1,000
  ``INSERT ... ON CONFLICT (unique_id) DO NOTHING`` via ``executemany``, one transaction
  per batch, into another empty ``news`` (timed on at most :data:`BASELINE_MAX_ROWS`
  rows; rows/s extrapolated);
- ``sync``: after a first (untimed) :func:`~bi_platform.news.hf_sync.sync_to_hf` into an
  empty local repo, 1% of the rows (in the two most recent months) are edited, then the
  incremental sync and a full re-export are timed. Each sync runs in a fresh spawned
  process, so its peak RSS is its own (this process holds the generated rows); its time
  is the SyncReport's (process start excluded).

Prints a table, then one JSON line.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from bi_platform.lib.benchmarking import BenchError, met, ratio
from bi_platform.runtime.postgres import scratch_database as runtime_scratch_database
from bi_platform.runtime.services import admin_url

DEFAULT_ROWS = 300_000
DEFAULT_ROUNDS = 3
BASELINE_MAX_ROWS = 60_000
BASELINE_BATCH = 1_000
EDIT_FRACTION = 0.01
SCRATCH_PREFIX = "bench_news_"
TARGETS = {
    "fraction_of_raw_copy": (">=", 0.7),
    "speedup_vs_batch_insert": (">=", 3.0),
    "sync_fraction_of_full": ("<=", 0.10),
    "sync_peak_rss_mb": ("<=", 500.0),
}


def scratch_database(admin: str) -> AbstractContextManager[str]:
    """A new empty database on ``admin``'s server (its URL); dropped afterwards."""
    return runtime_scratch_database(admin, SCRATCH_PREFIX)


def scratch_databases(admin: str) -> list[str]:
    """Names of the scratch databases present on ``admin``'s server."""
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
            (SCRATCH_PREFIX + "%",),
        ).fetchall()
    return [r[0] for r in rows]


def prepare_database(url: str) -> None:
    """Schema + reference data (not timed)."""
    from bi_platform.news import pg_reference, pg_schema
    from bi_platform.news.reference_data import load_agencies, load_themes

    pg_schema.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        pg_reference.load_reference_data(conn, load_agencies(), load_themes())


def news_rows(table: pa.Table) -> tuple[list[str], pa.Buffer, list[tuple[Any, ...]]]:
    """The rows as news would store them: (columns, the CSV COPY payload the write path
    sends, the same rows as Python tuples for the INSERT baseline)."""
    from bi_platform.news import pg_common, pg_reference, pg_write, validation
    from bi_platform.news.reference_data import load_agencies, load_themes

    reference = pg_reference.ReferenceSets.from_reference_data(load_agencies(), load_themes())
    validated = validation.validate_records(table, reference, source="bench")
    columns = list(pg_common.CONTENT_COLUMNS)
    payload = pg_write.copy_payload(validated, columns)
    values: list[list[Any]] = []
    for name in columns:
        if name == "agency_name":
            values.append(validated.agency_names.to_pylist())
        else:
            values.append(validated.table.column(pg_common.HF_NAMES.get(name, name)).to_pylist())
    return columns, payload, list(zip(*values, strict=True))


def time_copy(url: str, columns: list[str], payload: pa.Buffer) -> float:
    """Seconds of the COPY of ``payload`` (the write path's own CSV serialisation, built
    beforehand) into an unlogged, index-free copy of news."""
    from bi_platform.news.pg_write import _copy_csv

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE UNLOGGED TABLE news_copy_floor (LIKE news INCLUDING DEFAULTS "
            "INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMPRESSION)"
        )
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            _copy_csv(cur, "news_copy_floor", columns, payload)
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE news_copy_floor")
    return seconds


def time_batch_insert(url: str, columns: list[str], rows: list[tuple]) -> float:
    """Seconds of the baseline loader: batches of INSERT ... ON CONFLICT DO NOTHING."""
    statement = sql.SQL(
        "INSERT INTO news ({}) VALUES ({}) ON CONFLICT (unique_id) DO NOTHING"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for start in range(0, len(rows), BASELINE_BATCH):
            with conn.cursor() as cur:
                cur.executemany(statement, rows[start : start + BASELINE_BATCH])
            conn.commit()
        return time.perf_counter() - started


def edit_recent_rows(url: str, fraction: float = EDIT_FRACTION) -> int:
    """Change ``content`` of ``fraction`` of the rows, spread over the two most recent
    (São Paulo) months; returns how many rows were edited."""
    with psycopg.connect(url, autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM news").fetchone()[0]  # type: ignore[index]
        wanted = max(1, round(total * fraction))
        cur = conn.execute(
            """
            WITH bounds AS (
                SELECT (date_trunc('month', max(published_at) AT TIME ZONE
                        'America/Sao_Paulo') - interval '1 month')
                       AT TIME ZONE 'America/Sao_Paulo' AS since
                FROM news
            )
            UPDATE news SET content = coalesce(content, '') || ' [bench edit]'
            WHERE id IN (
                SELECT id FROM news, bounds WHERE published_at >= bounds.since
                ORDER BY md5(unique_id) LIMIT %s
            )
            """,
            (wanted,),
        )
        return cur.rowcount


def _migrate_in_child(url: str, repo_root: str) -> dict[str, Any]:
    from bi_platform.news.dataset_repo_local import LocalDatasetRepo
    from bi_platform.news.pg_migration import migrate_from_repo

    return migrate_from_repo(url, LocalDatasetRepo(repo_root)).as_dict()


def migrate(url: str, repo_root: Path) -> dict[str, Any]:
    """:func:`migrate_from_repo` from the local repo at ``repo_root`` in a spawned process,
    as a Dagster step runs it (this one holds the generated rows: a large heap whose
    garbage-collector passes would be charged to the migration); the report."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_migrate_in_child, url, str(repo_root)).result()


def _sync_in_child(url: str, repo_root: str, full: bool) -> dict[str, Any]:
    """One :func:`sync_to_hf` (in a fresh process: its peak RSS is the sync's own)."""
    from bi_platform.news.dataset_repo_local import LocalDatasetRepo
    from bi_platform.news.hf_sync import sync_to_hf

    return sync_to_hf(url, LocalDatasetRepo(repo_root), full=full).as_dict()


def sync(url: str, repo_root: Path, *, full: bool = False) -> dict[str, Any]:
    """:func:`sync_to_hf` into the local repo at ``repo_root``, run in a spawned process
    (this one holds the generated rows, which would swamp the sync's RSS); the report."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_sync_in_child, url, str(repo_root), full).result()


def run(
    rows: int = DEFAULT_ROWS,
    *,
    database_url: str | None = None,
    baseline_rows: int = BASELINE_MAX_ROWS,
    rounds: int = DEFAULT_ROUNDS,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run the four measurements; (per-stage measurements, the JSON summary)."""
    if rounds < 1:
        raise BenchError(f"rounds must be at least 1, not {rounds}")
    from bi_platform.news.dataset_repo_local import LocalDatasetRepo
    from bi_platform.news.sample import generate_news, month_shards

    admin = admin_url(database_url)
    stages: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_news_") as tmp:
        progress(f"generating {rows:,} records")
        table = generate_news(rows, seed=seed)
        source = LocalDatasetRepo(Path(tmp) / "source")
        source.commit(month_shards(table), message="bench news: source dataset")
        columns, payload, values = news_rows(table)
        del table
        with scratch_database(admin) as main_url, scratch_database(admin) as base_url:
            prepare_database(main_url)
            prepare_database(base_url)

            copy_runs: list[float] = []
            migration_runs: list[dict[str, Any]] = []
            for number in range(1, rounds + 1):
                progress(f"round {number}/{rounds}: CSV COPY into an unlogged table (floor)")
                copy_runs.append(time_copy(main_url, columns, payload))
                progress(f"round {number}/{rounds}: migrate_from_repo into an empty news")
                # the last migration stays for the sync; the others go to a new database
                with nullcontext(main_url) if number == rounds else scratch_database(admin) as url:
                    if number < rounds:
                        prepare_database(url)
                    migration_runs.append(migrate(url, source.root))
            stages["copy"] = {"rows": len(values), "seconds": statistics.median(copy_runs)}
            del payload

            # the generated rows stay alive: keep the collector from walking them while
            # the baseline runs (the migration runs in its own process anyway)
            gc.freeze()
            n_base = min(len(values), baseline_rows)
            progress(f"baseline: batch INSERT of {n_base:,} rows")
            seconds = time_batch_insert(base_url, columns, values[:n_base])
            stages["baseline"] = {"rows": n_base, "seconds": seconds}
            del values
            gc.unfreeze()

            report = migration_runs[-1]
            stages["migration"] = {
                "rows": report["rows_in"],
                "seconds": statistics.median(r["seconds"] for r in migration_runs),
                "inserted": report["inserted"],
                "rejected": max(r["rejected"] for r in migration_runs),
            }

            hf_root = Path(tmp) / "hf"
            progress("sync: first export (not timed)")
            sync(main_url, hf_root)
            edited = edit_recent_rows(main_url)
            progress(f"sync: incremental after editing {edited:,} rows")
            incremental = sync(main_url, hf_root)
            progress("sync: full re-export")
            full = sync(main_url, hf_root, full=True)
            for name, done in (("sync_incremental", incremental), ("sync_full", full)):
                stages[name] = {
                    "rows": done["rows_exported"],
                    "seconds": done["seconds"],
                    "months": len(done["months"]),
                    "peak_rss_mb": done["peak_rss_mb"],
                }
            with psycopg.connect(main_url) as conn:
                pg_count = conn.execute("SELECT count(*) FROM news").fetchone()[0]  # type: ignore[index]
            hf_count = LocalDatasetRepo(hf_root).row_count()

    for stage in stages.values():
        stage["rows_per_s"] = stage["rows"] / stage["seconds"] if stage["seconds"] else 0.0
    copy_rps = stages["copy"]["rows_per_s"]
    migration_rps = rows / stages["migration"]["seconds"]
    baseline_rps = stages["baseline"]["rows_per_s"]
    peak = incremental["peak_rss_mb"]
    summary: dict[str, Any] = {
        "bench": "news",
        "rows": rows,
        "copy_rows_per_s": round(copy_rps, 1),
        "migration_rows_per_s": round(migration_rps, 1),
        "baseline_rows_per_s": round(baseline_rps, 1),
        "baseline_rows": stages["baseline"]["rows"],
        "fraction_of_raw_copy": ratio(migration_rps, copy_rps),
        "speedup_vs_batch_insert": ratio(migration_rps, baseline_rps),
        "sync_incremental_s": round(incremental["seconds"], 3),
        "sync_full_s": round(full["seconds"], 3),
        "sync_edited_rows": edited,
        "sync_fraction_of_full": ratio(incremental["seconds"], full["seconds"]),
        "sync_peak_rss_mb": round(peak, 1) if peak is not None else None,
        "pg_count": pg_count,
        "hf_count": hf_count,
        "migration_rejected": stages["migration"]["rejected"],
        "rounds": rounds,
        "copy_runs_s": [round(x, 3) for x in copy_runs],
        "migration_runs_s": [round(r["seconds"], 3) for r in migration_runs],
    }
    targets = {
        name: summary[name] is not None and met(summary[name], op, bound)
        for name, (op, bound) in TARGETS.items()
    }
    targets["pg_count_equals_hf_count"] = pg_count == hf_count
    summary["targets_met"] = targets
    return stages, summary
