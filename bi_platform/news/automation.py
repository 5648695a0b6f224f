"""Schedules and sensors of the news domain.

- ``news_ingest_daily``: at 04:00 São Paulo time, yesterday's scraper batch.
- ``news_inbox_sensor``: a new or changed inbox file starts its day's ingest at once.
- ``hf_news_sync`` runs after each successful ingest (declarative automation: eager,
  on its asset), and ``hf_news_sync_daily`` is the fallback at 05:00.
"""

from datetime import date

import dagster as dg

from bi_platform.news.assets import hf_news_sync, news_days, news_ingest
from bi_platform.settings import get_settings

news_ingest_job = dg.define_asset_job(
    "news_ingest_job",
    selection=[news_ingest],
    description="One day of scraped news into the StorageAdapter.",
)

news_ingest_daily = dg.build_schedule_from_partitioned_job(
    news_ingest_job, name="news_ingest_daily", hour_of_day=4, minute_of_hour=0
)

hf_news_sync_job = dg.define_asset_job("hf_news_sync_job", selection=[hf_news_sync])

hf_news_sync_daily = dg.ScheduleDefinition(
    name="hf_news_sync_daily",
    job=hf_news_sync_job,
    cron_schedule="0 5 * * *",
    execution_timezone="America/Sao_Paulo",
    description="Fallback: the PG -> HF sync every morning, even without a new ingest.",
)


@dg.sensor(job=news_ingest_job, minimum_interval_seconds=60)
def news_inbox_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """A new (or rewritten) YYYY-MM-DD.jsonl in the inbox requests that day's ingest;
    the run key (file, size, mtime) makes each version of a file run once."""
    inbox = get_settings().news_dir / "inbox"
    valid = set(news_days.get_partition_keys())
    requests, skipped = [], []
    for path in sorted(inbox.glob("*.jsonl")) if inbox.exists() else []:
        day = path.stem
        try:
            date.fromisoformat(day)
        except ValueError:
            skipped.append(path.name)
            continue
        if day not in valid:
            skipped.append(path.name)
            continue
        stat = path.stat()
        requests.append(
            dg.RunRequest(
                partition_key=day, run_key=f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
            )
        )
    if skipped:
        context.log.info("ignored inbox files (not a partition day): %s", skipped[:10])
    return dg.SensorResult(run_requests=requests)
