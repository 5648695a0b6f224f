"""Definitions of the `serving` domain, merged by `bi_platform.definitions`.

BI serving: the DuckDB warehouse and the query API for concurrent users.
"""

import dagster as dg

from bi_platform.serving.assets import (
    WAREHOUSE_RESOURCE,
    serving_assets,
    serving_checks,
    warehouse_resource,
)
from bi_platform.serving.automation import serving_warehouse_job

defs = dg.Definitions(
    assets=serving_assets,
    asset_checks=serving_checks,
    jobs=[serving_warehouse_job],
    resources={WAREHOUSE_RESOURCE: warehouse_resource()},
)
