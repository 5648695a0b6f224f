"""Integrity checks of the news platform; each failure names the months or ids involved.

On ``hf_news_sync`` (blocking, the gates of the open-data copy), all reading what users of
the dataset read, :meth:`DatasetRepo.published`: the repo directory's working copy
(``README.md`` and the files its ``data_files`` select, what ``datasets.load_dataset(<repo
dir>)`` reads) for the local repo, what the Hub serves at HEAD for the Hub:

* ``pg_count_equals_hf_count``: PG count == HF count per month (the ids differing too);
* ``no_duplicate_unique_id_in_hf``: no unique_id twice across the data files;
* ``sample_identical_in_pg_and_hf``: a random sample has the same content_hash;
* ``working_copy_matches_head``: what users read is exactly ``HEAD`` (same files, same
  sha256, the card selecting HEAD's shards).

A failure's metadata names the months and ids and the remedy (``remedy``,
``remedy_command``, ``remedy_run_config``: a full re-sync, :data:`REPAIR_HINT`). Also on
``hf_news_sync``: the sync lag (not blocking). On ``news_pg``: required fields filled,
agencies valid, theme coverage.

The gates are plain functions of a psycopg connection and a DatasetRepo
(:func:`evaluate_hf_gates`, used by ``bi-platform news verify`` and the tests); the
asset checks below wrap them.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import psycopg
import pyarrow.parquet as pq

from bi_platform.news.assets import hf_news_sync, news_pg
from bi_platform.news.dataset_repo import DatasetRepo, Published
from bi_platform.news.hf_sync import (
    REPAIR_COMMAND,
    REPAIR_HINT,
    REPAIR_RUN_CONFIG,
    find_duplicates,
    read_unique_ids,
)
from bi_platform.news.records import REQUIRED_FIELDS, TIMEZONE
from bi_platform.news.resources import NewsDatasetRepoResource
from bi_platform.resources import PostgresResource

SAMPLE_SIZE = 200
THEME_COVERAGE_MIN = 0.95
MAX_SYNC_LAG_HOURS = 24
SHOWN = 10  # ids or months listed in a failure's metadata
PG_COLUMN = {"agency": "agency_key"}  # HF field -> news column, where they differ

MONTH_SQL = f"to_char(published_at AT TIME ZONE '{TIMEZONE}', 'YYYY-MM')"
_PENDING_SQL = "synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at"

#: Names of the blocking gates on hf_news_sync, in the order they are evaluated.
HF_GATES = (
    "pg_count_equals_hf_count",
    "no_duplicate_unique_id_in_hf",
    "sample_identical_in_pg_and_hf",
    "working_copy_matches_head",
)

#: What an incremental sync repairs (rows not synced yet; a working copy behind HEAD).
SYNC_HINT = (
    "rows not synced yet or a working copy behind HEAD are repaired by the next sync "
    "(materialize news/hf_news_sync)"
)


def _remedy(extra: str | None = None) -> dict[str, Any]:
    """Metadata naming the repair: the command and the launchpad config."""
    text = f"{extra}; otherwise {REPAIR_HINT}" if extra else REPAIR_HINT
    return {
        "remedy": text,
        "remedy_command": REPAIR_COMMAND,
        "remedy_run_config": dg.MetadataValue.json(REPAIR_RUN_CONFIG),
    }


def _published_rows(published: Published) -> dict[str, int]:
    """Rows per data file key (the month for a shard), from the Parquet footers."""
    rows: dict[str, int] = {}
    for key, path in published.by_key().items():
        rows[key] = pq.read_metadata(published.path(path)).num_rows
    return rows


def _month_ids(conn: psycopg.Connection, month: str) -> set[str]:
    """unique_ids of PG rows published in ``month`` (São Paulo time)."""
    rows = conn.execute(
        f"SELECT unique_id FROM news WHERE {MONTH_SQL} = %s",
        (month,),
    ).fetchall()
    return {r[0] for r in rows}


# -- the gates as plain functions -------------------------------------------------------------
def check_counts(conn: psycopg.Connection, repo: DatasetRepo) -> dg.AssetCheckResult:
    """PG count == HF count for every month, HF read as users read it.

    Args:
        conn: a connection to the platform database.
        repo: the dataset repo.

    Returns:
        The result; on failure the differing months (``months_differing``), up to
        :data:`SHOWN` ids missing from / extra in HF (``ids_missing_in_hf``,
        ``ids_extra_in_hf``) and the remedy.
    """
    pg = dict(conn.execute(f"SELECT {MONTH_SQL}, count(*) FROM news GROUP BY 1").fetchall())
    pending = conn.execute(f"SELECT count(*) FROM news WHERE {_PENDING_SQL}").fetchone()[0]
    published = repo.published()
    hf = _published_rows(published)
    differing = sorted(m for m in set(pg) | set(hf) if pg.get(m, 0) != hf.get(m, 0))
    metadata: dict[str, Any] = {
        "pg_count": sum(pg.values()),
        "hf_count": sum(hf.values()),
        "read_from": published.where,
        "months_differing": [f"{m}: pg={pg.get(m, 0)} hf={hf.get(m, 0)}" for m in differing],
    }
    if differing:
        missing: list[str] = []
        extra: list[str] = []
        paths = published.by_key()
        for key in differing[:SHOWN]:
            in_pg = _month_ids(conn, key) if key in pg else set()
            in_hf = (
                set(read_unique_ids(published.path(paths[key])).to_pylist())
                if key in paths
                else set()
            )
            missing += sorted(in_pg - in_hf)[:SHOWN]
            extra += sorted(in_hf - in_pg)[:SHOWN]
        metadata.update(
            {
                "ids_missing_in_hf": missing[:SHOWN],
                "ids_extra_in_hf": extra[:SHOWN],
                "pending_rows": pending,
                **_remedy(SYNC_HINT),
            }
        )
    return dg.AssetCheckResult(passed=not differing, metadata=metadata)


def check_duplicates(repo: DatasetRepo) -> dg.AssetCheckResult:
    """No unique_id appears twice across the data files users read.

    Args:
        repo: the dataset repo.

    Returns:
        The result; on failure up to :data:`SHOWN` ids with the months holding them, and
        the remedy.
    """
    published = repo.published()
    parts = [
        (key, read_unique_ids(published.path(path))) for key, path in published.by_key().items()
    ]
    duplicates = find_duplicates(parts)
    shown = list(duplicates.items())[:SHOWN]
    metadata: dict[str, Any] = {
        "rows": sum(len(ids) for _, ids in parts),
        "read_from": published.where,
        "duplicated_ids": [uid for uid, _ in shown],
    }
    if duplicates:
        metadata.update(
            {
                "duplicates": [f"{uid} in {', '.join(months)}" for uid, months in shown],
                "months": sorted({m for ms in duplicates.values() for m in ms})[:SHOWN],
                **_remedy(),
            }
        )
    return dg.AssetCheckResult(passed=not duplicates, metadata=metadata)


def check_sample(
    conn: psycopg.Connection, repo: DatasetRepo, size: int = SAMPLE_SIZE
) -> dg.AssetCheckResult:
    """``size`` random PG rows have the same content_hash in the data files users read.

    Args:
        conn: a connection to the platform database.
        repo: the dataset repo.
        size: rows sampled.

    Returns:
        The result; on failure up to :data:`SHOWN` mismatched ids, their months and the
        remedy.
    """
    sample = conn.execute(
        f"SELECT unique_id, content_hash, {MONTH_SQL} FROM news ORDER BY random() LIMIT %s",
        (size,),
    ).fetchall()
    published = repo.published()
    paths = published.by_key()
    by_month: dict[str, dict[str, str]] = {}
    for unique_id, digest, month in sample:
        by_month.setdefault(month, {})[unique_id] = digest
    mismatched: list[tuple[str, str]] = []
    for month, expected in sorted(by_month.items()):
        found: dict[str, str] = {}
        if month in paths:
            shard = pq.ParquetFile(published.path(paths[month])).read(
                columns=["unique_id", "content_hash"]
            )
            found = dict(
                zip(
                    shard.column("unique_id").to_pylist(),
                    shard.column("content_hash").to_pylist(),
                    strict=True,
                )
            )
        mismatched += [(uid, month) for uid, d in expected.items() if found.get(uid) != d]
    mismatched.sort()
    metadata: dict[str, Any] = {
        "sampled": len(sample),
        "read_from": published.where,
        "mismatched_ids": [uid for uid, _ in mismatched[:SHOWN]],
    }
    if mismatched:
        metadata.update(
            {"months": sorted({m for _, m in mismatched})[:SHOWN], **_remedy(SYNC_HINT)}
        )
    return dg.AssetCheckResult(passed=not mismatched, metadata=metadata)


def check_working_copy(repo: DatasetRepo) -> dg.AssetCheckResult:
    """What users read is exactly ``HEAD`` (:meth:`DatasetRepo.published_differences`).

    Args:
        repo: the dataset repo.

    Returns:
        The result; on failure the differing files and months and the remedy.
    """
    differences = repo.published_differences()
    metadata: dict[str, Any] = {
        "head": repo.head() or "",
        "read_from": repo.published().where,
        "differences": [str(d) for d in differences[:SHOWN]],
    }
    if differences:
        metadata.update(
            {
                "files_differing": len(differences),
                "months": sorted({d.month for d in differences if d.month})[:SHOWN],
                **_remedy(
                    "every sync first brings the working copy to HEAD: materialize "
                    "news/hf_news_sync"
                ),
            }
        )
    return dg.AssetCheckResult(passed=not differences, metadata=metadata)


def check_sync_lag(conn: psycopg.Connection) -> dg.AssetCheckResult:
    """No row has waited more than :data:`MAX_SYNC_LAG_HOURS` to reach HF.

    Args:
        conn: a connection to the platform database.

    Returns:
        The result, with up to :data:`SHOWN` late ids and their months.
    """
    rows = conn.execute(
        f"SELECT unique_id, {MONTH_SQL} FROM news WHERE ({_PENDING_SQL}) "
        "AND updated_at < now() - make_interval(hours => %s) ORDER BY updated_at LIMIT 1000",
        (MAX_SYNC_LAG_HOURS,),
    ).fetchall()
    return dg.AssetCheckResult(
        passed=not rows,
        metadata={
            "late_rows": len(rows),
            "late_ids": [r[0] for r in rows[:SHOWN]],
            "months": sorted({r[1] for r in rows})[:SHOWN],
        },
    )


def evaluate_hf_gates(
    conn: psycopg.Connection, repo: DatasetRepo
) -> dict[str, dg.AssetCheckResult]:
    """Every blocking gate of hf_news_sync (:data:`HF_GATES`), outside Dagster.

    Args:
        conn: a connection to the platform database.
        repo: the dataset repo.

    Returns:
        Gate name -> result, in :data:`HF_GATES` order.
    """
    gates: dict[str, Callable[[], dg.AssetCheckResult]] = {
        "pg_count_equals_hf_count": lambda: check_counts(conn, repo),
        "no_duplicate_unique_id_in_hf": lambda: check_duplicates(repo),
        "sample_identical_in_pg_and_hf": lambda: check_sample(conn, repo),
        "working_copy_matches_head": lambda: check_working_copy(repo),
    }
    return {name: gates[name]() for name in HF_GATES}


def metadata_values(result: dg.AssetCheckResult) -> dict[str, Any]:
    """A check result's metadata as plain values (for JSON output)."""
    return {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}


