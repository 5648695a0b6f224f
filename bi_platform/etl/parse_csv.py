"""CSV inputs: lines delimited by the parser, each one record or one dead-letter entry.

The parser delimits the lines itself (LF; one CR before it belongs to the line end;
empty lines are blank), so an independent line count
(:func:`~bi_platform.etl.checks.count_csv_records`) always agrees with it; each
non-blank line after the header is one record: a row of pyarrow's CSV parser (numbers
read as text, then parsed with vectorised checks, :mod:`~bi_platform.etl.parse_columns`)
or, when pyarrow would not read it as exactly one row of the header's width, a
dead-letter entry (``bare_cr``, ``unclosed_quote``, ``malformed_row``).
"""

from __future__ import annotations

import csv
import logging
import mmap
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from bi_platform.etl.layouts import RecordLayout
from bi_platform.etl.parse_columns import assemble, convert_field
from bi_platform.etl.parse_common import (
    BARE_CR,
    MALFORMED_ROW,
    MISSING_FIELD,
    UNCLOSED_QUOTE,
    EtlInputError,
    ParseOptions,
    Sink,
    Source,
    Verdicts,
    dead_letters,
    hex_binary,
    unmap,
)

logger = logging.getLogger(__name__)

CSV_BLOCK_BYTES = 16 * 2**20


#
# The parser delimits the lines itself, so that a recount (``count_csv_records``) agrees
# with it for any bytes: a line ends at LF (one CR before it is part of the terminator);
# a line that is empty then is blank and not a record. The first line is the header;
# every other non-blank line is one record: a row of pyarrow's CSV parser, or a
# dead-letter entry when pyarrow would not read it as exactly one row (a bare CR inside,
# which pyarrow takes for a line end; a quoted field that does not close on the line,
# which pyarrow would continue on the next lines).

_LF, _CR, _QUOTE = 10, 13, 34
_BOM = b"\xef\xbb\xbf"
#: A line whose quoted fields all close on it (pyarrow's rules: a field is quoted when it
#: starts with a quote; inside, "" is a quote and " closes; after it, quotes are literal).
_CLOSED_QUOTES = re.compile(
    rb'(?:"(?:[^"]|"")*+"[^,]*+|[^",][^,]*+|)(?:,(?:"(?:[^"]|"")*+"[^,]*+|[^",][^,]*+|))*+'
)


#: The quoted part of a field (at the line's start or after a comma): removed, the
#: commas left are the field separators.
_QUOTED_PART = re.compile(rb'(?:^|(?<=,))"(?:[^"]|"")*+"')
_COMMA = 44


def _fields_per_line(data: np.ndarray, lines: _Lines, quoted: np.ndarray) -> np.ndarray:
    """How many fields pyarrow's parser splits each line into (its quotes closing on the
    line): commas + 1, commas inside quoted parts not counted."""
    where = np.flatnonzero(data == _COMMA)
    fields = np.ones(len(lines), np.int64)
    if len(where) and len(lines):
        index = np.searchsorted(lines.starts, where, side="right") - 1
        inside = (index >= 0) & (where < lines.ends[np.maximum(index, 0)])
        fields += np.bincount(index[inside], minlength=len(lines))
    for i in np.flatnonzero(quoted):
        line = data[lines.starts[i] : lines.ends[i]].tobytes()
        fields[i] = 1 + _QUOTED_PART.sub(b"", line).count(b",")
    return fields


def _next_lf(data: np.ndarray, start: int) -> int:
    """Offset of the first LF at or after ``start`` (``len(data)`` if none), found a
    block at a time."""
    while start < len(data):
        found = np.flatnonzero(data[start : start + CSV_BLOCK_BYTES] == _LF)
        if len(found):
            return start + int(found[0])
        start += CSV_BLOCK_BYTES
    return len(data)


def _csv_header(line: bytes) -> list[str]:
    """Column names of the header line (BOM, the line end and surrounding spaces removed)."""
    text = line.removeprefix(_BOM).decode("utf-8", errors="replace")
    try:
        rows = list(csv.reader([text]))
    except csv.Error:
        rows = [text.split(",")]
    return [name.strip() for name in rows[0]] if rows else []


@dataclass(frozen=True)
class _Lines:
    """The lines of a block of bytes: start and end offsets (end excludes LF and one CR
    before it), blank lines dropped; ``numbers`` are 1-based line numbers in the file."""

    starts: np.ndarray
    ends: np.ndarray
    numbers: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def take(self, mask: np.ndarray) -> _Lines:
        return _Lines(self.starts[mask], self.ends[mask], self.numbers[mask])


