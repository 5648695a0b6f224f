"""Integrity of Parquet data before an engine reads it: consistent parts, page checksums.

Both engines must see the same data or fail the same way, naming the file:

- :func:`check_parts_consistent`: the part files of one table have the same columns and
  types (Polars fails on a flip naming no file, Dask reads it silently), from the
  footers only.
- :func:`verify_pages`: every page decoded with its CRC checked (``pyarrow``,
  ``page_checksum_verification``). A flipped byte in a data page otherwise reads as a
  wrong number on both engines, silently. Lake files are written with page checksums
  (:data:`PAGE_CHECKSUM_OPTIONS`); files written without them are still decoded in full,
  which catches undecodable pages.
- :class:`VerifiedFiles`: a file version (path, inode, size, mtime) is verified once and
  remembered in a small cache directory, so repeated reads of an unchanged file cost a
  ``stat``; any rewrite (a new version is a new inode) is verified again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

#: pyarrow writer options every lake file is written with.
PAGE_CHECKSUM_OPTIONS = {"write_page_checksum": True}
#: Read buffer and batch size while verifying (bounded memory on any file size).
VERIFY_BUFFER = 1 << 20
VERIFY_BATCH_ROWS = 65_536


class ParquetIntegrityError(ValueError):
    """Parquet data that must not be read: the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class CorruptParquetError(ParquetIntegrityError):
    """A page fails its checksum or cannot be decoded."""


class InconsistentPartsError(ParquetIntegrityError):
    """The part files of one table disagree on columns or types."""


def _comparable(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with the differences both engines read alike folded away (large vs
    small offsets of strings, binaries and lists; dictionary encoding)."""
    t = pa.types
    if t.is_dictionary(dtype):
        return _comparable(dtype.value_type)
    if t.is_large_string(dtype):
        return pa.string()
    if t.is_large_binary(dtype):
        return pa.binary()
    if t.is_large_list(dtype) or t.is_list(dtype):
        return pa.list_(_comparable(dtype.value_type))
    return dtype


def _columns(path: Path) -> dict[str, pa.DataType]:
    return {f.name: _comparable(f.type) for f in pq.read_schema(path)}


def check_parts_consistent(files: Sequence[Path]) -> None:
    """Raise :class:`InconsistentPartsError` naming the first part whose columns or types
    differ from the first part's (footers only). String and large-string columns (and
    the like) count as the same type; any other difference, e.g. int32 vs int64 or a
    timestamp unit, is refused: Polars fails on it without naming a file, Dask casts
    silently."""
    if len(files) < 2:
        return
    expected = _columns(files[0])
    for path in files[1:]:
        found = _columns(path)
        if found == expected:
            continue
        differences = [
            f"{name}: {expected.get(name, 'absent')} in {files[0].name}, "
            f"{found.get(name, 'absent')} here"
            for name in sorted(set(expected) | set(found))
            if expected.get(name) != found.get(name)
        ]
        raise InconsistentPartsError(
            path, "part differs from the table's first part: " + "; ".join(differences[:5])
        )


def verify_pages(path: Path) -> None:
    """Decode every page of ``path`` with its CRC checked; :class:`CorruptParquetError`
    (naming the file) on a checksum mismatch or an undecodable page. Pages are streamed
    one column at a time through a small read buffer, so memory stays a few MB whatever
    the file's size."""
    try:
        parquet = pq.ParquetFile(
            path, page_checksum_verification=True, buffer_size=VERIFY_BUFFER, pre_buffer=False
        )
        for name in parquet.schema_arrow.names:
            for _ in parquet.iter_batches(
                batch_size=VERIFY_BATCH_ROWS, columns=[name], use_threads=False
            ):
                pass
    except (OSError, pa.ArrowException) as exc:
        raise CorruptParquetError(path, f"corrupt Parquet data: {exc}") from exc


def _identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class VerifiedFiles:
    """Remembers which file versions passed :func:`verify_pages`, in ``cache_dir`` (one
    small file per path, holding the verified version's inode, size and mtime)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def _marker(self, path: Path) -> Path:
        digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
        return self.cache_dir / digest

    def is_verified(self, path: Path) -> bool:
        try:
            return self._marker(path).read_text() == _identity(path)
        except OSError:
            return False

    def remember(self, path: Path, identity: str) -> None:
        marker = self._marker(path)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
            tmp.write_text(identity)
            tmp.replace(marker)
        except OSError as exc:  # a read-only cache only costs re-verification
            logger.debug("cannot remember the verification of %s: %s", path, exc)

    def verify(self, files: Sequence[Path]) -> int:
        """Verify the files not verified in their current version; returns how many were
        verified now. Raises :class:`CorruptParquetError` naming the first bad file."""
        checked = 0
        for path in files:
            if self.is_verified(path):
                continue
            identity = _identity(path)
            verify_pages(path)
            self.remember(path, identity)
            checked += 1
        return checked
