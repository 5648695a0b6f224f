"""From a raw ERP export to a typed lake table, written once with narwhals.

The same code runs on Polars or Dask (whichever engine the IO layer chose for the
export's size) and gives the same typed table and the same quarantine on both. Bad input
never vanishes and never passes silently:

- a missing, extra or renamed column, or a column of the wrong type family (text where a
  number is declared) is a :class:`SchemaDriftError` naming the table, the file and the
  column;
- the numeric columns the export ships as strings (``admmat``'s price and stock) are
  parsed with their declared :class:`~bi_platform.retail.schema.NumberFormat` (pt-BR:
  ``"1.234"`` is 1234, ``"1.234,56"``, ``"1234,5"``, ``"R$ 12,90"``, ``"-0,5"``, surrounding
  blanks allowed; see :func:`number_pattern`). Only ASCII digits count: full-width
  digits do not parse;
- a numeric column whose raw dtype differs from the declared one (a float where an
  integer is declared, an Int64 where an Int32 is) is cast losslessly: a value that does
  not fit exactly is never rounded, truncated, wrapped or made infinite;
- every value that does not parse or fit becomes null in the typed table and one
  quarantine row (:data:`QUARANTINE_COLUMNS`: the table key as exported, the column, the
  raw value as text, the reason), so ``rows in = rows out`` and every rejected value can
  be traced back to its row. The reasons are :data:`UNPARSABLE_REASON` (junk, blanks,
  ``"1.2.3"``), :func:`ambiguous_reason` (separators swapped: ``"12.5"`` under pt-BR,
  :data:`AMBIGUOUS_REASON`), :data:`NON_FINITE_REASON` (NaN, infinity, overflow),
  :data:`FRACTION_REASON`, :func:`out_of_range_reason` (``"out of range for Int32"``)
  and :func:`inexact_integer_reason` (an Int64 beyond 2**53 where a Float64 is
  declared).

Timestamps: the ERP's naive timestamps are São Paulo wall time (:data:`ERP_TIME_ZONE`). A
raw timestamp with an offset or a time zone (``-03:00``, ``UTC``, ``America/Sao_Paulo``)
where a naive one is declared is converted to São Paulo wall time and stored naive, the
same way on both engines (the instant is kept, not the digits it was written with:
``12:00-03:00`` and ``15:00Z`` both become ``12:00``). A timestamp where a date is
declared keeps its São Paulo date.

Text keys: the declared text keys (:attr:`RetailTable.text_keys
<bi_platform.retail.schema.RetailTable.text_keys>`) are stored in Unicode NFC without
leading or trailing whitespace (:func:`normalize_text_keys`), the form
:func:`bi_platform.serving.text.canonical_text` compares against, so the NFC and NFD
spellings of ``"CONFECÇÃO"`` are one segment. Spellings that differ in case, width or
inner spacing are *not* merged; :func:`text_key_collisions` reports them.

Where narwhals has no operation that behaves the same on both engines (Unicode
normalisation, null-safe numeric casts, exact formatting of a rejected float), a small
per-backend function does it (Polars, and pandas / Dask through pyarrow).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import narwhals as nw
import numpy as np
import polars as pl
import pyarrow as pa

from bi_platform.lib.warning_filters import silence_narwhals_dask_warning
from bi_platform.retail.schema import PT_BR, NumberFormat, RetailTable

silence_narwhals_dask_warning()

#: The time zone of the ERP's naive timestamps.
ERP_TIME_ZONE = "America/Sao_Paulo"

#: Blanks allowed around a number (and after a currency symbol: one space or no-break
#: space). Listed explicitly so that both engines' regex dialects agree.
NUMBER_BLANKS = " \t\r\n\u00a0\u202f"
#: Whitespace trimmed from text keys: exactly the characters for which Python's
#: ``str.isspace()`` is true, as ``str.strip()`` (and ``canonical_text``) removes them.
TEXT_BLANKS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

UNPARSABLE_REASON = "unparsable number"
NON_FINITE_REASON = "non-finite or out of range"
FRACTION_REASON = "fraction in an integer column"

QUARANTINE_COLUMNS = ("TABELA", "COLUNA", "VALOR_BRUTO", "MOTIVO")

_NUMERIC = ("Int", "UInt", "Float", "Decimal")
_PREFIX = "__clean__"
_FLOAT64_MAX = float(np.finfo(np.float64).max)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Integers a float holds exactly: up to 2**53 (Float64), 2**24 (Float32).
_FLOAT_EXACT_BITS = {"Float64": 53, "Float32": 24}
_INT_BOUNDS = {
    name: (int(np.iinfo(name.lower()).min), int(np.iinfo(name.lower()).max))
    for name in ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64")
}


class SchemaDriftError(ValueError):
    """The export's columns or types differ from the declared schema."""