def split_lines(data: np.ndarray, first_number: int) -> tuple[_Lines, int]:
    """Split bytes into lines (see the CSV section).

    Args:
        data: The bytes (uint8), starting at a line start.
        first_number: The line number of the first line.

    Returns:
        ``(non-blank lines, how many lines in all)`` (blank lines included in the count;
        a last line without LF counts).
    """
    breaks = np.flatnonzero(data == _LF)
    starts = np.concatenate([np.zeros(1, np.int64), breaks + 1])
    ends = np.concatenate([breaks, np.array([len(data)], np.int64)])
    if len(data) and data[-1] == _LF:  # nothing after the last LF
        starts, ends = starts[:-1], ends[:-1]
    count = len(starts)
    numbers = np.arange(first_number, first_number + count, dtype=np.int64)
    ends = ends.astype(np.int64)
    cr_end = ends > starts
    cr_end[cr_end] &= data[ends[cr_end] - 1] == _CR
    ends = ends - cr_end
    keep = ends > starts
    return _Lines(starts[keep], ends[keep], numbers[keep]), count


def _lines_with(data: np.ndarray, lines: _Lines, byte: int) -> np.ndarray:
    """Mask of the lines that contain ``byte``."""
    where = np.flatnonzero(data == byte)
    mask = np.zeros(len(lines), bool)
    if len(where) and len(lines):
        index = np.searchsorted(lines.starts, where, side="right") - 1
        inside = (index >= 0) & (where < lines.ends[np.maximum(index, 0)])
        mask[index[inside]] = True
    return mask


def _gather(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """Binary array of the byte ranges ``[starts, ends)`` of ``data``."""
    lengths = (ends - starts).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(lengths),
        [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data[index]))],
    )


def _line_dead_letters(
    source: str, data: np.ndarray, lines: _Lines, base: int, reason: str
) -> pa.Table:
    """Every line of ``lines`` as a row-level dead-letter entry (its raw bytes, its line
    number and the byte offset of its start in the file)."""
    verdicts = Verdicts(len(lines))
    verdicts.flag(np.ones(len(lines), bool), reason, -1)
    raw = hex_binary(_gather(data, lines.starts, lines.ends))
    return dead_letters(source, verdicts, [], lines.numbers, base + lines.starts, raw)


def parse_csv(src: Source, source: str, options: ParseOptions, sink: Sink) -> int:
    layout = options.layout
    mapped = mmap.mmap(src.fd, src.size, prot=mmap.PROT_READ)
    try:
        data = np.frombuffer(mapped, np.uint8)
        records = _parse_csv_bytes(data, source, layout, options.epoch_bounds, sink)
        del data
    finally:
        unmap(mapped)
    return records


def _parse_csv_bytes(
    data: np.ndarray, source: str, layout: RecordLayout, bounds: tuple[int, int], sink: Sink
) -> int:
    header_end = _next_lf(data, 0)
    header = _csv_header(data[:header_end].tobytes().removesuffix(b"\r"))
    names = [s.name for s in layout.specs]
    position = {}
    for index, name in enumerate(header):
        position.setdefault(name, index)
    missing = [name for name in names if name not in position]
    columns = [f"c{i}" for i in range(max(1, len(header)))]
    records = 0
    start = header_end + 1
    number = 2
    while start < len(data):
        end = min(len(data), start + CSV_BLOCK_BYTES)
        if end < len(data):
            last = np.flatnonzero(data[start:end] == _LF)
            # up to the last line end in the block (a longer line: up to its end)
            end = (
                start + int(last[-1]) + 1 if len(last) else min(len(data), _next_lf(data, end) + 1)
            )
        block = data[start:end]
        lines, count = split_lines(block, number)
        records += len(lines)
        if len(lines):
            header_info = (columns, position, missing)
            _csv_block(block, lines, start, source, layout, bounds, header_info, sink)
        number += count
        start = end
    return records


