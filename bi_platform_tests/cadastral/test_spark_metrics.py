"""Stage metrics read from Spark's status store for a measured block of work."""

from __future__ import annotations

from pyspark.sql import functions as F  # noqa: N812

from bi_platform.cadastral.spark_metrics import StageMetricsCollector, combine


def test_a_shuffling_block_reports_its_stages_and_shuffle_bytes(spark) -> None:
    collector = StageMetricsCollector(spark)
    assert collector.available
    with collector.measure("shuffle") as shuffled:
        rows = (
            spark.range(0, 50_000, numPartitions=4)
            .select((F.col("id") % 97).alias("k"), F.col("id").cast("string").alias("v"))
            .repartition(5, "k")
            .groupBy("k")
            .agg(F.count("v").alias("n"))
            .collect()
        )
    assert len(rows) == 97 and sum(r["n"] for r in rows) == 50_000
    assert shuffled.available and shuffled.jobs >= 1
    assert shuffled.stages >= 2  # the map side and the reduce side
    assert shuffled.shuffle_write_bytes > 0 and shuffled.shuffle_read_bytes > 0
    assert shuffled.tasks >= 4 + 1
    assert all(r.status in {"COMPLETE", "SKIPPED"} for r in shuffled.records)
    summary = shuffled.summary()
    assert summary["shuffle_bytes"] == shuffled.shuffle_write_bytes
    assert summary["stages"] == shuffled.stages

    with collector.measure("narrow") as narrow:
        assert spark.range(0, 1000, numPartitions=2).where("id % 2 = 0").count() == 500
    assert narrow.available and narrow.stages >= 1
    assert narrow.shuffle_write_bytes < shuffled.shuffle_write_bytes

    # Each block sees only its own jobs, and blocks add up.
    total = combine("both", [shuffled, narrow])
    assert total.stages == shuffled.stages + narrow.stages
    assert total.shuffle_write_bytes == shuffled.shuffle_write_bytes + narrow.shuffle_write_bytes


def test_the_job_group_is_restored_after_a_block(spark) -> None:
    sc = spark.sparkContext
    sc.setLocalProperty("spark.jobGroup.id", "outer")
    try:
        with StageMetricsCollector(spark).measure("inner"):
            assert sc.getLocalProperty("spark.jobGroup.id") != "outer"
        assert sc.getLocalProperty("spark.jobGroup.id") == "outer"
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
