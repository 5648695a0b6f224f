"""The ETL inbox: which dropped files may be processed, and their Dagster partition keys.

A file is *accepted* when its name is plain (letters, digits, ``.``, ``_``, ``-``), it
resolves inside the inbox (no ``..``, no symlink escaping it, a regular file), its format
is supported (``.bin``/``.dat``, ``.csv``, ``.parquet`` with a readable footer), it is not
empty and not larger than the size limit. Everything else is *rejected* with the reason,
never read.

Hidden files (``.name``, e.g. the sample generator's manifest) and files still being
written (``*.tmp``, ``*.part``) are ignored: they are neither accepted nor rejected.

The partition key of an accepted file is ``<name>@<first 16 hex digits of its sha256>``:
an identical re-drop maps to the same key (processed once), a changed file to a new one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bi_platform.etl.parser import EtlInputError, detect_format
from bi_platform.etl.security import (
    UnsafeInputError,
    check_file_size,
    resolve_inbox_file,
    sha256_file,
)

logger = logging.getLogger(__name__)

KEY_SEPARATOR = "@"
HASH_PREFIX_CHARS = 16
MAX_NAME_CHARS = 200
#: Plain file names only: they become partition keys (Dagster forbids "..." and control
#: characters there) and output file names, and "@" separates the name from the hash.
SAFE_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}$")
IN_PROGRESS_SUFFIXES = (".tmp", ".part")
_HASH_PREFIX = re.compile(rf"^[0-9a-f]{{{HASH_PREFIX_CHARS}}}$")


@dataclass(frozen=True)
class InboxFile:
    """An accepted inbox file."""

    name: str
    size: int
    sha256: str
    partition_key: str
    format: str = ""
    mtime_ns: int = 0


def check_name(name: str) -> str:
    """``name`` if it is a plain file name usable in a partition key, else UnsafeInputError."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise UnsafeInputError(
            f"{name!r}: unsupported file name (letters, digits, '.', '_' and '-' only, "
            f"no '..', at most {MAX_NAME_CHARS} characters)"
        )
    return name


def partition_key(name: str, sha256: str) -> str:
    """The Dagster partition key of an inbox file: ``<name>@<sha256[:16]>``."""
    prefix = sha256[:HASH_PREFIX_CHARS].lower()
    if not _HASH_PREFIX.match(prefix):
        raise ValueError(f"{name!r}: not a sha256 hex digest: {sha256!r}")
    return f"{check_name(name)}{KEY_SEPARATOR}{prefix}"


def split_partition_key(key: str) -> tuple[str, str]:
    """``(file name, sha256 prefix)`` of a partition key made by :func:`partition_key`."""
    name, sep, prefix = key.rpartition(KEY_SEPARATOR)
    if not sep or not _HASH_PREFIX.match(prefix):
        raise ValueError(f"{key!r} is not an ETL partition key (<file name>@<16 hex digits>)")
    try:
        check_name(name)
    except UnsafeInputError as exc:
        raise ValueError(f"{key!r} is not an ETL partition key: {exc}") from None
    return name, prefix


def is_ignored(name: str) -> bool:
    """Hidden files and uploads in progress, skipped silently by :func:`scan_inbox`."""
    return name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES)


def probe_parquet(path: Path, name: str) -> None:
    """EtlInputError unless ``path`` has a readable Parquet footer (a file that is not
    Parquet at all could never be processed; a wrong schema is dead-lettered later)."""
    try:
        pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise EtlInputError(f"{name}: not a readable Parquet file ({exc})") from None


def inspect_file(
    inbox: Path, name: str, max_bytes: int, known: Mapping[str, Mapping] | None = None
) -> InboxFile:
    """Validate one inbox entry and hash it; UnsafeInputError/EtlInputError say why not.

    ``known`` maps names to ``{"size", "mtime_ns", "sha256"}`` of a previous scan: a file
    whose size and mtime did not change is not hashed again.
    """
    check_name(name)
    path = resolve_inbox_file(inbox, name)
    fmt = detect_format(path)
    size = check_file_size(path, max_bytes)
    if size == 0:
        raise UnsafeInputError(f"{name}: empty file (0 bytes), nothing to process")
    mtime_ns = path.stat().st_mtime_ns
    cached = (known or {}).get(name)
    if cached and cached.get("size") == size and cached.get("mtime_ns") == mtime_ns:
        digest = str(cached["sha256"])
    else:
        if fmt == "parquet":
            probe_parquet(path, name)
        digest = sha256_file(path)
    return InboxFile(name, size, digest, partition_key(name, digest), fmt, mtime_ns)


def scan_inbox(
    inbox: Path, max_bytes: int, known: Mapping[str, Mapping] | None = None
) -> tuple[list[InboxFile], list[tuple[str, str]]]:
    """Accepted files (sorted by name) and rejected ``(name, reason)`` of the inbox.

    A missing inbox is empty. See :func:`inspect_file` for ``known``.
    """
    inbox = Path(inbox)
    if not inbox.is_dir():
        return [], []
    accepted: list[InboxFile] = []
    rejected: list[tuple[str, str]] = []
    for name in sorted(entry.name for entry in inbox.iterdir()):
        if is_ignored(name):
            continue
        try:
            accepted.append(inspect_file(inbox, name, max_bytes, known))
        except (UnsafeInputError, EtlInputError, OSError) as exc:
            rejected.append((name, str(exc)))
    logger.debug("inbox %s: %d accepted, %d rejected", inbox, len(accepted), len(rejected))
    return accepted, rejected


def hash_cache(files: Iterable[InboxFile]) -> dict[str, dict]:
    """The ``known`` mapping of :func:`scan_inbox` for these files (JSON-able)."""
    return {f.name: {"size": f.size, "mtime_ns": f.mtime_ns, "sha256": f.sha256} for f in files}
