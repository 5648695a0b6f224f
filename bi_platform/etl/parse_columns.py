"""Text and Arrow columns converted to the layout's field types (CSV and Parquet inputs).

Integers, floats, epoch or ISO 8601 timestamps and text are parsed with vectorised
checks (polars/numpy); each value that does not fit gets a verdict
(:class:`~bi_platform.etl.parse_common.Verdicts`) naming the reason, and
:func:`assemble` builds the records table from the converted columns.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bi_platform.etl.layouts import FieldSpec, RecordLayout
from bi_platform.etl.parse_common import (
    BAD_NUMBER,
    BAD_TIMESTAMP,
    INVALID_UTF8,
    MISSING_VALUE,
    NON_FINITE,
    OUT_OF_RANGE,
    TEXT_TOO_LONG,
    TIMESTAMP_OUT_OF_RANGE,
    Verdicts,
    in_range,
    pl,
    text_dictionary,
    writer_schema,
)

logger = logging.getLogger(__name__)

_INT_RE = r"^[+-]?[0-9]+$"
_UNIT_SECONDS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _integer_bounds(type_: str) -> tuple[int, int]:
    bits = int(type_.removeprefix("u").removeprefix("int"))
    if type_.startswith("uint"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _parse_integers(text: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as int64 or uint64-safe Python ints clipped, syntax_ok, fits_int64)."""
    syntax = text.str.contains(_INT_RE).fill_null(False).to_numpy()
    as_int = text.cast(pl.Int64, strict=False)
    fits = as_int.is_not_null().to_numpy() & syntax
    return as_int.fill_null(0).to_numpy(), syntax, fits


def _coerce_text(
    text: pl.Series, spec: FieldSpec, verdicts: Verdicts, index: int, bounds: tuple[int, int]
) -> Any:
    """Parse stripped, non-null text cells into the field's type (flagging failures)."""
    text = text.str.strip_chars()
    if spec.type.startswith(("uint", "int")):
        values, syntax, fits = _parse_integers(text)
        verdicts.flag(~syntax, BAD_NUMBER, index)
        low, high = _integer_bounds(spec.type)
        if spec.type == "uint64":
            big = text.cast(pl.UInt64, strict=False)
            ok64 = big.is_not_null().to_numpy() & syntax
            verdicts.flag(~ok64, OUT_OF_RANGE, index)
            return big.fill_null(0).to_numpy()
        verdicts.flag(~fits, OUT_OF_RANGE, index)
        verdicts.flag((values < low) | (values > high), OUT_OF_RANGE, index)
        return values
    if spec.type.startswith("float"):
        values = text.cast(pl.Float64, strict=False)
        verdicts.flag(values.is_null().to_numpy(), BAD_NUMBER, index)
        return _check_floats(values.fill_null(0.0).to_numpy(), spec, verdicts, index)
    if spec.type == "epoch_s":
        values, syntax, fits = _parse_integers(text)
        iso = _parse_iso(text)
        parsed = np.where(syntax, values, iso.fill_null(0).to_numpy())
        verdicts.flag(~syntax & iso.is_null().to_numpy(), BAD_TIMESTAMP, index)
        verdicts.flag(syntax & ~fits, TIMESTAMP_OUT_OF_RANGE, index)
        verdicts.flag(~in_range(parsed, *bounds), TIMESTAMP_OUT_OF_RANGE, index)
        return parsed
    raise AssertionError(spec.type)  # pragma: no cover - utf8 is handled by the caller