def ambiguous_reason(fmt: NumberFormat) -> str:
    """The quarantine reason for a number written with the separators swapped.

    Args:
        fmt: the column's declared format.

    Returns:
        ``"ambiguous number: pt-BR writes thousands with '.' and decimals with ','"``
        for pt-BR (``"12.5"``, ``"1.23"``, ``"1,234.56"``).
    """
    return (
        f"ambiguous number: {fmt.locale} writes thousands with {fmt.thousands!r} "
        f"and decimals with {fmt.decimal!r}"
    )


#: :func:`ambiguous_reason` of pt-BR, the ERP's format.
AMBIGUOUS_REASON = ambiguous_reason(PT_BR)


def out_of_range_reason(dtype: object) -> str:
    """The quarantine reason for a value beyond the range of the declared ``dtype``.

    Args:
        dtype: the declared dtype (Polars or narwhals; its name is used).

    Returns:
        ``"out of range for Int32"``, ``"out of range for Float32"``, ...
    """
    return f"out of range for {_name(dtype)}"


def inexact_integer_reason(dtype: object) -> str:
    """The quarantine reason for an integer a float column cannot hold exactly.

    Args:
        dtype: the declared float dtype (Polars or narwhals).

    Returns:
        ``"integer not exact in Float64 (beyond 2**53)"`` (Float32: ``2**24``).
    """
    name = _name(dtype)
    return f"integer not exact in {name} (beyond 2**{_FLOAT_EXACT_BITS[name]})"


def _name(dtype: object) -> str:
    return dtype.__name__ if isinstance(dtype, type) else type(dtype).__name__


def _family(dtype: object) -> str:
    name = _name(dtype)
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

    Types are compared by family (integer widths may differ, a float may stand for an
    integer -- :func:`typed_table` casts those losslessly; text where a number is
    declared may not).

    Args:
        table: the declared table.
        found: a column -> dtype mapping (narwhals, polars or any dtype whose class
            name says its family).
        source: where ``found`` comes from (a path), for the message.
        raw: compare with the raw export's schema (else with the typed schema).

    Raises:
        SchemaDriftError: naming the table, ``source`` and every problem.
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


# --------------------------------------------------------------------------------------
# Number formats
# --------------------------------------------------------------------------------------
def _in_class(chars: str) -> str:
    """``chars`` escaped for a regex character class (Rust, RE2 and Python alike)."""
    return "".join("\\" + c if c in "\\]^-[&~" else c for c in chars)


def _literal(text: str) -> str:
    """``text`` as a regex matching itself: each non-alphanumeric character as a class."""
    return "".join(c if c.isalnum() else f"[{_in_class(c)}]" for c in text)


