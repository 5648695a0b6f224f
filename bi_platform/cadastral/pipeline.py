"""The cadastral pipeline end to end without Dagster: the same stages, in the same order,
each committing its own Delta version, as the assets. Used by ``bi-platform bench
cadastral`` and the tests.

Inside one run, a stage's output is persisted while it is written and handed to the
stages after it as is: keyed by the raw document number (:data:`.transforms.PERSON`) and
hash-partitioned by it like every stage output, so ``coletapedt002`` joins the persons
without a shuffle and ``cadastro_consolidado`` joins the four outputs in place rather
than reading each back from Delta and shuffling it. What is written is
:func:`.transforms.published`: ``chave_pessoa`` in place of that key.
Each stage's Spark work is measured (:mod:`.spark_metrics`): ``PipelineRun.metrics``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from bi_platform.cadastral import transforms
from bi_platform.cadastral.delta import DeltaCommit, write_delta
from bi_platform.cadastral.row_hash import with_row_hash
from bi_platform.cadastral.sources import latest_load_date, read_source
from bi_platform.cadastral.spark_metrics import StageMetrics, StageMetricsCollector
from bi_platform.cadastral.spark_session import CACHE_LEVEL

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
    metrics: dict[str, StageMetrics] = field(default_factory=dict)

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
    collector = StageMetricsCollector(spark)
    kept: list = []  # stage outputs persisted for the stages after them

    def stage(name: str, build) -> dict:
        started = time.perf_counter()
        with collector.measure(name) as metrics:
            outputs = build()
            for table, df in outputs.items():
                uri = table_uri(delta_root, table)
                run.commits[table] = write_delta(
                    transforms.published(df), uri, plain_columns=transforms.HIGH_CARDINALITY_COLUMNS
                )
        run.metrics[name] = metrics
        run.seconds[name] = time.perf_counter() - started
        log.info("%s: %.2f s", name, run.seconds[name])
        return outputs

    def keep(df):
        kept.append(df.persist(CACHE_LEVEL))
        return df

    def source(table: str):
        return read_source(spark, raw_root, table, load_date)

    def stage_001():
        out = transforms.coletapedt001_outputs(source("pedt001"), lookups)
        kept.append(out.shared)  # persisted: the persons are a filter over it
        return {"coletapedt001": out.keyed_rows, "coletapedt001_quarantine": out.quarantine}

    try:
        p001 = stage("coletapedt001", stage_001)["coletapedt001"]

        def stage_002():
            rows, quarantine = transforms.coletapedt002(source("pedt002"), p001, lookups)
            return {"coletapedt002": keep(rows), "coletapedt002_quarantine": quarantine}

        p002 = stage("coletapedt002", stage_002)["coletapedt002"]
        p003 = stage(
            "coletapedt003",
            lambda: {
                "coletapedt003": keep(transforms.coletapedt003(source("pedt003"), keep_person=True))
            },
        )["coletapedt003"]
        p205 = stage(
            "coletapedt205",
            lambda: {
                "coletapedt205": keep(
                    transforms.coletapedt205(source("pedt205"), max_asset_types, keep_person=True)
                )
            },
        )["coletapedt205"]
        # The four outputs are still persisted and hash-partitioned alike by the raw key:
        # the consolidated table joins them in place instead of reading them back.
        stage(
            "cadastro_consolidado",
            lambda: {"cadastro_consolidado": consolidated_with_hash(p001, p002, p003, p205)},
        )
    finally:
        for df in kept:
            df.unpersist()
    return run