def _parse_iso(text: pl.Series) -> pl.Series:
    """Epoch seconds of ISO 8601 text (``T`` or space, optional fraction, ``Z`` or an
    offset; no offset means UTC; a bare date is midnight UTC); null if unparseable."""
    norm = text.str.replace(r"[Zz]$", "+00:00").str.replace("T", " ", literal=True)
    attempts = [
        norm.str.to_datetime(fmt, strict=False, time_unit="ms", time_zone="UTC")
        for fmt in ("%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d")
    ]
    merged = pl.select(pl.coalesce(*[pl.lit(a) for a in attempts])).to_series()
    return (merged.dt.epoch("ms") // 1000).cast(pl.Int64)


def _check_floats(
    values: np.ndarray, spec: FieldSpec, verdicts: Verdicts, index: int
) -> np.ndarray:
    verdicts.flag(~np.isfinite(values), NON_FINITE, index)
    if spec.type == "float32":
        with np.errstate(invalid="ignore"):
            verdicts.flag(np.abs(values) > np.finfo(np.float32).max, OUT_OF_RANGE, index)
    return values


def _text_column(column: pa.Array, verdicts: Verdicts, index: int) -> pl.Series:
    """A binary or string column as a polars string Series (invalid UTF-8 flagged)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        try:
            column = column.cast(pa.string())
        except pa.ArrowInvalid:
            encoded = pc.dictionary_encode(column.cast(pa.binary()))
            texts, invalid = text_dictionary(encoded.dictionary)
            indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
            verdicts.flag(invalid[indices] & ~np.asarray(column.is_null()), INVALID_UTF8, index)
            column = pc.if_else(column.is_null(), pa.scalar(None, pa.string()), texts.take(indices))
    return pl.Series(column.cast(pa.large_string()))


def convert_field(
    column: pa.Array,
    spec: FieldSpec,
    verdicts: Verdicts,
    index: int,
    bounds: tuple[int, int],
    empty_is_missing: bool,
) -> Any:
    """One input column -> values in the field's type (numpy array, or a string Series
    for text), failures flagged in ``verdicts``. Raises :class:`TypeError` when the
    column's type cannot be cast at all."""
    type_ = column.type
    if pa.types.is_dictionary(type_):
        column = column.cast(type_.value_type)
        type_ = column.type
    nulls = np.asarray(column.is_null(), bool)
    verdicts.flag(nulls, MISSING_VALUE, index)
    textual = (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_string_view(type_)
        or pa.types.is_binary(type_)
        or pa.types.is_large_binary(type_)
    )
    if spec.type == "utf8":
        if not textual:
            raise TypeError(f"{type_} is not text")
        text = _text_column(column, verdicts, index)
        verdicts.flag(
            text.str.len_bytes().fill_null(0).to_numpy() > spec.size, TEXT_TOO_LONG, index
        )
        return text.fill_null("")
    if textual:
        text = _text_column(column, verdicts, index).fill_null("")
        if empty_is_missing:
            blank = text.str.strip_chars().str.len_bytes().to_numpy() == 0
            verdicts.flag(blank, MISSING_VALUE, index)
        return _coerce_text(text, spec, verdicts, index, bounds)
    if spec.type == "epoch_s":
        if pa.types.is_timestamp(type_):
            ticks = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
            seconds = np.floor_divide(ticks, _UNIT_SECONDS[type_.unit])
        elif pa.types.is_date32(type_):
            seconds = pc.fill_null(column.cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
            seconds = seconds.astype(np.int64) * 86_400
        elif pa.types.is_integer(type_):
            seconds = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        else:
            raise TypeError(f"{type_} is not a timestamp")
        verdicts.flag(~in_range(seconds, *bounds), TIMESTAMP_OUT_OF_RANGE, index)
        return seconds.astype(np.int64)
    if spec.type.startswith("float"):
        if not (pa.types.is_integer(type_) or pa.types.is_floating(type_)):
            raise TypeError(f"{type_} is not numeric")
        values = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        return _check_floats(values, spec, verdicts, index)
    # integer field
    low, high = _integer_bounds(spec.type)
    if pa.types.is_integer(type_):
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
        verdicts.flag(~in_range(values, low, high), OUT_OF_RANGE, index)
        return values
    if pa.types.is_floating(type_):
        values = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            verdicts.flag(~np.isfinite(values) | (values != np.trunc(values)), BAD_NUMBER, index)
            verdicts.flag((values < low) | (values > high), OUT_OF_RANGE, index)
        return np.nan_to_num(values).astype(np.int64 if low < 0 else np.uint64)
    raise TypeError(f"{type_} is not numeric")


def assemble(layout: RecordLayout, values: list[Any], verdicts: Verdicts) -> pa.Table:
    """Records table (writer schema) of the rows without failures."""
    good = verdicts.good
    schema = writer_schema(layout)
    arrays = []
    for value, field in zip(values, schema, strict=True):
        if isinstance(value, pl.Series):
            strings = value.filter(pl.Series(good)).to_arrow().cast(pa.string())
            arrays.append(pc.dictionary_encode(strings))
            continue
        kept = np.asarray(value)[good]
        target = field.type
        if pa.types.is_timestamp(target):  # epoch seconds -> the written milliseconds
            arrays.append(pa.array(kept.astype(np.int64) * 1000, pa.int64()).cast(target))
        else:
            arrays.append(pa.array(kept).cast(target, safe=False))
    return pa.Table.from_arrays(arrays, schema=schema)
