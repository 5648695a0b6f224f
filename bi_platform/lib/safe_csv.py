"""CSV whose cells are neutralised against formula (CSV) injection.

Follows OWASP's advice: a text cell or header name starting with ``=``, ``+``, ``-``,
``@``, tab or carriage return is prefixed with a single quote, so a spreadsheet shows it
as text instead of evaluating it, and the writer quotes the cells that need it (so
separators, quotes and newlines inside cells stay in place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bi_platform.lib.files import atomic_path

#: First characters that make spreadsheet applications evaluate a cell (OWASP).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_PATTERN = r"^[=+\-@\t\r]"


def neutralise_csv_cell(value: str) -> str:
    """``value`` prefixed with ``'`` when a spreadsheet would read it as a formula."""
    if value and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _neutralise_column(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    risky = pc.match_substring_regex(column, _FORMULA_PATTERN)
    quoted = pc.binary_join_element_wise("'", column, "")
    return pc.if_else(risky, quoted, column)


def _is_text(type_: pa.DataType) -> bool:
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or (pa.types.is_string_view(type_))
    )


def neutralise_table(table: pa.Table) -> pa.Table:
    """``table`` with its text cells and header names neutralised (formula injection)."""
    columns = [
        _neutralise_column(table.column(i)) if _is_text(field.type) else table.column(i)
        for i, field in enumerate(table.schema)
    ]
    return pa.table(columns, names=[neutralise_csv_cell(n) for n in table.schema.names])


def _write_neutral_csv(table: pa.Table, sink: Any) -> None:
    """``table`` as neutralised CSV into ``sink`` (a path or an Arrow stream)."""
    pacsv.write_csv(
        neutralise_table(table), sink, write_options=pacsv.WriteOptions(quoting_style="needed")
    )


def csv_bytes(table: pa.Table) -> bytes:
    """``table`` as neutralised CSV bytes (e.g. for an HTTP response).

    Args:
        table: Any Arrow table; its text cells and header names are neutralised.

    Returns:
        UTF-8 CSV with a header line.
    """
    sink = pa.BufferOutputStream()
    _write_neutral_csv(table, sink)
    return sink.getvalue().to_pybytes()


def write_csv_safe(table: pa.Table, path: Path) -> None:
    """Write ``table`` as neutralised CSV to ``path``, atomically and durably.

    Args:
        table: Any Arrow table; its text cells and header names are neutralised.
        path: The CSV file; its parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        _write_neutral_csv(table, tmp)
