"""News assets: the HF dataset <-> PostgreSQL (source of truth) with daily ingest and sync.

hf_news_dataset --> news_pg (migration) --> news_ingest (daily) --> hf_news_sync
news_reference_data --^
"""

from collections.abc import Iterator, Mapping
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from bi_platform.automation import after_upstream_gates
from bi_platform.news import pg_schema
from bi_platform.news.hf_sync import (
    REPAIR_COMMAND,
    REPAIR_HINT,
    REPAIR_RUN_CONFIG,
    PublicationRefusedError,
    sync_to_hf,
)
from bi_platform.news.ingest import parse_inbox
from bi_platform.news.pg_migration import migrate_from_repo
from bi_platform.news.pg_reference import load_reference_data
from bi_platform.news.records import HF_SCHEMA
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.resources import NewsDatasetRepoResource
from bi_platform.news.storage import StorageAdapter, StorageBackend
from bi_platform.resources import PostgresResource, pg_table_schema
from bi_platform.settings import get_settings

GROUP = "news"
OWNERS = ["team:news-platform"]
TIMEZONE = "America/Sao_Paulo"

#: One partition per scraper batch; the first batch after the migrated history.
news_days = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone=TIMEZONE)


def news_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def inbox_dir() -> Path:
    """``$BI_PLATFORM_HOME/news/inbox``: the scraper's daily batches ``YYYY-MM-DD.jsonl``."""
    return get_settings().news_dir / "inbox"


def inbox_path(day: str) -> Path:
    return inbox_dir() / f"{day}.jsonl"


#: ``dagster/column_schema`` of the HF dataset shards (the explicit Arrow schema).
HF_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(
            name=f.name,
            type=str(f.type),
            constraints=dg.TableColumnConstraints(nullable=f.nullable),
        )
        for f in HF_SCHEMA
    ]
)


def news_table_metadata(postgres: PostgresResource) -> dict[str, object]:
    """Row count and column schema of the ``news`` table as it is now."""
    with postgres.connection() as conn:
        total = conn.execute("SELECT count(*) FROM news").fetchone()[0]
        schema = pg_table_schema(conn, "news")
    return {"dagster/row_count": total, "dagster/column_schema": schema}


class ShardFiles(Mapping[str, pa.Table]):
    """``data/YYYY-MM.parquet`` files of an export as month -> table, read lazily, so a
    commit holds one month in memory at a time."""

    def __init__(self, directory: Path) -> None:
        self._paths = {p.stem: p for p in sorted((directory / "data").glob("*.parquet"))}

    def __getitem__(self, month: str) -> pa.Table:
        return pq.ParquetFile(self._paths[month]).read()

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


@dg.asset(
    key=news_key("hf_news_dataset"),
    group_name=GROUP,
    kinds={"huggingface", "parquet"},
    owners=OWNERS,
)
def hf_news_dataset(
    context: dg.AssetExecutionContext, news_repo: NewsDatasetRepoResource
) -> dg.MaterializeResult:
    """The open-data copy of the news on HuggingFace: one Parquet shard per publication
    month under data/, a dataset card without stale split sizes. An empty local repo is
    bootstrapped from the initial export in $BI_PLATFORM_HOME/raw/news/initial (what the
    public dataset held before the migration)."""
    repo = news_repo.open()
    if repo.head() is None:
        initial = get_settings().raw_dir / "news" / "initial"
        shards = ShardFiles(initial)
        if not shards:
            raise dg.Failure(
                f"the dataset repo is empty and no initial export exists in {initial} "
                "(run `bi-platform seed`)"
            )
        info = repo.commit(shards, message="Initial dataset (pre-migration export)")
        context.log.info("bootstrapped the dataset repo at %s", info.revision)
    months = repo.list_shards()
    return dg.MaterializeResult(
        metadata={
            "repo": news_repo.describe(repo),
            "revision": repo.head(),
            "shards": len(months),
            "months": f"{months[0]} .. {months[-1]}" if months else "",
            "dagster/row_count": repo.row_count(),
            "dagster/column_schema": HF_TABLE_SCHEMA,
        }
    )


