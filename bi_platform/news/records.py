"""The news record: its fields, the HF dataset's Arrow schema, and its identity.

One record is one story published by a gov.br agency. The same columns are used by
the HuggingFace dataset shards, the inbox batches of the scraper (JSON lines) and the
PostgreSQL ``news`` table (which adds bookkeeping columns: created_at, updated_at,
content_hash, synced_to_hf_at, agency_name, FKs).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime

import pyarrow as pa

TIMEZONE = "America/Sao_Paulo"
TIMESTAMP = pa.timestamp("us", tz=TIMEZONE)

#: The HF dataset's columns, in order, with explicit types. Timestamps are real
#: timestamps in São Paulo time (never ISO strings), tags a list of strings.
HF_SCHEMA = pa.schema(
    [
        pa.field("unique_id", pa.string(), nullable=False),
        pa.field("agency", pa.string(), nullable=False),
        pa.field("published_at", TIMESTAMP, nullable=False),
        pa.field("updated_datetime", TIMESTAMP),
        pa.field("extracted_at", TIMESTAMP),
        pa.field("title", pa.string(), nullable=False),
        pa.field("subtitle", pa.string()),
        pa.field("editorial_lead", pa.string()),
        pa.field("url", pa.string()),
        pa.field("image_url", pa.string()),
        pa.field("video_url", pa.string()),
        pa.field("category", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("content", pa.string()),
        pa.field("summary", pa.string()),
        pa.field("theme_1_level_1_code", pa.string()),
        pa.field("theme_1_level_1_label", pa.string()),
        pa.field("theme_1_level_2_code", pa.string()),
        pa.field("theme_1_level_2_label", pa.string()),
        pa.field("theme_1_level_3_code", pa.string()),
        pa.field("theme_1_level_3_label", pa.string()),
        pa.field("most_specific_theme_code", pa.string()),
        pa.field("most_specific_theme_label", pa.string()),
        pa.field("content_hash", pa.string()),
    ]
)
HF_COLUMNS: tuple[str, ...] = tuple(HF_SCHEMA.names)

#: Fields a record must have (non-empty) to be accepted anywhere.
REQUIRED_FIELDS: tuple[str, ...] = ("agency", "published_at", "title", "url")


def unique_id(agency: str, published_at: datetime | str, title: str) -> str:
    """The original scraper's id: ``md5(f"{agency}_{published_at}_{title}")``.

    ``published_at`` is formatted as the scraper did (``str()`` of the value), so ids
    of records migrated from the existing dataset are reproduced exactly.
    """
    return hashlib.md5(f"{agency}_{published_at}_{title}".encode()).hexdigest()


_SPACES = re.compile(r"\s+")


def normalise_text(text: str | None) -> str:
    """Lower-case, accents stripped, whitespace collapsed: how re-publications compare."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", plain).strip().lower()


def content_hash(title: str | None, content: str | None) -> str:
    """sha256 over the normalised title and content: equal for re-published stories."""
    payload = f"{normalise_text(title)}\n{normalise_text(content)}"
    return hashlib.sha256(payload.encode()).hexdigest()
