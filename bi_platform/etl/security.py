"""Input confinement, size limits, hashing and the audit log.

- :func:`open_inbox_file` opens an inbox file without following any link and checks it
  on the descriptor (regular file, a single link, the inbox's device, the size limit):
  absolute names, ``..``, symbolic links, hard links and swaps between check and read
  are refused with the reason; the file is then read (and hashed) through that
  descriptor only;
- :class:`AuditLog` appends one JSON line per processed or rejected file: name, size,
  sha256, result and a short detail -- never record contents nor secrets.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

logger = logging.getLogger(__name__)

#: Longest ``detail`` kept in an audit entry (it names a reason, not data).
AUDIT_DETAIL_MAX = 500


class UnsafeInputError(ValueError):
    """An input file is refused (the message names the file and the reason)."""


@dataclass(frozen=True)
class FileIdentity:
    """What identifies one version of a file without reading it: device, inode, size,
    modification and status-change times (``ctime`` cannot be set by a user, so a content
    change always changes it)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """The identity of a ``stat``/``fstat`` result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def as_dict(self) -> dict[str, int]:
        return {
            "dev": self.dev,
            "ino": self.ino,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
        }

    @classmethod
    def from_dict(cls, data: Any) -> FileIdentity | None:
        """The identity stored by :meth:`as_dict`, or None if ``data`` is not one."""
        try:
            return cls(*(int(data[k]) for k in ("dev", "ino", "size", "mtime_ns", "ctime_ns")))
        except (KeyError, TypeError, ValueError):
            return None


class InputChangedError(UnsafeInputError):
    """The file behind a name vanished, or its content is no longer the expected one."""


@dataclass(frozen=True)
class OpenedInboxFile:
    """An inbox file opened without following links and checked on its descriptor; read
    it through :attr:`fd` (never through its path again)."""

    name: str
    fd: int
    identity: FileIdentity

    @property
    def size(self) -> int:
        return self.identity.size

    def sha256(self) -> str:
        """Hex sha256 of the content, read from the descriptor."""
        return sha256_fd(self.fd)

    def check_unchanged(self) -> None:
        """:class:`InputChangedError` unless the file still has the size and times it had
        when opened: written to, or its name removed or replaced, while it was read (the
        status-change time moves with any of these); it is read again, as a new version
        if its content changed."""
        now = FileIdentity.of(os.fstat(self.fd))
        if now != self.identity:
            raise InputChangedError(
                f"{self.name!r}: changed while it was being read (size "
                f"{self.identity.size:,} -> {now.size:,}, or its times or names); it is read "
                "again once it stops changing"
            )


def _check_relative_name(name: str) -> list[str]:
    """The path components of ``name``, or :class:`UnsafeInputError` (empty, absolute,
    ``..``, NUL)."""
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
    return [part for part in parts if part != "."]


_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


def _open_component(name: str, part: str, dir_fd: int, directory: bool) -> int:
    flags = _OPEN_FLAGS | (os.O_DIRECTORY if directory else 0)
    try:
        return os.open(part, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise UnsafeInputError(f"{name!r}: no such file in the inbox") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeInputError(
                f"{name!r}: a symbolic link is refused (links are never followed; copy the "
                "file into the inbox)"
            ) from None
        if exc.errno == errno.ENOTDIR:
            try:
                is_link = stat.S_ISLNK(os.lstat(part, dir_fd=dir_fd).st_mode)
            except OSError:
                is_link = False
            if is_link:
                raise UnsafeInputError(
                    f"{name!r}: {part!r} is a symbolic link: refused (links are never followed)"
                ) from None
            raise UnsafeInputError(f"{name!r}: {part!r} is not a directory") from None
        raise UnsafeInputError(
            f"{name!r}: cannot be opened ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
        ) from None


def _check_descriptor(name: str, st: os.stat_result, inbox_dev: int, max_bytes: int | None) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise UnsafeInputError(f"{name!r}: a directory (only regular files are accepted)")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeInputError(f"{name!r}: not a regular file (only regular files are accepted)")
    if st.st_nlink != 1:
        raise UnsafeInputError(
            f"{name!r}: a hard link ({st.st_nlink} names share this file, maybe outside the "
            "inbox): refused; copy the file into the inbox instead"
        )
    if st.st_dev != inbox_dev:
        raise UnsafeInputError(f"{name!r}: on another file system than the inbox (refused)")
    if max_bytes is not None and st.st_size > max_bytes:
        raise UnsafeInputError(
            f"{name!r}: {st.st_size:,} bytes exceeds the limit of {max_bytes:,} bytes"
        )


@contextmanager
def open_inbox_file(
    inbox: Path, name: str, max_bytes: int | None = None
) -> Iterator[OpenedInboxFile]:
    """Open ``name`` inside ``inbox`` for reading, safely, and close it afterwards.

    Every component is opened relative to the previous directory's descriptor with
    ``O_NOFOLLOW`` (so no symbolic link is ever followed, in the name or above it), and the
    file is checked on its descriptor (``fstat``): a regular file, one link (a hard link
    could point anywhere), on the inbox's device, at most ``max_bytes``. A swap of the
    directory entry after this point changes nothing: the descriptor keeps the checked
    file.

    Args:
        inbox: The inbox directory (itself opened normally: it is the operator's).
        name: A relative name inside it (empty, absolute, ``..`` and NUL are refused).
        max_bytes: The size limit, or None for none.

    Returns:
        A context manager yielding the :class:`OpenedInboxFile`; :class:`UnsafeInputError`
        (naming the file and the reason) when refused.
    """
    parts = _check_relative_name(name)
    try:
        root_fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafeInputError(f"{name!r}: the inbox {inbox} is not accessible: {exc}") from None
    opened: list[int] = [root_fd]
    try:
        inbox_dev = os.fstat(root_fd).st_dev
        for part in parts[:-1]:
            opened.append(_open_component(name, part, opened[-1], directory=True))
        fd = _open_component(name, parts[-1], opened[-1], directory=False)
        opened.append(fd)
        st = os.fstat(fd)
        _check_descriptor(name, st, inbox_dev, max_bytes)
        yield OpenedInboxFile(name, fd, FileIdentity.of(st))
    finally:
        for descriptor in reversed(opened):
            os.close(descriptor)


def resolve_inbox_file(inbox: Path, name: str, max_bytes: int | None = None) -> Path:
    """The path of ``name`` inside ``inbox`` if :func:`open_inbox_file` accepts it now
    (for messages and format detection; read the file through :func:`open_inbox_file`).

    Args:
        inbox: The inbox directory.
        name: A relative name inside it.
        max_bytes: The size limit, or None.

    Returns:
        ``inbox / name``; :class:`UnsafeInputError` when refused.
    """
    with open_inbox_file(inbox, name, max_bytes):
        pass
    return Path(inbox) / name


HASH_BLOCK = 4 * 2**20


def sha256_fd(fd: int) -> str:
    """The sha256 of the whole content of an open file, read from the descriptor.

    Args:
        fd: The open file (positional reads: its offset is not used nor moved).

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    offset = 0
    while True:
        count = os.preadv(fd, [view], offset)
        if not count:
            break
        digest.update(view[:count])
        offset += count
    return digest.hexdigest()


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
