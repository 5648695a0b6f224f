"""Definitions of the `retail` domain, merged by `bi_platform.definitions`.

Retail BI tables (seed 000): Parquet tables behind the size-routed Polars/Dask IO manager.
"""

import dagster as dg

from bi_platform.io_managers import HybridParquetIOManager
from bi_platform.retail.assets import mart_assets, raw_exports, table_inventory, typed_tables
from bi_platform.retail.automation import retail_daily_schedule, retail_tables_job
from bi_platform.retail.checks import retail_checks
from bi_platform.retail.resources import RetailExportsResource

defs = dg.Definitions(
    assets=[*raw_exports, *typed_tables, *mart_assets, table_inventory],
    asset_checks=retail_checks,
    jobs=[retail_tables_job],
    schedules=[retail_daily_schedule],
    resources={
        "retail_io_manager": HybridParquetIOManager(),
        "retail_exports": RetailExportsResource(),
    },
)
