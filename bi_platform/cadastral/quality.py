"""Data-quality measures of the cadastral Delta tables (pure: Spark and delta-rs only).

The asset checks report these; the benchmark and tests use them directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deltalake import DeltaTable

from bi_platform.cadastral.delta import table_state

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Largest share of persons whose state-of-birth code may be invalid (quarantined).
MAX_INVALID_STATE_RATE = 0.01


@dataclass(frozen=True)
class KeyUniqueness:
    rows: int
    distinct_keys: int
    null_keys: int

    @property
    def duplicates(self) -> int:
        """Rows with a non-null key beyond the first of that key."""
        return self.rows - self.null_keys - self.distinct_keys

    @property
    def ok(self) -> bool:
        return self.rows == self.distinct_keys and self.null_keys == 0


def key_uniqueness(df: DataFrame, key: str = "chave_pessoa") -> KeyUniqueness:
    """Rows, distinct keys and null keys of ``df`` in one Spark aggregation."""
    from pyspark.sql import functions as F  # noqa: N812

    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct(key).alias("distinct_keys"),
        F.sum(F.col(key).isNull().cast("long")).alias("null_keys"),
    ).first()
    return KeyUniqueness(int(row["rows"]), int(row["distinct_keys"]), int(row["null_keys"] or 0))


def delta_rows(uri: str | Path, version: int | None = None) -> int:
    """Rows of a Delta table version, summed from its add actions' statistics (no scan)."""
    return table_state(uri, version).rows


def schema_fields(uri: str | Path, version: int | None = None) -> list[tuple[str, str]]:
    """``(name, type)`` of each column of a Delta table version, from the log."""
    schema = json.loads(DeltaTable(str(uri), version=version).schema().to_json())
    return [
        (field["name"], json.dumps(field["type"], sort_keys=True)) for field in schema["fields"]
    ]


@dataclass(frozen=True)
class SchemaComparison:
    version: int
    previous_version: int | None
    added: list[str]
    removed: list[str]
    retyped: list[str]

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.retyped)


def compare_with_previous_version(uri: str | Path) -> SchemaComparison:
    """The latest version's columns against the version before it (first version: equal)."""
    table = DeltaTable(str(uri))
    version = table.version()
    if version == 0:
        return SchemaComparison(version, None, [], [], [])
    now = dict(schema_fields(uri, version))
    before = dict(schema_fields(uri, version - 1))
    return SchemaComparison(
        version=version,
        previous_version=version - 1,
        added=sorted(set(now) - set(before)),
        removed=sorted(set(before) - set(now)),
        retyped=sorted(name for name in set(now) & set(before) if now[name] != before[name]),
    )
