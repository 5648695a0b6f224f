"""Keeping a PostgreSQL table equal to a Spark DataFrame (the plan's phase-2 CompareData).

The old CompareData collected millions of rows to the driver and compared them there
(:mod:`.compare_baseline`). Here only aggregates and, for small change sets, the changed
keys reach the driver:

* **incremental** — when ``cadastral.sync_state`` says the last *completed* sync applied
  Delta version N of the same table and N is still readable, the changes are the diff of
  ``(key, row_hash)`` between version N and the source; PostgreSQL is not read at all.
  When both versions are local files written with the same partition ids (stage outputs
  are hash-partitioned by the key), one ``mapInArrow`` task per partition id joins that
  id's files with pyarrow (:mod:`.pg_sync_diff`), with no shuffle; a key changed in two
  file pairs (the versions were not co-partitioned) or files that cannot be paired send
  the diff to a shuffled Spark join instead;
* **full** — otherwise (first sync, interrupted sync, ``full_compare=True``, no Delta
  version): PostgreSQL's ``(key, row_hash)`` are read in parallel through Spark JDBC
  (key-range ``predicates``) and full-outer-joined with the source.

Either way the diff ``(key, op)`` is persisted and counted by one aggregation, then
applied by ``mapInArrow`` tasks (:mod:`.pg_sync_apply`): one psycopg connection per task,
and per attempt (tenacity, exponential backoff) one transaction that COPYs the task's
rows into a temp table, upserts (only rows whose hash differs) and deletes; each task
returns one row ``(partition, rows, attempts)``, so retries are counted without
accumulators. Replaying a task is harmless, so a retry or a rerun after a crash
converges. Which rows a task gets:

* the source is a Delta version with local files and at most
  :data:`FILE_APPLY_MAX_CHANGES` changes (the usual daily change set): the changed keys
  (not the rows) go to the tasks, one task per Parquet file up to the number of cores
  (one transaction each); each task reads its files with pyarrow and keeps the changed
  rows, so Spark never decodes the unchanged rows' columns nor shuffles the changed ones;
* otherwise the changed rows are joined back from the source in Spark and repartitioned
  by key into about :data:`ROWS_PER_PARTITION` rows per task (the first sync into an
  empty table COPYs the source's own partitions straight into the target).

A sync is marked ``in_progress`` in ``sync_state`` before the first task commits and
``done`` after the last: tasks commit independently, so after a crash the table may hold
part of the changes, and the next sync sees ``in_progress`` and compares in full.

Only DataFrame APIs are used (no ``SparkContext``, RDD or accumulator), so the same code
runs on a classic session (local or a cluster) and over Spark Connect.

:func:`verify_in_sync` compares bucketed checksums (reladiff-style) of the source with
checksums PostgreSQL computes from its own columns via :func:`.row_hash.row_hash_sql`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bi_platform.cadastral.pg_sync_apply import (
    APPLY_STATS_SCHEMA,
    file_applier,
    partition_applier,
)
from bi_platform.cadastral.pg_sync_apply import SyncFaults as SyncFaults
from bi_platform.cadastral.pg_sync_apply import TransientSyncError as TransientSyncError
from bi_platform.cadastral.pg_sync_apply import _connect as _connect
from bi_platform.cadastral.pg_sync_apply import apply_rows as apply_rows
from bi_platform.cadastral.pg_sync_diff import pair_differ, pair_files
from bi_platform.cadastral.row_hash import ROW_HASH, quote_ident, row_hash_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

SCHEMA = "cadastral"
STATE_TABLE = "sync_state"
#: Rows per JDBC round trip when reading PostgreSQL's (key, row_hash).
JDBC_FETCHSIZE = "50000"
#: Changed rows per apply partition (at least ``spark.default.parallelism`` partitions).
ROWS_PER_PARTITION = 100_000
#: At most this many changes are applied by tasks reading the source's Parquet files
#: (the changed keys travel to them through the driver); more go through a Spark join.
FILE_APPLY_MAX_CHANGES = 250_000
#: Broadcast the changed keys when joining them back to the source below this many rows.
BROADCAST_CHANGES = 2_000_000
#: Leading key characters forming one checksum bucket in :func:`verify_in_sync`.
BUCKET_CHARS = 3


class SyncError(RuntimeError):
    """The sync could not run (schema mismatch, concurrent sync, unreachable server...)."""


@dataclass(frozen=True)
class SyncResult:
    inserted: int
    updated: int
    deleted: int
    unchanged: int
    seconds: float
    mode: str  # "incremental" (Delta version diff) | "full" (JDBC compare) | "collect"
    source_version: int | None
    partitions: int
    retries: int
    #: How the diff was computed: "file_pairs" (Delta versions diffed per pair of
    #: co-partitioned files, no shuffle) | "shuffle" (Spark join); None when no Spark
    #: diff ran (mode "collect", or the target already holds the source's Delta version).
    diff: str | None = None


@dataclass(frozen=True)
class SyncVerification:
    pg_count: int
    source_count: int
    mismatched_buckets: int
    hash_differences: int  # missing + extra + changed
    seconds: float
    missing: int = 0  # in the source, not in PostgreSQL
    extra: int = 0  # in PostgreSQL, not in the source
    changed: int = 0  # in both, content differs (or stored row_hash is stale)

    @property
    def in_sync(self) -> bool:
        return (
            self.pg_count == self.source_count
            and self.hash_differences == 0
            and (self.mismatched_buckets == 0)
        )


# -- DDL -------------------------------------------------------------------------------


def pg_type(data_type) -> str:
    """PostgreSQL type of a Spark type (contract §6)."""
    from pyspark.sql import types as st

    simple = {
        st.StringType: "text",
        st.DateType: "date",
        st.IntegerType: "integer",
        st.LongType: "bigint",
        st.ShortType: "smallint",
        st.BooleanType: "boolean",
    }
    for spark_type, name in simple.items():
        if isinstance(data_type, spark_type):
            return name
    if isinstance(data_type, st.DecimalType):
        return f"numeric({data_type.precision},{data_type.scale})"
    if isinstance(data_type, st.ArrayType) and isinstance(data_type.elementType, st.StringType):
        return "text[]"
    raise SyncError(f"no PostgreSQL type for Spark type {data_type.simpleString()}")


def table_columns(source: DataFrame, key: str) -> list[tuple[str, str]]:
    """``(name, pg type)`` of the target's columns: the source's, ``row_hash`` last."""
    if key not in source.columns:
        raise SyncError(f"key column {key!r} not in the source")
    if ROW_HASH not in source.columns:
        raise SyncError("the source has no row_hash column (use row_hash.with_row_hash)")
    columns = [(f.name, pg_type(f.dataType)) for f in source.schema.fields if f.name != ROW_HASH]
    return [*columns, (ROW_HASH, "text")]


def create_table_sql(table: str, columns: list[tuple[str, str]], key: str) -> str:
    """``CREATE TABLE IF NOT EXISTS cadastral.<table>`` with PK ``key``."""
    defs = [
        f"{quote_ident(name)} {typ}" + (" NOT NULL" if name in (key, ROW_HASH) else "")
        for name, typ in columns
    ]
    defs.append(f"PRIMARY KEY ({quote_ident(key)})")
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(SCHEMA)}.{quote_ident(table)} ({', '.join(defs)})"
    )


STATE_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.{STATE_TABLE} (
    table_name text PRIMARY KEY,
    status text NOT NULL,             -- in_progress | done | external
    delta_uri text,
    delta_version bigint,             -- version of the last completed sync
    target_version bigint,            -- version being applied (status in_progress)
    mode text,
    inserted bigint, updated bigint, deleted bigint, unchanged bigint,
    started_at timestamptz, finished_at timestamptz
)"""


