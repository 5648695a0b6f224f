"""The cadastral pipeline end to end without Dagster: the same stages, in the same order,
with the same Delta hand-offs as the assets (each stage reads its inputs back through
the Delta log). Used by ``bi-platform bench cadastral`` and the tests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from bi_platform.cadastral import transforms
from bi_platform.cadastral.delta import DeltaCommit, read_delta, write_delta
from bi_platform.cadastral.row_hash import with_row_hash
from bi_platform.cadastral.sources import latest_load_date, read_source

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: The Delta tables of the pipeline, in the order they are written.
TABLES = (
    "coletapedt001",
    "coletapedt001_quarantine",
    "coletapedt002",
    "coletapedt002_quarantine",
    "coletapedt003",
    "coletapedt205",
    "cadastro_consolidado",
)

#: The key of every table: sha256 of the document number, never the number itself.
KEY = "chave_pessoa"


def table_uri(delta_root: Path | str, table: str) -> str:
    """Where a pipeline table lives: ``<delta_root>/<table>``."""
    return str(Path(delta_root) / table)


@dataclass
class PipelineRun:
    load_date: date
    commits: dict[str, DeltaCommit] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def consolidated_with_hash(p001, p002, p003, p205):
    """``cadastro_consolidado`` plus its canonical ``row_hash`` (the sync's change key)."""
    return with_row_hash(transforms.cadastro_consolidado(p001, p002, p003, p205), KEY)


def run_pipeline(
    spark: SparkSession,
    raw_root: Path,
    delta_root: Path,
    *,
    load_date: date | None = None,
    max_asset_types: int = 5,
) -> PipelineRun:
    """Every stage from the raw snapshots of ``load_date`` (default: the latest) to
    ``cadastro_consolidado``; one new Delta version per table."""
    load_date = load_date or latest_load_date(raw_root)
    run = PipelineRun(load_date)
    lookups = transforms.lookup_tables(spark)

    def stage(name: str, build) -> None:
        started = time.perf_counter()
        outputs = build()
        for table, df in outputs.items():
            run.commits[table] = write_delta(df, table_uri(delta_root, table))
        spark.catalog.clearCache()  # what a stage persisted for its several outputs
        run.seconds[name] = time.perf_counter() - started
        log.info("%s: %.2f s", name, run.seconds[name])

    def read(table: str):
        return read_delta(spark, table_uri(delta_root, table))

    def source(table: str):
        return read_source(spark, raw_root, table, load_date)

    def stage_001():
        rows, quarantine = transforms.coletapedt001(source("pedt001"), lookups)
        return {"coletapedt001": rows, "coletapedt001_quarantine": quarantine}

    def stage_002():
        rows, quarantine = transforms.coletapedt002(
            source("pedt002"), read("coletapedt001"), lookups
        )
        return {"coletapedt002": rows, "coletapedt002_quarantine": quarantine}

    stage("coletapedt001", stage_001)
    stage("coletapedt002", stage_002)
    stage("coletapedt003", lambda: {"coletapedt003": transforms.coletapedt003(source("pedt003"))})
    stage(
        "coletapedt205",
        lambda: {"coletapedt205": transforms.coletapedt205(source("pedt205"), max_asset_types)},
    )
    stage(
        "cadastro_consolidado",
        lambda: {
            "cadastro_consolidado": consolidated_with_hash(
                read("coletapedt001"),
                read("coletapedt002"),
                read("coletapedt003"),
                read("coletapedt205"),
            )
        },
    )
    return run
