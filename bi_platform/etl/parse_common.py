"""What every input format of the ETL parser shares.

The parse options and result (:class:`ParseOptions`, :class:`ParseResult`), the
format detection, the dead-letter schema and reasons (:data:`DEAD_LETTER_SCHEMA`,
:data:`REASONS`), the records schemas (:func:`writer_schema`, :func:`disk_schema`),
per-field verdicts and their dead-letter rows (:class:`Verdicts`, :func:`dead_letters`),
hex and text helpers, the input descriptor (:class:`Source`, :func:`map_shared`) and the
two output writers (:class:`Sink`). Imports no polars (worker processes import it).
"""

from __future__ import annotations

import importlib
import logging
import math
import mmap
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bi_platform.etl.layouts import RecordLayout, get_layout

logger = logging.getLogger(__name__)


class LazyModule:
    """A module imported on first attribute access. The pool's worker processes decode
    binary chunks with numpy and pyarrow only: without polars they start ~0.2 s sooner."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    import polars as pl
else:
    pl = LazyModule("polars")  # imported on first use by the modules that convert columns


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

# byte -> its two hex digits, as one little-endian uint16 (memory order "hi", "lo")
_HEX_LUT = np.array(
    [ord("0123456789abcdef"[b >> 4]) | (ord("0123456789abcdef"[b & 15]) << 8) for b in range(256)],
    dtype="<u2",
)


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


def hex_fixed(rows: np.ndarray) -> pa.Array:
    """Hex strings of the rows of a (n, width) uint8 array."""
    n, width = rows.shape
    digits = _HEX_LUT[rows]  # (n, width) uint16: two ASCII digits per byte
    offsets = np.arange(n + 1, dtype=np.int64) * (2 * width)
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(digits))
    ).cast(pa.string())


def hex_binary(values: pa.Array) -> pa.Array:
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


def text_dictionary(raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
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


def strip_nul(padded: np.ndarray) -> pa.Array:
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


class Verdicts:
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


def dead_letters(
    source: str,
    verdicts: Verdicts,
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


def reason_counts(dead: pa.Table | None) -> dict[str, int]:
    if dead is None or dead.num_rows == 0:
        return {}
    counts = pc.value_counts(dead.column("reason").combine_chunks())
    return {c["values"].as_py(): c["counts"].as_py() for c in counts}


def in_range(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """``low <= values <= high`` for an integer array, bounds clipped to its dtype."""
    info = np.iinfo(values.dtype)
    low_c, high_c = max(low, info.min), min(high, info.max)
    if low_c > info.max or high_c < info.min or low_c > high_c:
        return np.zeros(len(values), bool)
    return (values >= values.dtype.type(low_c)) & (values <= values.dtype.type(high_c))


@dataclass(frozen=True)
class Source:
    """The input being parsed: an open descriptor (it is never re-opened by name) and
    what identifies its file, so that worker processes can check they map the same file."""

    fd: int
    size: int
    dev: int
    ino: int
    pid: int

    @classmethod
    def of(cls, fd: int) -> Source:
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


def map_shared(
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


def unmap(mapped: mmap.mmap) -> None:
    try:
        mapped.close()
    except BufferError:  # pragma: no cover - a view escaped; unmapped when collected
        logger.debug("a mapping still has views; the garbage collector will unmap it")


class Sink:
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
                self.reasons.update(reason_counts(dead))
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
