"""The retail job and its schedule.

``retail_tables`` runs in one process (``in_process_executor``): its ~30 steps are short,
and a process per step would spend more time importing the code location than working.
``serving/bi_warehouse`` follows it by declarative automation (see the serving domain).
"""

import dagster as dg

from bi_platform.retail.assets import raw_exports

retail_tables_job = dg.define_asset_job(
    "retail_tables",
    selection=dg.AssetSelection.groups("retail")
    - dg.AssetSelection.assets(*(spec.key for spec in raw_exports)),
    executor_def=dg.in_process_executor,
    description="Typed tables, quarantine, marts and inventory of the retail domain.",
)

retail_daily_schedule = dg.ScheduleDefinition(
    name="retail_daily",
    job=retail_tables_job,
    cron_schedule="0 6 * * *",
    execution_timezone="America/Sao_Paulo",
    description="Every morning after the ERP's nightly export (06:00 São Paulo time).",
)