def ensure_table(
    conn: psycopg.Connection, table: str, columns: list[tuple[str, str]], key: str
) -> None:
    """Create schema, target table and ``sync_state`` if missing; refuse a different shape."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(SCHEMA)}")
    conn.execute(create_table_sql(table, columns, key))
    conn.execute(STATE_DDL)
    found = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        (f"{quote_ident(SCHEMA)}.{quote_ident(table)}",),
    ).fetchall()
    expected = [(n, t.replace(" ", "")) for n, t in columns]
    actual = [(n, t.replace(" ", "")) for n, t in found]
    if actual != expected:
        raise SyncError(f"{SCHEMA}.{table} has columns {actual}, the source needs {expected}")


# -- sync_state ------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncState:
    status: str
    delta_uri: str | None
    delta_version: int | None
    target_version: int | None


def read_state(conn: psycopg.Connection, table: str) -> SyncState | None:
    row = conn.execute(
        f"SELECT status, delta_uri, delta_version, target_version FROM {SCHEMA}.{STATE_TABLE}"
        " WHERE table_name = %s",
        (table,),
    ).fetchone()
    return SyncState(*row) if row else None


def mark_in_progress(
    conn: psycopg.Connection,
    table: str,
    delta_uri: str | None,
    target_version: int | None,
    mode: str,
) -> None:
    conn.execute(
        f"INSERT INTO {SCHEMA}.{STATE_TABLE} AS s (table_name, status, delta_uri,"
        " target_version, mode, started_at) VALUES (%s, 'in_progress', %s, %s, %s, now())"
        " ON CONFLICT (table_name) DO UPDATE SET status = 'in_progress',"
        " delta_uri = excluded.delta_uri, target_version = excluded.target_version,"
        " mode = excluded.mode, started_at = now(), finished_at = NULL",
        (table, delta_uri, target_version, mode),
    )


def mark_done(
    conn: psycopg.Connection,
    table: str,
    delta_uri: str | None,
    version: int | None,
    mode: str,
    counts: dict[str, int],
    status: str = "done",
) -> None:
    conn.execute(
        f"INSERT INTO {SCHEMA}.{STATE_TABLE} AS s (table_name, status, delta_uri,"
        " delta_version, target_version, mode, inserted, updated, deleted, unchanged,"
        " started_at, finished_at) VALUES (%s, %s, %s, %s, NULL, %s, %s, %s, %s, %s, now(),"
        " now()) ON CONFLICT (table_name) DO UPDATE SET status = excluded.status,"
        " delta_uri = excluded.delta_uri, delta_version = excluded.delta_version,"
        " target_version = NULL, mode = excluded.mode, inserted = excluded.inserted,"
        " updated = excluded.updated, deleted = excluded.deleted,"
        " unchanged = excluded.unchanged, finished_at = now()",
        (
            table,
            status,
            delta_uri,
            version,
            mode,
            counts["I"],
            counts["U"],
            counts["D"],
            counts["N"],
        ),
    )


# -- connections -----------------------------------------------------------------------


def jdbc_connection(pg_url: str) -> tuple[str, dict[str, str]]:
    """JDBC URL (no credentials in it) and connection properties for a psycopg URL."""
    params = conninfo_to_dict(pg_url)
    host = params.pop("host", None) or "localhost"
    if host.startswith("/"):
        raise SyncError("Spark JDBC needs a TCP host, not a Unix socket directory")
    port = params.pop("port", None) or "5432"
    dbname = params.pop("dbname", None) or params.get("user") or ""
    props = {"driver": "org.postgresql.Driver"}
    for name in (
        "user",
        "password",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "application_name",
        "connect_timeout",
    ):
        value = params.pop(name, None)
        if value is not None:
            props["connectTimeout" if name == "connect_timeout" else name] = str(value)
    if "user" not in props:
        props["user"] = os.environ.get("PGUSER") or os.environ.get("USER", "postgres")
    return f"jdbc:postgresql://{host}:{port}/{dbname}", props


@contextmanager
def _py4j_quiet() -> Iterator[None]:
    """Silence py4j's DEBUG log (it echoes every value sent to the JVM, passwords too)."""
    py4j_log = logging.getLogger("py4j")
    previous = py4j_log.level
    if py4j_log.getEffectiveLevel() < logging.INFO:
        py4j_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        py4j_log.setLevel(previous)