@dg.asset(
    key=news_key("news_reference_data"),
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
)
def news_reference_data(postgres: PostgresResource) -> dg.MaterializeResult:
    """The news schema (versioned migrations) and the reference tables in PostgreSQL:
    agencies (gov.br bodies) and the 3-level theme tree, from the packaged YAML files."""
    url = postgres.resolved_url()
    applied = pg_schema.migrate(url)
    agencies, themes = load_agencies(), load_themes()
    with postgres.connection() as conn:
        counts = load_reference_data(conn, agencies, themes)
        version = pg_schema.schema_status(conn)["current_version"]
        stored = conn.execute(
            "SELECT (SELECT count(*) FROM agencies) + (SELECT count(*) FROM themes)"
        ).fetchone()[0]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stored,
            "schema_version": version,
            "migrations_applied": applied,
            "agencies": len(agencies),
            "themes": len(themes),
            "upserted": dg.MetadataValue.json(counts),
        }
    )


@dg.asset(
    key=news_key("news_pg"),
    deps=[hf_news_dataset, news_reference_data],
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
)
def news_pg(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    news_repo: NewsDatasetRepoResource,
) -> dg.MaterializeResult:
    """The news table in PostgreSQL, the source of truth (every ingest also reports a
    materialization of it, with the table's new row count). Materializing it migrates the
    HF dataset into it: each month shard is COPYed into a staging table and merged with
    INSERT ... ON CONFLICT (unique_id) in one transaction, so the migration resumes per
    shard; rejected rows go to news_rejected with the reason, progress to sync_log."""
    report = migrate_from_repo(postgres.resolved_url(), news_repo.open())
    context.log.info(
        "migration: %d shards migrated, %d already done", len(report.migrated), len(report.skipped)
    )
    return dg.MaterializeResult(
        metadata={
            **news_table_metadata(postgres),
            "revision": report.revision,
            "shards_migrated": len(report.migrated),
            "shards_skipped": len(report.skipped),
            "rows_in": report.rows_in,
            "inserted": report.inserted,
            "updated": report.updated,
            "rejected": report.rejected,
            "rows_per_second": round(report.rows_per_second, 1),
        }
    )


@dg.asset(
    key=news_key("news_ingest"),
    deps=[news_pg],
    partitions_def=news_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
)
def news_ingest(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    news_repo: NewsDatasetRepoResource,
) -> dg.MaterializeResult:
    """One day of scraped news ($BI_PLATFORM_HOME/news/inbox/YYYY-MM-DD.jsonl):
    validated, deduplicated and written through the StorageAdapter (STORAGE_BACKEND:
    postgres, huggingface or dual_write). Malformed lines land in news_rejected with
    their line number and reason. A backfill of several days runs them in order in one
    run. ``dagster/row_count``: the day's stories the store now holds. With PostgreSQL
    written (``postgres``, ``dual_write``), ``news/news_pg`` gets a materialization too:
    the table changed, and its row count and schema are the table's after the ingest."""
    settings = get_settings()
    days = context.partition_keys
    missing = [str(inbox_path(day)) for day in days if not inbox_path(day).exists()]
    if missing:
        raise dg.Failure(f"no scraper batch for {len(missing)} day(s): {missing[:5]}")
    adapter = StorageAdapter.from_settings(
        settings, conninfo=postgres.resolved_url(), repo=news_repo.open()
    )
    per_day = {}
    stored = 0
    for day in days:
        path = inbox_path(day)
        batch = parse_inbox(path)
        outcome = adapter.write(
            batch.records,
            batch.rejected,
            source=f"inbox {path.name}",
            row_sources=batch.record_sources,
        )
        per_day[day] = {
            "lines": batch.lines,
            "records": batch.records.num_rows,
            "duplicates_in_batch": batch.duplicates,
            "rejected_lines": len(batch.rejected),
            **outcome.as_dict(),
        }
        result = outcome.result
        stored += result.inserted + result.updated + result.unchanged - result.duplicates
        context.log.info("%s: %s", day, per_day[day])
    if settings.storage_backend != StorageBackend.HUGGINGFACE:
        # the ingest changed the news table: a materialization of news_pg with its new count
        context.log_event(
            dg.AssetMaterialization(
                asset_key=news_pg.key,
                description=f"news_ingest {', '.join(days)} wrote into the news table",
                metadata={**news_table_metadata(postgres), "written_by": "news_ingest"},
            )
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stored,
            "dagster/column_schema": HF_TABLE_SCHEMA,
            "backend": str(settings.storage_backend),
            "days": len(days),
            "lines": sum(d["lines"] for d in per_day.values()),
            "rejected_lines": sum(d["rejected_lines"] for d in per_day.values()),
            "outcome_by_day": dg.MetadataValue.json(per_day),
        }
    )


