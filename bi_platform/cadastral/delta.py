"""Delta tables written by Spark and committed by delta-rs (ARCHITECTURE.md §6).

The Delta Spark jars are out of reach here, so a write is two steps:

1. Spark writes the data in parallel as Parquet into a fresh ``<uri>/data/<commit-uuid>/``
   directory (nothing is collected to the driver). Until step 2 those files are invisible:
   readers go through the Delta log, never the raw directory.
2. The driver lists the new ``*.parquet`` files, reads each file's footer (row count,
   per-column min/max/null count) and commits them as ``AddAction``s in ONE Delta
   transaction with ``deltalake``. An overwrite removes the previous files from the
   table's state (they stay on disk for time travel until vacuumed).

A Spark write that fails leaves the table at its previous version. Only local (or
``file://``) table locations are supported: the driver lists and stats the files itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import shutil
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DATA_DIR = "data"
WRITE_MODES = ("overwrite", "append")
#: String min/max longer than this are left out of the file statistics.
MAX_STRING_STAT = 256


class DeltaTableMissing(FileNotFoundError):  # noqa: N818 (name fixed by the contract)
    """No Delta table (no ``_delta_log``) at the given location."""

    def __init__(self, uri: str) -> None:
        super().__init__(f"no Delta table at {uri}")
        self.uri = uri


@dataclass(frozen=True)
class DeltaCommit:
    """One committed table version and the size of the table's state at that version."""

    uri: str
    version: int
    files: int
    rows: int
    bytes: int


def _table_path(uri: str | Path) -> Path:
    text = str(uri)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        raise ValueError(f"only local Delta tables are supported, got {text!r}")
    return Path(text).expanduser().resolve()


def _open(uri: str | Path, version: int | None = None) -> DeltaTable:
    path = _table_path(uri)
    try:
        return DeltaTable(str(path), version=version)
    except TableNotFoundError as exc:
        raise DeltaTableMissing(str(path)) from exc


def table_version(uri: str | Path) -> int | None:
    """The latest version of the table at ``uri``; None when there is no table."""
    try:
        return _open(uri).version()
    except DeltaTableMissing:
        return None


# --------------------------------------------------------------------------- statistics


def _stat_value(value: Any, arrow_type: pa.DataType) -> Any:
    """A footer min/max as its Delta stats JSON value; None when not representable."""
    if pa.types.is_boolean(arrow_type) and isinstance(value, bool):
        return value
    if pa.types.is_integer(arrow_type) and isinstance(value, int):
        return value
    if pa.types.is_decimal(arrow_type) and isinstance(value, Decimal) and value.is_finite():
        return value
    if pa.types.is_date32(arrow_type) and isinstance(value, dt.date):
        return value.isoformat()
    if (
        (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))
        and isinstance(value, str)
        and len(value) <= MAX_STRING_STAT
    ):
        return value
    # floats (NaN ordering), timestamps (INT96 has no stats), binary, nested: left out
    return None


def _file_stats(metadata: pq.FileMetaData, schema: pa.Schema) -> dict[str, Any]:
    """``numRecords``, ``minValues``, ``maxValues``, ``nullCount`` of one Parquet file.

    Only top-level primitive columns get stats; a min/max is left out when any row group
    with values lacks it, so a published bound is never wrong.
    """
    stats: dict[str, Any] = {"numRecords": metadata.num_rows}
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    columns = {
        metadata.schema.column(i).path: i
        for i in range(metadata.num_columns)
        if "." not in metadata.schema.column(i).path
    }
    for field in schema:
        index = columns.get(field.name)
        if index is None or pa.types.is_nested(field.type):
            continue
        low = high = None
        bounded = True
        null_count: int | None = 0
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(index)
            statistics = chunk.statistics
            if statistics is None or not statistics.has_null_count:
                null_count = None
                bounded = False
                break
            null_count += statistics.null_count
            if statistics.null_count >= metadata.row_group(group).num_rows:
                continue  # all null: no bound needed
            if not statistics.has_min_max:
                bounded = False
                continue
            group_low = _stat_value(statistics.min, field.type)
            group_high = _stat_value(statistics.max, field.type)
            if group_low is None or group_high is None:
                bounded = False
                continue
            low = group_low if low is None else min(low, group_low)
            high = group_high if high is None else max(high, group_high)
        if null_count is not None:
            nulls[field.name] = null_count
        if bounded and low is not None and high is not None:
            mins[field.name] = low
            maxs[field.name] = high
    stats["minValues"] = mins
    stats["maxValues"] = maxs
    stats["nullCount"] = nulls
    return stats


