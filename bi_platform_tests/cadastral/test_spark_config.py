"""Spark settings by runtime version and cluster size (the plan's phases 3 and 4)."""

from pathlib import Path

import pytest

from bi_platform.cadastral.spark_config import (
    CODEGEN_CACHE_ENTRIES,
    LOCAL_DRIVER_JAVA_OPTIONS,
    broadcast_threshold_mb,
    default_parallelism,
    shuffle_partitions,
    spark_family,
    sql_settings,
    static_settings,
)


@pytest.mark.parametrize(
    ("version", "family"),
    [("3.4.1", "3.4"), ("3.5.0", "3.5"), ("4.0.1", "4.x"), ("4.3.0", "4.x"), ("3.3.2", "older")],
)
def test_runtime_family(version: str, family: str) -> None:
    assert spark_family(version) == family


def test_unrecognised_version_is_named() -> None:
    with pytest.raises(ValueError, match="'banana'"):
        spark_family("banana")


def test_runtime_13_vs_14_broadcast_thresholds_as_in_the_plan() -> None:
    assert sql_settings("3.4.1", 160)["spark.sql.autoBroadcastJoinThreshold"] == "50MB"
    assert sql_settings("3.5.0", 160)["spark.sql.autoBroadcastJoinThreshold"] == "25MB"


def test_cluster_size_table_of_phase_4() -> None:
    # 40 / 30 / 25 workers of 4 cores
    assert (shuffle_partitions(160), default_parallelism(160)) == (480, 320)
    assert (shuffle_partitions(120), default_parallelism(120)) == (360, 240)
    assert (shuffle_partitions(100), default_parallelism(100)) == (300, 200)
    assert broadcast_threshold_mb("3.5.0", 160) == 25
    assert broadcast_threshold_mb("3.5.0", 120) == 20
    assert broadcast_threshold_mb("3.5.0", 100) == 15
    assert shuffle_partitions(2) == 6


def test_adaptive_execution_and_serializer() -> None:
    conf = static_settings("4.3.0", 2, master="local[2]", jdbc_jar=None)
    assert conf["spark.sql.adaptive.enabled"] == "true"
    assert conf["spark.sql.adaptive.skewJoin.enabled"] == "true"
    assert conf["spark.serializer"].endswith("KryoSerializer")
    assert conf["spark.master"] == "local[2]"
    assert "spark.jars" not in conf


def test_jdbc_jar_added_only_when_present(tmp_path: Path) -> None:
    jar = tmp_path / "postgresql.jar"
    assert "spark.jars" not in static_settings("4.3.0", 2, jdbc_jar=jar)
    jar.write_bytes(b"PK")
    assert static_settings("4.3.0", 2, jdbc_jar=jar)["spark.jars"] == str(jar)


def test_parallel_collector_only_for_a_local_driver() -> None:
    local = static_settings("4.3.0", 2, master="local[2]", jdbc_jar=None)
    assert (
        local["spark.driver.extraJavaOptions"] == LOCAL_DRIVER_JAVA_OPTIONS == "-XX:+UseParallelGC"
    )
    for master in ("spark://127.0.0.1:7077", None):
        conf = static_settings("4.3.0", 2, master=master, jdbc_jar=None)
        assert "spark.driver.extraJavaOptions" not in conf
        assert "spark.executor.extraJavaOptions" not in conf


def test_session_runs_with_the_module_settings(spark) -> None:
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
    assert spark.conf.get("spark.sql.shuffle.partitions") == "6"
    assert spark.sparkContext.getConf().get("spark.serializer").endswith("KryoSerializer")
    # static: a session's later runs reuse the generated classes of its earlier ones
    assert spark.conf.get("spark.sql.codegen.cache.maxEntries") == str(CODEGEN_CACHE_ENTRIES)
    assert spark.conf.get("spark.sql.inMemoryColumnarStorage.compressed") == "false"
    # the local driver JVM (which runs the tasks) collects with the parallel collector
    beans = (
        spark.sparkContext._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    )
    collectors = {beans.get(i).getName() for i in range(beans.size())}
    assert collectors == {"PS Scavenge", "PS MarkSweep"}
