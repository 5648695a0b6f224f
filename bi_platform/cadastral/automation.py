"""Jobs, schedule and sensor of the cadastral domain.

``cadastral_job`` runs the whole group in one process (``in_process_executor``) so the
Spark session starts once per run instead of once per step. ``cadastral_daily`` runs it
every morning; ``cadastral_new_load_sensor`` runs it as soon as a new ``dat_ref_carga``
snapshot of ``pedt001`` lands (one run per load date: the run key).
"""

import dagster as dg

from bi_platform.cadastral.assets import GROUP
from bi_platform.sample_data.cadastral import load_dates
from bi_platform.settings import get_settings

cadastral_job = dg.define_asset_job(
    "cadastral_job",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    description=(
        "The person registry: raw snapshots -> Spark transforms -> Delta tables -> "
        "PostgreSQL sync, with every check, on one Spark session."
    ),
)

cadastral_daily = dg.ScheduleDefinition(
    name="cadastral_daily",
    job=cadastral_job,
    cron_schedule="0 6 * * *",
    execution_timezone="America/Sao_Paulo",
    description="Every day at 06:00 (Brasília): the latest load date end to end.",
)


@dg.sensor(
    job=cadastral_job,
    minimum_interval_seconds=300,
    description="A run per new dat_ref_carga snapshot of pedt001 in the raw exports.",
)
def cadastral_new_load_sensor(context: dg.SensorEvaluationContext):
    raw_root = get_settings().cadastral_raw_dir
    dates = [d.isoformat() for d in load_dates(raw_root)] if raw_root.exists() else []
    new = [d for d in dates if context.cursor is None or d > context.cursor]
    if not new:
        return dg.SkipReason(f"no load date after {context.cursor or '-'} in {raw_root}")
    latest = new[-1]
    context.update_cursor(latest)
    return dg.RunRequest(run_key=f"dat_ref_carga={latest}", tags={"dat_ref_carga": latest})
