"""Deterministic generator of the news sources: the initial HF dataset and the scraper inbox.

Two things stand in for the real DestaquesGovBr sources:

* the **initial dataset**: ``n`` news records with exactly
  :data:`~bi_platform.news.records.HF_SCHEMA`, published over the 24 months ending at
  :data:`REFERENCE_DATE`, written as one Parquet shard per publication month
  (``data/YYYY-MM.parquet``, São Paulo months) like the HuggingFace repository;
* the **inbox**: one ``YYYY-MM-DD.jsonl`` batch per day after the reference date, as the
  scraper sends them: new stories, edits of existing ones, exact duplicates and malformed
  lines at the fixed rates documented below (:data:`INBOX_NEW_SHARE` ...).

Records use the real agency keys of ``agencies.yaml`` and theme codes of
``themes_tree.yaml``; titles, leads and ~2 KB bodies are assembled from a Portuguese
vocabulary (per-theme sentence banks). ``unique_id`` and ``content_hash`` are computed
with :mod:`bi_platform.news.records`, so the pipeline recomputes the same values.

Everything derives from ``numpy.random.default_rng`` seeded by ``(seed, name)`` and all
dates are relative to :data:`REFERENCE_DATE` (never today's date): the same profile and
seed always give identical files.
"""

from __future__ import annotations

from bi_platform.news.sample.dataset import (
    month_shards,
    read_initial_dataset,
    schema_hash,
    write_initial_dataset,
)
from bi_platform.news.sample.helpers import normalised_text
from bi_platform.news.sample.inbox import (
    InboxBatch,
    inbox_batch,
    inbox_counts,
    inbox_file,
    write_inbox,
)
from bi_platform.news.sample.profiles import (
    BAD_TIMESTAMPS,
    DEFAULT_SEED,
    DUPLICATE_IN_BATCH,
    DUPLICATE_OF_EXISTING,
    EDIT,
    GENERATOR_VERSION,
    HISTORY_MONTHS,
    INBOX_DUP_BATCH_RATE,
    INBOX_DUP_EXISTING_RATE,
    INBOX_EDIT_RATE,
    INBOX_EDIT_WINDOW_DAYS,
    INBOX_FIELDS,
    INBOX_MALFORMED_RATE,
    INBOX_MIN_NEW,
    INBOX_NEW_SHARE,
    MALFORMED_KINDS,
    MANIFEST_NAME,
    NEW,
    PROFILES,
    REFERENCE_DATE,
    SHARD_DIR,
    THEME_LEVEL_P,
    THEMED_SHARE,
    UNKNOWN_AGENCIES,
    NewsProfile,
    history_window,
    inbox_days,
)
from bi_platform.news.sample.records import generate_news
from bi_platform.news.sample.writer import news_source_dirs, write_news_sources

__all__ = [
    "BAD_TIMESTAMPS",
    "DEFAULT_SEED",
    "DUPLICATE_IN_BATCH",
    "DUPLICATE_OF_EXISTING",
    "EDIT",
    "GENERATOR_VERSION",
    "HISTORY_MONTHS",
    "INBOX_DUP_BATCH_RATE",
    "INBOX_DUP_EXISTING_RATE",
    "INBOX_EDIT_RATE",
    "INBOX_EDIT_WINDOW_DAYS",
    "INBOX_FIELDS",
    "INBOX_MALFORMED_RATE",
    "INBOX_MIN_NEW",
    "INBOX_NEW_SHARE",
    "MALFORMED_KINDS",
    "MANIFEST_NAME",
    "NEW",
    "PROFILES",
    "REFERENCE_DATE",
    "SHARD_DIR",
    "THEMED_SHARE",
    "THEME_LEVEL_P",
    "UNKNOWN_AGENCIES",
    "InboxBatch",
    "NewsProfile",
    "generate_news",
    "history_window",
    "inbox_batch",
    "inbox_counts",
    "inbox_days",
    "inbox_file",
    "month_shards",
    "news_source_dirs",
    "normalised_text",
    "read_initial_dataset",
    "schema_hash",
    "write_inbox",
    "write_initial_dataset",
    "write_news_sources",
]
