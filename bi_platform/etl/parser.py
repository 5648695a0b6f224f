"""Binary / CSV / Parquet inputs -> validated records Parquet + a dead-letter Parquet.

The input is read through one open descriptor (:func:`parse_file`'s ``fd``, e.g. from
:func:`~bi_platform.etl.security.open_inbox_file`), never re-opened by name: worker
processes map it through ``/proc/<pid>/fd/<fd>`` and check it is the same file.

Binary files are memory-mapped and decoded a chunk at a time (``chunk_bytes``, aligned
to the record size) through the layout's numpy structured dtype: the fields are copied
out a cache-sized block of records at a time, text fields are dictionary-encoded on
their raw bytes so only the distinct values are UTF-8 decoded (and validated), and
validation is numpy boolean masks -- no per-record Python. With ``workers > 1`` and more
than one chunk, a process pool decodes the chunks (the task function is module-level,
so it pickles) straight into slots of a shared memory-mapped file; this process wraps
each slot as Arrow arrays without a copy and appends them, in file order, to the single
records Parquet file (the output equals the one-worker output). While the pool's
processes start, this process decodes the first chunks itself. A binary file whose full
records fail validation more than :data:`MISALIGNED_RATE` of the time is *misaligned*
(another record size or layout): none of its records is accepted, each becomes a
``misaligned`` dead-letter entry and :attr:`ParseResult.rejected_reason` says why.

CSV: the parser delimits the lines itself (LF; one CR before it belongs to the line end;
empty lines are blank), so an independent line count always agrees with it; each
non-blank line after the header is one record: a row of pyarrow's CSV parser (numbers
read as text, then parsed with vectorised checks) or, when pyarrow would not read it as
exactly one row of the header's width, a dead-letter entry (``bare_cr``,
``unclosed_quote``, ``malformed_row``). Parquet inputs are cast per field (a missing or
unusable column dead-letters every row); corrupt pages, or fewer rows than the footer
declares, reject the file (:class:`EtlInputError`).

A record that fails becomes one dead-letter entry (:data:`DEAD_LETTER_SCHEMA`): source
file, row number (binary: record index from 0; CSV: the line number in the file, the
header being line 1; Parquet: row index from 0), byte offset (binary: of the record; CSV:
of the line), the raw bytes as hex (binary: the record; CSV: the line; Parquet: the row as
JSON), the reason (see :data:`REASONS`) and the field (null for row-level reasons).
``records_in == records_out + dead_letter`` always.

On disk the records Parquet has the decoded schema except that timestamps are stored in
milliseconds (Parquet has no second unit) and text is dictionary-encoded (read back as
plain strings); see :func:`disk_schema`. Pages are uncompressed: the single-threaded
Parquet writer is the pipeline's serial stage (see :data:`RECORDS_COMPRESSION`).
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import math
import mmap
import multiprocessing
import os
import re
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bi_platform.etl.layouts import FieldSpec, RecordLayout, get_layout
from bi_platform.sample_data.files import atomic_target

logger = logging.getLogger(__name__)


class _LazyModule:
    """A module imported on first attribute access. The pool's worker processes decode
    binary chunks with numpy and pyarrow only: without polars they start ~0.2 s sooner."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    import polars as pl
else:
    pl = _LazyModule("polars")

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("row_number", pa.int64()),
        ("byte_offset", pa.int64()),
        ("raw_hex", pa.string()),
        ("reason", pa.string()),
        ("field", pa.string()),
    ]
)