def _csv_block(
    block: np.ndarray,
    lines: _Lines,
    base: int,
    source: str,
    layout: RecordLayout,
    bounds: tuple[int, int],
    header_info: tuple[list[str], dict[str, int], list[str]],
    sink: Sink,
) -> None:
    """Parse the non-blank lines of one block (``base``: the block's offset in the file;
    ``header_info``: pyarrow's column names, the position of each header name, the layout
    fields the header lacks)."""
    columns, position, missing = header_info
    bare_cr = _lines_with(block, lines, _CR)
    quoted = _lines_with(block, lines, _QUOTE) & ~bare_cr
    unclosed = np.zeros(len(lines), bool)
    for i in np.flatnonzero(quoted):
        line = block[lines.starts[i] : lines.ends[i]].tobytes()
        unclosed[i] = _CLOSED_QUOTES.fullmatch(line) is None
    # pyarrow's invalid-row handler cannot take a row that is not UTF-8: rows of the
    # wrong shape are found here, so pyarrow only gets rows of the header's width
    misshapen = _fields_per_line(block, lines, quoted & ~unclosed) != len(columns)
    misshapen &= ~(bare_cr | unclosed)
    dead: list[pa.Table] = []  # written once per block, in line order
    for mask, reason in (
        (bare_cr, BARE_CR),
        (unclosed, UNCLOSED_QUOTE),
        (misshapen, MALFORMED_ROW),
    ):
        if mask.any():
            dead.append(_line_dead_letters(source, block, lines.take(mask), base, reason))
    skipped = bare_cr | unclosed | misshapen
    fed = lines.take(~skipped)
    if not len(fed):
        _write_in_line_order(sink, dead)
        return
    if skipped.any():
        kept = _gather(block, fed.starts, fed.ends).to_pylist()
        payload = pa.py_buffer(b"\n".join(kept) + b"\n")
    else:
        payload = pa.py_buffer(block)  # blank lines and CRLF: pyarrow skips/strips them too
    if payload.size >= len(_BOM) and payload[: len(_BOM)].to_pybytes() == _BOM:
        # pyarrow drops a BOM at the start of its input: a blank line first keeps it data
        payload = pa.py_buffer(b"\n" + payload.to_pybytes())
    malformed: list[int] = []

    def on_invalid(row: Any) -> str:
        malformed.append(row.number)
        return "skip"

    reader = pacsv.open_csv(
        pa.BufferReader(payload),
        read_options=pacsv.ReadOptions(
            use_threads=False,
            block_size=max(CSV_BLOCK_BYTES, int((fed.ends - fed.starts).max()) + 2),
            column_names=columns,
        ),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(columns, pa.binary()), strings_can_be_null=False
        ),
    )
    try:
        batches = list(reader)
    except pa.ArrowInvalid as exc:
        raise EtlInputError(
            f"{source}: CSV rows near byte {base:,} cannot be read: {exc}"
        ) from None
    rows = sum(batch.num_rows for batch in batches)
    if rows + len(malformed) != len(fed) or any(n is None for n in malformed):
        raise EtlInputError(
            f"{source}: the CSV parser read {rows + len(malformed):,} rows from "
            f"{len(fed):,} lines near byte {base:,}: rows cannot be delimited"
        )
    is_bad = np.zeros(len(fed), bool)
    is_bad[np.asarray(malformed, np.int64) - 1] = True
    if is_bad.any():
        dead.append(_line_dead_letters(source, block, fed.take(is_bad), base, MALFORMED_ROW))
    good = fed.take(~is_bad)
    done = 0
    specs = layout.specs
    names = [s.name for s in specs]
    for batch in batches:
        n = batch.num_rows
        lines = good.take(slice(done, done + n))
        done += n
        verdicts = Verdicts(n)
        table = None
        if missing:
            verdicts.flag(np.ones(n, bool), MISSING_FIELD, names.index(missing[0]))
        else:
            values = [
                convert_field(
                    batch.column(position[spec.name]), spec, verdicts, index, bounds, True
                )
                for index, spec in enumerate(specs)
            ]
            table = assemble(layout, values, verdicts)
        bad = np.flatnonzero(~verdicts.good)
        if len(bad):
            raw = hex_binary(_gather(block, lines.starts[bad], lines.ends[bad]))
            dead.append(
                dead_letters(
                    source, verdicts, names, lines.numbers[bad], base + lines.starts[bad], raw
                )
            )
        sink.write(table, None)
    _write_in_line_order(sink, dead)


def _write_in_line_order(sink: Sink, dead: list[pa.Table]) -> None:
    if dead:
        sink.write(None, pa.concat_tables(dead).sort_by("row_number"))