def jdbc_read(spark: SparkSession, pg_url: str, table: str, **kwargs: Any) -> DataFrame:
    """``spark.read.jdbc`` with credentials in properties, never in the URL nor the log."""
    url, props = jdbc_connection(pg_url)
    props["fetchsize"] = JDBC_FETCHSIZE
    with _py4j_quiet():
        return spark.read.jdbc(url, table, properties=props, **kwargs)


def safe_url(pg_url: str) -> str:
    """``pg_url`` without its password, for messages."""
    from bi_platform.lib.secrets import mask_password

    try:
        return mask_password(pg_url)
    except ValueError:
        return "<postgres url>"


# -- applying changes -------------------------------------------------------------------


def _is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no SparkContext, no RDDs on the client)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _parallelism(spark: SparkSession) -> int:
    """Spark's default parallelism (at least 2): the SparkContext's in classic mode; over
    Spark Connect the session's ``spark.default.parallelism``, else its shuffle partitions."""
    if not _is_connect(spark):
        return max(2, spark.sparkContext.defaultParallelism)
    value = spark.conf.get("spark.default.parallelism", None) or spark.conf.get(
        "spark.sql.shuffle.partitions"
    )
    return max(2, int(value))


def _cores(spark: SparkSession, parallelism: int) -> int:
    """Cores running tasks at once: N of a ``local[N]`` master (the machine's cores for
    ``local[*]``), else half the default parallelism (2 tasks per core, as
    :func:`.spark_config.default_parallelism` sets it)."""
    if not _is_connect(spark):
        match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", spark.sparkContext.master)
        if match:
            return int(match.group(1)) if match.group(1) != "*" else os.cpu_count() or 1
        if spark.sparkContext.master == "local":
            return 1
    return max(1, parallelism // 2)


def _num_partitions(df: DataFrame) -> int | None:
    """Partitions of ``df``'s plan; None over Spark Connect (no RDD to ask)."""
    if _is_connect(df.sparkSession):
        return None
    return df.rdd.getNumPartitions()


# -- diffs -----------------------------------------------------------------------------


def _diff(old: DataFrame, new: DataFrame, key: str) -> DataFrame:
    """Full outer join of two ``(key, row_hash)`` sets -> ``(key, op, rows)``, one row per
    key with ``rows`` 1; op N = unchanged.

    Unchanged rows keep a null key so the persisted diff costs almost nothing for them.
    """
    from pyspark.sql import functions as sf

    o = old.select(sf.col(key).alias("_k_old"), sf.col(ROW_HASH).alias("_h_old"))
    n = new.select(sf.col(key).alias("_k_new"), sf.col(ROW_HASH).alias("_h_new"))
    # Shuffled hash join: no sort of the million keys on either side.
    joined = o.hint("shuffle_hash").join(n, o["_k_old"] == n["_k_new"], "full_outer")
    op = (
        sf.when(sf.col("_k_old").isNull(), sf.lit("I"))
        .when(sf.col("_k_new").isNull(), sf.lit("D"))
        .when(sf.col("_h_old") != sf.col("_h_new"), sf.lit("U"))
        .otherwise(sf.lit("N"))
    )
    return joined.select(
        sf.when(op == "N", sf.lit(None)).otherwise(sf.coalesce("_k_new", "_k_old")).alias(key),
        op.alias("op"),
        sf.lit(1).cast("long").alias("rows"),
    )


def _changes(
    source: DataFrame,
    diff: DataFrame,
    key: str,
    counts: dict[str, int],
    columns: list[tuple[str, str]],
) -> DataFrame:
    """Rows to apply: ``(op, *columns)``; I/U rows joined back from the source."""
    from pyspark.sql import functions as sf

    names = [n for n, _ in columns]
    upserts = counts["I"] + counts["U"]
    if counts["U"] == 0 and counts["D"] == 0 and counts["N"] == 0:
        # Empty target (first sync): every source row is an insert, no join needed.
        return source.select(sf.lit("I").alias("op"), *[sf.col(n) for n in names])
    parts = []
    if upserts:
        keys = diff.filter(sf.col("op").isin("I", "U")).select(key, "op")
        if upserts <= BROADCAST_CHANGES:
            keys = sf.broadcast(keys)
        parts.append(source.join(keys, key).select("op", *names))
    if counts["D"]:
        parts.append(
            diff.filter(sf.col("op") == "D").select(
                "op",
                *[
                    sf.col(key)
                    if n == key
                    else sf.lit(None).cast(source.schema[n].dataType).alias(n)
                    for n in names
                ],
            )
        )
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result


def _file_pair_diff(
    spark: SparkSession, source: DataFrame, key: str, uri: str, old_version: int, version: int
) -> tuple[DataFrame | None, str]:
    """The ``(key, op, rows)`` diff of two Delta versions computed per pair of
    co-partitioned files (:mod:`.pg_sync_diff`): one ``mapInArrow`` task per partition
    id, no shuffle.

    Usable when both versions have local files all named by Spark with a partition id,
    the same set of partition ids, and ``key`` and ``row_hash`` columns. Whether the
    versions really are co-partitioned by ``key`` is checked afterwards by the caller: no
    changed key may appear twice (on the driver's copy of the changed keys, or with
    :func:`_repeated_key` when there are too many to fetch).

    Args:
        spark: the session.
        source: the new version as a DataFrame (for the key's type).
        key: the key column.
        uri: the Delta table.
        old_version: the version the target holds.
        version: the version being synced (``source``).

    Returns:
        ``(diff, description)``: the diff and e.g. ``"8 file pairs"``, or None and why
        the file pairs cannot be used.
    """
    from pyspark.sql import types as st
    from pyspark.sql.pandas.types import to_arrow_type

    wanted = [(key, ""), (ROW_HASH, "")]
    old_files = _local_files(uri, old_version, wanted)
    new_files = _local_files(uri, version, wanted)
    if old_files is None or new_files is None:
        return None, "a version's files are not local or lack key/row_hash"
    pairs, reason = pair_files(old_files, new_files)
    if pairs is None:
        return None, reason
    key_field = source.schema[key]
    try:
        key_type = to_arrow_type(key_field.dataType)
    except Exception as exc:  # a key type Arrow cannot carry
        return None, f"key type {key_field.dataType.simpleString()}: {type(exc).__name__}"
    schema = st.StructType(
        [
            st.StructField(key, key_field.dataType, True),
            st.StructField("op", st.StringType(), False),
            st.StructField("rows", st.LongType(), False),
        ]
    )
    ids = spark.range(0, len(pairs), 1, numPartitions=len(pairs))
    return ids.mapInArrow(pair_differ(pairs, key, key_type), schema), f"{len(pairs)} file pairs"


def _repeated_key(diff: DataFrame, key: str) -> bool:
    """True when a non-null key appears twice in ``diff`` (only changed rows are read):
    a file-pair diff of versions not co-partitioned by ``key`` (a D in one pair, an I in
    another)."""
    from pyspark.sql import functions as sf

    repeated = (
        diff.filter(sf.col(key).isNotNull())
        .groupBy(key)
        .count()
        .filter(sf.col("count") > 1)
        .limit(1)
        .collect()
    )
    return bool(repeated)


def _changed_keys(diff: DataFrame, key: str) -> Any:
    """The ``(key, op)`` rows of ``diff``'s changes as a pyarrow Table on the driver
    (callers bound their number by :data:`FILE_APPLY_MAX_CHANGES`)."""
    from pyspark.sql import functions as sf

    return diff.filter(sf.col(key).isNotNull()).select(key, "op").toArrow()


def _count_ops(diff: DataFrame) -> dict[str, int]:
    """Rows per op (the sum of ``rows``) from one aggregation (4 rows reach the driver)."""
    from pyspark.sql import functions as sf

    counts = {"I": 0, "U": 0, "D": 0, "N": 0}
    for row in diff.groupBy("op").agg(sf.sum("rows").alias("rows")).collect():
        counts[row["op"]] = int(row["rows"])
    return counts


def read_pg_hashes(
    spark: SparkSession, pg_url: str, table: str, key: str, partitions: int
) -> DataFrame:
    """``(key, row_hash)`` of the target, read by ``partitions`` parallel JDBC queries."""
    k = f'{quote_ident(key)} COLLATE "C"'
    bounds = sorted({format(i * 256 // partitions, "02x") for i in range(1, partitions)})
    predicates = []
    low = None
    for bound in [*bounds, None]:
        clauses = []
        if low is not None:
            clauses.append(f"{k} >= '{low}'")
        if bound is not None:
            clauses.append(f"{k} < '{bound}'")
        predicates.append(" AND ".join(clauses) or "TRUE")
        low = bound
    target = f"{quote_ident(SCHEMA)}.{quote_ident(table)}"
    return jdbc_read(spark, pg_url, target, predicates=predicates).select(key, ROW_HASH)


def _delta_files(uri: str, version: int) -> tuple[list[str], list[str]] | None:
    """Data files and column names of Delta ``version`` of ``uri``; None when unreadable."""
    try:
        from deltalake import DeltaTable

        snapshot = DeltaTable(uri, version=version)
        files = snapshot.file_uris()
        names = [field.name for field in snapshot.schema().fields]
    except Exception as exc:  # any failure means "not readable"
        log.info("Delta version %s of %s not readable (%s)", version, uri, type(exc).__name__)
        return None
    for path in files:
        local = path.removeprefix("file://")
        if "://" not in local and not Path(local).exists():
            log.info("Delta version %s of %s lost file %s (vacuumed)", version, uri, path)
            return None
    return files, names


def _read_version_hashes(
    spark: SparkSession, files: list[str], names: list[str], key: str, like: DataFrame
) -> DataFrame:
    """``(key, row_hash)`` of a Delta snapshot; only those two columns are read."""
    from bi_platform.cadastral.row_hash import with_row_hash

    wanted = like.select(key, ROW_HASH).schema
    if not files:
        return spark.createDataFrame([], wanted)
    if ROW_HASH in names:
        # Explicit schema: no schema-inference job, and Parquet reads just two columns.
        return spark.read.schema(wanted).parquet(*files)
    return with_row_hash(spark.read.parquet(*files), key).select(key, ROW_HASH)


def _local_files(
    uri: str | None, version: int | None, columns: list[tuple[str, str]]
) -> list[str] | None:
    """Local paths of the Parquet files of Delta ``version`` of ``uri``; None when the
    version is unknown or unreadable, a file is not on a local filesystem, or the
    version's schema lacks one of ``columns`` (e.g. ``row_hash`` computed on the fly)."""
    if uri is None or version is None:
        return None
    found = _delta_files(uri, version)
    if found is None:
        return None
    files, names = found
    if not {name for name, _ in columns} <= set(names):
        return None
    paths = [path.removeprefix("file://") for path in files]
    if any("://" in path for path in paths):
        return None
    return paths


def _apply_stats(stats: list) -> tuple[int, int, int]:
    """``(partitions, non-empty partitions, retries)`` from the apply tasks' rows."""
    applied = sum(1 for row in stats if row["rows"])
    retried = sum(max(0, row["attempts"] - 1) for row in stats)
    return len(stats), applied, retried


def _apply_changes(
    spark: SparkSession,
    source: DataFrame,
    diff: DataFrame,
    counts: dict[str, int],
    *,
    pg_url: str,
    table: str,
    columns: list[tuple[str, str]],
    key: str,
    retries: int,
    faults: SyncFaults,
    empty_target: bool,
    source_files: list[str] | None,
    parallelism: int,
    changed: Any = None,
) -> tuple[int, int, int]:
    """Apply the changes of ``diff`` (counted in ``counts``) to PostgreSQL.

    With the source's Parquet files known and at most :data:`FILE_APPLY_MAX_CHANGES`
    changes, the changed keys go to the apply tasks, which read the files themselves
    (:func:`.pg_sync_apply.file_applier`): one task per file up to the cores, and no
    Spark scan, join nor shuffle of the source's columns. Otherwise the changed rows are
    joined back from the source in Spark and applied per partition, about
    :data:`ROWS_PER_PARTITION` rows each (the first sync into an empty table keeps the
    source's own partitions).

    Returns:
        ``(partitions, non-empty partitions, retries)``.
    """
    import pyarrow as pa

    n_changes = counts["I"] + counts["U"] + counts["D"]
    if not empty_target and source_files and n_changes <= FILE_APPLY_MAX_CHANGES:
        if changed is None:
            changed = _changed_keys(diff, key)
        ops = changed.column("op").to_pylist()
        keys = changed.column(key).combine_chunks().cast(pa.string())
        upserts = keys.filter([op != "D" for op in ops])
        deletes = [k for k, op in zip(keys.to_pylist(), ops, strict=True) if op == "D"]
        tasks = max(1, min(len(source_files), _cores(spark, parallelism)))
        log.info(
            "apply: %d tasks read %d Parquet files for %d upserts, %d deletes",
            tasks,
            len(source_files),
            len(upserts),
            len(deletes),
        )
        applier = file_applier(
            pg_url,
            table,
            columns,
            key,
            retries,
            faults,
            files=[source_files[i::tasks] for i in range(tasks)],
            upsert_keys=upserts,
            delete_keys=[deletes[i::tasks] for i in range(tasks)],
        )
        ids = spark.range(0, tasks, 1, numPartitions=tasks)
        return _apply_stats(ids.mapInArrow(applier, APPLY_STATS_SCHEMA).collect())

    partitions = max(parallelism, math.ceil(n_changes / ROWS_PER_PARTITION))
    changes = _changes(source, diff, key, counts, columns)
    own = _num_partitions(changes)
    if not (empty_target and (own is None or own >= parallelism)):
        # (First sync: the source's own partitions, no shuffle of every row; over Spark
        # Connect their number is only known from the stats.)
        changes = changes.repartition(partitions, key)
    applier = partition_applier(
        pg_url, table, columns, key, retries, faults, inserts_only=empty_target
    )
    return _apply_stats(changes.mapInArrow(applier, APPLY_STATS_SCHEMA).collect())


# -- the sync --------------------------------------------------------------------------


def sync_to_postgres(
    spark: SparkSession,
    source: DataFrame,
    pg_url: str,
    *,
    table: str,
    key: str = "chave_pessoa",
    delta_uri: str | None = None,
    delta_version: int | None = None,
    full_compare: bool = False,
    retries: int = 5,
    faults: SyncFaults | None = None,
) -> SyncResult:
    """Make ``cadastral.<table>`` equal to ``source`` (which carries ``row_hash``).

    ``delta_uri``/``delta_version`` name the Delta snapshot ``source`` is; with them a
    later sync can diff Delta versions instead of reading PostgreSQL. ``retries``: extra
    attempts per apply partition on transient errors.
    """
    import pyarrow.compute as pc

    from bi_platform.cadastral.spark_session import CACHE_LEVEL

    started = time.monotonic()
    faults = faults or SyncFaults()
    columns = table_columns(source, key)
    uri = str(delta_uri) if delta_uri is not None else None
    version = delta_version if uri is not None else None
    parallelism = _parallelism(spark)

    with _connect(pg_url, autocommit=True) as conn:
        ensure_table(conn, table, columns, key)
        lock = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (f"{SCHEMA}.{table}",)
        ).fetchone()[0]
        if not lock:
            raise SyncError(f"another sync of {SCHEMA}.{table} is running")
        state = read_state(conn, table)

        mode, old = "full", None
        if (
            not full_compare
            and version is not None
            and state is not None
            and (
                state.status == "done"
                and state.delta_uri == uri
                and state.delta_version is not None
            )
        ):
            found = _delta_files(uri, state.delta_version)
            if found is not None:
                mode = "incremental"
                old = _read_version_hashes(spark, *found, key, source)
        if mode == "full":
            reason = (
                "forced"
                if full_compare
                else "no Delta version"
                if version is None
                else "no sync state"
                if state is None
                else f"state {state.status}"
                if state.status != "done"
                else "different Delta table"
                if state.delta_uri != uri
                else "last synced version not readable"
            )
            log.info(
                "sync %s.%s: full compare (%s) against %s", SCHEMA, table, reason, safe_url(pg_url)
            )
            old = read_pg_hashes(spark, pg_url, table, key, parallelism)
        else:
            log.info(
                "sync %s.%s: incremental, Delta version %s -> %s of %s",
                SCHEMA,
                table,
                state.delta_version,
                version,
                uri,
            )

        same_version = mode == "incremental" and state.delta_version == version
        diff, diff_kind = None, "shuffle"
        if same_version:
            diff_kind = None  # the diff is never computed
        elif mode == "incremental":
            diff, described = _file_pair_diff(spark, source, key, uri, state.delta_version, version)
            if diff is not None:
                diff_kind = "file_pairs"
                log.info("sync %s.%s: diff: %s, no shuffle", SCHEMA, table, described)
            else:
                log.info("sync %s.%s: diff: shuffle join (%s)", SCHEMA, table, described)
        else:
            log.info("sync %s.%s: diff: shuffle join (full compare)", SCHEMA, table)
        if diff is None:
            diff = _diff(old, source, key)
        diff = diff.persist(CACHE_LEVEL)
        changed, repeated = None, False
        try:
            if same_version:
                # Same snapshot as the last completed sync: nothing can have changed.
                counts = {"I": 0, "U": 0, "D": 0, "N": source.count()}
            else:
                counts = _count_ops(diff)
                if diff_kind == "file_pairs" and counts["I"] + counts["U"] + counts["D"] <= (
                    FILE_APPLY_MAX_CHANGES
                ):
                    # the keys the file-scan apply needs anyway: checked on the driver
                    changed = _changed_keys(diff, key)
                    repeated = pc.count_distinct(changed.column(key)).as_py() < changed.num_rows
                elif diff_kind == "file_pairs":
                    repeated = _repeated_key(diff, key)
                if repeated:
                    log.warning(
                        "sync %s.%s: a key changed in two file pairs (the versions are not"
                        " co-partitioned by %s): diff: shuffle join",
                        SCHEMA,
                        table,
                        key,
                    )
                    diff.unpersist()
                    diff_kind = "shuffle"
                    diff = _diff(old, source, key).persist(CACHE_LEVEL)
                    counts = _count_ops(diff)
                    changed = None
            n_changes = counts["I"] + counts["U"] + counts["D"]
            # PostgreSQL itself was read empty: COPY straight into the target.
            empty_target = mode == "full" and counts["U"] + counts["D"] + counts["N"] == 0
            retried = applied = partitions = 0
            compared = time.monotonic()
            log.info("sync %s.%s: diff %s in %.1f s", SCHEMA, table, counts, compared - started)
            mark_in_progress(conn, table, uri, version, mode)
            if n_changes:
                partitions, applied, retried = _apply_changes(
                    spark,
                    source,
                    diff,
                    counts,
                    pg_url=pg_url,
                    table=table,
                    columns=columns,
                    key=key,
                    retries=retries,
                    faults=faults,
                    empty_target=empty_target,
                    source_files=_local_files(uri, version, columns),
                    parallelism=parallelism,
                    changed=changed,
                )
            mark_done(conn, table, uri, version, mode, counts)
            log.info(
                "sync %s.%s: applied %s changes (%s of %s partitions non-empty) in %.1f s",
                SCHEMA,
                table,
                n_changes,
                applied,
                partitions,
                time.monotonic() - compared,
            )
        finally:
            diff.unpersist()
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"{SCHEMA}.{table}",))

    result = SyncResult(
        inserted=counts["I"],
        updated=counts["U"],
        deleted=counts["D"],
        unchanged=counts["N"],
        seconds=round(time.monotonic() - started, 3),
        mode=mode,
        source_version=version,
        partitions=partitions,
        retries=retried,
        diff=diff_kind,
    )
    log.info("sync %s.%s done: %s", SCHEMA, table, result)
    return result


# -- verification ----------------------------------------------------------------------


def verify_in_sync(
    spark: SparkSession,
    source: DataFrame,
    pg_url: str,
    *,
    table: str,
    key: str = "chave_pessoa",
) -> SyncVerification:
    """Compare PostgreSQL with ``source`` by bucketed checksums, then exact diffs.

    Buckets are the first ``BUCKET_CHARS`` characters of the key; per bucket both sides
    give the row count and the sum of the first 60 bits of the row hash. PostgreSQL's hash
    is recomputed from its columns (:func:`row_hash_sql`), and rows whose stored
    ``row_hash`` is stale make their bucket mismatch too. Only mismatched buckets are
    compared row by row (in Spark, reading them through JDBC).
    """
    from pyspark.sql import functions as sf

    started = time.monotonic()
    if ROW_HASH not in source.columns:
        from bi_platform.cadastral.row_hash import with_row_hash

        source = with_row_hash(source, key)
    columns = table_columns(source, key)
    hashed = [(n, t) for n, t in columns if n not in (key, ROW_HASH)]
    expr = row_hash_sql(hashed)
    k = quote_ident(key)
    target = f"{quote_ident(SCHEMA)}.{quote_ident(table)}"
    recomputed = f"SELECT {k} AS k, {expr} AS h, {quote_ident(ROW_HASH)} AS stored FROM {target}"
    with _connect(pg_url, autocommit=True) as conn:
        pg_rows = conn.execute(
            f"SELECT left(k, {BUCKET_CHARS}) AS b, count(*),"
            " coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint), 0),"
            " count(*) FILTER (WHERE stored IS DISTINCT FROM h)"
            f" FROM ({recomputed}) r GROUP BY 1"
        ).fetchall()
    pg_buckets = {b: (int(c), int(s)) for b, c, s, _ in pg_rows}
    stale = {b for b, _, _, bad in pg_rows if bad}

    bucket = sf.substring(sf.col(key), 1, BUCKET_CHARS)
    slice60 = sf.conv(sf.substring(sf.col(ROW_HASH), 1, 15), 16, 10).cast("decimal(38,0)")
    src_rows = (
        source.groupBy(bucket.alias("b"))
        .agg(sf.count(sf.lit(1)).alias("c"), sf.sum(slice60).alias("s"))
        .collect()
    )
    src_buckets = {r["b"]: (int(r["c"]), int(r["s"] or 0)) for r in src_rows}
    mismatched = sorted(
        b
        for b in set(pg_buckets) | set(src_buckets)
        if pg_buckets.get(b) != src_buckets.get(b) or b in stale
    )
    pg_count = sum(c for c, _ in pg_buckets.values())
    source_count = sum(c for c, _ in src_buckets.values())

    missing = extra = changed = 0
    if mismatched:
        listed = ", ".join("'" + b.replace("'", "''") + "'" for b in mismatched)
        query = (
            f"(SELECT k AS _k_pg, h AS _h_pg, stored AS _stored FROM ({recomputed}) r"
            f" WHERE left(k, {BUCKET_CHARS}) IN ({listed})) AS mismatched"
        )
        pg_side = jdbc_read(spark, pg_url, query)
        src_side = source.filter(bucket.isin(mismatched)).select(
            sf.col(key).alias("_k_src"), sf.col(ROW_HASH).alias("_h_src")
        )
        joined = src_side.join(pg_side, src_side["_k_src"] == pg_side["_k_pg"], "full_outer")
        kind = (
            sf.when(sf.col("_k_pg").isNull(), "missing")
            .when(sf.col("_k_src").isNull(), "extra")
            .when(
                (sf.col("_h_src") != sf.col("_h_pg")) | (sf.col("_stored") != sf.col("_h_pg")),
                "changed",
            )
        )
        for row in joined.groupBy(kind.alias("kind")).count().collect():
            if row["kind"] == "missing":
                missing = int(row["count"])
            elif row["kind"] == "extra":
                extra = int(row["count"])
            elif row["kind"] == "changed":
                changed = int(row["count"])
    result = SyncVerification(
        pg_count=pg_count,
        source_count=source_count,
        mismatched_buckets=len(mismatched),
        hash_differences=missing + extra + changed,
        seconds=round(time.monotonic() - started, 3),
        missing=missing,
        extra=extra,
        changed=changed,
    )
    log.info("verify %s.%s: %s", SCHEMA, table, result)
    return result
