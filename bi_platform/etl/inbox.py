"""The ETL inbox: which dropped files may be processed, and their Dagster partition keys.

A file is *accepted* when its name is plain (letters, digits, ``.``, ``_``, ``-``), it
opens inside the inbox without following a link and its descriptor shows a regular file
with a single link on the inbox's device (see
:func:`~bi_platform.etl.security.open_inbox_file`: symbolic links, hard links, FIFOs and
directories are refused), its format is supported (``.bin``/``.dat``, ``.csv``,
``.parquet`` with a readable footer), it is not empty and not larger than the size limit.
Everything else is *rejected* with the reason, never parsed. Accepted files are hashed
from their descriptor; a hash is reused only for the same identity (device, inode, size,
mtime and ctime), see :func:`scan_inbox`.

Hidden files (``.name``, e.g. the sample generator's manifest) and files still being
written (``*.tmp``, ``*.part``) are ignored: they are neither accepted nor rejected.

The partition key of an accepted file is ``<name>@<first 16 hex digits of its sha256>``:
an identical re-drop maps to the same key (processed once), a changed file to a new one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bi_platform.etl.parse_common import EtlInputError, detect_format
from bi_platform.etl.parse_parquet import fd_file
from bi_platform.etl.security import (
    FileIdentity,
    UnsafeInputError,
    open_inbox_file,
)
from bi_platform.lib.files import write_bytes_atomic

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
    identity: FileIdentity | None = None


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


def probe_parquet(fd: int, name: str) -> None:
    """Check that an open file has a readable Parquet footer (a file that is not Parquet
    at all could never be processed; a wrong schema is dead-lettered later, corrupt pages
    reject the file when it is parsed).

    Args:
        fd: The open file.
        name: Its name, for the message.

    Returns:
        None; :class:`EtlInputError` when the footer cannot be read.
    """
    try:
        with fd_file(fd) as handle:
            pq.read_metadata(handle)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise EtlInputError(f"{name}: not a readable Parquet file ({exc})") from None


def _cached_digest(cached: Mapping | None, identity: FileIdentity) -> str | None:
    """The cached sha256 when the cache entry has exactly this identity."""
    if not cached:
        return None
    if FileIdentity.from_dict(cached) != identity:
        return None
    digest = cached.get("sha256")
    return str(digest) if isinstance(digest, str) and len(digest) == 64 else None


def inspect_file(
    inbox: Path, name: str, max_bytes: int, known: Mapping[str, Mapping] | None = None
) -> InboxFile:
    """Validate one inbox entry and hash it from its descriptor.

    Args:
        inbox: The inbox directory.
        name: The entry's name.
        max_bytes: The size limit.
        known: Name -> a previous :func:`hash_cache` entry: a file with exactly the same
            identity (device, inode, size, mtime, ctime) is not hashed again.

    Returns:
        The :class:`InboxFile`; :class:`UnsafeInputError` / :class:`EtlInputError` say why
        the file is refused.
    """
    check_name(name)
    fmt = detect_format(Path(name))
    with open_inbox_file(inbox, name, max_bytes) as opened:
        identity = opened.identity
        if identity.size == 0:
            raise UnsafeInputError(f"{name}: empty file (0 bytes), nothing to process")
        digest = _cached_digest((known or {}).get(name), identity)
        if digest is None:
            if fmt == "parquet":
                probe_parquet(opened.fd, name)
            digest = opened.sha256()
            opened.check_unchanged()
    return InboxFile(
        name,
        identity.size,
        digest,
        partition_key(name, digest),
        fmt,
        identity.mtime_ns,
        identity,
    )


def scan_inbox(
    inbox: Path,
    max_bytes: int,
    known: Mapping[str, Mapping] | None = None,
    cache_path: Path | None = None,
) -> tuple[list[InboxFile], list[tuple[str, str]]]:
    """Accepted files (sorted by name) and rejected ``(name, reason)`` of the inbox.

    Args:
        inbox: The inbox directory (a missing inbox is empty).
        max_bytes: The size limit.
        known: Hashes of a previous scan (see :func:`inspect_file`).
        cache_path: A JSON file of hashes shared by every scan (sensors, registration,
            estimates): read before, rewritten after the scan. Unreadable: ignored.

    Returns:
        ``(accepted, rejected)``.
    """
    inbox = Path(inbox)
    if not inbox.is_dir():
        return [], []
    cache = {**load_hash_cache(cache_path), **(known or {})} if cache_path else known
    accepted: list[InboxFile] = []
    rejected: list[tuple[str, str]] = []
    for name in sorted(entry.name for entry in os.scandir(inbox)):
        if is_ignored(name):
            continue
        try:
            accepted.append(inspect_file(inbox, name, max_bytes, cache))
        except (UnsafeInputError, EtlInputError, OSError) as exc:
            rejected.append((name, str(exc)))
    if cache_path is not None:
        save_hash_cache(cache_path, accepted)
    logger.debug("inbox %s: %d accepted, %d rejected", inbox, len(accepted), len(rejected))
    return accepted, rejected


def load_hash_cache(path: Path | None) -> dict[str, dict]:
    """The hashes saved by :func:`save_hash_cache`.

    Args:
        path: The cache file, or None.

    Returns:
        Name -> identity and sha256 (empty when missing or unreadable).
    """
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def save_hash_cache(path: Path, files: Iterable[InboxFile]) -> None:
    """Write the hashes of accepted files (atomically; a failure is only logged).

    Args:
        path: The cache file.
        files: The files of a scan.
    """
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(Path(path), json.dumps(hash_cache(files), sort_keys=True).encode())
    except OSError as exc:
        logger.warning("inbox hash cache %s not written: %s", path, exc)


def hash_cache(files: Iterable[InboxFile]) -> dict[str, dict]:
    """The ``known`` mapping of :func:`scan_inbox` for these files (JSON-able): each
    file's identity and sha256."""
    return {
        f.name: {
            **(f.identity.as_dict() if f.identity else {"size": f.size, "mtime_ns": f.mtime_ns}),
            "sha256": f.sha256,
        }
        for f in files
    }
