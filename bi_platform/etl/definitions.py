"""Definitions of the `etl` domain, merged by `bi_platform.definitions`.

Secure hybrid ETL (seed 004): binary/CSV/Parquet ingest, dead-letter queue, estimates
and an HTML report.
"""

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

defs = dg.Definitions(
    assets=etl_assets,
    asset_checks=etl_checks,
    jobs=[etl_file_job, etl_report_job],
    sensors=[etl_inbox_sensor, etl_report_sensor],
    resources={"etl": EtlResource()},
)
