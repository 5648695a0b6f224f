"""The pipeline end to end (the bench's path): the Delta tables it commits equal the naive
reference, although later stages take the earlier outputs in place instead of reading
them back; and each stage reports Spark's own stage metrics."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from bi_platform.cadastral.delta import read_delta
from bi_platform.cadastral.pipeline import TABLES, run_pipeline, table_uri
from bi_platform.cadastral.reference import SOURCE_TABLES
from bi_platform.cadastral.row_hash import with_row_hash
from bi_platform.cadastral.sample import generate_cadastral_sources
from bi_platform.cadastral.sources import read_source
from bi_platform_tests.cadastral.naive_reference import (
    naive_cadastro_consolidado,
    naive_coletapedt001,
    naive_coletapedt002,
    naive_coletapedt003,
    naive_coletapedt205,
)
from bi_platform_tests.cadastral.test_transforms import assert_no_raw_penumper, assert_same

LOAD = date(2025, 3, 31)


def test_pipeline_tables_equal_the_naive_reference_and_report_stage_metrics(
    spark, tmp_path: Path
) -> None:
    raw, delta = tmp_path / "raw", tmp_path / "delta"
    generate_cadastral_sources(raw, persons=3_000, load_date=LOAD)
    persisted = spark.sparkContext._jsc.sc().getPersistentRDDs().size()
    run = run_pipeline(spark, raw, delta, load_date=LOAD, max_asset_types=5)
    assert set(run.commits) == set(TABLES)
    # what the pipeline persisted for its later stages is released
    assert spark.sparkContext._jsc.sc().getPersistentRDDs().size() == persisted

    def source(table: str):
        return read_source(spark, raw, table, LOAD)

    n001, nq001 = naive_coletapedt001(source("pedt001"))
    n002, nq002 = naive_coletapedt002(source("pedt002"), n001)
    n003 = naive_coletapedt003(source("pedt003"))
    n205 = naive_coletapedt205(source("pedt205"), 5)
    expected = {
        "coletapedt001": n001,
        "coletapedt001_quarantine": nq001,
        "coletapedt002": n002,
        "coletapedt002_quarantine": nq002,
        "coletapedt003": n003,
        "coletapedt205": n205,
        "cadastro_consolidado": with_row_hash(
            naive_cadastro_consolidado(n001, n002, n003, n205), "chave_pessoa"
        ),
    }
    for table, naive in expected.items():
        written = read_delta(spark, table_uri(delta, table))
        # Parquet keeps no "contains no null" flag on arrays: compare in the table's types.
        aligned = naive.select(*(naive[f.name].cast(f.dataType) for f in written.schema))
        assert_same(written, aligned)
    # the stages hand each other the raw document number; what they write never has it
    assert_no_raw_penumper(
        [read_delta(spark, table_uri(delta, table)) for table in TABLES],
        [source(table) for table in SOURCE_TABLES],
    )

    metrics = run.metrics
    assert list(metrics) == list(run.seconds)
    assert all(m.available and m.stages >= 1 and m.jobs >= 1 for m in metrics.values())
    # 003 shuffles its contacts by key once; the consolidated table shuffles nothing: it
    # joins the persisted, co-partitioned stage outputs.
    assert metrics["coletapedt003"].shuffle_write_bytes > 0
    assert metrics["coletapedt001"].shuffle_read_bytes > 0
    assert metrics["cadastro_consolidado"].shuffle_write_bytes == 0
    assert metrics["cadastro_consolidado"].shuffle_read_bytes == 0
