"""Atomic file writes with explicit fsync rules.

Every write goes through a temporary sibling so that ``path`` is never seen half-written:

1. the data goes to ``.<name>.<random>.tmp`` in the same directory (same file system, so
   the rename is atomic; a hidden ``.tmp`` name, which directory scanners such as the ETL
   inbox skip);
2. ``durable=True`` (the default): the temporary file is flushed and fsynced, so its
   data is on disk before it gets the final name;
3. :func:`os.replace` puts it at ``path``: a reader sees the old file or the new one;
4. ``durable=True``: the directory is fsynced, so the rename itself survives a crash.

On any error the temporary file is removed and ``path`` is left as it was.
``durable=False`` skips steps 2 and 4: still atomic for readers and failed writers, not
against power loss; for output that is cheap to regenerate (sample data).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def fsync_path(path: Path | str) -> None:
    """Flush a file's or a directory's data and metadata to disk.

    Best effort: a platform or file system that cannot open or fsync a directory (or the
    file) is skipped silently.

    Args:
        path: A regular file or a directory.
    """
    path = Path(path)
    flags = os.O_RDONLY
    if path.is_dir():
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<32 hex>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")


def replace_durably(source: Path, target: Path, *, durable: bool = True) -> None:
    """Move the finished file ``source`` to ``target`` in one :func:`os.replace`.

    Args:
        source: A complete file in ``target``'s directory (or on its file system).
        target: Where it goes; an existing file there is replaced atomically.
        durable: fsync ``source`` before the rename and ``target``'s directory after it.
    """
    if durable:
        fsync_path(source)
    os.replace(source, target)  # noqa: PTH105 - the primitive this module documents
    if durable:
        fsync_path(target.parent)


@contextlib.contextmanager
def atomic_path(
    path: Path | str, *, durable: bool = True, mode: int | None = None
) -> Iterator[Path]:
    """A temporary sibling of ``path`` for the caller to write; it replaces ``path`` when
    the block succeeds and is removed when it fails (see the module docstring).

    Args:
        path: The file to write; its directory must exist.
        durable: Follow the fsync rules (file before the rename, directory after it).
        mode: When given, the temporary file is created empty with exactly these
            permission bits before the block (e.g. ``0o600`` for a secret), so the data is
            never readable by others; the caller then opens it for writing.

    Returns:
        A context manager yielding the temporary path.
    """
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        if mode is not None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        yield tmp
        replace_durably(tmp, path, durable=durable)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(
    path: Path | str, data: bytes, *, durable: bool = True, mode: int | None = None
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: The file to write; its directory must exist.
        data: The whole content.
        durable: Follow the fsync rules.
        mode: Permission bits of the new file (default: the process umask's).

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_path(path, durable=durable, mode=mode) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(
    path: Path | str,
    text: str,
    *,
    durable: bool = True,
    mode: int | None = None,
    encoding: str = "utf-8",
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`).

    Args:
        path: The file to write; its directory must exist.
        text: The whole content.
        durable: Follow the fsync rules.
        mode: Permission bits of the new file (default: the process umask's).
        encoding: How ``text`` is encoded.

    Returns:
        ``path``.
    """
    return write_bytes_atomic(path, text.encode(encoding), durable=durable, mode=mode)


def read_json_object(path: Path | str) -> dict[str, Any] | None:
    """The JSON object in ``path`` (e.g. a generator's manifest).

    Args:
        path: the file.

    Returns:
        The object; None when the file is missing or unreadable, is not JSON, or holds
        something other than an object.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path | str, data: Any, *, durable: bool = True) -> None:
    """``data`` as indented UTF-8 JSON (one trailing newline), written atomically
    (:func:`write_bytes_atomic`; ``durable`` as there).

    Args:
        path: the file.
        data: a JSON-serialisable value.
        durable: fsync the file and its directory.
    """
    payload = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, payload.encode(), durable=durable)
