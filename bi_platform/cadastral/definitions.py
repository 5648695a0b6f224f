"""Definitions of the `cadastral` domain, merged by `bi_platform.definitions`.

Cadastral pipeline: PySpark transforms to Delta tables and a hash-compare
sync into PostgreSQL.
"""

from typing import Any

import dagster as dg

from bi_platform.cadastral.assets import IO_MANAGER, cadastral_assets
from bi_platform.cadastral.automation import cadastral_job, cadastral_new_load_sensor
from bi_platform.cadastral.checks import cadastral_checks
from bi_platform.cadastral.resources import CadastralSparkResource, DeltaSparkIOManager
from bi_platform.settings import Settings


def resources(settings: Settings | None = None) -> dict[str, Any]:
    """The domain's resources, configured from ``settings`` (default: the environment)."""
    spark = CadastralSparkResource.from_settings(settings)
    return {"spark": spark, IO_MANAGER: DeltaSparkIOManager.from_settings(spark, settings)}


defs = dg.Definitions(
    assets=cadastral_assets,
    asset_checks=cadastral_checks,
    jobs=[cadastral_job],
    sensors=[cadastral_new_load_sensor],
    resources=resources(),
)
