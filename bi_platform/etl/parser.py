"""Binary / CSV / Parquet inputs -> validated records Parquet + a dead-letter Parquet.

Binary files are memory-mapped and decoded a chunk at a time (``chunk_bytes``, aligned
to the record size) through the layout's numpy structured dtype: the fields are copied
out a cache-sized block of records at a time, text fields are dictionary-encoded on
their raw bytes so only the distinct values are UTF-8 decoded (and validated), and
validation is numpy boolean masks -- no per-record Python. With ``workers > 1`` and more
than one chunk, a process pool decodes the chunks (the task function is module-level,
so it pickles) straight into slots of a shared memory-mapped file; this process wraps
each slot as Arrow arrays without a copy and appends them, in file order, to the single
records Parquet file (the output equals the one-worker output). While the pool's
processes start, this process decodes the first chunks itself.

CSV (numbers read as text, then parsed with vectorised checks; rows with missing/extra
cells caught by pyarrow's ``invalid_row_handler``) and Parquet inputs (cast per field,
a missing or unusable column dead-letters every row) go through the same validation.

A record that fails becomes one dead-letter entry (:data:`DEAD_LETTER_SCHEMA`): source
file, row number (binary: record index from 0; CSV: row number with the header as row 1,
blank lines not counted; Parquet: row index from 0), byte offset (binary only), the raw
bytes as hex (binary: the record; CSV: the row's text -- re-joined with ``,`` for rows of
the right shape; Parquet: the row as JSON), the reason (see :data:`REASONS`) and the
field (null for row-level reasons). ``records_in == records_out + dead_letter`` always.

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


class EtlInputError(ValueError):
    """The whole file is unusable (unknown format, not a Parquet file, ...)."""


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

    def as_metadata(self) -> dict[str, Any]:
        return {
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


def _map(
    path: str, offset: int, length: int, *, write: bool = False, populate: bool = False
) -> tuple[mmap.mmap, int]:
    """A shared mapping of ``length`` bytes of ``path`` from ``offset``; (mapping, where
    ``offset`` is inside it) -- the mapping starts at an allocation-granularity
    boundary. ``populate`` maps the (cached) pages up front, in one call, rather than
    one page fault at a time."""
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if write else 0)
    with open(path, "r+b" if write else "rb") as f:  # noqa: PTH123 - the fd is mapped
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
    path: str,
    layout: RecordLayout,
    bounds: tuple[int, int],
    first: int,
    count: int,
    source: str,
    out: list[np.ndarray] | None = None,
) -> _Decoded:
    """Memory-map ``count`` records from record ``first`` of ``path`` and decode them."""
    size = layout.record_size
    mapped, at = _map(path, first * size, count * size, populate=True)
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
    path: str
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
        task.path, task.layout, task.bounds, task.first, task.count, task.source, out
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
    """The two Parquet writers of one parse, and the counts."""

    def __init__(self, records: Path, dead: Path, layout: RecordLayout, row_group: int):
        self.schema = writer_schema(layout)
        self.directory = Path(records).parent
        self.row_group = max(row_group, 1)
        self.records = pq.ParquetWriter(
            records, self.schema, store_schema=False, **records_writer_options(layout)
        )
        self.dead = pq.ParquetWriter(dead, DEAD_LETTER_SCHEMA, compression="zstd")
        self.records_out = 0
        self.dead_letter = 0
        self.reasons: Counter[str] = Counter()

    def write(self, table: pa.Table | None, dead: pa.Table | None) -> None:
        if table is not None and table.num_rows:
            self.records.write_table(table, row_group_size=max(self.row_group, table.num_rows))
            self.records_out += table.num_rows
        if dead is not None and dead.num_rows:
            self.dead.write_table(dead)
            self.dead_letter += dead.num_rows
            self.reasons.update(_reason_counts(dead))

    def close(self) -> None:
        self.records.close()
        self.dead.close()


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


def _parse_binary(path: Path, source: str, options: ParseOptions, sink: _Sink) -> int:
    layout = options.layout
    size = path.stat().st_size
    full, tail = divmod(size, layout.record_size)
    bounds = options.epoch_bounds
    step = options.chunk_records
    chunks = [(first, min(step, full - first)) for first in range(0, full, step)]
    workers = min(options.workers, len(chunks))
    if workers <= 1:
        for first, count in chunks:
            decoded = _decode_range(str(path), layout, bounds, first, count, source)
            sink.write(_records_table(layout, decoded), decoded.dead)
    else:
        _decode_in_pool(path, source, layout, bounds, chunks, step, workers, sink)
    if tail:
        with path.open("rb") as f:
            f.seek(full * layout.record_size)
            rest = np.frombuffer(f.read(tail), np.uint8)
        verdicts = _Verdicts(1)
        verdicts.flag(np.ones(1, bool), TRUNCATED_RECORD, -1)
        sink.write(
            None,
            _dead_letters(
                source,
                verdicts,
                [],
                np.array([full]),
                np.array([full * layout.record_size]),
                _hex_fixed(rest.reshape(1, -1)),
            ),
        )
    return full + (1 if tail else 0)


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
    path: Path,
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
                decoded = _decode_range(str(path), layout, bounds, first, count, source)
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
                    str(path),
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


def _csv_header(path: Path) -> list[str]:
    """Column names of the first line (BOM and surrounding spaces removed)."""
    with path.open("rb") as f:
        first = f.readline()
    line = first.decode("utf-8", errors="replace").lstrip("\ufeff")
    rows = list(csv.reader([line]))
    return [name.strip() for name in rows[0]] if rows else []


def _csv_row_numbers(valid_first: int, count: int, malformed: list[int]) -> np.ndarray:
    """CSV row numbers (pyarrow's: header = 1, blank lines not counted) of the valid rows
    ``valid_first ...``, given the row numbers of the malformed rows skipped so far."""
    ordinals = np.asarray(sorted(malformed), np.int64) - 2
    shifted = ordinals - np.arange(len(ordinals))
    valid = np.arange(valid_first, valid_first + count, dtype=np.int64)
    return valid + np.searchsorted(shifted, valid, side="right") + 2


def _parse_csv(path: Path, source: str, options: ParseOptions, sink: _Sink) -> int:
    layout = options.layout
    header = _csv_header(path)
    missing = [f.name for f in layout.fields if f.name not in header]
    malformed_numbers: list[int] = []  # every malformed row's number, for the row numbers
    malformed_pending: list[tuple[int, str]] = []  # not yet dead-lettered

    def on_invalid(row: Any) -> str:
        number = row.number if row.number is not None else -1
        malformed_numbers.append(number)
        malformed_pending.append((number, row.text))
        return "skip"

    # Every cell read as bytes (numbers are parsed below with per-row checks); row
    # numbers are only known to the invalid-row handler without threads.
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(
            use_threads=False, block_size=CSV_BLOCK_BYTES, column_names=header, skip_rows=1
        ),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.binary()), strings_can_be_null=False
        ),
    )
    bounds = options.epoch_bounds
    names = [s.name for s in layout.specs]
    records_in = 0
    for batch in reader:
        n = batch.num_rows
        numbers = _csv_row_numbers(records_in, n, malformed_numbers)
        records_in += n
        verdicts = _Verdicts(n)
        table = None
        if missing:
            verdicts.flag(np.ones(n, bool), MISSING_FIELD, names.index(missing[0]))
        else:
            values = [
                _convert_field(
                    batch.column(batch.schema.get_field_index(spec.name)),
                    spec,
                    verdicts,
                    index,
                    bounds,
                    empty_is_missing=True,
                )
                for index, spec in enumerate(layout.specs)
            ]
            table = _assemble(layout, values, verdicts)
        dead = None
        bad = np.flatnonzero(~verdicts.good)
        if len(bad):
            cells = batch.take(pa.array(bad)).columns
            joined = (
                pc.binary_join_element_wise(*cells, b",")
                if cells
                else pa.array([b""] * len(bad), pa.binary())
            )
            dead = _dead_letters(source, verdicts, names, numbers[bad], None, _hex_binary(joined))
        sink.write(table, dead)
        _flush_malformed(source, malformed_pending, sink)
    _flush_malformed(source, malformed_pending, sink)
    return records_in + len(malformed_numbers)


def _flush_malformed(source: str, pending: list[tuple[int, str]], sink: _Sink) -> None:
    """Dead-letter the malformed rows collected so far (and forget their text)."""
    if pending:
        verdicts = _Verdicts(len(pending))
        verdicts.flag(np.ones(len(pending), bool), MALFORMED_ROW, -1)
        raw = pa.array([text.encode("utf-8", "surrogateescape") for _, text in pending])
        numbers = np.array([number for number, _ in pending], np.int64)
        sink.write(None, _dead_letters(source, verdicts, [], numbers, None, _hex_binary(raw)))
        pending.clear()


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


def _parse_parquet(path: Path, source: str, options: ParseOptions, sink: _Sink) -> int:
    layout = options.layout
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EtlInputError(f"{source}: not a readable Parquet file ({exc})") from None
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

_PARSERS: dict[str, Callable[[Path, str, ParseOptions, _Sink], int]] = {
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
) -> ParseResult:
    """Decode and validate ``path`` into ``records_path`` and ``dead_letter_path``
    (Parquet, both written atomically; schema-only when empty)."""
    started = time.perf_counter()
    path = Path(path)
    source = source_name or path.name
    fmt = detect_format(path)
    size = path.stat().st_size
    records_path, dead_letter_path = Path(records_path), Path(dead_letter_path)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(records_path) as records_tmp, atomic_target(dead_letter_path) as dead_tmp:
        sink = _Sink(records_tmp, dead_tmp, options.layout, options.chunk_records)
        try:
            records_in = _PARSERS[fmt](path, source, options, sink) if size else 0
        finally:
            sink.close()
            _free_scratch()
    if records_in != sink.records_out + sink.dead_letter:  # pragma: no cover - a bug
        raise AssertionError(
            f"{source}: {records_in} records in but {sink.records_out} out + "
            f"{sink.dead_letter} dead-lettered"
        )
    result = ParseResult(
        source_file=source,
        format=fmt,
        size_bytes=size,
        records_in=records_in,
        records_out=sink.records_out,
        dead_letter=sink.dead_letter,
        dead_letter_reasons=dict(sorted(sink.reasons.items())),
        records_path=records_path,
        dead_letter_path=dead_letter_path,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "%s (%s, %s bytes): %d in, %d out, %d dead-lettered %s in %.2f s",
        source,
        fmt,
        f"{size:,}",
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
