"""Definitions of the `cadastral` domain, merged by `bi_platform.definitions`.

Cadastral pipeline (seed 003): PySpark transforms to Delta tables and a hash-compare
sync into PostgreSQL.
"""

import dagster as dg

from bi_platform.cadastral.assets import IO_MANAGER, cadastral_assets
from bi_platform.cadastral.automation import cadastral_job, cadastral_new_load_sensor
from bi_platform.cadastral.checks import cadastral_checks
from bi_platform.cadastral.resources import CadastralSparkResource, DeltaSparkIOManager

spark = CadastralSparkResource()

defs = dg.Definitions(
    assets=cadastral_assets,
    asset_checks=cadastral_checks,
    jobs=[cadastral_job],
    sensors=[cadastral_new_load_sensor],
    resources={"spark": spark, IO_MANAGER: DeltaSparkIOManager(spark=spark)},
)
