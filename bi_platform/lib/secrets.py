"""Secrets kept out of logs, metadata and error messages."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def mask_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``.

    Args:
        url: A URL such as ``postgresql://user:secret@host:5432/db``.

    Returns:
        The same URL with ``***`` as password; ``url`` unchanged when it has none.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{netloc}"))


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``.

    Args:
        text: A message that may quote the secret (e.g. an HTTP error with a token).
        secret: The secret; ``None`` or empty leaves ``text`` unchanged.

    Returns:
        The redacted text.
    """
    return text.replace(secret, MASK) if secret else text
