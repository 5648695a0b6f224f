"""The news assets and checks end to end: real PostgreSQL, the local dataset repo, the
`small` sample profile."""

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from bi_platform.news.assets import (
    hf_news_dataset,
    hf_news_sync,
    news_ingest,
    news_pg,
    news_reference_data,
)
from bi_platform.news.automation import news_inbox_sensor
from bi_platform.news.checks import news_checks
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.resources import NewsDatasetRepoResource
from bi_platform.news.sample import write_news_sources
from bi_platform.resources import PostgresResource


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path))
    write_news_sources(tmp_path, "small")
    yield tmp_path


def _run(assets: list, pg_url: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources={
            "postgres": PostgresResource(database_url=pg_url),
            "news_repo": NewsDatasetRepoResource(),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kwargs,
    )


#: The checks on hf_news_sync (the blocking gates and the sync lag).
HF_CHECKS = [c for c in news_checks if hf_news_sync.key in {k.asset_key for k in c.check_keys}]


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_migration_ingest_sync_and_gates(home: Path, pg_url: str) -> None:
    first = _run(
        [hf_news_dataset, news_reference_data, news_pg, hf_news_sync, *news_checks], pg_url
    )
    assert first.success
    checks = _checks(first)
    assert checks == {
        "pg_count_equals_hf_count": True,
        "no_duplicate_unique_id_in_hf": True,
        "sample_identical_in_pg_and_hf": True,
        "working_copy_matches_head": True,
        "sync_lag": True,
        "required_fields_filled": True,
        "agency_valid": True,
        "theme_coverage": True,
    }
    repo = LocalDatasetRepo(home / "hf" / "govbrnews")
    with psycopg.connect(pg_url) as conn:
        migrated = conn.execute("SELECT count(*) FROM news").fetchone()[0]
    assert migrated == repo.row_count() == 5_000

    news_meta = first.asset_materializations_for_node("news__news_pg")[0].metadata
    assert news_meta["dagster/row_count"].value == migrated
    columns = [c.name for c in news_meta["dagster/column_schema"].value.columns]
    assert columns[:2] == ["id", "published_at"] and "content_hash" in columns

    ingest = _run([news_ingest], pg_url, partition_key="2026-11-01")
    assert ingest.success
    (metadata,) = [
        e.materialization.metadata
        for e in ingest.get_asset_materialization_events()
        if e.materialization.asset_key == news_ingest.key
    ]
    assert metadata["rejected_lines"].value > 0
    with psycopg.connect(pg_url) as conn:
        after_ingest = conn.execute("SELECT count(*) FROM news").fetchone()[0]
        rejected = conn.execute("SELECT count(*) FROM news_rejected").fetchone()[0]
        pending = conn.execute(
            "SELECT count(*) FROM news WHERE synced_to_hf_at IS NULL "
            "OR updated_at > synced_to_hf_at"
        ).fetchone()[0]
    assert after_ingest > migrated and rejected > 0 and pending > 0
    # the day's stories the table now holds; news_pg materialized with the table's count
    assert 0 < metadata["dagster/row_count"].value <= after_ingest - migrated + pending
    table = [
        e.materialization
        for e in ingest.get_asset_materialization_events()
        if e.materialization.asset_key == news_pg.key
    ]
    assert [t.metadata["dagster/row_count"].value for t in table] == [after_ingest]

    sync = _run([hf_news_sync, *HF_CHECKS], pg_url)
    assert sync.success
    assert all(_checks(sync).values()), _checks(sync)
    assert repo.row_count() == after_ingest
    sync_meta = sync.asset_materializations_for_node("news__hf_news_sync")[0].metadata
    assert sync_meta["dagster/row_count"].value == after_ingest


def test_inbox_sensor_requests_each_day_once_and_never_reruns(home: Path) -> None:
    inbox = home / "news" / "inbox"
    with dg.instance_for_test() as instance:
        result = news_inbox_sensor(dg.build_sensor_context(instance=instance))
        days = [r.partition_key for r in result.run_requests]
        assert days == sorted(p.stem for p in inbox.glob("*.jsonl"))
        assert len({r.run_key for r in result.run_requests}) == len(days)
        # a day already ingested is not requested again, even by a new sensor (no cursor)
        first = days[0]
        instance.report_runless_asset_event(
            dg.AssetMaterialization(news_ingest.key, partition=first)
        )
        again = news_inbox_sensor(dg.build_sensor_context(instance=instance))
        assert [r.partition_key for r in again.run_requests] == days[1:]
        # ... until its file is rewritten
        path = inbox / f"{first}.jsonl"
        path.write_bytes(path.read_bytes())
        later = path.stat().st_mtime + 5
        os.utime(path, (later, later))
        rewritten = news_inbox_sensor(dg.build_sensor_context(instance=instance))
        assert [r.partition_key for r in rewritten.run_requests] == days


def test_the_sync_follows_an_ingest_whatever_days_are_missing() -> None:
    """Declarative automation: one ingested day among many missing ones is enough."""
    from bi_platform.definitions import defs

    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(news_pg.key))
        instance.report_runless_asset_event(dg.AssetMaterialization(hf_news_sync.key))
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.get_num_requested(hf_news_sync.key) == 0  # nothing new
        instance.report_runless_asset_event(
            dg.AssetMaterialization(news_ingest.key, partition="2026-11-03")
        )
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
        assert second.get_num_requested(hf_news_sync.key) == 1
