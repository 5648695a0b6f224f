"""Parquet inputs: columns cast per field of the layout.

A missing or unusable column dead-letters every row; corrupt pages, or fewer rows than
the footer declares, reject the file (:class:`~bi_platform.etl.parse_common.EtlInputError`).
The file is read through its descriptor (:func:`fd_file`), a batch of
:data:`PARQUET_BATCH_ROWS` rows at a time.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bi_platform.etl.layouts import RecordLayout
from bi_platform.etl.parse_columns import assemble, convert_field
from bi_platform.etl.parse_common import (
    BAD_TYPE,
    MISSING_FIELD,
    EtlInputError,
    ParseOptions,
    Sink,
    Source,
    Verdicts,
    dead_letters,
    hex_binary,
    pl,
)

logger = logging.getLogger(__name__)

PARQUET_BATCH_ROWS = 1_000_000


def _rows_as_json(table: pa.Table) -> pa.Array:
    """Each row of ``table`` as UTF-8 JSON bytes."""
    try:
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        encoded = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
        return encoded.to_arrow().cast(pa.binary())
    except Exception:  # exotic types: fall back to Python's json
        rows = table.to_pylist()
        return pa.array([json.dumps(r, default=str).encode() for r in rows], pa.binary())


def _parquet_schema_problem(schema: pa.Schema, layout: RecordLayout) -> tuple[str, int] | None:
    """(reason, field index) when a layout field is missing or of an unusable type
    (found by converting an empty column of the file's type)."""
    for index, spec in enumerate(layout.specs):
        position = schema.get_field_index(spec.name)
        if position < 0:
            return MISSING_FIELD, index
        empty = pa.array([], schema.field(position).type)
        try:
            convert_field(empty, spec, Verdicts(0), index, (0, 0), False)
        except (TypeError, pa.ArrowNotImplementedError, pa.ArrowInvalid):
            return BAD_TYPE, index
    return None


def fd_file(fd: int) -> Any:
    """A binary file object over an open file.

    Args:
        fd: The open file.

    Returns:
        A file object on a duplicate descriptor, at offset 0 (closing it leaves ``fd``
        open).
    """
    handle = os.fdopen(os.dup(fd), "rb")
    handle.seek(0)
    return handle


def parse_parquet(src: Source, source: str, options: ParseOptions, sink: Sink) -> int:
    with fd_file(src.fd) as handle:
        try:
            parquet = pq.ParquetFile(handle)
            expected = parquet.metadata.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise EtlInputError(f"{source}: not a readable Parquet file ({exc})") from None
        try:
            records_in = _parquet_rows(parquet, source, options, sink)
        except (pa.ArrowException, OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # an error of the machine (EIO...), not of the bytes
            raise EtlInputError(f"{source}: corrupt Parquet data ({exc})") from None
    if records_in != expected:
        raise EtlInputError(
            f"{source}: the Parquet footer declares {expected:,} rows but {records_in:,} "
            "could be read"
        )
    return records_in


def _parquet_rows(parquet: Any, source: str, options: ParseOptions, sink: Sink) -> int:
    layout = options.layout
    schema = parquet.schema_arrow
    problem = _parquet_schema_problem(schema, layout)
    names = [s.name for s in layout.specs]
    bounds = options.epoch_bounds
    columns = None if problem else names
    records_in = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        n = batch.num_rows
        verdicts = Verdicts(n)
        table = None
        if problem:
            verdicts.flag(np.ones(n, bool), problem[0], problem[1])
        else:
            values = [
                convert_field(batch.column(i), spec, verdicts, i, bounds, False)
                for i, spec in enumerate(layout.specs)
            ]
            table = assemble(layout, values, verdicts)
        bad = np.flatnonzero(~verdicts.good)
        dead = None
        if len(bad):
            picked = pa.Table.from_batches([batch]).take(pa.array(bad))
            dead = dead_letters(
                source,
                verdicts,
                names,
                records_in + bad.astype(np.int64),
                None,
                hex_binary(_rows_as_json(picked)),
            )
        sink.write(table, dead)
        records_in += n
    return records_in
