"""Input confinement, size limits, hashing, CSV formula neutralisation and the audit log.

- :func:`resolve_inbox_file` accepts only regular files whose resolved path is inside the
  inbox (absolute names, ``..`` and symlinks that escape are refused, with the reason);
- :func:`neutralise_csv_cell` / :func:`write_csv_safe` follow OWASP's advice against CSV
  (formula) injection: a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
  return is prefixed with a single quote, and every text cell is quoted by the writer;
- :class:`AuditLog` appends one JSON line per processed or rejected file: name, size,
  sha256, result and a short detail -- never record contents nor secrets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bi_platform.sample_data.files import atomic_target

logger = logging.getLogger(__name__)

#: First characters that make spreadsheet applications evaluate a cell (OWASP).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_PATTERN = r"^[=+\-@\t\r]"
#: Longest ``detail`` kept in an audit entry (it names a reason, not data).
AUDIT_DETAIL_MAX = 500


class UnsafeInputError(ValueError):
    """An input file is refused (the message names the file and the reason)."""


def resolve_inbox_file(inbox: Path, name: str) -> Path:
    """The resolved path of ``name`` inside ``inbox``, if it is a regular file there.

    Refused: empty or absolute names, names with a ``..`` part, NUL bytes, missing
    files, symlinks (or symlinked parents) resolving outside the inbox, and anything that
    is not a regular file (directories, FIFOs, devices, sockets).
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafeInputError(f"{name!r}: empty file name")
    if "\x00" in name:
        raise UnsafeInputError(f"{name!r}: NUL byte in file name")
    if (
        PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or (PureWindowsPath(name).drive)
    ):
        raise UnsafeInputError(f"{name!r}: absolute names are refused (give a name in the inbox)")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafeInputError(f"{name!r}: '..' is refused (the file must be inside the inbox)")
    try:
        root = Path(inbox).resolve(strict=True)
    except OSError as exc:
        raise UnsafeInputError(f"{name!r}: the inbox {inbox} is not accessible: {exc}") from None
    candidate = root / name
    if not candidate.exists() and not candidate.is_symlink():
        raise UnsafeInputError(f"{name!r}: no such file in the inbox")
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # dangling link, loop
        raise UnsafeInputError(f"{name!r}: cannot be resolved ({exc.__class__.__name__})") from None
    if not resolved.is_relative_to(root):
        raise UnsafeInputError(f"{name!r}: a symlink resolving outside the inbox is refused")
    mode = resolved.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise UnsafeInputError(f"{name!r}: {kind} (only regular files are accepted)")
    return resolved


def check_file_size(path: Path, max_bytes: int) -> int:
    """The size of ``path`` in bytes; :class:`UnsafeInputError` if above ``max_bytes``."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise UnsafeInputError(
            f"{Path(path).name!r}: {size:,} bytes exceeds the limit of {max_bytes:,} bytes"
        )
    return size


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file's content (read in blocks)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def neutralise_csv_cell(value: str) -> str:
    """``value`` prefixed with ``'`` when a spreadsheet would read it as a formula."""
    if value and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _neutralise_column(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    risky = pc.match_substring_regex(column, _FORMULA_PATTERN)
    quoted = pc.binary_join_element_wise("'", column, "")
    return pc.if_else(risky, quoted, column)


def _is_text(type_: pa.DataType) -> bool:
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or (pa.types.is_string_view(type_))
    )


def neutralise_table(table: pa.Table) -> pa.Table:
    """``table`` with its text cells and header names neutralised (formula injection)."""
    columns = [
        _neutralise_column(table.column(i)) if _is_text(field.type) else table.column(i)
        for i, field in enumerate(table.schema)
    ]
    return pa.table(columns, names=[neutralise_csv_cell(n) for n in table.schema.names])


def _write_neutral_csv(table: pa.Table, sink: Any) -> None:
    """``table`` as neutralised CSV into ``sink`` (a path or an Arrow stream), every text
    cell quoted (so separators, quotes and newlines inside cells stay in place)."""
    pacsv.write_csv(
        neutralise_table(table), sink, write_options=pacsv.WriteOptions(quoting_style="needed")
    )


def csv_bytes(table: pa.Table) -> bytes:
    """``table`` as neutralised CSV (for an HTTP response)."""
    sink = pa.BufferOutputStream()
    _write_neutral_csv(table, sink)
    return sink.getvalue().to_pybytes()


def write_csv_safe(table: pa.Table, path: Path) -> None:
    """Write ``table`` as neutralised CSV, atomically (streamed to a temp file, renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        _write_neutral_csv(table, tmp)


class AuditLog:
    """Append-only JSON-lines log of the files the ETL saw (``audit.jsonl``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def record(
        self,
        *,
        name: str,
        size: int | None,
        sha256: str | None,
        result: str,
        detail: str = "",
    ) -> None:
        """Append one entry (UTC timestamp, name, size, sha256, result, detail)."""
        entry: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "name": str(name),
            "size": size,
            "sha256": sha256,
            "result": str(result),
            "detail": str(detail)[:AUDIT_DETAIL_MAX],
        }
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write() on an O_APPEND descriptor: concurrent writers do not interleave lines.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        logger.info("audit: %s %s (%s bytes)", entry["result"], entry["name"], size)

    def entries(self) -> list[dict[str, Any]]:
        """All entries, oldest first (an unreadable line is skipped with a warning)."""
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    logger.warning("%s: line %d is not JSON, skipped", self.path, number)
        return out
