"""Integrity checks of the news platform; each failure names the months or ids involved.

On ``hf_news_sync`` (blocking, the gates of the open-data copy): PG count == HF count
per month, no duplicate unique_id in HF, a random sample identical in PG and HF
(content_hash), and the sync lag. On ``news_pg``: required fields filled, agencies
valid, theme coverage.
"""

from collections import Counter
from collections.abc import Iterator

import dagster as dg
import pyarrow.parquet as pq

from bi_platform.news.assets import hf_news_sync, news_pg
from bi_platform.news.dataset_repo import DatasetRepo
from bi_platform.news.records import REQUIRED_FIELDS, TIMEZONE
from bi_platform.news.resources import NewsDatasetRepoResource
from bi_platform.resources import PostgresResource

SAMPLE_SIZE = 200
THEME_COVERAGE_MIN = 0.95
MAX_SYNC_LAG_HOURS = 24
SHOWN = 10  # ids or months listed in a failure's metadata
PG_COLUMN = {"agency": "agency_key"}  # HF field -> news column, where they differ

MONTH_SQL = f"to_char(published_at AT TIME ZONE '{TIMEZONE}', 'YYYY-MM')"


def _hf_shards(repo: DatasetRepo) -> Iterator[tuple[str, pq.ParquetFile]]:
    revision = repo.head()
    for month in repo.list_shards(revision):
        yield month, pq.ParquetFile(repo.download_shard(month, revision))


@dg.asset_check(
    asset=hf_news_sync,
    name="pg_count_equals_hf_count",
    blocking=True,
    description="Every publication month has as many rows in the HF dataset as in PG.",
)
def pg_count_equals_hf_count(
    postgres: PostgresResource, news_repo: NewsDatasetRepoResource
) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        pg = dict(conn.execute(f"SELECT {MONTH_SQL}, count(*) FROM news GROUP BY 1").fetchall())
    hf = {month: shard.metadata.num_rows for month, shard in _hf_shards(news_repo.open())}
    differing = sorted(m for m in set(pg) | set(hf) if pg.get(m, 0) != hf.get(m, 0))
    return dg.AssetCheckResult(
        passed=not differing,
        metadata={
            "pg_count": sum(pg.values()),
            "hf_count": sum(hf.values()),
            "months_differing": [
                f"{m}: pg={pg.get(m, 0)} hf={hf.get(m, 0)}" for m in differing[:SHOWN]
            ],
        },
    )


@dg.asset_check(
    asset=hf_news_sync,
    name="no_duplicate_unique_id_in_hf",
    blocking=True,
    description="No unique_id appears twice in the HF dataset (across all shards).",
)
def no_duplicate_unique_id_in_hf(news_repo: NewsDatasetRepoResource) -> dg.AssetCheckResult:
    seen: Counter[str] = Counter()
    for _, shard in _hf_shards(news_repo.open()):
        seen.update(shard.read(columns=["unique_id"]).column("unique_id").to_pylist())
    duplicated = sorted(uid for uid, n in seen.items() if n > 1)
    return dg.AssetCheckResult(
        passed=not duplicated,
        metadata={"rows": sum(seen.values()), "duplicated_ids": duplicated[:SHOWN]},
    )


@dg.asset_check(
    asset=hf_news_sync,
    name="sample_identical_in_pg_and_hf",
    blocking=True,
    description=f"{SAMPLE_SIZE} random records have the same content_hash in PG and HF.",
)
def sample_identical_in_pg_and_hf(
    postgres: PostgresResource, news_repo: NewsDatasetRepoResource
) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        sample = conn.execute(
            f"SELECT unique_id, content_hash, {MONTH_SQL} FROM news ORDER BY random() LIMIT %s",
            (SAMPLE_SIZE,),
        ).fetchall()
    repo = news_repo.open()
    revision = repo.head()
    by_month: dict[str, dict[str, str]] = {}
    for unique_id, digest, month in sample:
        by_month.setdefault(month, {})[unique_id] = digest
    mismatched = []
    for month, expected in sorted(by_month.items()):
        shard = pq.ParquetFile(repo.download_shard(month, revision)).read(
            columns=["unique_id", "content_hash"]
        )
        found = dict(zip(*(shard.column(c).to_pylist() for c in shard.column_names), strict=True))
        mismatched += [uid for uid, digest in expected.items() if found.get(uid) != digest]
    return dg.AssetCheckResult(
        passed=not mismatched,
        metadata={"sampled": len(sample), "mismatched_ids": sorted(mismatched)[:SHOWN]},
    )


@dg.asset_check(
    asset=hf_news_sync,
    name="sync_lag",
    description=f"No row has waited more than {MAX_SYNC_LAG_HOURS} h to reach HF.",
)
def sync_lag(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connection() as conn:
        rows = conn.execute(
            f"SELECT unique_id, {MONTH_SQL} FROM news "
            "WHERE (synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at) "
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
    sync_lag,
    news_pg_quality,
]
