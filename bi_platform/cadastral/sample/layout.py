"""Summaries of a written snapshot and the Hive-style partition layout."""

from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bi_platform.cadastral.reference import (
    LOAD_DATE_COLUMN,
    SOURCE_TABLES,
)
from bi_platform.cadastral.sample.profiles import (
    _DICTIONARY_COLUMNS,
    _PARTITION_RE,
    PART_FILE,
    ROW_GROUP_SIZE,
)


# --------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CadastralSourceSummary:
    """What one load date's snapshot holds, measured from its rows."""

    path: Path
    load_date: date
    persons: int
    rows: dict[str, int]
    malformed_penumper: int
    invalid_codes: dict[str, int]
    null_birth_dates: int
    exact_duplicates: dict[str, int]
    conflicting_duplicates: int
    generated: bool
    seconds: float

    def partition_dir(self, table: str) -> Path:
        """The ``dat_ref_carga=`` directory of ``table`` for this load date."""
        return partition_dir(self.path, table, self.load_date)


@dataclass(frozen=True)
class CadastralChangeSummary:
    """Persons inserted/updated/deleted between two snapshots, and the new snapshot."""

    path: Path
    from_date: date
    to_date: date
    inserted: int
    updated: int
    deleted: int
    snapshot: CadastralSourceSummary
    generated: bool
    seconds: float

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table of the ``to_date`` snapshot."""
        return self.snapshot.rows


# --------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------
def partition_dir(raw_root: Path, table: str, load_date: date) -> Path:
    """``<raw_root>/<table>/dat_ref_carga=YYYY-MM-DD``."""
    return Path(raw_root) / table / f"{LOAD_DATE_COLUMN}={load_date.isoformat()}"


def load_dates(raw_root: Path, table: str = "pedt001") -> list[date]:
    """The load dates (sorted) for which ``table`` has a partition with Parquet files."""
    table_dir = Path(raw_root) / table
    if not table_dir.is_dir():
        return []
    found = []
    for child in table_dir.iterdir():
        match = _PARTITION_RE.match(child.name)
        if match and child.is_dir() and any(child.glob("*.parquet")):
            found.append(date.fromisoformat(match.group(1)))
    return sorted(found)


def _complete(raw_root: Path, load_date: date) -> bool:
    return all(any(partition_dir(raw_root, t, load_date).glob("*.parquet")) for t in SOURCE_TABLES)


def read_snapshot(raw_root: Path, load_date: date) -> dict[str, pa.Table]:
    """All four tables of one load date (every part file, in name order)."""
    tables = {}
    for table in SOURCE_TABLES:
        files = sorted(partition_dir(raw_root, table, load_date).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"no {table} snapshot for {load_date.isoformat()} under {raw_root}"
            )
        parts = [pq.ParquetFile(f).read() for f in files]
        tables[table] = pa.concat_tables(parts).combine_chunks()
    return tables


def _write_snapshot(raw_root: Path, load_date: date, tables: dict[str, pa.Table]) -> None:
    """Write the four partitions into hidden temp dirs, then rename them into place
    (``pedt001`` last, so a complete ``pedt001`` partition means a complete snapshot)."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staged: dict[str, Path] = {}
    trash: list[Path] = []
    try:
        for table in SOURCE_TABLES:
            tmp = Path(raw_root) / table / f".tmp-{load_date.isoformat()}-{token}"
            tmp.mkdir(parents=True)
            staged[table] = tmp
        with ThreadPoolExecutor(max_workers=len(SOURCE_TABLES)) as pool:
            writes = [
                pool.submit(
                    pq.write_table,
                    tables[table],
                    staged[table] / PART_FILE,
                    compression="snappy",
                    row_group_size=ROW_GROUP_SIZE,
                    use_dictionary=list(_DICTIONARY_COLUMNS[table]),
                )
                for table in SOURCE_TABLES
            ]
            for write in writes:
                write.result()
        for table in reversed(SOURCE_TABLES):
            target = partition_dir(raw_root, table, load_date)
            if target.exists():
                old = target.with_name(f".old-{load_date.isoformat()}-{token}")
                target.rename(old)
                trash.append(old)
            staged.pop(table).rename(target)
    finally:
        for leftover in [*staged.values(), *trash]:
            shutil.rmtree(leftover, ignore_errors=True)