class HfNewsSyncConfig(dg.Config):
    """Run configuration of ``news/hf_news_sync`` (the UI launchpad shows it)."""

    full: bool = Field(
        default=False,
        description=(
            "Repair: rebuild EVERY month's shard from PostgreSQL (and delete months PG does "
            "not have), instead of only the months with rows not synced yet. Use it when a "
            "gate of hf_news_sync fails; same as `bi-platform news resync`."
        ),
    )


@dg.asset(
    key=news_key("hf_news_sync"),
    deps=[news_pg, news_ingest],
    group_name=GROUP,
    kinds={"huggingface", "postgres"},
    owners=OWNERS,
    # after any ingest, whatever days are missing: the partitions that do not exist are
    # not waited for (eager() would wait for every day since the start date)
    automation_condition=after_upstream_gates(ignore_missing=dg.AssetSelection.assets(news_ingest)),
)
def hf_news_sync(
    context: dg.AssetExecutionContext,
    config: HfNewsSyncConfig,
    postgres: PostgresResource,
    news_repo: NewsDatasetRepoResource,
) -> dg.MaterializeResult:
    """PostgreSQL -> HF incremental sync: rows never synced or edited since their last
    sync, grouped by publication month; each affected month's shard is rebuilt from PG
    and all of them go in ONE commit, after a check of exactly what is about to be
    published (row counts per month equal PG's, no unique_id twice in the dataset; else
    nothing is published); rows are marked synced with the commit revision only after
    it succeeds. The repo's working copy is brought to HEAD first (a crashed sync heals
    here). Config ``full: true`` rebuilds every month (the repair named by the gates).
    Memory is bounded by one month, not the dataset. Runs after every ingest
    (declarative automation) once the upstream blocking checks passed."""
    repo = news_repo.open()
    try:
        report = sync_to_hf(postgres.resolved_url(), repo, full=config.full)
    except PublicationRefusedError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={
                "months": exc.months[:20],
                "duplicated_ids": list(exc.duplicates)[:20],
                "count_mismatches": [
                    f"{m}: pg={pg} hf={hf}" for m, (pg, hf) in exc.count_mismatches.items()
                ][:20],
                "remedy": REPAIR_HINT,
                "remedy_command": REPAIR_COMMAND,
                "remedy_run_config": dg.MetadataValue.json(REPAIR_RUN_CONFIG),
            },
        ) from exc
    if report.repaired:
        context.log.warning(
            "the working copy was behind HEAD; repaired before the sync: %s", report.repaired
        )
    context.log.info(
        "sync%s: %d rows over %d months",
        " (full)" if report.full else "",
        report.rows_exported,
        len(report.months),
    )
    return dg.MaterializeResult(
        metadata={
            "full": report.full,
            "working_copy_repaired": report.repaired,
            "revision": report.revision or "",
            "months": report.months,
            "rows_exported": report.rows_exported,
            "rows_marked": report.rows_marked,
            "seconds": round(report.seconds, 3),
            "peak_rss_mb": report.peak_rss_mb or 0.0,
            "dagster/row_count": repo.row_count(),
            "dagster/column_schema": HF_TABLE_SCHEMA,
        }
    )


news_assets = [hf_news_dataset, news_reference_data, news_pg, news_ingest, hf_news_sync]
