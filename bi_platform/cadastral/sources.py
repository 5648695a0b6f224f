"""Reading the raw cadastral exports (contract §2).

Every source table lives under ``<raw_root>/<table>/dat_ref_carga=YYYY-MM-DD/*.parquet``
(Hive-style partitions, one FULL snapshot per load date). The partition value is not stored
inside the files: :func:`read_source` adds it back as the last column, a ``DateType``.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from bi_platform.cadastral.reference import LOAD_DATE_COLUMN, SOURCE_TABLES

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

_PARTITION = re.compile(rf"^{LOAD_DATE_COLUMN}=(\d{{4}}-\d{{2}}-\d{{2}})$")


class SourceMissingError(FileNotFoundError):
    """A source table, or one of its load dates, is not in the raw directory."""


def partition_dir(raw_root: Path, table: str, load_date: date) -> Path:
    """``<raw_root>/<table>/dat_ref_carga=YYYY-MM-DD``."""
    return Path(raw_root) / table / f"{LOAD_DATE_COLUMN}={load_date.isoformat()}"


def _has_data(directory: Path) -> bool:
    return any(directory.glob("*.parquet"))


def available_load_dates(raw_root: Path, table: str = "pedt001") -> list[date]:
    """Sorted load dates of ``table`` that hold at least one Parquet file (temp or
    half-written directories, whose names do not match the pattern, are ignored)."""
    table_dir = Path(raw_root) / table
    if not table_dir.is_dir():
        raise SourceMissingError(f"source table {table!r} not found: no directory {table_dir}")
    found = []
    for child in table_dir.iterdir():
        match = _PARTITION.match(child.name)
        if match and child.is_dir() and _has_data(child):
            found.append(date.fromisoformat(match.group(1)))
    return sorted(found)


def load_dates_by_table(raw_root: Path) -> dict[str, list[date]]:
    """The load dates each source table has (an absent table has none)."""
    found = {}
    for table in SOURCE_TABLES:
        try:
            found[table] = available_load_dates(raw_root, table)
        except SourceMissingError:
            found[table] = []
    return found


def complete_load_dates(raw_root: Path) -> list[date]:
    """Sorted load dates that every source table has: only those can be processed (a run
    for a date that one table lacks would fail after the others committed)."""
    per_table = load_dates_by_table(raw_root)
    common = set.intersection(*(set(dates) for dates in per_table.values()))
    return sorted(common)


def incomplete_load_dates(raw_root: Path) -> dict[date, list[str]]:
    """Load dates present in some source tables but not all: date -> the tables lacking it."""
    per_table = load_dates_by_table(raw_root)
    every = set().union(*(set(dates) for dates in per_table.values()))
    return {
        day: [table for table, dates in per_table.items() if day not in dates]
        for day in sorted(every)
        if any(day not in dates for dates in per_table.values())
    }


def latest_load_date(raw_root: Path, table: str = "pedt001") -> date:
    """The most recent load date of ``table``; :class:`SourceMissingError` if it has none."""
    dates = available_load_dates(raw_root, table)
    if not dates:
        raise SourceMissingError(
            f"source table {table!r} has no load date: no "
            f"{LOAD_DATE_COLUMN}=YYYY-MM-DD partition with Parquet files in "
            f"{Path(raw_root) / table}"
        )
    return dates[-1]


def read_source(spark: SparkSession, raw_root: Path, table: str, load_date: date) -> DataFrame:
    """The ``load_date`` snapshot of ``table`` with ``dat_ref_carga`` (date) as last column."""
    from pyspark.sql import functions as F  # noqa: N812

    directory = partition_dir(raw_root, table, load_date)
    if not directory.is_dir() or not _has_data(directory):
        if not (Path(raw_root) / table).is_dir():
            raise SourceMissingError(
                f"source table {table!r} not found: no directory {Path(raw_root) / table}"
            )
        raise SourceMissingError(
            f"load date {load_date.isoformat()} of source table {table!r} not found: "
            f"no Parquet files in {directory}"
        )
    log.debug("reading %s snapshot %s from %s", table, load_date, directory)
    frame = spark.read.parquet(str(directory))
    return frame.select(*frame.columns, F.lit(load_date).cast("date").alias(LOAD_DATE_COLUMN))
