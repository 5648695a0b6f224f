"""Binary / CSV / Parquet inputs -> validated records Parquet + a dead-letter Parquet.

:func:`parse_file` is the entry point: it reads the input through one open descriptor
(e.g. from :func:`~bi_platform.etl.security.open_inbox_file`), never re-opened by name,
picks the format's parser and writes both outputs atomically
(:func:`bi_platform.lib.files.atomic_path`); :func:`read_records` reads records files
back as one LazyFrame. The formats:

- :mod:`~bi_platform.etl.parse_binary`: fixed-size records, memory-mapped and decoded
  in chunks, optionally by a process pool;
- :mod:`~bi_platform.etl.parse_csv`: lines delimited by the parser itself, each a row of
  pyarrow's CSV parser or a dead-letter entry;
- :mod:`~bi_platform.etl.parse_parquet`: cast per field, corrupt files rejected;
- :mod:`~bi_platform.etl.parse_columns`: text/Arrow columns to the layout's types (CSV
  and Parquet);
- :mod:`~bi_platform.etl.parse_common`: options, results, schemas, the dead-letter
  format and the output writers.

A record that fails becomes one dead-letter entry
(:data:`~bi_platform.etl.parse_common.DEAD_LETTER_SCHEMA`): source file, row number
(binary: record index from 0; CSV: the line number in the file, the header being line 1;
Parquet: row index from 0), byte offset (binary: of the record; CSV: of the line), the
raw bytes as hex (binary: the record; CSV: the line; Parquet: the row as JSON), the
reason (see :data:`~bi_platform.etl.parse_common.REASONS`) and the field (null for
row-level reasons). ``records_in == records_out + dead_letter`` always.

On disk the records Parquet has the decoded schema except that timestamps are stored in
milliseconds (Parquet has no second unit) and text is dictionary-encoded (read back as
plain strings); see :func:`~bi_platform.etl.parse_common.disk_schema`. Pages are
uncompressed: the single-threaded Parquet writer is the pipeline's serial stage (see
:data:`~bi_platform.etl.parse_common.RECORDS_COMPRESSION`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from bi_platform.etl.layouts import RecordLayout, get_layout
from bi_platform.etl.parse_binary import free_scratch, parse_binary
from bi_platform.etl.parse_common import (
    EtlInputError,
    EtlOutputError,
    ParseOptions,
    ParseResult,
    Sink,
    Source,
    detect_format,
    disk_schema,
    pl,
)
from bi_platform.etl.parse_csv import parse_csv
from bi_platform.etl.parse_parquet import parse_parquet
from bi_platform.lib.files import atomic_path

logger = logging.getLogger(__name__)

_PARSERS: dict[str, Callable[[Source, str, ParseOptions, Sink], int]] = {
    "binary": parse_binary,
    "csv": parse_csv,
    "parquet": parse_parquet,
}


def parse_file(
    path: Path,
    records_path: Path,
    dead_letter_path: Path,
    options: ParseOptions,
    source_name: str | None = None,
    *,
    fd: int | None = None,
) -> ParseResult:
    """Decode and validate one input file into ``records_path`` and ``dead_letter_path``
    (Parquet, both written atomically; schema-only when empty).

    Args:
        path: The input's name (its suffix gives the format); read through ``fd`` when
            given, else opened once.
        records_path: Where the valid records go.
        dead_letter_path: Where the dead-letter entries go.
        options: Layout, timestamp window, chunk size, workers.
        source_name: The name in dead-letter entries and logs (default: the file name).
        fd: An open descriptor of the input (e.g. from
            :func:`~bi_platform.etl.security.open_inbox_file`): the file is read only
            through it (worker processes map it through ``/proc/<pid>/fd``).

    Returns:
        The :class:`ParseResult` (``records_in == records_out + dead_letter`` always).
        :class:`EtlInputError`: the file cannot be read as a whole (it is rejected);
        :class:`EtlOutputError`: the outputs cannot be written.
    """
    started = time.perf_counter()
    path = Path(path)
    source = source_name or path.name
    fmt = detect_format(path)
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    assert fd is not None
    try:
        src = Source.of(fd)
        records_path, dead_letter_path = Path(records_path), Path(dead_letter_path)
        try:
            records_path.parent.mkdir(parents=True, exist_ok=True)
            dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EtlOutputError(f"cannot create {records_path.parent}: {exc}") from exc
        with (
            atomic_path(records_path) as records_tmp,
            atomic_path(dead_letter_path) as dead_tmp,
        ):
            sink = Sink(records_tmp, dead_tmp, options.layout, options.chunk_records)
            try:
                records_in = _PARSERS[fmt](src, source, options, sink) if src.size else 0
            finally:
                sink.close()
                free_scratch()
    finally:
        if own:
            os.close(fd)
    if records_in != sink.records_out + sink.dead_letter:
        raise EtlInputError(
            f"{source}: {records_in} records in but {sink.records_out} out + "
            f"{sink.dead_letter} dead-lettered"
        )
    result = ParseResult(
        source_file=source,
        format=fmt,
        size_bytes=src.size,
        records_in=records_in,
        records_out=sink.records_out,
        dead_letter=sink.dead_letter,
        dead_letter_reasons=dict(sorted(sink.reasons.items())),
        records_path=records_path,
        dead_letter_path=dead_letter_path,
        seconds=time.perf_counter() - started,
        rejected_reason=sink.rejected_reason,
    )
    logger.info(
        "%s (%s, %s bytes): %d in, %d out, %d dead-lettered %s in %.2f s",
        source,
        fmt,
        f"{src.size:,}",
        result.records_in,
        result.records_out,
        result.dead_letter,
        result.dead_letter_reasons or "",
        result.seconds,
    )
    return result


def read_records(paths: list[Path], layout: RecordLayout | None = None) -> pl.LazyFrame:
    """Lazy scan of records Parquet files (an empty frame of the layout's on-disk schema
    when there are none)."""
    if not paths:
        schema = disk_schema(layout or get_layout("default"))
        frame = pl.from_arrow(schema.empty_table())
        assert isinstance(frame, pl.DataFrame)
        return frame.lazy()
    return pl.scan_parquet([str(p) for p in paths])