# -- the asset checks -------------------------------------------------------------------------
@dg.asset_check(
    asset=hf_news_sync,
    name="pg_count_equals_hf_count",
    blocking=True,
    description=(
        "Every publication month has as many rows in the HF dataset, as users read it "
        "(working copy / what the Hub serves at HEAD), as in PG; names the ids differing."
    ),
)
def pg_count_equals_hf_count(
    postgres: PostgresResource, news_repo: NewsDatasetRepoResource
) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        return check_counts(conn, news_repo.open())


@dg.asset_check(
    asset=hf_news_sync,
    name="no_duplicate_unique_id_in_hf",
    blocking=True,
    description="No unique_id appears twice in the HF dataset as users read it (all files).",
)
def no_duplicate_unique_id_in_hf(news_repo: NewsDatasetRepoResource) -> dg.AssetCheckResult:
    return check_duplicates(news_repo.open())


@dg.asset_check(
    asset=hf_news_sync,
    name="sample_identical_in_pg_and_hf",
    blocking=True,
    description=(
        f"{SAMPLE_SIZE} random records have the same content_hash in PG and in the HF "
        "files users read."
    ),
)
def sample_identical_in_pg_and_hf(
    postgres: PostgresResource, news_repo: NewsDatasetRepoResource
) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        return check_sample(conn, news_repo.open())


