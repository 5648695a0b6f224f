"""The canonical form of the text keys the query API compares (segments, text parameters).

The same name can reach the API in several Unicode spellings: ``"CONFECÇÃO"`` precomposed
(NFC, ``Ç`` is one code point) or decomposed (NFD, ``C`` + combining cedilla), with stray
spaces around it. :func:`canonical_text` maps every spelling to one string -- Unicode NFC
without leading or trailing whitespace, the form the warehouse holds -- so that two
spellings of a segment are the same segment for validation, row-level security and the
result cache.
"""

from __future__ import annotations

import unicodedata

__all__ = ["canonical_text"]


def canonical_text(value: str) -> str:
    """``value`` in Unicode NFC, without leading or trailing whitespace.

    Idempotent; the NFC, NFD and padded spellings of a name give the same string. Case is
    kept (matching against the known names stays case-insensitive where it was)."""
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    return unicodedata.normalize("NFC", value).strip()
