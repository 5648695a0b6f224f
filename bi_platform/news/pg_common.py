"""What the news PostgreSQL modules share: column names, the staging layout, helpers.

- HF column <-> ``news`` column names (:data:`PG_NAMES`, :data:`HF_NAMES`), the theme
  code columns and their labels, the staging table's columns (:data:`STAGING_COLUMNS`)
  and the content columns the merge writes (:data:`CONTENT_COLUMNS`);
- :func:`transaction`: the caller's transaction, or a new one on an idle autocommit
  connection;
- :func:`jsonable`, :func:`storable_raw`, :func:`storable_text`: values made storable in
  ``jsonb``/``text`` columns; :func:`count_reasons`: rejections by reason kind.

The modules built on it: :mod:`~bi_platform.news.pg_reference` (agencies and themes),
:mod:`~bi_platform.news.validation` (the validator of every backend),
:mod:`~bi_platform.news.pg_write` (the write path), :mod:`~bi_platform.news.sync_log`
(the run log) and :mod:`~bi_platform.news.pg_migration` (HF dataset -> PostgreSQL).
Every function taking a connection works in the caller's transaction and never commits
(except :func:`~bi_platform.news.pg_migration.migrate_from_repo`, which owns its
connections). Pure psycopg 3 + pyarrow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pyarrow as pa
from psycopg.pq import TransactionStatus

from bi_platform.news.ingest import Rejected
from bi_platform.news.records import (
    EXTRA_COLUMN,
    HF_SCHEMA,
    TIMEZONE,
)

log = logging.getLogger(__name__)

ZONE = ZoneInfo(TIMEZONE)


PG_NAMES = {
    "agency": "agency_key",
    "theme_1_level_1_code": "theme_l1_code",
    "theme_1_level_2_code": "theme_l2_code",
    "theme_1_level_3_code": "theme_l3_code",
}
#: Theme code columns of a record and the level their code must have (None: any).
THEME_COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("theme_1_level_1_code", 1),
    ("theme_1_level_2_code", 2),
    ("theme_1_level_3_code", 3),
    ("most_specific_theme_code", None),
)
#: Label column of each theme code column (filled from the taxonomy).
LABEL_OF = {
    "theme_1_level_1_code": "theme_1_level_1_label",
    "theme_1_level_2_code": "theme_1_level_2_label",
    "theme_1_level_3_code": "theme_1_level_3_label",
    "most_specific_theme_code": "most_specific_theme_label",
}
TIMESTAMP_COLUMNS = tuple(f.name for f in HF_SCHEMA if pa.types.is_timestamp(f.type))
STRING_COLUMNS = tuple(f.name for f in HF_SCHEMA if pa.types.is_string(f.type))

#: The staging table: news' content columns in the order of COPY, plus ``seq``, the
#: row's index in the input table, and ``replaces``.
STAGING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "int4"),
    ("unique_id", "text"),
    ("agency_key", "text"),
    ("agency_name", "text"),
    ("published_at", "timestamptz"),
    ("updated_datetime", "timestamptz"),
    ("extracted_at", "timestamptz"),
    ("title", "text"),
    ("subtitle", "text"),
    ("editorial_lead", "text"),
    ("url", "text"),
    ("image_url", "text"),
    ("video_url", "text"),
    ("category", "text"),
    ("tags", "text[]"),
    ("content", "text"),
    ("summary", "text"),
    ("theme_l1_code", "text"),
    ("theme_l2_code", "text"),
    ("theme_l3_code", "text"),
    ("most_specific_theme_code", "text"),
    ("content_hash", "text"),
    (EXTRA_COLUMN, "jsonb"),
    ("replaces", "text"),
)
#: Staging columns that are not news columns: the row's index in the input, and the
#: stored unique_id a headline correction replaces.
STAGING_ONLY = ("seq", "replaces")
#: news columns written by the merge (= the columns news_touch_updated_at compares).
CONTENT_COLUMNS: tuple[str, ...] = tuple(n for n, _ in STAGING_COLUMNS if n not in STAGING_ONLY)
HF_NAMES = {pg: hf for hf, pg in PG_NAMES.items()}


@contextmanager
def transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The caller's transaction; a new one only on an idle autocommit connection."""
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    with conn.transaction() if (conn.autocommit and idle) else nullcontext():
        yield


def storable_text(text: str) -> str:
    """``text`` with NUL characters and lone surrogates (which PostgreSQL text and jsonb
    cannot hold) replaced by U+FFFD."""
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


def jsonable(value: Any) -> Any:
    """A value of a record as JSON that PostgreSQL's jsonb accepts (timestamps ISO-8601;
    NUL characters and lone surrogates replaced; non-finite numbers as strings)."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {storable_text(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False)


def storable_raw(raw: Mapping[str, Any] | None) -> Any | None:
    """A rejected record as it can be stored (``news_rejected.raw``, dead letters).

    Args:
        raw: the record as parsed, or None.

    Returns:
        :func:`jsonable` of ``raw``, or None when even that fails (e.g. a JSON value
        nested too deeply to serialise): the rejection then keeps its ``raw_text``.
    """
    if raw is None:
        return None
    try:
        value = jsonable(raw)
        json.dumps(value, allow_nan=False)
    except (RecursionError, ValueError, TypeError) as exc:
        log.warning("a rejected record cannot be stored as JSON (%s): raw text only", exc)
        return None
    return value


def count_reasons(rejected: Iterable[Rejected]) -> dict[str, int]:
    """Rejections per reason kind (the text before the first ``:`` of each reason part)."""
    counts: dict[str, int] = {}
    for r in rejected:
        for part in r.reason.split("; "):
            kind = part.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
    return counts