@dg.asset_check(
    asset=hf_news_sync,
    name="working_copy_matches_head",
    blocking=True,
    description=(
        "What users read is exactly HEAD: the repo directory's README.md and data files "
        "(local) or what the Hub serves at HEAD; same files, same sha256, and the card's "
        "data_files select HEAD's shards."
    ),
)
def working_copy_matches_head(news_repo: NewsDatasetRepoResource) -> dg.AssetCheckResult:
    return check_working_copy(news_repo.open())


@dg.asset_check(
    asset=hf_news_sync,
    name="sync_lag",
    description=f"No row has waited more than {MAX_SYNC_LAG_HOURS} h to reach HF.",
)
def sync_lag(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        return check_sync_lag(conn)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "required_fields_filled",
            asset=news_pg,
            description=f"{', '.join(REQUIRED_FIELDS)} are filled on 100% of the rows.",
        ),
        dg.AssetCheckSpec(
            "agency_valid",
            asset=news_pg,
            description="Every row's agency exists in agencies, with its denormalised name.",
        ),
        dg.AssetCheckSpec(
            "theme_coverage",
            asset=news_pg,
            description=f"At least {THEME_COVERAGE_MIN:.0%} of the rows have a theme.",
        ),
    ],
)
def news_pg_quality(postgres: PostgresResource) -> Iterator[dg.AssetCheckResult]:
    blank = " OR ".join(
        f"nullif(btrim({PG_COLUMN.get(c, c)}::text), '') IS NULL" for c in REQUIRED_FIELDS
    )
    with postgres.connection() as conn:
        total = conn.execute("SELECT count(*) FROM news").fetchone()[0]
        missing = conn.execute(f"SELECT unique_id FROM news WHERE {blank} LIMIT 1000").fetchall()
        invalid = conn.execute(
            "SELECT n.unique_id FROM news n LEFT JOIN agencies a ON a.key = n.agency_key "
            "WHERE a.key IS NULL OR n.agency_name IS DISTINCT FROM a.name LIMIT 1000"
        ).fetchall()
        themed = conn.execute(
            "SELECT count(*) FROM news WHERE most_specific_theme_code IS NOT NULL"
        ).fetchone()[0]
    coverage = themed / total if total else 0.0
    yield dg.AssetCheckResult(
        check_name="required_fields_filled",
        passed=not missing,
        metadata={"rows": total, "missing_ids": [r[0] for r in missing[:SHOWN]]},
    )
    yield dg.AssetCheckResult(
        check_name="agency_valid",
        passed=not invalid,
        metadata={"invalid_ids": [r[0] for r in invalid[:SHOWN]]},
    )
    yield dg.AssetCheckResult(
        check_name="theme_coverage",
        passed=coverage >= THEME_COVERAGE_MIN,
        metadata={"coverage": round(coverage, 4), "rows_with_theme": themed, "rows": total},
    )


news_checks = [
    pg_count_equals_hf_count,
    no_duplicate_unique_id_in_hf,
    sample_identical_in_pg_and_hf,
    working_copy_matches_head,
    sync_lag,
    news_pg_quality,
]
