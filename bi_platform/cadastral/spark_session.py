"""Starting the cadastral Spark session with the settings of :mod:`.spark_config`.

Used by the Dagster resource (``CadastralSparkResource``, lazily: Spark starts only when
a Spark asset runs), the benchmark and the tests' session-scoped fixture, so all three
run the same configuration.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyspark

from bi_platform.cadastral.spark_config import local_cores, sql_settings, static_settings
from bi_platform.settings import Settings, get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: The storage level of every DataFrame the cadastral code keeps for reuse: memory, then
#: disk, deserialized. PySpark's ``StorageLevel.MEMORY_AND_DISK`` is the *serialized*
#: level (unlike Scala's): every cached batch would be serialized when stored and
#: deserialized on every read.
CACHE_LEVEL = pyspark.StorageLevel.MEMORY_AND_DISK_DESER


def total_cores(settings: Settings) -> int:
    """``SPARK_TOTAL_CORES``, else this machine's usable cores."""
    return settings.spark_total_cores or local_cores()


def session_settings(settings: Settings, *, master: str | None = None) -> dict[str, str]:
    """Every setting the session is built with (local/cluster mode; not Spark Connect)."""
    return static_settings(
        pyspark.__version__,
        total_cores(settings),
        master=master or settings.spark_master or "local[*]",
        jdbc_jar=settings.cadastral_jdbc_jar,
        driver_memory=settings.spark_driver_memory,
    )


def start_spark(
    settings: Settings | None = None,
    *,
    master: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> SparkSession:
    """Get or create the Spark session.

    ``PYSPARK_PYTHON`` is pointed at this interpreter first: without it Spark's Python
    workers (Arrow, ``foreachPartition``) run whatever ``python3`` is on PATH, which
    lacks pyarrow and psycopg. With ``SPARK_REMOTE`` the session is a Spark Connect
    client and only the runtime SQL settings apply.
    """
    from pyspark.sql import SparkSession

    settings = settings or get_settings()
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if settings.spark_remote:
        builder = builder.remote(settings.spark_remote)
        spark = builder.getOrCreate()
        for key, value in sql_settings(spark.version, total_cores(settings)).items():
            spark.conf.set(key, value)
        log.info("Spark Connect session to %s (Spark %s)", settings.spark_remote, spark.version)
        return spark
    conf = session_settings(settings, master=master)
    conf.update(extra or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # The runtime family is known exactly only once the JVM is up (a cluster may run a
    # different Spark than the client library): re-apply the SQL settings for it.
    for key, value in sql_settings(spark.version, total_cores(settings)).items():
        spark.conf.set(key, value)
    log.info(
        "Spark %s session on %s (%s shuffle partitions)",
        spark.version,
        conf.get("spark.master"),
        spark.conf.get("spark.sql.shuffle.partitions"),
    )
    return spark