FORMATS = {
    ".bin": "binary",
    ".dat": "binary",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

#: Dead-letter reasons (a record gets the first that applies, fields in layout order).
TRUNCATED_RECORD = "truncated_record"  # trailing bytes shorter than one record
INVALID_UTF8 = "invalid_utf8"  # text field bytes are not UTF-8
TEXT_TOO_LONG = "text_too_long"  # text longer than the layout's field (CSV/Parquet)
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # outside [timestamp_min, timestamp_max]
OUT_OF_RANGE = "out_of_range"  # number does not fit the field's type (overflow, negative)
NON_FINITE = "non_finite"  # NaN or infinity in a float field
BAD_NUMBER = "bad_number"  # text that is not a number ("12x")
BAD_TIMESTAMP = "bad_timestamp"  # text that is neither epoch seconds nor ISO 8601
MISSING_VALUE = "missing_value"  # empty CSV cell / null Parquet value
MALFORMED_ROW = "malformed_row"  # CSV row with missing or extra cells
MISSING_FIELD = "missing_field"  # the file has no column for a layout field
BAD_TYPE = "bad_type"  # the file's column type cannot be cast to the field's
MISALIGNED = "misaligned"  # a binary file judged misaligned as a whole (none accepted)
UNCLOSED_QUOTE = "unclosed_quote"  # CSV line whose quoted field does not close on it
BARE_CR = "bare_cr"  # CSV line with a carriage return that does not end it
REASONS = (
    TRUNCATED_RECORD,
    INVALID_UTF8,
    TEXT_TOO_LONG,
    TIMESTAMP_OUT_OF_RANGE,
    OUT_OF_RANGE,
    NON_FINITE,
    BAD_NUMBER,
    BAD_TIMESTAMP,
    MISSING_VALUE,
    MALFORMED_ROW,
    MISSING_FIELD,
    BAD_TYPE,
    MISALIGNED,
    UNCLOSED_QUOTE,
    BARE_CR,
)
_CODE = {reason: code for code, reason in enumerate(REASONS, start=1)}
_REASON_NAMES = np.array(["", *REASONS], dtype=object)

#: Compression of the records Parquet pages (see :func:`records_writer_options`). None:
#: the single-threaded Parquet writer is the pipeline's serial stage and lz4 would add
#: ~0.5 CPU-s per GiB to it (for a file ~1/3 smaller); text is dictionary-encoded anyway.
RECORDS_COMPRESSION: str | dict[str, str] = "none"
CSV_BLOCK_BYTES = 16 * 2**20
#: Bytes of records whose fields are extracted together (fits the CPU caches).
_CACHE_BLOCK_BYTES = 2 * 2**20
PARQUET_BATCH_ROWS = 1_000_000

# byte -> its two hex digits, as one little-endian uint16 (memory order "hi", "lo")
_HEX_LUT = np.array(
    [ord("0123456789abcdef"[b >> 4]) | (ord("0123456789abcdef"[b & 15]) << 8) for b in range(256)],
    dtype="<u2",
)
_INT_RE = r"^[+-]?[0-9]+$"
_UNIT_SECONDS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


#: A binary file whose full records fail validation more often than this is judged
#: misaligned (another record size or layout): none of its records is accepted.
MISALIGNED_RATE = 0.5
#: ... when it has at least this many full records (fewer say too little).
MISALIGNED_MIN_RECORDS = 8


class EtlInputError(ValueError):
    """The whole file is unusable (unknown format, not a Parquet file, corrupt pages,
    rows that cannot be delimited, ...): it is rejected as a whole."""


class EtlOutputError(RuntimeError):
    """Writing the records or dead-letter files failed (disk full, permissions...): a
    problem of this machine, not of the input file."""


@dataclass(frozen=True)
class ParseOptions:
    """How files are decoded and validated."""

    layout: RecordLayout
    timestamp_min: datetime
    timestamp_max: datetime
    chunk_bytes: int = 64 * 2**20
    workers: int = 1

    def __post_init__(self) -> None:
        for name in ("timestamp_min", "timestamp_max"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")
        if self.timestamp_min > self.timestamp_max:
            raise ValueError("timestamp_min is after timestamp_max")
        if self.chunk_bytes < 1 or self.workers < 1:
            raise ValueError("chunk_bytes and workers must be >= 1")

    @classmethod
    def from_settings(cls, settings: Any = None) -> ParseOptions:
        """Options from the platform settings (workers default: the machine's cores)."""
        if settings is None:
            from bi_platform.settings import get_settings

            settings = get_settings()
        return cls(
            layout=get_layout(settings.etl_layout, settings.etl_layouts_file),
            timestamp_min=settings.etl_timestamp_min,
            timestamp_max=settings.etl_timestamp_max,
            chunk_bytes=int(settings.etl_chunk_mb) * 2**20,
            workers=settings.etl_workers or os.cpu_count() or 1,
        )

    @property
    def chunk_records(self) -> int:
        return max(1, self.chunk_bytes // self.layout.record_size)

    @property
    def epoch_bounds(self) -> tuple[int, int]:
        """[min, max] as integer epoch seconds."""
        return (
            math.ceil(self.timestamp_min.timestamp()),
            math.floor(self.timestamp_max.timestamp()),
        )


@dataclass(frozen=True)
class ParseResult:
    """What :func:`parse_file` did with one file."""

    source_file: str
    format: str
    size_bytes: int
    records_in: int
    records_out: int
    dead_letter: int
    dead_letter_reasons: dict[str, int]
    records_path: Path
    dead_letter_path: Path
    seconds: float
    #: Set when the file as a whole cannot be trusted (a misaligned binary file): why.
    #: Its records are then all in the dead-letter queue.
    rejected_reason: str | None = None

    def as_metadata(self) -> dict[str, Any]:
        return {
            "rejected_reason": self.rejected_reason,
            "source_file": self.source_file,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "dead_letter": self.dead_letter,
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "records_path": str(self.records_path),
            "dead_letter_path": str(self.dead_letter_path),
            "seconds": round(self.seconds, 4),
        }


def detect_format(path: Path) -> str:
    """``binary``, ``csv`` or ``parquet`` from the file's suffix."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise EtlInputError(
            f"{Path(path).name}: unsupported file type {Path(path).suffix!r} "
            f"(accepted: {', '.join(sorted(FORMATS))})"
        )
    return fmt


# -- shared pieces -------------------------------------------------------------------------


_WRITTEN_TYPES = {
    "utf8": pa.dictionary(pa.int32(), pa.string()),
    "epoch_s": pa.timestamp("ms", tz="UTC"),  # Parquet has no second unit
}


def writer_schema(layout: RecordLayout) -> pa.Schema:
    """Schema of the tables written to the records Parquet: text dictionary-encoded,
    timestamps in milliseconds (what Parquet stores), no nulls."""
    return pa.schema(
        [
            pa.field(
                field.name,
                _WRITTEN_TYPES.get(field.type, arrow.type),
                nullable=False,  # REQUIRED in Parquet: no definition levels to write
            )
            for field, arrow in zip(layout.fields, layout.arrow_schema, strict=True)
        ]
    )


def disk_schema(layout: RecordLayout) -> pa.Schema:
    """Schema a records Parquet file reads back with: :func:`writer_schema` with text
    as plain strings (``timestamp[ms, UTC]``, non-nullable columns)."""
    return pa.schema(
        [
            f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
            for f in writer_schema(layout)
        ]
    )


def _hex_fixed(rows: np.ndarray) -> pa.Array:
    """Hex strings of the rows of a (n, width) uint8 array."""
    n, width = rows.shape
    digits = _HEX_LUT[rows]  # (n, width) uint16: two ASCII digits per byte
    offsets = np.arange(n + 1, dtype=np.int64) * (2 * width)
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(digits))
    ).cast(pa.string())


def _hex_binary(values: pa.Array) -> pa.Array:
    """Hex strings of a binary array (nulls become empty strings)."""
    values = pc.fill_null(values.cast(pa.large_binary()), b"")
    n = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int64)[values.offset : values.offset + n + 1]
    data_buffer = values.buffers()[2]
    data = (
        np.frombuffer(data_buffer, np.uint8)[offsets[0] : offsets[-1]]
        if data_buffer is not None and n
        else np.zeros(0, np.uint8)
    )
    digits = _HEX_LUT[data]
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer((offsets - offsets[0]) * 2), pa.py_buffer(digits)
    ).cast(pa.string())


def _text_dictionary(raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """UTF-8 view of a binary dictionary: (string array, mask of invalid entries).

    Invalid entries become empty strings. Vectorised unless something is invalid, then
    each distinct value is checked on its own (the dictionary is small)."""
    raw = raw.cast(pa.binary())
    try:
        return raw.cast(pa.string()), np.zeros(len(raw), bool)
    except pa.ArrowInvalid:
        pass
    texts: list[str] = []
    bad = np.zeros(len(raw), bool)
    for i, value in enumerate(raw.to_pylist()):
        try:
            texts.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append("")
            bad[i] = True
    return pa.array(texts, pa.string()), bad


def _strip_nul(padded: np.ndarray) -> pa.Array:
    """Binary array of the rows of a (n, width) uint8 array without trailing NULs."""
    n, width = padded.shape
    nonzero = padded != 0
    lengths = np.where(nonzero.any(axis=1), width - np.argmax(nonzero[:, ::-1], axis=1), 0)
    keep = np.arange(width) < lengths[:, None]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(padded[keep])]
    )


class _Verdicts:
    """First failure (reason code, field index) of each of ``n`` rows."""

    def __init__(self, n: int):
        self.reason = np.zeros(n, np.uint8)
        self.field = np.full(n, -1, np.int16)

    def flag(self, mask: np.ndarray, reason: str, field: int) -> None:
        mask = np.asarray(mask, bool) & (self.reason == 0)
        if mask.any():
            self.reason[mask] = _CODE[reason]
            self.field[mask] = field

    @property
    def good(self) -> np.ndarray:
        return self.reason == 0


def _dead_letters(
    source: str,
    verdicts: _Verdicts,
    names: list[str],
    row_numbers: np.ndarray,
    byte_offsets: np.ndarray | None,
    raw_hex: pa.Array,
) -> pa.Table:
    """Dead-letter table of the failed rows (arguments already restricted to them)."""
    bad = np.flatnonzero(verdicts.reason)
    field_names = np.array([None, *names], dtype=object)
    return pa.Table.from_arrays(
        [
            pa.array(np.full(len(bad), source, dtype=object), pa.string()),
            pa.array(row_numbers, pa.int64()),
            pa.array(byte_offsets, pa.int64())
            if byte_offsets is not None
            else pa.nulls(len(bad), pa.int64()),
            raw_hex,
            pa.array(_REASON_NAMES[verdicts.reason[bad]], pa.string()),
            pa.array(field_names[verdicts.field[bad] + 1], pa.string()),
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def _reason_counts(dead: pa.Table | None) -> dict[str, int]:
    if dead is None or dead.num_rows == 0:
        return {}
    counts = pc.value_counts(dead.column("reason").combine_chunks())
    return {c["values"].as_py(): c["counts"].as_py() for c in counts}


# -- binary ---------------------------------------------------------------------------------


def _output_dtype(spec: FieldSpec) -> np.dtype:
    """Native dtype of a decoded column (epoch milliseconds int64, text int32
    dictionary indices)."""
    if spec.type == "utf8":
        return np.dtype(np.int32)
    if spec.type == "epoch_s":
        return np.dtype(np.int64)
    return np.dtype(spec.storage)


@dataclass
class _Decoded:
    """The valid records of a chunk as columns (numpy, ``rows`` long; text fields are
    int32 indices into ``dictionaries[field index]``) and the dead letters."""

    rows: int
    columns: list[np.ndarray]
    dictionaries: dict[int, pa.Array]
    dead: pa.Table | None


_LOCAL = threading.local()


def _scratch(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A reusable buffer (per thread) of at least ``size`` items: fresh allocations of
    this size would cost page faults on every chunk. :func:`_free_scratch` drops them."""
    buffers: dict[str, np.ndarray] = _LOCAL.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.dtype != dtype or len(buffer) < size:
        buffer = buffers[name] = np.empty(size, dtype)
    return buffer[:size]


def _free_scratch() -> None:
    _LOCAL.__dict__.pop("buffers", None)


def _decode_binary(
    records: np.ndarray,
    raw_rows: np.ndarray,
    layout: RecordLayout,
    bounds: tuple[int, int],
    first: int,
    source: str,
    out: list[np.ndarray] | None = None,
) -> _Decoded:
    """Decode and validate consecutive records.

    ``records`` is a structured view (:attr:`RecordLayout.decode_dtype`) and ``raw_rows``
    the same bytes as an (n, record_size) uint8 array; ``out`` (one array per field, at
    least n long, of :func:`_output_dtype`) receives the columns, valid rows first."""
    n = len(records)
    verdicts = _Verdicts(n)
    if out is None:
        out = [_scratch(f"out{i}", n, _output_dtype(s)) for i, s in enumerate(layout.specs)]
    columns = [column[:n] for column in out]
    specs = list(enumerate(layout.specs))
    texts_raw = {
        i: _scratch(f"text{i}", n * spec.size, np.dtype(np.uint8)).reshape(n, spec.size)
        for i, spec in specs
        if spec.code == "s"
    }
    # Copy the fields a block of records at a time: the block stays in cache while each
    # field is extracted, instead of streaming the whole chunk from memory per field.
    step = max(1, _CACHE_BLOCK_BYTES // layout.record_size)
    for low in range(0, n, step):
        block = records[low : low + step]
        high = low + len(block)
        for index, spec in specs:
            target = texts_raw[index] if spec.code == "s" else columns[index]
            np.copyto(target[low:high], block[spec.name], casting="unsafe")
        del block
    dictionaries: dict[int, pa.Array] = {}
    for index, spec in specs:
        column = columns[index]
        if spec.code == "s":
            fixed = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(spec.size), n, [None, pa.py_buffer(texts_raw.pop(index))]
            )
            encoded = pc.dictionary_encode(fixed)
            del fixed
            distinct = np.frombuffer(
                encoded.dictionary.buffers()[1], np.uint8, count=len(encoded.dictionary) * spec.size
            ).reshape(-1, spec.size)
            texts, invalid = _text_dictionary(_strip_nul(distinct))
            np.copyto(column, np.frombuffer(encoded.indices.buffers()[1], np.int32, count=n))
            if invalid.any():
                verdicts.flag(invalid[column], INVALID_UTF8, index)
            dictionaries[index] = texts
        elif spec.type == "epoch_s":
            # uint64 seconds were wrapped into int64: check them as stored
            stored = column.view(np.uint64) if spec.storage == "uint64" else column
            verdicts.flag(~_in_range(stored, *bounds), TIMESTAMP_OUT_OF_RANGE, index)
            np.multiply(column, 1000, out=column)  # to ms (rows out of range are dropped)
        elif spec.type.startswith("float"):
            verdicts.flag(~np.isfinite(column), NON_FINITE, index)

    good = verdicts.good
    kept = int(np.count_nonzero(good))
    dead = None
    if kept < n:
        bad = np.flatnonzero(~good)
        numbers = first + bad.astype(np.int64)
        dead = _dead_letters(
            source,
            verdicts,
            [s.name for s in layout.specs],
            numbers,
            numbers * layout.record_size,
            _hex_fixed(raw_rows[bad]),
        )
        for column in columns:
            column[:kept] = column[good]
    return _Decoded(kept, [c[:kept] for c in columns], dictionaries, dead)


def _records_table(layout: RecordLayout, decoded: _Decoded) -> pa.Table:
    """The valid records as a table of :func:`writer_schema` (zero-copy over the
    columns)."""
    schema = writer_schema(layout)
    arrays = []
    for index, field in enumerate(schema):
        column = decoded.columns[index]
        if index in decoded.dictionaries:
            indices = pa.Array.from_buffers(pa.int32(), len(column), [None, pa.py_buffer(column)])
            # indices come from dictionary_encode: no bounds check needed
            arrays.append(
                pa.DictionaryArray.from_arrays(indices, decoded.dictionaries[index], safe=False)
            )
        else:
            arrays.append(
                pa.Array.from_buffers(field.type, len(column), [None, pa.py_buffer(column)])
            )
    return pa.Table.from_arrays(arrays, schema=schema)


def _in_range(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """``low <= values <= high`` for an integer array, bounds clipped to its dtype."""
    info = np.iinfo(values.dtype)
    low_c, high_c = max(low, info.min), min(high, info.max)
    if low_c > info.max or high_c < info.min or low_c > high_c:
        return np.zeros(len(values), bool)
    return (values >= values.dtype.type(low_c)) & (values <= values.dtype.type(high_c))


@dataclass(frozen=True)
class _Source:
    """The input being parsed: an open descriptor (it is never re-opened by name) and
    what identifies its file, so that worker processes can check they map the same file."""

    fd: int
    size: int
    dev: int
    ino: int
    pid: int

    @classmethod
    def of(cls, fd: int) -> _Source:
        st = os.fstat(fd)
        return cls(fd, st.st_size, st.st_dev, st.st_ino, os.getpid())

    @property
    def worker_path(self) -> str:
        """How another process reaches this descriptor (Linux ``/proc``): the open file
        itself, not a name in the inbox."""
        return f"/proc/{self.pid}/fd/{self.fd}"

    def shareable(self) -> bool:
        """Whether worker processes can map the descriptor (``/proc`` is mounted)."""
        try:
            st = Path(self.worker_path).stat()
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)

    def pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)


def _map(
    target: int | str,
    offset: int,
    length: int,
    *,
    write: bool = False,
    populate: bool = False,
    expect: tuple[int, int] | None = None,
) -> tuple[mmap.mmap, int]:
    """A shared mapping of ``length`` bytes of ``target`` (an open descriptor, or a path
    opened for the mapping only) from ``offset``; (mapping, where ``offset`` is inside it)
    -- the mapping starts at an allocation-granularity boundary. ``populate`` maps the
    (cached) pages up front, in one call, rather than one page fault at a time.
    ``expect`` (device, inode): the opened path must be that file."""
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if write else 0)
    if isinstance(target, int):
        mapped = mmap.mmap(
            target, offset - aligned + length, flags=flags, prot=prot, offset=aligned
        )
        return mapped, offset - aligned
    with open(target, "r+b" if write else "rb") as f:  # noqa: PTH123 - the fd is mapped
        if expect is not None:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != expect:
                raise EtlInputError(f"{target}: not the file being parsed")
        mapped = mmap.mmap(
            f.fileno(), offset - aligned + length, flags=flags, prot=prot, offset=aligned
        )
    return mapped, offset - aligned


def _unmap(mapped: mmap.mmap) -> None:
    try:
        mapped.close()
    except BufferError:  # pragma: no cover - a view escaped; unmapped when collected
        logger.debug("a mapping still has views; the garbage collector will unmap it")


def _decode_range(
    target: int | str,
    layout: RecordLayout,
    bounds: tuple[int, int],
    first: int,
    count: int,
    source: str,
    out: list[np.ndarray] | None = None,
    expect: tuple[int, int] | None = None,
) -> _Decoded:
    """Memory-map ``count`` records from record ``first`` of ``target`` (descriptor or
    path, see :func:`_map`) and decode them."""
    size = layout.record_size
    mapped, at = _map(target, first * size, count * size, populate=True, expect=expect)
    try:
        records = np.frombuffer(mapped, layout.decode_dtype, count=count, offset=at)
        raw_rows = np.frombuffer(mapped, np.uint8, count=count * size, offset=at)
        decoded = _decode_binary(
            records, raw_rows.reshape(count, size), layout, bounds, first, source, out
        )
        del records, raw_rows  # release the exported buffers before unmapping
    finally:
        _unmap(mapped)
    return decoded


def _slot_plan(layout: RecordLayout, capacity: int) -> tuple[list[tuple[int, np.dtype]], int]:
    """(offset, dtype) of each decoded column inside a slot of ``capacity`` records, and
    the slot's size (a multiple of the allocation granularity, so slots map alone)."""
    plan, offset = [], 0
    for spec in layout.specs:
        dtype = _output_dtype(spec)
        plan.append((offset, dtype))
        offset += -(-capacity * dtype.itemsize // 64) * 64
    grain = mmap.ALLOCATIONGRANULARITY
    return plan, -(-offset // grain) * grain


def _slot_columns(
    buffer: Any, base: int, plan: list[tuple[int, np.dtype]], capacity: int
) -> list[np.ndarray]:
    return [
        np.frombuffer(buffer, dtype, count=capacity, offset=base + offset) for offset, dtype in plan
    ]


@dataclass(frozen=True)
class _ChunkTask:
    path: str  # the parent's descriptor as seen from a worker (/proc/<pid>/fd/<fd>)
    expect: tuple[int, int]  # (device, inode) that path must open
    source: str
    layout: RecordLayout
    bounds: tuple[int, int]
    first: int
    count: int
    slots_file: str
    slot_offset: int
    capacity: int


@dataclass(frozen=True)
class _ChunkDone:
    rows: int
    dictionaries: dict[int, pa.Array]
    dead: pa.Table | None


#: The slots file mapped once per worker process (its pages then stay mapped).
_WORKER_SLOTS: dict[str, mmap.mmap] = {}


def _decode_chunk_into_slot(task: _ChunkTask) -> _ChunkDone:
    """Pool task: decode one chunk straight into its slot of the shared slots file (the
    parent maps the same pages, so columns cross processes without a copy); only the
    text dictionaries and the dead letters travel back pickled."""
    plan, _ = _slot_plan(task.layout, task.capacity)
    slots = _WORKER_SLOTS.get(task.slots_file)
    if slots is None:
        for stale in _WORKER_SLOTS.values():  # a previous parse's (already deleted) file
            _unmap(stale)
        _WORKER_SLOTS.clear()
        slots = _WORKER_SLOTS[task.slots_file] = _map(
            task.slots_file, 0, Path(task.slots_file).stat().st_size, write=True
        )[0]
    out = _slot_columns(slots, task.slot_offset, plan, task.capacity)
    decoded = _decode_range(
        task.path, task.layout, task.bounds, task.first, task.count, task.source, out, task.expect
    )
    return _ChunkDone(decoded.rows, decoded.dictionaries, decoded.dead)


def _slots_directory(size: int, fallback: Path) -> Path:
    """Where the slots file goes: shared memory (``/dev/shm``) when it has room for it
    twice over (no disk writeback, cheaper page faults), else ``fallback``."""
    shm = Path("/dev/shm")
    try:
        stats = os.statvfs(shm)
    except OSError:
        return fallback
    if stats.f_bavail * stats.f_frsize >= 2 * size and os.access(shm, os.W_OK):
        return shm
    return fallback


_POOL_CONTEXT: multiprocessing.context.BaseContext | None = None


def _pool_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (safe with the threads of Arrow/Polars, unlike ``fork``), with this
    module preloaded in the server so workers start in milliseconds."""
    global _POOL_CONTEXT
    if _POOL_CONTEXT is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        _POOL_CONTEXT = context
    return _POOL_CONTEXT


class _Sink:
    """The two Parquet writers of one parse, and the counts. A failure to write raises
    :class:`EtlOutputError` (the machine's problem, not the input's)."""

    def __init__(self, records: Path, dead: Path, layout: RecordLayout, row_group: int):
        self.schema = writer_schema(layout)
        self.layout = layout
        self.paths = (Path(records), Path(dead))
        self.directory = Path(records).parent
        self.row_group = max(row_group, 1)
        self.rejected_reason: str | None = None
        self.closed = True
        self._open()

    def _open(self) -> None:
        records, dead = self.paths
        try:
            self.records = pq.ParquetWriter(
                records, self.schema, store_schema=False, **records_writer_options(self.layout)
            )
            self.dead = pq.ParquetWriter(dead, DEAD_LETTER_SCHEMA, compression="zstd")
        except (OSError, pa.ArrowException) as exc:
            raise EtlOutputError(f"cannot write {records.parent}: {exc}") from exc
        self.closed = False
        self.records_out = 0
        self.dead_letter = 0
        self.reasons: Counter[str] = Counter()

    def write(self, table: pa.Table | None, dead: pa.Table | None) -> None:
        try:
            if table is not None and table.num_rows:
                self.records.write_table(table, row_group_size=max(self.row_group, table.num_rows))
                self.records_out += table.num_rows
            if dead is not None and dead.num_rows:
                self.dead.write_table(dead)
                self.dead_letter += dead.num_rows
                self.reasons.update(_reason_counts(dead))
        except OSError as exc:
            raise EtlOutputError(f"cannot write to {self.directory}: {exc}") from exc

    def restart(self) -> None:
        """Drop everything written so far and start both files again, empty."""
        self.close()
        self._open()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.records.close()
            self.dead.close()
        except OSError as exc:
            raise EtlOutputError(f"cannot write to {self.directory}: {exc}") from exc


def records_writer_options(layout: RecordLayout) -> dict[str, Any]:
    """ParquetWriter options of a records file: dictionary pages for text only (written
    straight from the decoded dictionaries), no statistics on text, compression per
    :data:`RECORDS_COMPRESSION`."""
    text = [f.name for f in layout.fields if f.type == "utf8"]
    others = [f.name for f in layout.fields if f.type != "utf8"]
    return {
        "use_dictionary": text or False,
        "write_statistics": others or False,
        "compression": RECORDS_COMPRESSION,
    }


def _parse_binary(src: _Source, source: str, options: ParseOptions, sink: _Sink) -> int:
    layout = options.layout
    full, tail = divmod(src.size, layout.record_size)
    bounds = options.epoch_bounds
    step = options.chunk_records
    chunks = [(first, min(step, full - first)) for first in range(0, full, step)]
    workers = min(options.workers, len(chunks))
    if workers > 1 and not src.shareable():
        logger.info("%s: /proc is not available, decoding in this process only", source)
        workers = 1
    if workers <= 1:
        for first, count in chunks:
            decoded = _decode_range(src.fd, layout, bounds, first, count, source)
            sink.write(_records_table(layout, decoded), decoded.dead)
    else:
        _decode_in_pool(src, source, layout, bounds, chunks, step, workers, sink)
    if tail:
        sink.write(None, _truncated_tail(src, source, layout, full, tail))
    failed = sink.dead_letter - (1 if tail else 0)
    if full >= MISALIGNED_MIN_RECORDS and failed > MISALIGNED_RATE * full:
        sink.rejected_reason = _misaligned_reason(layout, src.size, full, failed, tail)
        logger.warning("%s: %s", source, sink.rejected_reason)
        sink.restart()
        for first, count in chunks:
            sink.write(None, _dead_letter_range(src, source, layout, first, count))
        if tail:
            sink.write(None, _truncated_tail(src, source, layout, full, tail))
    return full + (1 if tail else 0)


def _truncated_tail(
    src: _Source, source: str, layout: RecordLayout, full: int, tail: int
) -> pa.Table:
    """The dead-letter entry of a trailing partial record."""
    rest = np.frombuffer(src.pread(tail, full * layout.record_size), np.uint8)
    verdicts = _Verdicts(1)
    verdicts.flag(np.ones(1, bool), TRUNCATED_RECORD, -1)
    return _dead_letters(
        source,
        verdicts,
        [],
        np.array([full]),
        np.array([full * layout.record_size]),
        _hex_fixed(rest.reshape(1, -1)),
    )


def _misaligned_reason(layout: RecordLayout, size: int, full: int, failed: int, tail: int) -> str:
    size_note = (
        f"; its size ({size:,} bytes) is not a multiple of the {layout.record_size}-byte record"
        if tail
        else ""
    )
    return (
        f"misaligned: {failed:,} of its {full:,} records ({failed / full:.0%}) fail validation"
        f"{size_note}: these are not {layout.name!r} records (another record size or layout?); "
        "none is accepted, every record is dead-lettered as 'misaligned'"
    )


def _dead_letter_range(
    src: _Source, source: str, layout: RecordLayout, first: int, count: int
) -> pa.Table:
    """Every record of a chunk as a ``misaligned`` dead-letter entry."""
    size = layout.record_size
    mapped, at = _map(src.fd, first * size, count * size)
    try:
        raw = np.frombuffer(mapped, np.uint8, count=count * size, offset=at).reshape(count, size)
        hexed = _hex_fixed(raw)
        del raw
    finally:
        _unmap(mapped)
    verdicts = _Verdicts(count)
    verdicts.flag(np.ones(count, bool), MISALIGNED, -1)
    numbers = first + np.arange(count, dtype=np.int64)
    return _dead_letters(source, verdicts, [], numbers, numbers * size, hexed)


def _start_workers(pool: ProcessPoolExecutor, count: int, ready: threading.Event) -> None:
    """Start the pool's processes (a no-op task each), then set ``ready``."""
    try:
        for future in [pool.submit(int) for _ in range(count)]:
            future.result()
    except Exception as exc:  # a broken pool surfaces again on the real tasks
        logger.debug("starting the parser's worker processes failed: %s", exc)
    finally:
        ready.set()


def _decode_in_pool(
    src: _Source,
    source: str,
    layout: RecordLayout,
    bounds: tuple[int, int],
    chunks: list[tuple[int, int]],
    capacity: int,
    workers: int,
    sink: _Sink,
) -> None:
    """Chunks decoded by ``workers`` processes into ``2 * workers`` slots of a shared
    file, appended to the sink in file order (bounded memory: one slot per chunk in
    flight, a slot reused only once its chunk is written).

    Starting the processes takes a while the first time (the forkserver imports numpy
    and pyarrow): meanwhile this process decodes the first chunks itself."""
    plan, slot_bytes = _slot_plan(layout, capacity)
    nslots = min(2 * workers, len(chunks))
    directory = _slots_directory(nslots * slot_bytes, sink.directory)
    with tempfile.NamedTemporaryFile(prefix=".etl-slots-", dir=directory) as slots:
        # reserve the space now: a full disk fails here, not as SIGBUS in a worker
        os.posix_fallocate(slots.fileno(), 0, nslots * slot_bytes)
        mapped, _ = _map(slots.name, 0, nslots * slot_bytes, write=True)
        views = [_slot_columns(mapped, i * slot_bytes, plan, capacity) for i in range(nslots)]
        pending: deque[tuple[int, Future[_ChunkDone]]] = deque()

        def take() -> None:
            slot, future = pending.popleft()
            done = future.result()
            columns = [view[: done.rows] for view in views[slot]]
            table = _records_table(layout, _Decoded(done.rows, columns, done.dictionaries, None))
            sink.write(table, done.dead)

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
        ready = threading.Event()
        starter = threading.Thread(
            target=_start_workers, args=(pool, workers, ready), name="etl-pool-start"
        )
        starter.start()
        here = 0
        try:
            while here < len(chunks) and not ready.is_set():
                first, count = chunks[here]
                decoded = _decode_range(src.fd, layout, bounds, first, count, source)
                sink.write(_records_table(layout, decoded), decoded.dead)
                here += 1
            logger.debug(
                "%s: %d chunks, %d decoded here while %d worker processes started, "
                "%d by the workers",
                source,
                len(chunks),
                here,
                workers,
                len(chunks) - here,
            )
            for number in range(here, len(chunks)):
                first, count = chunks[number]
                slot = number % nslots
                task = _ChunkTask(
                    src.worker_path,
                    (src.dev, src.ino),
                    source,
                    layout,
                    bounds,
                    first,
                    count,
                    slots.name,
                    slot * slot_bytes,
                    capacity,
                )
                pending.append((slot, pool.submit(_decode_chunk_into_slot, task)))
                if len(pending) >= nslots:
                    take()
            while pending:
                take()
        except BaseException:
            for _, future in pending:
                future.cancel()
            raise
        finally:
            starter.join()
            pool.shutdown(wait=True, cancel_futures=True)
            views.clear()  # drop the views before unmapping
            _unmap(mapped)


# -- CSV and Parquet: text / Arrow columns to the layout's types ----------------------------


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
    text: pl.Series, spec: FieldSpec, verdicts: _Verdicts, index: int, bounds: tuple[int, int]
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
        verdicts.flag(~_in_range(parsed, *bounds), TIMESTAMP_OUT_OF_RANGE, index)
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
    values: np.ndarray, spec: FieldSpec, verdicts: _Verdicts, index: int
) -> np.ndarray:
    verdicts.flag(~np.isfinite(values), NON_FINITE, index)
    if spec.type == "float32":
        with np.errstate(invalid="ignore"):
            verdicts.flag(np.abs(values) > np.finfo(np.float32).max, OUT_OF_RANGE, index)
    return values


def _text_column(column: pa.Array, verdicts: _Verdicts, index: int) -> pl.Series:
    """A binary or string column as a polars string Series (invalid UTF-8 flagged)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        try:
            column = column.cast(pa.string())
        except pa.ArrowInvalid:
            encoded = pc.dictionary_encode(column.cast(pa.binary()))
            texts, invalid = _text_dictionary(encoded.dictionary)
            indices = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False)
            verdicts.flag(invalid[indices] & ~np.asarray(column.is_null()), INVALID_UTF8, index)
            column = pc.if_else(column.is_null(), pa.scalar(None, pa.string()), texts.take(indices))
    return pl.Series(column.cast(pa.large_string()))


def _convert_field(
    column: pa.Array,
    spec: FieldSpec,
    verdicts: _Verdicts,
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
        verdicts.flag(~_in_range(seconds, *bounds), TIMESTAMP_OUT_OF_RANGE, index)
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
        verdicts.flag(~_in_range(values, low, high), OUT_OF_RANGE, index)
        return values
    if pa.types.is_floating(type_):
        values = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            verdicts.flag(~np.isfinite(values) | (values != np.trunc(values)), BAD_NUMBER, index)
            verdicts.flag((values < low) | (values > high), OUT_OF_RANGE, index)
        return np.nan_to_num(values).astype(np.int64 if low < 0 else np.uint64)
    raise TypeError(f"{type_} is not numeric")


def _assemble(layout: RecordLayout, values: list[Any], verdicts: _Verdicts) -> pa.Table:
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


# -- CSV ------------------------------------------------------------------------------------
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
    verdicts = _Verdicts(len(lines))
    verdicts.flag(np.ones(len(lines), bool), reason, -1)
    raw = _hex_binary(_gather(data, lines.starts, lines.ends))
    return _dead_letters(source, verdicts, [], lines.numbers, base + lines.starts, raw)


def _parse_csv(src: _Source, source: str, options: ParseOptions, sink: _Sink) -> int:
    layout = options.layout
    mapped = mmap.mmap(src.fd, src.size, prot=mmap.PROT_READ)
    try:
        data = np.frombuffer(mapped, np.uint8)
        records = _parse_csv_bytes(data, source, layout, options.epoch_bounds, sink)
        del data
    finally:
        _unmap(mapped)
    return records


def _parse_csv_bytes(
    data: np.ndarray, source: str, layout: RecordLayout, bounds: tuple[int, int], sink: _Sink
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
    sink: _Sink,
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
        verdicts = _Verdicts(n)
        table = None
        if missing:
            verdicts.flag(np.ones(n, bool), MISSING_FIELD, names.index(missing[0]))
        else:
            values = [
                _convert_field(
                    batch.column(position[spec.name]), spec, verdicts, index, bounds, True
                )
                for index, spec in enumerate(specs)
            ]
            table = _assemble(layout, values, verdicts)
        bad = np.flatnonzero(~verdicts.good)
        if len(bad):
            raw = _hex_binary(_gather(block, lines.starts[bad], lines.ends[bad]))
            dead.append(
                _dead_letters(
                    source, verdicts, names, lines.numbers[bad], base + lines.starts[bad], raw
                )
            )
        sink.write(table, None)
    _write_in_line_order(sink, dead)


def _write_in_line_order(sink: _Sink, dead: list[pa.Table]) -> None:
    if dead:
        sink.write(None, pa.concat_tables(dead).sort_by("row_number"))


# -- Parquet --------------------------------------------------------------------------------


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
            _convert_field(empty, spec, _Verdicts(0), index, (0, 0), False)
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


def _parse_parquet(src: _Source, source: str, options: ParseOptions, sink: _Sink) -> int:
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


def _parquet_rows(parquet: Any, source: str, options: ParseOptions, sink: _Sink) -> int:
    layout = options.layout
    schema = parquet.schema_arrow
    problem = _parquet_schema_problem(schema, layout)
    names = [s.name for s in layout.specs]
    bounds = options.epoch_bounds
    columns = None if problem else names
    records_in = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        n = batch.num_rows
        verdicts = _Verdicts(n)
        table = None
        if problem:
            verdicts.flag(np.ones(n, bool), problem[0], problem[1])
        else:
            values = [
                _convert_field(batch.column(i), spec, verdicts, i, bounds, False)
                for i, spec in enumerate(layout.specs)
            ]
            table = _assemble(layout, values, verdicts)
        bad = np.flatnonzero(~verdicts.good)
        dead = None
        if len(bad):
            picked = pa.Table.from_batches([batch]).take(pa.array(bad))
            dead = _dead_letters(
                source,
                verdicts,
                names,
                records_in + bad.astype(np.int64),
                None,
                _hex_binary(_rows_as_json(picked)),
            )
        sink.write(table, dead)
        records_in += n
    return records_in


# -- entry points ---------------------------------------------------------------------------

_PARSERS: dict[str, Callable[[_Source, str, ParseOptions, _Sink], int]] = {
    "binary": _parse_binary,
    "csv": _parse_csv,
    "parquet": _parse_parquet,
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
        src = _Source.of(fd)
        records_path, dead_letter_path = Path(records_path), Path(dead_letter_path)
        try:
            records_path.parent.mkdir(parents=True, exist_ok=True)
            dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EtlOutputError(f"cannot create {records_path.parent}: {exc}") from exc
        with (
            atomic_target(records_path) as records_tmp,
            atomic_target(dead_letter_path) as dead_tmp,
        ):
            sink = _Sink(records_tmp, dead_tmp, options.layout, options.chunk_records)
            try:
                records_in = _PARSERS[fmt](src, source, options, sink) if src.size else 0
            finally:
                sink.close()
                _free_scratch()
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
