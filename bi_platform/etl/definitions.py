"""Definitions of the `etl` domain, merged by `bi_platform.definitions`.

Secure hybrid ETL: binary/CSV/Parquet ingest, dead-letter queue, estimates
and an HTML report.
"""

from typing import Any

import dagster as dg

from bi_platform.etl.assets import etl_assets
from bi_platform.etl.automation import (
    etl_file_job,
    etl_inbox_sensor,
    etl_report_job,
    etl_report_sensor,
)
from bi_platform.etl.checks import etl_checks
from bi_platform.etl.resources import EtlResource
from bi_platform.settings import Settings


def resources(settings: Settings | None = None) -> dict[str, Any]:
    """The domain's resources, configured from ``settings`` (default: the environment)."""
    return {"etl": EtlResource.from_settings(settings)}


defs = dg.Definitions(
    assets=etl_assets,
    asset_checks=etl_checks,
    jobs=[etl_file_job, etl_report_job],
    sensors=[etl_inbox_sensor, etl_report_sensor],
    resources=resources(),
)
