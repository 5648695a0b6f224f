"""Spark settings chosen by Spark version and cluster size.

The runtime family (Databricks runtime 13.x = Spark 3.4, 14.x = Spark 3.5, Spark 4)
picks the adaptive-execution and memory settings; the cluster's cores size the shuffle
partitions, the parallelism and the broadcast threshold (160 cores -> 480 / 320 / 25 MB).
Everything is a function of ``(spark_version, total_cores)``, so the same code picks
sensible settings on a laptop (``local[2]``), a 25-worker cluster, or Spark 4.

Pure: no Spark import. ``static_settings`` must be applied before the session starts
(serializer, parallelism, jars); ``sql_settings`` are runtime SQL confs that can also be
set on a running session (Spark Connect included).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bi_platform.runtime.clusters import POSTGRES_JDBC_JAR

#: Debian's ``libpostgresql-jdbc-java`` (installed by ``make``) puts the driver here.
DEFAULT_JDBC_JAR = POSTGRES_JDBC_JAR

_VERSION = re.compile(r"^(\d+)\.(\d+)")
#: Generated classes a session keeps (``spark.sql.codegen.cache.maxEntries``, static).
CODEGEN_CACHE_ENTRIES = 1000
#: The driver JVM's options on a local master, where that JVM runs every task: the
#: parallel (throughput) collector instead of G1 (see the README's cadastral notes).
LOCAL_DRIVER_JAVA_OPTIONS = "-XX:+UseParallelGC"


@dataclass(frozen=True)
class SparkProfile:
    """The runtime family a Spark version belongs to and the settings it gets."""

    family: str  # "3.4" (DBR 13), "3.5" (DBR 14), "4.x", "older"
    broadcast_threshold_mb: int
    skew_join: bool
    force_optimize_skewed_join: bool
    memory_fraction: float | None


def spark_family(spark_version: str) -> str:
    """``"3.4"`` / ``"3.5"`` / ``"4.x"`` / ``"older"`` for a version string like ``4.3.0``."""
    match = _VERSION.match(spark_version.strip())
    if not match:
        raise ValueError(f"unrecognised Spark version {spark_version!r}")
    major, minor = int(match.group(1)), int(match.group(2))
    if major >= 4:
        return "4.x"
    if (major, minor) == (3, 5):
        return "3.5"
    if (major, minor) == (3, 4):
        return "3.4"
    return "older"


def spark_profile(spark_version: str) -> SparkProfile:
    """Runtime-specific choices: Spark 3.4 (runtime 13), 3.5 (runtime 14), 4.x, older."""
    family = spark_family(spark_version)
    if family == "3.4":  # Databricks runtime 13.x
        return SparkProfile(family, 50, True, False, None)
    if family == "3.5":  # Databricks runtime 14.x: a more conservative broadcast threshold
        return SparkProfile(family, 25, True, False, 0.7)
    if family == "4.x":
        return SparkProfile(family, 25, True, False, 0.7)
    return SparkProfile(family, 10, False, False, None)


def broadcast_threshold_mb(spark_version: str, total_cores: int) -> int:
    """The broadcast threshold by cluster size: smaller clusters get a smaller one
    (160 cores 25 MB, 120 cores 20 MB, 100 cores 15 MB); small machines keep the
    runtime's default since the lookups are tiny either way."""
    base = spark_profile(spark_version).broadcast_threshold_mb
    if total_cores >= 160 or total_cores <= 32:
        return base
    if total_cores >= 120:
        return min(base, 20)
    return min(base, 15)


def shuffle_partitions(total_cores: int) -> int:
    """3 shuffle partitions per core (480 on a 160-core cluster)."""
    return max(2, 3 * total_cores)


def default_parallelism(total_cores: int) -> int:
    """2 tasks per core (320 on a 160-core cluster)."""
    return max(2, 2 * total_cores)


def sql_settings(spark_version: str, total_cores: int) -> dict[str, str]:
    """Runtime SQL confs: adaptive execution, skew joins, broadcast threshold, shuffle."""
    profile = spark_profile(spark_version)
    settings = {
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.adaptive.skewJoin.enabled": str(profile.skew_join).lower(),
        "spark.sql.autoBroadcastJoinThreshold": (
            f"{broadcast_threshold_mb(spark_version, total_cores)}MB"
        ),
        "spark.sql.shuffle.partitions": str(shuffle_partitions(total_cores)),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.parquet.compression.codec": "snappy",
        # Stage outputs stay cached only for the stages after them in the same run:
        # uncompressed, they cost ~10% less pipeline time than compressed (measured at
        # 1M persons) for a few hundred MB more of memory.
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
    }
    if profile.family in {"3.5", "4.x"}:
        settings["spark.sql.adaptive.forceOptimizeSkewedJoin"] = str(
            profile.force_optimize_skewed_join
        ).lower()
    return settings


def static_settings(
    spark_version: str,
    total_cores: int,
    *,
    master: str | None = None,
    jdbc_jar: Path | None = DEFAULT_JDBC_JAR,
    driver_memory: str | None = None,
    local_dir: Path | None = None,
) -> dict[str, str]:
    """Settings that must exist before the session starts, plus every SQL setting.

    On a ``local`` master the driver JVM, which then runs every task, gets
    :data:`LOCAL_DRIVER_JAVA_OPTIONS` as ``spark.driver.extraJavaOptions``; on a cluster
    the JVMs keep their defaults.
    """
    profile = spark_profile(spark_version)
    settings = {
        "spark.app.name": "bi_platform.cadastral",
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "spark.default.parallelism": str(default_parallelism(total_cores)),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Spark's Parquet writer leaves no _SUCCESS marker: data files are committed to
        # Delta by the driver, and only the committed ones are ever read.
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.parquet.enable.summary-metadata": "false",
        # One pipeline run generates ~90 whole-stage classes: with the default cache of
        # 100, a session's next run finds them evicted and compiles and JIT-warms them
        # all again (measured at 1M persons: the consolidated stage 12 s instead of 7 s).
        "spark.sql.codegen.cache.maxEntries": str(CODEGEN_CACHE_ENTRIES),
    }
    if profile.memory_fraction is not None:
        settings["spark.memory.fraction"] = str(profile.memory_fraction)
    if master:
        settings["spark.master"] = master
        if master.startswith("local"):
            settings["spark.driver.extraJavaOptions"] = LOCAL_DRIVER_JAVA_OPTIONS
    if jdbc_jar is not None and jdbc_jar.exists():
        settings["spark.jars"] = str(jdbc_jar)
    if driver_memory:
        settings["spark.driver.memory"] = driver_memory
    if local_dir is not None:
        settings["spark.local.dir"] = str(local_dir)
    settings.update(sql_settings(spark_version, total_cores))
    return settings


def connect_server_settings(total_cores: int = 2) -> dict[str, str]:
    """The pipeline's Spark settings for a Spark Connect server sized for ``total_cores``
    (what ``bi-platform cluster up spark-connect`` gives
    :func:`bi_platform.runtime.clusters.start_spark_connect`).

    Args:
        total_cores: the cores the server's tasks run on.

    Returns:
        :func:`static_settings` without master, jars, memory or scratch space (the
        server sets those).
    """
    settings = static_settings(importlib.metadata.version("pyspark"), total_cores, jdbc_jar=None)
    settings.pop("spark.app.name", None)
    return settings


def local_cores() -> int:
    """Cores this process may use (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
