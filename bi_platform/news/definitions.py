"""Definitions of the `news` domain, merged by `bi_platform.definitions`.

News platform: HuggingFace dataset <-> PostgreSQL news tables.
"""

from typing import Any

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
from bi_platform.settings import Settings


def resources(settings: Settings | None = None) -> dict[str, Any]:
    """The domain's resources, configured from ``settings`` (default: the environment)."""
    return {"news_repo": NewsDatasetRepoResource.from_settings(settings)}


defs = dg.Definitions(
    assets=news_assets,
    asset_checks=news_checks,
    jobs=[news_setup_job, news_ingest_job, hf_news_sync_job],
    schedules=[news_ingest_daily, hf_news_sync_daily],
    sensors=[news_inbox_sensor],
    resources=resources(),
)
