"""Canonical row hash, computed identically by Spark and by PostgreSQL.

``md5(concat_ws(chr(1), coalesce(text(c1), '\\N'), coalesce(text(c2), '\\N'), ...))`` over
every non-key column in order, where text(date) = ``YYYY-MM-DD``, text(decimal(18,2)) =
``1234.50``, text(boolean) = ``true``/``false``, text(int) = digits and text(array) =
the elements joined by ``;`` (null elements skipped on both sides). The sync stores the
Spark-computed hash next to each row; :func:`row_hash_sql` recomputes it inside
PostgreSQL from the stored columns, so a comparison verifies the database itself.

Floating point and timestamp columns are refused: their text forms differ between the
two engines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

#: Column separator (chr(1)) and the text standing for SQL NULL.
SEPARATOR = "\x01"
NULL_TEXT = "\\N"
#: Name of the hash column appended by :func:`with_row_hash`.
ROW_HASH = "row_hash"
#: Elements of an array are joined with this.
ARRAY_SEPARATOR = ";"

_PG_PLAIN = {"text", "integer", "bigint", "smallint", "boolean"}


def _spark_text(name: str, data_type) -> Column:
    """The canonical text of one Spark column (null stays null)."""
    from pyspark.sql import functions as sf
    from pyspark.sql import types as st

    col = sf.col(f"`{name}`")
    if isinstance(data_type, st.StringType):
        return col
    if isinstance(
        data_type,
        (
            st.DateType,
            st.DecimalType,
            st.BooleanType,
            st.IntegerType,
            st.LongType,
            st.ShortType,
            st.ByteType,
        ),
    ):
        return col.cast("string")
    if isinstance(data_type, st.ArrayType):
        element = data_type.elementType
        if isinstance(element, (st.FloatType, st.DoubleType, st.TimestampType, st.ArrayType)):
            raise ValueError(f"column {name!r}: arrays of {element.simpleString()} not hashable")
        joined = col if isinstance(element, st.StringType) else col.cast("array<string>")
        return sf.array_join(joined, ARRAY_SEPARATOR)
    raise ValueError(f"column {name!r}: type {data_type.simpleString()} has no canonical text")


def row_hash_column(df: DataFrame, key: str = "chave_pessoa") -> Column:
    """The hash expression over every column of ``df`` except ``key`` and ``row_hash``."""
    from pyspark.sql import functions as sf

    parts = [
        sf.coalesce(_spark_text(field.name, field.dataType), sf.lit(NULL_TEXT))
        for field in df.schema.fields
        if field.name not in (key, ROW_HASH)
    ]
    if not parts:
        raise ValueError("a row hash needs at least one non-key column")
    return sf.md5(sf.concat_ws(SEPARATOR, *parts))


def with_row_hash(df: DataFrame, key: str = "chave_pessoa") -> DataFrame:
    """``df`` with ``row_hash`` (hex md5 of the canonical text of the non-key columns) last.

    An existing ``row_hash`` column is recomputed (and moved last).
    """
    expr = row_hash_column(df, key)
    columns = [f"`{c}`" for c in df.columns if c != ROW_HASH]
    return df.select(*columns, expr.alias(ROW_HASH))


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _pg_text(name: str, pg_type: str) -> str:
    """SQL giving the canonical text of one PostgreSQL column."""
    ident = quote_ident(name)
    base = pg_type.strip().lower()
    if base.endswith("[]"):
        return f"array_to_string({ident}, '{ARRAY_SEPARATOR}')"
    if base == "text" or base.startswith(("varchar", "character varying")):
        return ident
    if base == "date":
        # Explicit format: independent of the session's DateStyle.
        return f"to_char({ident}, 'YYYY-MM-DD')"
    if base in _PG_PLAIN or base.startswith(("numeric", "decimal")):
        return f"{ident}::text"
    raise ValueError(f"column {name!r}: type {pg_type!r} has no canonical text")


def row_hash_sql(columns: list[tuple[str, str]]) -> str:
    """SQL expression over a PostgreSQL row giving :func:`with_row_hash`'s digest.

    ``columns``: the non-key columns in order, as ``(name, pg type)`` (``text``, ``date``,
    ``integer``, ``bigint``, ``numeric(18,2)``, ``boolean``, ``text[]``). Chained with
    ``||`` rather than ``concat_ws`` so any number of columns fits (functions take at most
    100 arguments).
    """
    if not columns:
        raise ValueError("a row hash needs at least one non-key column")
    parts = [f"coalesce({_pg_text(name, pg_type)}, E'\\\\N')" for name, pg_type in columns]
    return "md5(" + " || chr(1) || ".join(parts) + ")"
