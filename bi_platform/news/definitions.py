"""Definitions of the `news` domain, merged by `bi_platform.definitions`.

News platform (seed 002): HuggingFace dataset <-> PostgreSQL news tables.
"""

import dagster as dg

from bi_platform.news.assets import news_assets
from bi_platform.news.automation import (
    hf_news_sync_daily,
    hf_news_sync_job,
    news_inbox_sensor,
    news_ingest_daily,
    news_ingest_job,
    news_setup_job,
)
from bi_platform.news.checks import news_checks
from bi_platform.news.resources import NewsDatasetRepoResource

defs = dg.Definitions(
    assets=news_assets,
    asset_checks=news_checks,
    jobs=[news_setup_job, news_ingest_job, hf_news_sync_job],
    schedules=[news_ingest_daily, hf_news_sync_daily],
    sensors=[news_inbox_sensor],
    resources={"news_repo": NewsDatasetRepoResource()},
)
