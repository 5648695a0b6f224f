"""API keys of the serving API, stored hashed in a JSON file.

A key's secret is ``bik_<key_id>_<token>`` and is shown once, by :meth:`ApiKeyStore.create`;
the file keeps only its SHA-256 (the token carries 256 random bits, so a plain hash is
enough) next to the key's id, name, segments (the ``NOMESEGMENTO`` values it may read;
``None`` means all) and creation / revocation times. Segments are kept in their canonical
form (:func:`~bi_platform.serving.text.canonical_text`: Unicode NFC, trimmed), whether
given to :meth:`ApiKeyStore.create` or read from a file written with another spelling
(e.g. NFD), so a key matches the warehouse's NFC values whatever spelling created it.
Writes hold a file lock and replace the file atomically (mode 0600);
:meth:`ApiKeyStore.verify` serves from memory and reloads when the file changes, so a key
revoked by ``bi-platform api-key revoke`` stops working in running servers at their next
request. Secrets are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from bi_platform.lib.files import write_text_atomic
from bi_platform.serving.text import canonical_text

logger = logging.getLogger(__name__)

__all__ = ["ApiKey", "ApiKeyStore", "ApiKeyStoreError", "UnknownApiKeyError"]

SECRET_PREFIX = "bik_"
_SECRET_RE = re.compile(r"^bik_([0-9a-f]{16})_[A-Za-z0-9_-]{20,100}$")
_MAX_SECRET = 200
_FORMAT_VERSION = 1


class ApiKeyStoreError(RuntimeError):
    """The key file is unreadable or malformed."""


class UnknownApiKeyError(KeyError):
    """No key with that id."""


@dataclass(frozen=True)
class ApiKey:
    """One API key, without its secret."""

    key_id: str
    name: str
    #: The ``NOMESEGMENTO`` values the key may read, canonical (NFC, trimmed), sorted and
    #: distinct whatever spelling they were given in; ``None``: every segment.
    segments: tuple[str, ...] | None
    created_at: str
    revoked_at: str | None

    def __post_init__(self) -> None:
        if self.segments is not None:
            canonical = tuple(sorted({canonical_text(s) for s in self.segments}))
            object.__setattr__(self, "segments", canonical)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_segments(segments: Sequence[str] | None) -> tuple[str, ...] | None:
    if segments is None:
        return None
    if isinstance(segments, str | bytes):
        raise TypeError("segments must be a sequence of strings or None, not a string")
    values = tuple(sorted({canonical_text(str(s)) for s in segments}))
    if not values or any(not s for s in values):
        raise ValueError("segments must be non-empty strings (or None for every segment)")
    return values


class ApiKeyStore:
    """The API keys in ``path`` (created on the first :meth:`create`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._keys: dict[str, tuple[ApiKey, str]] = {}
        self._broken = False

    # -- reading ---------------------------------------------------------------------
    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> dict[str, tuple[ApiKey, str]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ApiKeyStoreError(f"cannot read API key file {self.path}: {exc}") from exc
        try:
            if raw.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unsupported version {raw.get('version')!r}")
            keys: dict[str, tuple[ApiKey, str]] = {}
            for item in raw["keys"]:
                segments = item["segments"]
                key = ApiKey(
                    key_id=str(item["key_id"]),
                    name=str(item["name"]),
                    segments=None if segments is None else tuple(str(s) for s in segments),
                    created_at=str(item["created_at"]),
                    revoked_at=None if item["revoked_at"] is None else str(item["revoked_at"]),
                )
                keys[key.key_id] = (key, str(item["sha256"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ApiKeyStoreError(f"malformed API key file {self.path}: {exc!r}") from exc
        return keys

    def _current(self) -> dict[str, tuple[ApiKey, str]]:
        """The keys as on disk, reloaded only when the file changed."""
        signature = self._stat()
        with self._mutex:
            if signature == self._signature and not self._broken:
                return self._keys
            try:
                keys = self._read() if signature is not None else {}
            except ApiKeyStoreError:
                if not self._broken or signature != self._signature:
                    logger.exception("API key file unusable; rejecting every key until fixed")
                self._broken = True
                self._signature = signature
                self._keys = {}
                raise
            self._keys, self._signature, self._broken = keys, signature, False
            return keys

    def list(self) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first."""
        return sorted((k for k, _ in self._current().values()), key=lambda k: k.created_at)

    def get(self, key_id: str) -> ApiKey:
        try:
            return self._current()[key_id][0]
        except KeyError:
            raise UnknownApiKeyError(key_id) from None

    def verify(self, secret: str) -> ApiKey | None:
        """The active key whose secret this is; ``None`` for malformed, unknown or revoked
        secrets (and, failing closed, while the key file is malformed). Compares hashes in
        constant time."""
        if not isinstance(secret, str) or len(secret) > _MAX_SECRET:
            return None
        match = _SECRET_RE.match(secret)
        if match is None:
            return None
        try:
            keys = self._current()
        except ApiKeyStoreError:
            return None
        entry = keys.get(match.group(1))
        if entry is None:
            hmac.compare_digest(_hash(secret), _hash(""))  # same work for unknown ids
            return None
        key, digest = entry
        if not hmac.compare_digest(_hash(secret), digest) or key.revoked:
            return None
        return key

    # -- writing ---------------------------------------------------------------------
    def _write(self, keys: dict[str, tuple[ApiKey, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document: dict[str, Any] = {
            "version": _FORMAT_VERSION,
            "keys": [
                {
                    **asdict(key),
                    "segments": None if key.segments is None else list(key.segments),
                    "sha256": digest,
                }
                for key, digest in sorted(keys.values(), key=lambda e: e[0].created_at)
            ],
        }
        write_text_atomic(self.path, json.dumps(document, indent=2) + "\n", mode=0o600)

    def _locked(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return FileLock(self._lock_path, timeout=30)

    def create(self, name: str, segments: Sequence[str] | None) -> tuple[ApiKey, str]:
        """A new key and its secret (returned only here; only its hash is stored)."""
        name = str(name).strip()
        if not name or len(name) > 200:
            raise ValueError("an API key needs a name of 1 to 200 characters")
        allowed = _check_segments(segments)
        with self._locked():
            keys = dict(self._read())
            key_id = secrets.token_hex(8)
            while key_id in keys:
                key_id = secrets.token_hex(8)
            secret = f"{SECRET_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            key = ApiKey(key_id, name, allowed, _now(), None)
            keys[key_id] = (key, _hash(secret))
            self._write(keys)
        logger.info("created API key %s (%s), segments %s", key_id, name, allowed or "all")
        return key, secret

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke ``key_id`` (idempotent: a revoked key keeps its first revocation time)."""
        with self._locked():
            keys = dict(self._read())
            if key_id not in keys:
                raise UnknownApiKeyError(key_id)
            key, digest = keys[key_id]
            if key.revoked_at is None:
                key = ApiKey(key.key_id, key.name, key.segments, key.created_at, _now())
                keys[key_id] = (key, digest)
                self._write(keys)
                logger.info("revoked API key %s (%s)", key.key_id, key.name)
        return key
