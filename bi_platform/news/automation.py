"""Schedules and sensors of the news domain.

- ``news_ingest_daily``: at 04:00 São Paulo time, yesterday's scraper batch.
- ``news_inbox_sensor``: a new or changed inbox file starts its day's ingest at once.
- ``hf_news_sync`` runs after each ingest (declarative automation on its asset:
  :func:`bi_platform.automation.after_upstream_gates`, missing days not waited for);
  ``hf_news_sync_daily`` (05:00) is the fallback for when the automation sensor is off.
- :func:`pending_inbox_days`: the days the sensor would request, for ``bi-platform
  materialize``.
"""

from pathlib import Path

import dagster as dg

from bi_platform.automation import latest_materialization_times
from bi_platform.news.assets import hf_news_sync, inbox_dir, inbox_path, news_days, news_ingest

news_setup_job = dg.define_asset_job(
    "news_setup_job",
    selection=dg.AssetSelection.groups("news")
    - dg.AssetSelection.assets(news_ingest, hf_news_sync),
    executor_def=dg.in_process_executor,
    description=(
        "The HF dataset (bootstrapped from the initial export when empty), the schema and "
        "reference data, and the migration of the dataset into PostgreSQL."
    ),
)

news_ingest_job = dg.define_asset_job(
    "news_ingest_job",
    selection=[news_ingest],
    executor_def=dg.in_process_executor,
    description="One day of scraped news into the StorageAdapter.",
)

news_ingest_daily = dg.build_schedule_from_partitioned_job(
    news_ingest_job, name="news_ingest_daily", hour_of_day=4, minute_of_hour=0
)

hf_news_sync_job = dg.define_asset_job(
    "hf_news_sync_job",
    selection=[hf_news_sync],
    executor_def=dg.in_process_executor,
    description="PostgreSQL -> HF incremental sync, then its blocking integrity checks.",
)

hf_news_sync_daily = dg.ScheduleDefinition(
    name="hf_news_sync_daily",
    job=hf_news_sync_job,
    cron_schedule="0 5 * * *",
    execution_timezone="America/Sao_Paulo",
    description="Fallback: the PG -> HF sync every morning, even without a new ingest.",
)


def pending_inbox_days(instance: dg.DagsterInstance, inbox: Path | None = None) -> list[str]:
    """Days (``YYYY-MM-DD``, oldest first) whose inbox file exists and was never ingested
    or changed after its last ingest; files that are not a partition day are ignored."""
    inbox = inbox_dir() if inbox is None else inbox
    valid = set(news_days.get_partition_keys())
    files = {p.stem: p for p in sorted(inbox.glob("*.jsonl"))} if inbox.exists() else {}
    days = {day: path for day, path in files.items() if day in valid}
    ingested = latest_materialization_times(instance, news_ingest.key, days)
    return [
        day
        for day, path in sorted(days.items())
        if day not in ingested or path.stat().st_mtime > ingested[day]
    ]


@dg.sensor(job=news_ingest_job, minimum_interval_seconds=60)
def news_inbox_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """An inbox YYYY-MM-DD.jsonl never ingested (or rewritten since its last ingest)
    requests that day's ingest; the run key (file, size, mtime) makes each version of a
    file run once. Days already ingested are never re-run, even on a first tick."""
    inbox = inbox_dir()
    pending = pending_inbox_days(context.instance, inbox)
    valid = set(news_days.get_partition_keys())
    ignored = (
        [p.name for p in inbox.glob("*.jsonl") if p.stem not in valid] if inbox.exists() else []
    )
    if ignored:
        context.log.info("ignored inbox files (not a partition day): %s", sorted(ignored)[:10])
    requests = []
    for day in pending:
        stat = inbox_path(day).stat()
        requests.append(
            dg.RunRequest(
                partition_key=day, run_key=f"{day}.jsonl:{stat.st_size}:{stat.st_mtime_ns}"
            )
        )
    return dg.SensorResult(
        run_requests=requests, skip_reason=None if requests else "no new or changed inbox day"
    )
