"""From a raw ERP export to a typed lake table, written once with narwhals.

The same code runs on Polars or Dask (whichever engine the IO layer chose for the
export's size). Bad input never vanishes and never passes silently:

- a missing, extra or renamed column, or a column of the wrong type (text where a number
  is declared) is a :class:`SchemaDriftError` naming the table, the file and the column;
- a value that does not parse in one of the columns the export ships as strings
  (``admmat``'s price and stock) becomes null in the typed table and one quarantine row
  (table key, column, raw value, reason), so ``rows in = rows out`` and every rejected
  value can be traced back to its row.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import narwhals as nw
import polars as pl

from bi_platform.retail.schema import RetailTable

warnings.filterwarnings("ignore", message="Dask support is moving out of Narwhals")

#: What a parseable number looks like in the export: optional sign, digits, optional
#: decimal part with a dot, surrounding blanks allowed. "1.234,5", "N/D", "-" do not.
NUMBER_PATTERN = r"^\s*-?\d+(?:\.\d+)?\s*$"
UNPARSABLE_REASON = "unparsable number"

QUARANTINE_COLUMNS = ("TABELA", "COLUNA", "VALOR_BRUTO", "MOTIVO")

_NUMERIC = ("Int", "UInt", "Float", "Decimal")


class SchemaDriftError(ValueError):
    """The export's columns or types differ from the declared schema."""


def _family(dtype: object) -> str:
    name = type(dtype).__name__ if not isinstance(dtype, type) else dtype.__name__
    if name.startswith(_NUMERIC):
        return "number"
    if name in ("String", "Categorical", "Enum"):
        return "string"
    if name in ("Date", "Datetime"):  # pandas-backed engines widen dates to datetimes
        return "temporal"
    return name.lower()


def check_columns(
    table: RetailTable, found: Mapping[str, object], source: str, *, raw: bool = True
) -> None:
    """Raise :class:`SchemaDriftError` unless ``found`` matches the declared columns.

    ``found`` is a column -> dtype mapping (narwhals, polars or any dtype whose class
    name says its family). Types are compared by family (integer widths may differ;
    text where a number is declared may not).
    """
    expected = table.raw_schema if raw else table.schema
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(extra)}")
    if missing and extra:
        problems.append("renamed?")
    for column, dtype in expected.items():
        if column in found and _family(found[column]) != _family(dtype):
            problems.append(
                f"column {column} is {found[column]} where {dtype} is declared"
                + (" (text in a numeric column)" if _family(found[column]) == "string" else "")
            )
    if problems:
        raise SchemaDriftError(f"retail table {table.name!r} ({source}): " + "; ".join(problems))


def _polars_to_narwhals(dtype: pl.DataType) -> nw.dtypes.DType:
    return nw.from_native(pl.Series([], dtype=dtype), series_only=True).dtype


def _parseable(column: str) -> nw.Expr:
    return nw.col(column).str.contains(NUMBER_PATTERN)


def typed_table(raw: nw.LazyFrame, table: RetailTable) -> nw.LazyFrame:
    """The typed table: declared column order and dtypes, unparsable strings as null.

    Columns whose type already matches are passed through untouched (a no-op cast on
    Dask's nullable columns would go through NumPy and fail on nulls).
    """
    found = raw.collect_schema()
    exprs = []
    for column, dtype in table.schema.items():
        target = _polars_to_narwhals(dtype)
        if column in table.raw_string_columns:
            cleaned = nw.when(_parseable(column)).then(nw.col(column).str.strip_chars())
            exprs.append(cleaned.cast(target).alias(column))
        elif found[column] == target:
            exprs.append(nw.col(column))
        else:
            exprs.append(nw.col(column).cast(target))
    return raw.select(exprs)


def quarantine_rows(raw: nw.LazyFrame, table: RetailTable) -> nw.LazyFrame | None:
    """One row per unparsable value: the table key, the column, the raw value, the reason.

    ``None`` when the table has no string-typed numeric columns.
    """
    if not table.raw_string_columns:
        return None
    parts = [
        raw.filter(~nw.col(column).is_null() & ~_parseable(column)).select(
            *[nw.col(k) for k in table.key],
            nw.lit(table.name).alias("TABELA"),
            nw.lit(column).alias("COLUNA"),
            nw.col(column).cast(nw.String()).alias("VALOR_BRUTO"),
            nw.lit(UNPARSABLE_REASON).alias("MOTIVO"),
        )
        for column in table.raw_string_columns
    ]
    return nw.concat(parts, how="vertical")


def unparsable_counts(quarantine: nw.DataFrame) -> dict[str, int]:
    """Quarantined values per column (every string-typed numeric column listed)."""
    counts = quarantine.group_by("COLUNA").agg(nw.len().alias("n")).rows()
    return dict(sorted((str(column), int(n)) for column, n in counts))
