"""The serving job.

``serving/bi_warehouse`` has no schedule: its automation condition
(:func:`bi_platform.automation.after_upstream_gates`) rebuilds it after the retail tables
change, once their blocking checks passed. ``serving_warehouse`` runs it by hand (or from
``bi-platform materialize``).
"""

import dagster as dg

from bi_platform.serving.assets import bi_warehouse

serving_warehouse_job = dg.define_asset_job(
    "serving_warehouse",
    selection=[bi_warehouse],
    executor_def=dg.in_process_executor,
    description="The DuckDB warehouse the query API reads, then its blocking row-count check.",
)
