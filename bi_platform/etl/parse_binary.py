"""Binary inputs: fixed-size records decoded through the layout's numpy dtype.

Binary files are memory-mapped and decoded a chunk at a time (``chunk_bytes``, aligned
to the record size) through the layout's numpy structured dtype: the fields are copied
out a cache-sized block of records at a time, text fields are dictionary-encoded on
their raw bytes so only the distinct values are UTF-8 decoded (and validated), and
validation is numpy boolean masks -- no per-record Python. With ``workers > 1`` and more
than one chunk, a process pool decodes the chunks (the task function is module-level,
so it pickles) straight into slots of a shared memory-mapped file; this process wraps
each slot as Arrow arrays without a copy and appends them, in file order, to the single
records Parquet file (the output equals the one-worker output). While the pool's
processes start, this process decodes the first chunks itself. Worker processes map the
input through ``/proc/<pid>/fd/<fd>`` and check it is the same file.

A binary file whose full records fail validation more than :data:`MISALIGNED_RATE` of
the time is *misaligned* (another record size or layout): none of its records is
accepted, each becomes a ``misaligned`` dead-letter entry and
:attr:`~bi_platform.etl.parse_common.ParseResult.rejected_reason` says why.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
import os
import tempfile
import threading
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bi_platform.etl.layouts import FieldSpec, RecordLayout
from bi_platform.etl.parse_common import (
    INVALID_UTF8,
    MISALIGNED,
    NON_FINITE,
    TIMESTAMP_OUT_OF_RANGE,
    TRUNCATED_RECORD,
    ParseOptions,
    Sink,
    Source,
    Verdicts,
    dead_letters,
    hex_fixed,
    in_range,
    map_shared,
    strip_nul,
    text_dictionary,
    unmap,
    writer_schema,
)

logger = logging.getLogger(__name__)

#: Bytes of records whose fields are extracted together (fits the CPU caches).
_CACHE_BLOCK_BYTES = 2 * 2**20
#: A binary file whose full records fail validation more often than this is judged
#: misaligned (another record size or layout): none of its records is accepted.
MISALIGNED_RATE = 0.5
#: ... when it has at least this many full records (fewer say too little).
MISALIGNED_MIN_RECORDS = 8


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
    this size would cost page faults on every chunk. :func:`free_scratch` drops them."""
    buffers: dict[str, np.ndarray] = _LOCAL.__dict__.setdefault("buffers", {})
    buffer = buffers.get(name)
    if buffer is None or buffer.dtype != dtype or len(buffer) < size:
        buffer = buffers[name] = np.empty(size, dtype)
    return buffer[:size]


def free_scratch() -> None:
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
    verdicts = Verdicts(n)
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
            texts, invalid = text_dictionary(strip_nul(distinct))
            np.copyto(column, np.frombuffer(encoded.indices.buffers()[1], np.int32, count=n))
            if invalid.any():
                verdicts.flag(invalid[column], INVALID_UTF8, index)
            dictionaries[index] = texts
        elif spec.type == "epoch_s":
            # uint64 seconds were wrapped into int64: check them as stored
            stored = column.view(np.uint64) if spec.storage == "uint64" else column
            verdicts.flag(~in_range(stored, *bounds), TIMESTAMP_OUT_OF_RANGE, index)
            np.multiply(column, 1000, out=column)  # to ms (rows out of range are dropped)
        elif spec.type.startswith("float"):
            verdicts.flag(~np.isfinite(column), NON_FINITE, index)

    good = verdicts.good
    kept = int(np.count_nonzero(good))
    dead = None
    if kept < n:
        bad = np.flatnonzero(~good)
        numbers = first + bad.astype(np.int64)
        dead = dead_letters(
            source,
            verdicts,
            [s.name for s in layout.specs],
            numbers,
            numbers * layout.record_size,
            hex_fixed(raw_rows[bad]),
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
    path, see :func:`map_shared`) and decode them."""
    size = layout.record_size
    mapped, at = map_shared(target, first * size, count * size, populate=True, expect=expect)
    try:
        records = np.frombuffer(mapped, layout.decode_dtype, count=count, offset=at)
        raw_rows = np.frombuffer(mapped, np.uint8, count=count * size, offset=at)
        decoded = _decode_binary(
            records, raw_rows.reshape(count, size), layout, bounds, first, source, out
        )
        del records, raw_rows  # release the exported buffers before unmapping
    finally:
        unmap(mapped)
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
            unmap(stale)
        _WORKER_SLOTS.clear()
        slots = _WORKER_SLOTS[task.slots_file] = map_shared(
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


def parse_binary(src: Source, source: str, options: ParseOptions, sink: Sink) -> int:
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
    src: Source, source: str, layout: RecordLayout, full: int, tail: int
) -> pa.Table:
    """The dead-letter entry of a trailing partial record."""
    rest = np.frombuffer(src.pread(tail, full * layout.record_size), np.uint8)
    verdicts = Verdicts(1)
    verdicts.flag(np.ones(1, bool), TRUNCATED_RECORD, -1)
    return dead_letters(
        source,
        verdicts,
        [],
        np.array([full]),
        np.array([full * layout.record_size]),
        hex_fixed(rest.reshape(1, -1)),
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
    src: Source, source: str, layout: RecordLayout, first: int, count: int
) -> pa.Table:
    """Every record of a chunk as a ``misaligned`` dead-letter entry."""
    size = layout.record_size
    mapped, at = map_shared(src.fd, first * size, count * size)
    try:
        raw = np.frombuffer(mapped, np.uint8, count=count * size, offset=at).reshape(count, size)
        hexed = hex_fixed(raw)
        del raw
    finally:
        unmap(mapped)
    verdicts = Verdicts(count)
    verdicts.flag(np.ones(count, bool), MISALIGNED, -1)
    numbers = first + np.arange(count, dtype=np.int64)
    return dead_letters(source, verdicts, [], numbers, numbers * size, hexed)


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
    src: Source,
    source: str,
    layout: RecordLayout,
    bounds: tuple[int, int],
    chunks: list[tuple[int, int]],
    capacity: int,
    workers: int,
    sink: Sink,
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
        mapped, _ = map_shared(slots.name, 0, nslots * slot_bytes, write=True)
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
            unmap(mapped)
