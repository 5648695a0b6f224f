"""Constants, inbox kinds and size profiles of the news sample."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from bi_platform.news.records import HF_SCHEMA

#: The snapshot date of the initial dataset; every date is relative to it.
REFERENCE_DATE = date(2026, 10, 31)
#: Months of history in the initial dataset (ending with REFERENCE_DATE's month).
HISTORY_MONTHS = 24
#: Bumped whenever the generated data changes, so that old files are rewritten.
GENERATOR_VERSION = 1
DEFAULT_SEED = 2
MANIFEST_NAME = ".seed_manifest.json"
SHARD_DIR = "data"

#: Share of records with a theme (the rest have null theme columns).
THEMED_SHARE = 0.965
#: Level of the most specific theme of a themed record: P(1), P(2), P(3).
THEME_LEVEL_P = (0.08, 0.27, 0.65)

# Inbox composition (per daily batch). New records are a share of the existing dataset
# (at least INBOX_MIN_NEW); edits and duplicates are relative to the new records;
# malformed lines are a share of all lines, at least one of each kind.
INBOX_NEW_SHARE = 0.001
INBOX_MIN_NEW = 40
INBOX_EDIT_RATE = 0.10
INBOX_DUP_BATCH_RATE = 0.03
INBOX_DUP_EXISTING_RATE = 0.05
INBOX_MALFORMED_RATE = 0.02
#: Existing records published within this many days before the batch are edit candidates.
INBOX_EDIT_WINDOW_DAYS = 45

# Kinds of inbox lines (see InboxBatch.kinds).
NEW = "new"
EDIT = "edit"
DUPLICATE_IN_BATCH = "duplicate_in_batch"
DUPLICATE_OF_EXISTING = "duplicate_of_existing"
#: Malformed lines: ``missing_title`` (key absent or empty), ``bad_published_at`` (not
#: ISO-8601), ``unknown_agency`` (key not in agencies.yaml), ``broken_json`` (the line is
#: cut short: not valid JSON), ``bad_tags_type`` (tags is a string, number or object).
MALFORMED_KINDS: tuple[str, ...] = (
    "missing_title",
    "bad_published_at",
    "unknown_agency",
    "broken_json",
    "bad_tags_type",
)
#: Fields of an inbox line: HF_SCHEMA without the ids the pipeline computes.
INBOX_FIELDS: tuple[str, ...] = tuple(
    name for name in HF_SCHEMA.names if name not in ("unique_id", "content_hash")
)
UNKNOWN_AGENCIES: tuple[str, ...] = (
    "ministerio-da-magia",
    "orgao-desconhecido",
    "secretaria-extinta",
    "mec_antigo",
    "agencia-x",
)
BAD_TIMESTAMPS: tuple[str, ...] = (
    "2026-13-45T25:61:00-03:00",
    "ontem às 18h",
    "31/02/2026 14h30",
    "não informado",
    "0000-00-00 00:00:00",
)

_US_PER_SECOND = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_SECOND
_US_PER_DAY = 86_400 * _US_PER_SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_CHUNK_ROWS = 25_000
_BANK_PER_GROUP = 384
_SLUG_CHARS = 80
_SHARD_NAME = re.compile(r"^\d{4}-\d{2}\.parquet$")


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewsProfile:
    """Size of one generated data set."""

    name: str
    records: int
    inbox_days: int
    months: int = HISTORY_MONTHS


PROFILES: dict[str, NewsProfile] = {
    "small": NewsProfile("small", records=5_000, inbox_days=3),
    "default": NewsProfile("default", records=300_000, inbox_days=7),
}


def history_window(months: int = HISTORY_MONTHS) -> tuple[date, date]:
    """First and last publication day (São Paulo) of the initial dataset."""
    index = REFERENCE_DATE.year * 12 + REFERENCE_DATE.month - 1 - (months - 1)
    return date(index // 12, index % 12 + 1, 1), REFERENCE_DATE


def inbox_days(days: int) -> list[date]:
    """The ``days`` batch days following the reference date."""
    return [REFERENCE_DATE + timedelta(days=d) for d in range(1, days + 1)]
