"""Definitions of the `retail` domain, merged by `bi_platform.definitions`.

Retail BI tables: Parquet tables behind the size-routed Polars/Dask IO manager.
"""

from typing import Any

import dagster as dg

from bi_platform.io_managers import HybridParquetIOManager
from bi_platform.retail.assets import mart_assets, raw_exports, table_inventory, typed_tables
from bi_platform.retail.automation import retail_daily_schedule, retail_tables_job
from bi_platform.retail.checks import retail_checks
from bi_platform.retail.resources import RetailExportsResource
from bi_platform.settings import Settings


def resources(settings: Settings | None = None) -> dict[str, Any]:
    """The domain's resources, configured from ``settings`` (default: the environment)."""
    return {
        "retail_io_manager": HybridParquetIOManager.from_settings(settings),
        "retail_exports": RetailExportsResource.from_settings(settings),
    }


defs = dg.Definitions(
    assets=[*raw_exports, *typed_tables, *mart_assets, table_inventory],
    asset_checks=retail_checks,
    jobs=[retail_tables_job],
    schedules=[retail_daily_schedule],
    resources=resources(),
)