def number_pattern(fmt: NumberFormat) -> str:
    """The regex of a number written in ``fmt`` (the whole value, ASCII digits only).

    Optional blanks (:data:`NUMBER_BLANKS`), an optional sign (``+``/``-``), the
    optional currency (``"R$"``, followed or not by one space; the sign may come before
    or after it), the integer part -- plain digits, or groups of exactly 3 digits
    separated by ``fmt.thousands`` after a first group of 1-3 digits not starting with
    0 -- then an optional ``fmt.decimal`` and at least one digit, optional blanks. For
    pt-BR: ``"1.234"``, ``"1.234,56"``, ``"1234,5"``, ``"R$ 12,90"``, ``"-0,5"``,
    ``" 7 "``; not ``"12.5"``, ``"1.23"``, ``"0.123"``, ``",5"``, ``"1.2.3"``.

    Args:
        fmt: the column's declared format.

    Returns:
        A pattern for ``str.contains`` (anchored with ``^``/``$``), the same in Polars'
        and pyarrow's regex dialects.
    """
    blanks = f"[{_in_class(NUMBER_BLANKS)}]*"
    sign = "[-+]"
    if fmt.currency:
        currency = f"{_literal(fmt.currency)}[ \u00a0\u202f]?"
        prefix = f"(?:{sign}?(?:{currency})?|{currency}{sign})"
    else:
        prefix = f"{sign}?"
    thousands, decimal = f"[{_in_class(fmt.thousands)}]", f"[{_in_class(fmt.decimal)}]"
    integer = f"(?:[1-9][0-9]{{0,2}}(?:{thousands}[0-9]{{3}})+|[0-9]+)"
    return f"^{blanks}{prefix}{integer}(?:{decimal}[0-9]+)?{blanks}$"


def _swapped(fmt: NumberFormat) -> NumberFormat:
    """``fmt`` with its separators swapped: what an ambiguous value matches instead."""
    return NumberFormat(
        locale=fmt.locale, thousands=fmt.decimal, decimal=fmt.thousands, currency=fmt.currency
    )


def _format_flags(plan: _Plan, column: str, fmt: NumberFormat) -> tuple[nw.Expr, nw.Expr]:
    """Add the column's format flags to ``plan.flags``; return (the value is present and
    well formed, the reason when it is present and not well formed -- else null).

    Each regex runs once, into a flag column (narwhals computes every regex pattern
    separately on Dask). Every condition is null-free: Dask cannot combine boolean
    columns of different kinds (NumPy, pandas, pyarrow) when they hold nulls.
    """
    well_formed, swapped = f"{_PREFIX}ok_{column}", f"{_PREFIX}swapped_{column}"
    raw = nw.col(column).fill_null("")
    plan.flags.append(raw.str.contains(number_pattern(fmt)).alias(well_formed))
    plan.flags.append(raw.str.contains(number_pattern(_swapped(fmt))).alias(swapped))
    present = ~nw.col(column).is_null()
    valid = present & nw.col(well_formed)
    reason = (
        nw.when(present & ~nw.col(well_formed) & nw.col(swapped))
        .then(nw.lit(ambiguous_reason(fmt)))
        .when(present & ~nw.col(well_formed))
        .then(nw.lit(UNPARSABLE_REASON))
    )
    return valid, reason


def _float_text(raw: nw.Expr, fmt: NumberFormat) -> nw.Expr:
    """A well-formed value as ``"-1234.56"``: what both engines cast to Float64."""
    text = raw.str.replace_all(f"[^0-9{_in_class(fmt.decimal)}\\-]", "")
    return text if fmt.decimal == "." else text.str.replace_all(fmt.decimal, ".", literal=True)


def _fits(digits: nw.Expr, bound: int) -> nw.Expr:
    """Unsigned ``digits`` (no leading zeros) <= ``bound``, compared as text."""
    limit = str(bound)
    length = digits.str.len_chars()
    return (length < len(limit)) | ((length == len(limit)) & (digits <= nw.lit(limit)))


