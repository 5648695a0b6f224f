"""The news record: its fields, the HF dataset's Arrow schema, its identity, and which
version of a story wins.

One record is one story published by a gov.br agency. The same columns are used by
the HuggingFace dataset shards, the inbox batches of the scraper (JSON lines) and the
PostgreSQL ``news`` table (which adds bookkeeping columns: created_at, updated_at,
content_hash, synced_to_hf_at, agency_name, FKs, and ``extra``: the unknown fields of an
ingested line, which the HF dataset does not carry).

Identity (see the README's news chapter):

* ``unique_id = md5(f"{agency}_{published_at}_{title}")``, the original scraper's
  formula (:func:`unique_id`); at ingest the title is first normalised
  (:func:`normalise_title`: whitespace runs collapsed, ends trimmed), so whitespace-only
  variants of a headline are one story; ids of records already in the HF dataset are
  kept as they are.
* ``content_hash`` = sha256 of the normalised title and content (:func:`content_hash`).

Versions of one story (:func:`resolve_versions`): a story is found by its ``unique_id``
or, for a headline correction, by its agency and url; the version with the latest
``extracted_at`` wins, an older one is refused.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pyarrow as pa

TIMEZONE = "America/Sao_Paulo"
TIMESTAMP = pa.timestamp("us", tz=TIMEZONE)
_ZONE = ZoneInfo(TIMEZONE)

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

#: Column of a record holding the fields of an ingested line that are not HF columns,
#: as the text of a JSON object (null: none). Stored in PostgreSQL (``news.extra``,
#: jsonb); never part of the HF dataset, whose schema is fixed.
EXTRA_COLUMN = "extra"
#: A record as the write path handles it: the HF columns plus :data:`EXTRA_COLUMN`.
RECORD_SCHEMA = HF_SCHEMA.append(pa.field(EXTRA_COLUMN, pa.string()))

#: Fields a record must have (non-empty) to be accepted anywhere.
REQUIRED_FIELDS: tuple[str, ...] = ("agency", "published_at", "title", "url")

#: The supported range of every timestamp of a record, ``[EARLIEST, LATEST)``: years
#: 1900 to 2099 (UTC). Outside it a record is refused (year 1 or 9999 are typos, and
#: would not even convert to São Paulo time).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

# Reason kinds of the identity and version rules; a reason reads "<kind>: <detail>".
UNIQUE_ID_MISMATCH = "supplied unique_id differs from the computed one"
CONTENT_HASH_MISMATCH = "supplied content_hash differs from the computed one"
OUT_OF_RANGE = "timestamp out of range"
DUPLICATE_URL = "duplicate url for agency"
OLDER_THAN_STORED = "older than the stored version"
OLDER_THAN_BATCH = "older than a version earlier in the batch"
CONFLICT_IN_BATCH = "conflicting versions in the batch"


def unique_id(agency: str, published_at: datetime | str, title: str) -> str:
    """The original scraper's id: ``md5(f"{agency}_{published_at}_{title}")``.

    ``published_at`` is formatted as the scraper did (``str()`` of the value in São
    Paulo time: an aware datetime is converted first), so ids of records migrated from
    the existing dataset are reproduced exactly. ``title`` is hashed as given; the ingest
    passes :func:`normalise_title` of it.

    Args:
        agency: the agency key.
        published_at: publication time (aware datetime) or its string form.
        title: the headline.

    Returns:
        32 hex digits.
    """
    if isinstance(published_at, datetime) and published_at.tzinfo is not None:
        published_at = published_at.astimezone(_ZONE)
    return hashlib.md5(f"{agency}_{published_at}_{title}".encode()).hexdigest()


def normalise_title(title: str) -> str:
    """The form of a headline the ingest stores and hashes into ``unique_id``.

    Args:
        title: the headline as sent.

    Returns:
        ``title`` with every run of whitespace (as ``str.split`` sees it: spaces, tabs,
        line breaks, no-break spaces, ...) made one space and the ends trimmed; case and
        accents are kept.
    """
    return " ".join(title.split())


_ASCII = frozenset(map(chr, range(128)))


def _strip_combining(text: str) -> str:
    """``text`` without its combining characters (``unicodedata.combining`` != 0)."""
    others = set(text) - _ASCII  # set operations in C: a few characters remain
    marks = {ch for ch in others if unicodedata.combining(ch)}
    if not marks:
        return text
    if len(marks) == len(others):  # the common case: ASCII letters and their accents
        return text.encode("ascii", "ignore").decode("ascii")
    return text.translate(dict.fromkeys(map(ord, marks)))


def normalise_text(text: str | None) -> str:
    """Lower-case, accents stripped, whitespace collapsed: how re-publications compare.

    NFKD, then combining characters dropped, whitespace runs made one space, the ends
    trimmed, lower-cased (the same result as doing it character by character, ~2.5x
    faster on news text).

    Args:
        text: any text, or None.

    Returns:
        The normalised text ("" for None or "").
    """
    if not text:
        return ""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        if not text.isascii():
            text = _strip_combining(text)
    return " ".join(text.split()).lower()


def content_hash(title: str | None, content: str | None) -> str:
    """sha256 over the normalised title and content: equal for re-published stories.

    Args:
        title: the headline.
        content: the body.

    Returns:
        64 hex digits of ``sha256(f"{normalise_text(title)}\n{normalise_text(content)}")``.
    """
    payload = f"{normalise_text(title)}\n{normalise_text(content)}"
    return hashlib.sha256(payload.encode()).hexdigest()


def jsonb_problem(value: object) -> str | None:
    """Why ``value`` cannot be stored as PostgreSQL jsonb.

    Args:
        value: a parsed JSON value (any depth: walked iteratively).

    Returns:
        None when storable, else the first problem: a text (keys included) that is not
        valid Unicode or holds NUL, a non-finite number, a value that is not JSON.
    """
    stack = [value]
    while stack:  # iterative: a deeply nested value cannot exhaust the recursion limit
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "holds a NUL character"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"is not valid Unicode (lone surrogate at character {exc.start + 1})"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"holds a non-finite number ({item})"
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif not (item is None or isinstance(item, bool | int | float)):
            return f"holds a {type(item).__name__}, not a JSON value"
    return None


def out_of_range(name: str, shown: str) -> str:
    """The reason refusing a timestamp outside :data:`EARLIEST` .. :data:`LATEST`.

    Args:
        name: the field.
        shown: the value as the reason shows it.

    Returns:
        ``"timestamp out of range: <name> <shown> is outside the supported range ..."``.
    """
    return (
        f"{OUT_OF_RANGE}: {name} {shown} is outside the supported range "
        f"{EARLIEST:%Y-%m-%d} to {LATEST.year - 1}-12-31 (UTC)"
    )


def timestamp_problem(name: str, value: datetime) -> str | None:
    """Check an aware timestamp against the supported range.

    Args:
        name: the field.
        value: an aware datetime (any offset; compared without conversion, so year 1 or
            9999 with any offset is fine).

    Returns:
        None inside :data:`EARLIEST` .. :data:`LATEST`, else :func:`out_of_range`'s reason.
    """
    if EARLIEST <= value < LATEST:
        return None
    return out_of_range(name, value.isoformat())


# --------------------------------------------------------------------------------------
# Versions of a story
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Version:
    """One version of a story, as :func:`resolve_versions` sees it.

    ``published_at`` is only used for stored versions (where the HF backend finds the
    row a correction replaces).
    """

    unique_id: str
    agency: str
    url: str | None
    extracted_at: datetime | None
    published_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str] | None:
        """(agency, url), or None without a url (such a story is found by id only)."""
        return (self.agency, self.url) if self.url else None


@dataclass
class Resolution:
    """What :func:`resolve_versions` decided for each version of a batch (by index).

    Every index is in exactly one of ``winners`` (to be written, ascending),
    ``merged`` (an earlier version, or an exact copy, of a story the batch has another
    line of: index -> the index that took its place then) and ``rejected`` (index -> reason); so
    ``len(batch) == len(winners) + len(merged) + len(rejected)``. ``replaces``: winner
    index -> the stored version it replaces (a headline correction: same agency and url,
    later extraction, new title hence new ``unique_id``). ``superseded``: how many of
    ``merged`` were a different (older) version, not an exact copy.
    """

    winners: list[int] = field(default_factory=list)
    merged: dict[int, int] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    replaces: dict[int, Version] = field(default_factory=dict)
    superseded: int = 0


def _when(value: datetime | None) -> str:
    """An extraction time for a reason: ISO-8601 in São Paulo time, whatever the store
    returned it in (so every backend words a reason the same)."""
    return value.astimezone(_ZONE).isoformat() if value is not None else "none"


def _newer(a: datetime | None, b: datetime | None) -> bool:
    """``a`` is a later extraction than ``b`` (a missing time is older than any)."""
    return a is not None and (b is None or a > b)


def _older(a: datetime | None, b: datetime | None) -> bool:
    return _newer(b, a)


#: Finds the stored versions of the stories with these ids or (agency, url) keys (it
#: may return more; what does not match is ignored).
StoredLookup = Callable[[Sequence[str], Sequence[tuple[str, str]]], Iterable[Version]]


def resolve_versions(
    batch: Sequence[Version],
    *,
    identical: Callable[[int, int], bool],
    stored: Iterable[Version] = (),
) -> Resolution:
    """Decide which versions of a batch are written, merged into another, or refused.

    The rules, the same for every storage backend:

    1. Within the batch, line by line: a version of a story already seen (same
       ``unique_id``) replaces it unless it is older (``extracted_at`` earlier; a
       missing time is older than any); an exact copy keeps the earlier line. A version
       with the (agency, url) of ANOTHER story of the batch is a headline correction
       when its extraction is later (it replaces that story), else it is refused
       (:data:`OLDER_THAN_BATCH` when older, :data:`DUPLICATE_URL` when as old).
    2. Then each surviving version against the store (``stored``: the stored versions
       of the batch's ids and (agency, url) keys, as they were before the batch): same
       ``unique_id``: an update unless
       older (:data:`OLDER_THAN_STORED`); a url stored under another ``unique_id``: a
       correction of that story when the extraction is later (``replaces``), else
       :data:`OLDER_THAN_STORED` or :data:`DUPLICATE_URL`; a version whose own id is
       stored with another url, taking a url stored under another id: refused
       (:data:`DUPLICATE_URL`). A stored story changed by one row of the batch cannot be
       changed by another (:data:`CONFLICT_IN_BATCH`): the store is compared as it was
       before the batch.

    Args:
        batch: the versions, in input order.
        identical: ``identical(i, j)``: rows ``i`` and ``j`` carry the same record.
        stored: the stored versions (see :data:`StoredLookup`); empty for an empty
            store, or to apply rule 1 only.

    Returns:
        The :class:`Resolution`.
    """
    out = Resolution()
    current: dict[str, int] = {}  # unique_id -> index of its current version
    holder: dict[tuple[str, str], str] = {}  # (agency, url) -> unique_id holding it

    def take(index: int) -> None:
        version = batch[index]
        current[version.unique_id] = index
        if version.key is not None:
            holder[version.key] = version.unique_id

    def drop(uid: str) -> int:
        index = current.pop(uid)
        key = batch[index].key
        if key is not None and holder.get(key) == uid:
            del holder[key]
        return index

    def merge(loser: int, winner: int, exact: bool) -> None:
        out.merged[loser] = winner
        if not exact:
            out.superseded += 1

    for i, version in enumerate(batch):
        seen = current.get(version.unique_id)
        owner = holder.get(version.key) if version.key is not None else None
        if owner is not None and owner != version.unique_id:
            other = batch[current[owner]]
            if seen is not None:
                out.rejected[i] = f"{DUPLICATE_URL}: earlier in the batch as unique_id {owner}"
            elif _newer(version.extracted_at, other.extracted_at):
                merge(drop(owner), i, exact=False)
                take(i)
            elif _older(version.extracted_at, other.extracted_at):
                out.rejected[i] = (
                    f"{OLDER_THAN_BATCH}: extracted_at {_when(version.extracted_at)} is before "
                    f"{_when(other.extracted_at)} of unique_id {owner}"
                )
            else:
                out.rejected[i] = f"{DUPLICATE_URL}: earlier in the batch as unique_id {owner}"
        elif seen is not None:
            before = batch[seen]
            if _older(version.extracted_at, before.extracted_at):
                out.rejected[i] = (
                    f"{OLDER_THAN_BATCH}: extracted_at {_when(version.extracted_at)} is before "
                    f"{_when(before.extracted_at)} of the same story"
                )
            elif identical(seen, i):
                merge(i, seen, exact=True)
            else:
                drop(version.unique_id)
                merge(seen, i, exact=False)
                take(i)
        else:
            take(i)

    survivors = sorted(current.values())
    by_id: dict[str, Version] = {}
    by_key: dict[tuple[str, str], Version] = {}
    for s in stored:
        by_id[s.unique_id] = s
        if s.key is not None:
            by_key[s.key] = s
    changed: dict[str, str] = {}  # stored unique_id -> unique_id of the row changing it
    for i in survivors:
        version = batch[i]
        same = by_id.get(version.unique_id)
        owner = by_key.get(version.key) if version.key is not None else None
        if owner is not None and owner.unique_id != version.unique_id:
            if owner.unique_id in changed:
                out.rejected[i] = (
                    f"{CONFLICT_IN_BATCH}: the stored story unique_id {owner.unique_id} is "
                    f"already changed by the row of unique_id {changed[owner.unique_id]}"
                )
            elif same is not None:
                out.rejected[i] = f"{DUPLICATE_URL}: stored as unique_id {owner.unique_id}"
            elif _newer(version.extracted_at, owner.extracted_at):
                out.replaces[i] = owner
                changed[owner.unique_id] = version.unique_id
                out.winners.append(i)
            elif _older(version.extracted_at, owner.extracted_at):
                out.rejected[i] = (
                    f"{OLDER_THAN_STORED}: extracted_at {_when(version.extracted_at)} is before "
                    f"{_when(owner.extracted_at)} of unique_id {owner.unique_id}"
                )
            else:
                out.rejected[i] = f"{DUPLICATE_URL}: stored as unique_id {owner.unique_id}"
        elif same is not None:
            if same.unique_id in changed:
                out.rejected[i] = (
                    f"{CONFLICT_IN_BATCH}: the stored story unique_id {same.unique_id} is "
                    f"already changed by the row of unique_id {changed[same.unique_id]}"
                )
            elif _older(version.extracted_at, same.extracted_at):
                out.rejected[i] = (
                    f"{OLDER_THAN_STORED}: extracted_at {_when(version.extracted_at)} is before "
                    f"{_when(same.extracted_at)} of unique_id {same.unique_id}"
                )
            else:
                changed[same.unique_id] = version.unique_id
                out.winners.append(i)
        else:
            out.winners.append(i)
    return out