def _to_json(value: Any) -> str:
    """JSON with decimals written as exact numbers (``json`` would turn them into floats)."""
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}:{_to_json(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("non-finite float in Delta stats")
    return json.dumps(value)


# --------------------------------------------------------------------------- writing


def _spark_arrow_schema(df: DataFrame) -> pa.Schema:
    """The DataFrame's schema as Spark writes it to Parquet (every column nullable)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    timezone = df.sparkSession.conf.get("spark.sql.session.timeZone") or "UTC"
    schema = to_arrow_schema(df.schema, timezone=timezone)
    return pa.schema([field.with_nullable(True) for field in schema])


def _written_files(data_dir: Path) -> list[Path]:
    """The Parquet data files Spark left in ``data_dir`` (no .crc, _SUCCESS, temp dirs)."""
    return sorted(
        path
        for path in data_dir.rglob("*.parquet")
        if path.is_file()
        and not any(part.startswith(("_", ".")) for part in path.relative_to(data_dir).parts)
    )


def _add_actions(
    root: Path, files: list[Path]
) -> tuple[list[AddAction], pa.Schema | None, int, int]:
    """Add actions (zero-row files skipped), the first file's schema, rows and bytes."""
    actions: list[AddAction] = []
    schema: pa.Schema | None = None
    rows = size = 0
    for path in files:
        parquet = pq.ParquetFile(path)
        metadata = parquet.metadata
        file_schema = parquet.schema_arrow.remove_metadata()
        if schema is None:
            schema = file_schema
        if metadata.num_rows == 0:
            continue
        stat = path.stat()
        actions.append(
            AddAction(
                path=path.relative_to(root).as_posix(),
                size=stat.st_size,
                partition_values={},
                modification_time=int(stat.st_mtime * 1000),
                data_change=True,
                stats=_to_json(_file_stats(metadata, file_schema)),
            )
        )
        rows += metadata.num_rows
        size += stat.st_size
    return actions, schema, rows, size


def write_delta(
    df: DataFrame,
    uri: str | Path,
    *,
    mode: str = "overwrite",
    description: str | None = None,
    commit_metadata: Mapping[str, str] | None = None,
    plain_columns: Collection[str] = (),
) -> DeltaCommit:
    """Write ``df`` as a new version of the Delta table at ``uri`` (created if missing).

    ``mode`` is ``"overwrite"`` (the new version holds only these rows) or ``"append"``.
    ``commit_metadata`` is stored in the version's commit info (see
    :func:`latest_version_where`). ``plain_columns``: columns of ``df`` written without
    Parquet dictionary encoding (values nearly unique per row, such as keys and hashes,
    where the dictionary only costs time before the writer gives it up); names not in
    ``df`` are ignored. The files are written by Spark, then committed in one
    transaction: a failure at any point leaves the table at its previous version.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {WRITE_MODES}, got {mode!r}")
    root = _table_path(uri)
    data_dir = root / DATA_DIR / str(uuid.uuid4())
    previous = table_version(root)
    try:
        writer = df.write
        plain = set(plain_columns)
        for column in (c for c in df.columns if c in plain):
            writer = writer.option(f"parquet.enable.dictionary#{column}", "false")
        # "error" (= errorifexists): the only spelling Spark Connect accepts too
        writer.mode("error").parquet(str(data_dir))
        actions, schema, rows, size = _add_actions(root, _written_files(data_dir))
        if schema is None:
            schema = _spark_arrow_schema(df)
        delta_schema = DeltaSchema.from_arrow(schema)
        custom = {**(commit_metadata or {})}
        if description:
            custom["description"] = description
        properties = CommitProperties(custom_metadata=custom or None)
        if previous is None:
            create_table_with_add_actions(
                str(root),
                delta_schema,
                actions,
                mode="error",
                description=description,
                commit_properties=properties,
            )
        else:
            DeltaTable(str(root)).create_write_transaction(
                actions, mode=mode, schema=delta_schema, commit_properties=properties
            )
    except BaseException:
        # Drop the uncommitted files, unless the log moved on (e.g. a post-commit hook
        # failed after the commit, or another writer): then leave them for vacuum.
        if table_version(root) == previous:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    commit = _state(root, DeltaTable(str(root)))
    log.info(
        "Delta %s %s: version %d, +%d files, +%d rows (%d bytes)",
        mode,
        root,
        commit.version,
        len(actions),
        rows,
        size,
    )
    return commit


def table_state(uri: str | Path, version: int | None = None) -> DeltaCommit:
    """Files, rows and bytes of a table version, from its add actions (no data read)."""
    return _state(_table_path(uri), _open(uri, version))


def _state(root: Path, table: DeltaTable) -> DeltaCommit:
    """The files, rows and bytes of ``table``'s current state."""
    adds = pa.table(table.get_add_actions(flatten=True))
    rows = adds.column("num_records").to_pylist() if adds.num_rows else []
    sizes = adds.column("size_bytes").to_pylist() if adds.num_rows else []
    return DeltaCommit(
        uri=str(root),
        version=table.version(),
        files=adds.num_rows,
        rows=sum(r or 0 for r in rows),
        bytes=sum(s or 0 for s in sizes),
    )


# --------------------------------------------------------------------------- reading


def read_delta(spark: SparkSession, uri: str | Path, version: int | None = None) -> DataFrame:
    """The rows of the table at ``uri`` as of ``version`` (latest when None).

    Reads exactly the files of that version's state through the Delta log; an empty
    table gives an empty DataFrame with the table's schema.
    """
    table = _open(uri, version)
    files = table.file_uris()
    if files:
        return spark.read.parquet(*files)
    from pyspark.sql.pandas.types import from_arrow_schema

    arrow_schema = pa.schema(table.schema().to_arrow())
    return spark.createDataFrame([], from_arrow_schema(arrow_schema))


def restore(uri: str | Path, version: int) -> DeltaCommit:
    """Roll the table back: a new version whose state equals ``version``'s."""
    table = _open(uri)
    table.restore(version)
    root = _table_path(uri)
    commit = _state(root, DeltaTable(str(root)))
    log.info("Delta restore %s to version %d: now version %d", root, version, commit.version)
    return commit


def history(uri: str | Path) -> list[dict[str, Any]]:
    """The table's commits, newest first (``version``, ``operation``, ``timestamp``...)."""
    return _open(uri).history()


def latest_version_where(uri: str | Path, key: str, value: str) -> int | None:
    """The newest version whose commit metadata has ``key == value`` (as written by
    :func:`write_delta`'s ``commit_metadata``); None when no version has it or there is
    no table."""
    try:
        commits = history(uri)
    except DeltaTableMissing:
        return None
    versions = [int(c["version"]) for c in commits if str(c.get(key)) == value]
    return max(versions) if versions else None