# --------------------------------------------------------------------------------------
# The plan: one narwhals pass, native casts, one narwhals pass of post-cast checks
# --------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """How the work frame is built from the raw export.

    ``flags``: narwhals expressions added to the raw columns first (regex results);
    ``first``: narwhals expressions added next (prepared values, reasons);
    ``casts``: native casts of prepared columns; ``then``: post-cast expressions;
    ``recasts``: native casts after those; ``typed``: the expression of each declared
    column; ``checked``: (column, reason column, raw dtype) of the columns that can
    quarantine a value.
    """

    flags: list[nw.Expr]
    first: list[nw.Expr]
    casts: dict[str, pl.DataType]
    then: list[nw.Expr]
    recasts: dict[str, pl.DataType]
    typed: list[nw.Expr]
    checked: list[tuple[str, str, nw.dtypes.DType]]


def _polars_to_narwhals(dtype: pl.DataType) -> nw.dtypes.DType:
    return nw.from_native(pl.Series([], dtype=dtype), series_only=True).dtype


def _plan(found: Mapping[str, nw.dtypes.DType], table: RetailTable) -> _Plan:
    plan = _Plan([], [], {}, [], {}, [], [])
    for column, dtype in table.schema.items():
        source, target = found[column], _polars_to_narwhals(dtype)
        value, reason = f"{_PREFIX}{column}", f"{_PREFIX}why_{column}"
        if source == target:
            plan.typed.append(nw.col(column))
            continue
        plan.typed.append(nw.col(value).alias(column))
        if _name(target) == "Decimal":
            raise NotImplementedError(
                f"retail table {table.name!r}: column {column} is declared {dtype} and "
                f"exported as {source}; casts to a Decimal are not supported"
            )
        if source == nw.String() and target.is_numeric():
            _plan_number(plan, column, dtype, target, table.number_format(column))
        elif source.is_numeric() and target.is_numeric():
            if not _plan_lossless(plan, column, source, dtype, target):
                continue
        elif isinstance(source, nw.Datetime) and (
            source.time_zone or (isinstance(target, nw.Datetime) and target.time_zone)
        ):
            # naive timestamps are Sao Paulo wall time; aware ones are instants
            local = nw.col(column)
            if source.time_zone:
                local = local.dt.convert_time_zone(ERP_TIME_ZONE)
            else:
                local = local.dt.replace_time_zone(ERP_TIME_ZONE)
            if isinstance(target, nw.Datetime) and target.time_zone:
                local = local.dt.convert_time_zone(target.time_zone)
            else:
                local = local.dt.replace_time_zone(None)
            plan.first.append(local.alias(value))
            plan.casts[value] = dtype
            continue
        else:
            plan.first.append(nw.col(column).alias(value))
            plan.casts[value] = dtype
            continue
        plan.checked.append((column, reason, source))
    return plan


def _plan_number(
    plan: _Plan, column: str, dtype: pl.DataType, target: nw.dtypes.DType, fmt: NumberFormat
) -> None:
    """A string column parsed as a number in ``fmt`` (declared ``dtype``)."""
    value, reason, first = f"{_PREFIX}{column}", f"{_PREFIX}why_{column}", f"{_PREFIX}why1_{column}"
    raw = nw.col(column).fill_null("")
    valid, format_reason = _format_flags(plan, column, fmt)
    if target.is_integer():
        low, high = _INT_BOUNDS[_name(target)]
        decimal = f"[{_in_class(fmt.decimal)}]"
        names = [f"{_PREFIX}{kind}_{column}" for kind in ("negative", "digits", "fraction")]
        plan.flags += [
            raw.str.contains("-").alias(names[0]),
            # the integer part's digits without leading zeros ("" for zero)
            raw.str.replace_all(f"{decimal}[0-9]*", "")
            .str.replace_all("[^0-9]", "")
            .str.replace_all("^0+", "")
            .alias(names[1]),
            raw.str.contains(f"{decimal}[0-9]*[1-9]").alias(names[2]),
        ]
        negative, digits, fraction = (nw.col(name) for name in names)
        in_range = (
            nw.when(negative)
            .then(_fits(digits, -low) if low < 0 else digits == nw.lit(""))
            .otherwise(_fits(digits, high))
        )
        plan.first.append(
            format_reason.when(~in_range)
            .then(nw.lit(out_of_range_reason(target)))
            .when(fraction)
            .then(nw.lit(FRACTION_REASON))
            .alias(reason)
        )
        text = nw.concat_str(
            nw.when(negative).then(nw.lit("-")).otherwise(nw.lit("")),
            nw.when(digits == nw.lit("")).then(nw.lit("0")).otherwise(digits),
        )
        plan.first.append(nw.when(valid & in_range & ~fraction).then(text).alias(value))
        plan.casts[value] = dtype
        return
    # Floats: cast the well-formed text to Float64, then reject what overflowed.
    plan.first.append(format_reason.alias(first))
    plan.first.append(nw.when(valid).then(_float_text(raw, fmt)).alias(value))
    plan.casts[value] = pl.Float64()
    parsed = nw.col(value)
    post = (
        nw.when(~nw.col(first).is_null())
        .then(nw.col(first))
        .when(parsed.fill_null(0.0).abs() > _FLOAT64_MAX)
        .then(nw.lit(NON_FINITE_REASON))
    )
    ok = parsed.fill_null(0.0).abs() <= _FLOAT64_MAX
    if _name(target) == "Float32":
        post = post.when(parsed.fill_null(0.0).abs() > _FLOAT32_MAX).then(
            nw.lit(out_of_range_reason(target))
        )
        ok = parsed.fill_null(0.0).abs() <= _FLOAT32_MAX
        plan.recasts[value] = dtype
    plan.then.append(post.alias(reason))
    plan.then.append(nw.when(ok).then(parsed).alias(value))


def _plan_lossless(
    plan: _Plan, column: str, source: nw.dtypes.DType, dtype: pl.DataType, target: nw.dtypes.DType
) -> bool:
    """A numeric column cast to another numeric dtype; ``True`` if values can be rejected.

    Decimal sources are compared through Float64.
    """
    value, reason = f"{_PREFIX}{column}", f"{_PREFIX}why_{column}"
    if _name(source) == "Decimal":
        plan.casts[column] = pl.Float64()
        source = nw.Float64()
    # Checks run on null-free values (nulls as 0, which always fits; NaN stays NaN).
    x = nw.col(column).fill_null(0.0 if source.is_float() else 0)
    rejected: nw.Expr | None = None
    ok: nw.Expr | None = None
    if target.is_integer():
        low, high = _INT_BOUNDS[_name(target)]
        if source.is_float():
            # 2**k bounds are exact floats: low <= x < high + 1 holds only for values
            # the integer type holds.
            finite = x.is_finite()
            in_range = (x >= float(low)) & (x < float(high + 1))
            whole = x.round(0) == x
            rejected = (
                nw.when(~finite)
                .then(nw.lit(NON_FINITE_REASON))
                .when(~in_range)
                .then(nw.lit(out_of_range_reason(target)))
                .when(~whole)
                .then(nw.lit(FRACTION_REASON))
            )
            ok = finite & in_range & whole
        else:
            source_low, source_high = _INT_BOUNDS[_name(source)]
            if source_low < low or source_high > high:
                ok = (x >= low) & (x <= high)
                rejected = nw.when(~ok).then(nw.lit(out_of_range_reason(target)))
    elif source.is_integer() and _name(target) in _FLOAT_EXACT_BITS:
        bits = _FLOAT_EXACT_BITS[_name(target)]
        source_low, source_high = _INT_BOUNDS[_name(source)]
        if source_low < -(2**bits) or source_high > 2**bits:
            ok = (x >= -(2**bits)) & (x <= 2**bits)
            rejected = nw.when(~ok).then(nw.lit(inexact_integer_reason(target)))
    elif _name(target) == "Float32" and _name(source) == "Float64":
        too_big = x.is_finite() & (x.abs() > _FLOAT32_MAX)
        ok = ~too_big
        rejected = nw.when(too_big).then(nw.lit(out_of_range_reason(target)))
    original = nw.col(column)
    plan.first.append((original if ok is None else nw.when(ok).then(original)).alias(value))
    plan.casts[value] = dtype
    if rejected is None:
        return False
    plan.first.append(rejected.alias(reason))
    return True


# --------------------------------------------------------------------------------------
# Per-backend operations
# --------------------------------------------------------------------------------------
F = TypeVar("F", nw.DataFrame, nw.LazyFrame)


def _native_columns(
    frame: F,
    columns: Mapping[str, tuple[Callable[[pl.Expr], pl.Expr], Callable[[pa.Array], pa.Array]]],
) -> F:
    """Replace ``columns`` of ``frame``, each by a Polars expression function (Polars
    frames) or a pyarrow array function (pandas and Dask frames, per partition)."""
    if not columns:
        return frame
    native = nw.to_native(frame)
    implementation = frame.implementation
    if implementation.is_polars():
        return nw.from_native(
            native.with_columns(polars(pl.col(c)).alias(c) for c, (polars, _) in columns.items())
        )

    def apply(part: Any) -> Any:
        import pandas as pd

        replaced = {
            column: pd.Series(
                pd.arrays.ArrowExtensionArray(arrow(pa.array(part[column]))),
                index=part.index,
                name=column,
            )
            for column, (_, arrow) in columns.items()
        }
        return part.assign(**replaced)  # a new frame; the partition is not modified

    if implementation.is_dask():
        from dask.dataframe.utils import make_meta

        return nw.from_native(native.map_partitions(apply, meta=apply(make_meta(native))))
    if implementation.is_pandas():
        return nw.from_native(apply(native))
    raise NotImplementedError(f"cleaning does not support {implementation} frames")


def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    return pl.Series([], dtype=dtype).to_arrow().type


_ARROW_UNITS = {"s": "second", "ms": "millisecond", "us": "microsecond", "ns": "nanosecond"}


def _cast(frame: F, dtypes: Mapping[str, pl.DataType]) -> F:
    """Cast columns to Polars ``dtypes``, null-safe on every backend (pyarrow casts on
    pandas/Dask keep NaN as NaN and nulls as nulls). Callers mask what does not fit
    first. A timestamp cast to a date keeps its date, and to a coarser unit is floored
    to it, as Polars does."""

    def arrow(dtype: pl.DataType) -> Callable[[pa.Array], pa.Array]:
        target = _arrow_type(dtype)

        def cast(array: pa.Array) -> pa.Array:
            if pa.types.is_timestamp(array.type):
                if pa.types.is_date(target):
                    return array.cast(target, safe=False)  # floors, like Polars
                if pa.types.is_timestamp(target) and target.unit != array.type.unit:
                    import pyarrow.compute as pc

                    unit = _ARROW_UNITS[target.unit]
                    array = pc.floor_temporal(array, multiple=1, unit=unit)
            return array.cast(target)

        return cast

    return _native_columns(
        frame, {c: (lambda e, d=dtype: e.cast(d), arrow(dtype)) for c, dtype in dtypes.items()}
    )


def _texts(values: Iterable[Any], dtype: nw.dtypes.DType) -> list[str | None]:
    """Raw numbers as text, the same on every backend: a Float64 as Python's ``repr``,
    a Float32 as its shortest float32 form, integers and decimals as digits."""
    if _name(dtype) == "Float32":
        return [None if v is None else str(np.float32(v)) for v in values]
    if _name(dtype) == "Float64":
        return [None if v is None else repr(float(v)) for v in values]
    return [None if v is None else str(v) for v in values]


def _as_text(frame: F, column: str, dtype: nw.dtypes.DType) -> F:
    """``column`` of a (small) frame as text via :func:`_texts`."""
    if dtype == nw.String():
        return frame

    def polars(expr: pl.Expr) -> pl.Expr:
        return expr.map_batches(
            lambda s: pl.Series(_texts(s.to_list(), dtype), dtype=pl.String),
            return_dtype=pl.String,
            is_elementwise=True,
        )

    def arrow(array: pa.Array) -> pa.Array:
        return pa.array(_texts(array.to_pylist(), dtype), pa.large_string())

    return _native_columns(frame, {column: (polars, arrow)})


#: Text that may not be in NFC: anything beyond Latin-1 (a Latin-1-only string has no
#: combining mark, so it is already NFC). The same pattern in Rust's regex and RE2.
_MAYBE_NOT_NFC = r"[^\x00-\xFF]"


def _nfc_polars(series: pl.Series) -> pl.Series:
    """NFC of a Polars string series, normalising only the values that may need it."""
    suspect = series.str.contains(_MAYBE_NOT_NFC)
    if not suspect.any():
        return series
    return pl.select(
        pl.when(suspect).then(series.str.normalize("NFC")).otherwise(series)
    ).to_series()


def _nfc_arrow(array: pa.Array) -> pa.Array:
    """NFC of a pyarrow string array (``unicodedata``), only where it may be needed."""
    import pyarrow.compute as pc

    suspect = pc.match_substring_regex(array, _MAYBE_NOT_NFC)
    if not pc.any(suspect).as_py():
        return array
    values = [
        unicodedata.normalize("NFC", v) if flag else v
        for v, flag in zip(array.to_pylist(), suspect.to_pylist(), strict=True)
    ]
    return pa.array(values, array.type)


def normalize_text_keys(frame: F, columns: Sequence[str]) -> F:
    """``columns`` in Unicode NFC without leading or trailing whitespace.

    The whitespace is :data:`TEXT_BLANKS` (what ``str.strip()`` removes), so the result
    equals :func:`bi_platform.serving.text.canonical_text` of each value, on Polars
    (``str.normalize``) as on pandas / Dask (pyarrow, ``unicodedata``). Only values with
    a character beyond Latin-1 are normalised (the others are NFC already), so the
    usual all-NFC column costs one regex scan. Nulls stay null; case, width and inner
    spacing are kept.

    Args:
        frame: a narwhals frame over Polars, pandas or Dask.
        columns: string columns of ``frame``.

    Returns:
        The frame with those columns normalised (same kind, same row order).
    """
    if not columns:
        return frame
    polars = lambda e: e.map_batches(  # noqa: E731
        _nfc_polars, return_dtype=pl.String, is_elementwise=True
    )
    normalized = _native_columns(frame, {c: (polars, _nfc_arrow) for c in columns})
    return normalized.with_columns(nw.col(c).str.strip_chars(TEXT_BLANKS) for c in columns)


# --------------------------------------------------------------------------------------
# The typed table and its quarantine
# --------------------------------------------------------------------------------------
def _work(raw: nw.LazyFrame, table: RetailTable) -> tuple[nw.LazyFrame, _Plan]:
    found = raw.collect_schema()
    plan = _plan(found, table)
    text_keys = [c for c in table.text_keys if found.get(c) == nw.String()]
    work = normalize_text_keys(raw, text_keys)
    decimals = {c: d for c, d in plan.casts.items() if not c.startswith(_PREFIX)}
    work = _cast(work, decimals)  # Decimal sources, compared as Float64
    if plan.flags:
        work = work.with_columns(*plan.flags)
    if plan.first:
        work = work.with_columns(*plan.first)
    work = _cast(work, {c: d for c, d in plan.casts.items() if c.startswith(_PREFIX)})
    if plan.then:
        work = work.with_columns(*plan.then)
    return _cast(work, plan.recasts), plan


def typed_table(raw: nw.LazyFrame, table: RetailTable) -> nw.LazyFrame:
    """The typed table: declared column order and dtypes, one row per raw row.

    Columns whose dtype already matches are passed through untouched (text keys are
    normalised, :func:`normalize_text_keys`); string-typed numbers are parsed in their
    declared format; other numeric columns are cast losslessly; timestamps with a time
    zone become naive São Paulo wall time. A value that does not parse or fit is null
    (and in :func:`quarantine_rows`).

    Args:
        raw: the raw export (its columns checked with :func:`check_columns`).
        table: the declared table.

    Returns:
        A lazy frame on the same engine as ``raw``.
    """
    work, plan = _work(raw, table)
    return work.select(plan.typed)


def can_quarantine(raw: nw.LazyFrame, table: RetailTable) -> bool:
    """Whether :func:`quarantine_rows` returns a frame for this export.

    Args:
        raw: the raw export.
        table: the declared table.

    Returns:
        ``True`` when the table declares string-typed numeric columns or a numeric raw
        column's dtype differs from the declared one in a way that can reject values.
    """
    return bool(table.raw_string_columns) or bool(_plan(raw.collect_schema(), table).checked)


def quarantine_rows(raw: nw.LazyFrame, table: RetailTable) -> nw.LazyFrame | None:
    """One row per rejected value: the table key (as exported), :data:`QUARANTINE_COLUMNS`.

    ``VALOR_BRUTO`` is the raw value as text (a string as exported; a raw float as
    Python's ``repr``), ``MOTIVO`` the reason (see the module docstring).

    Args:
        raw: the raw export.
        table: the declared table.

    Returns:
        A lazy frame (possibly empty), or ``None`` when no value can be rejected: no
        string-typed numeric column and no numeric column whose raw dtype differs from
        the declared one in a way that can lose a value.
    """
    work, plan = _work(raw, table)
    if not plan.checked and not table.raw_string_columns:
        return None
    keys = [nw.col(k) for k in table.key]
    parts = []
    for column, reason, dtype in plan.checked:
        part = work.filter(~nw.col(reason).is_null()).select(
            *keys,
            nw.lit(table.name).alias("TABELA"),
            nw.lit(column).alias("COLUNA"),
            nw.col(column).alias("VALOR_BRUTO"),
            nw.col(reason).alias("MOTIVO"),
        )
        parts.append(_as_text(part, "VALOR_BRUTO", dtype))
    if not parts:  # declared string columns exported with another type: nothing to reject
        anything = nw.col(next(iter(table.schema)))
        never = anything.is_null() & ~anything.is_null()  # a column expression: Dask-safe
        return work.filter(never).select(
            *keys,
            nw.lit(table.name).alias("TABELA"),
            nw.lit("").alias("COLUNA"),
            nw.lit("").alias("VALOR_BRUTO"),
            nw.lit("").alias("MOTIVO"),
        )
    return nw.concat(parts, how="vertical")


def unparsable_counts(quarantine: nw.DataFrame) -> dict[str, int]:
    """Quarantined values per column (only columns with at least one).

    Args:
        quarantine: collected :func:`quarantine_rows`.

    Returns:
        Column -> number of quarantine rows, sorted by column.
    """
    counts = quarantine.group_by("COLUNA").agg(nw.len().alias("n")).rows()
    return dict(sorted((str(column), int(n)) for column, n in counts))


# --------------------------------------------------------------------------------------
# Text-key collisions
# --------------------------------------------------------------------------------------
def collision_key(value: str) -> str:
    """The form under which two spellings of a text key count as the same name.

    Unicode NFKC (compatibility forms: full-width letters, ligatures), case folded
    (``"Confecção"`` = ``"CONFECÇÃO"``), NFKC again, whitespace runs collapsed to one
    space and trimmed. Accents are kept (``"CONFECCAO"`` is another name).

    Args:
        value: a text key value.

    Returns:
        The comparison key.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return " ".join(folded.split())


def text_key_collisions(
    frame: nw.DataFrame | nw.LazyFrame | Any, columns: Iterable[str]
) -> dict[str, list[list[str]]]:
    """Distinct values of each text column that are the same name spelled differently.

    Two values collide when their :func:`collision_key` is equal: case, Unicode
    compatibility forms, NFC vs NFD, surrounding or repeated whitespace. Meant for a
    blocking check on a typed table (where NFC/NFD and surrounding spaces are already
    normalised, so what remains are case, width and inner-spacing variants).

    Args:
        frame: a narwhals frame (or a native frame narwhals accepts), eager or lazy.
        columns: the string columns to examine.

    Returns:
        For every column in ``columns``: the groups of colliding distinct values (each
        group sorted, at least 2 values; groups sorted by their first value), an empty
        list when the column has none. Nulls are ignored.
    """
    if not isinstance(frame, nw.DataFrame | nw.LazyFrame):
        frame = nw.from_native(frame)
    result: dict[str, list[list[str]]] = {}
    for column in columns:
        distinct = frame.select(nw.col(column)).unique()
        if isinstance(distinct, nw.LazyFrame):
            distinct = distinct.collect()
        groups: dict[str, set[str]] = {}
        for value in distinct.get_column(column).to_list():
            if isinstance(value, str):  # nulls are None (Polars) or pd.NA (pandas)
                groups.setdefault(collision_key(value), set()).add(value)
        result[column] = sorted(sorted(g) for g in groups.values() if len(g) > 1)
    return result
