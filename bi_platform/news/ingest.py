"""Parsing the scraper's inbox: daily JSON-lines batches into HF_SCHEMA records.

One line is one story as the scraper sends it: the HF columns except ``unique_id`` and
``content_hash`` (computed here when absent), timestamps as ISO-8601 strings with a UTC
offset, ``tags`` a list of strings. :func:`parse_inbox` never raises on bad data: every
line ends up as exactly one of

* a record of :attr:`ParsedBatch.records` (``HF_SCHEMA``, timestamps converted to
  America/Sao_Paulo),
* a :class:`Rejected` entry naming the line and the precise reason,
* a collapsed duplicate (:attr:`ParsedBatch.duplicates`): a later line with the same
  ``unique_id`` as an earlier one. Exact copies keep the first line; a line that carries
  a different version of the same story replaces the earlier one (last version wins,
  counted in :attr:`ParsedBatch.superseded` as well).

so ``lines == len(records) + len(rejected) + duplicates``. Blank lines are skipped and
not counted. Theme codes are not checked here (the database knows the taxonomy; see
:func:`bi_platform.news.pg_store.write_records`).

Pure: no database, no Dagster.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

from bi_platform.news.records import (
    HF_SCHEMA,
    REQUIRED_FIELDS,
    TIMEZONE,
    content_hash,
    unique_id,
)

log = logging.getLogger(__name__)

_ZONE = ZoneInfo(TIMEZONE)
_TIMESTAMP_FIELDS: tuple[str, ...] = tuple(
    f.name for f in HF_SCHEMA if pa.types.is_timestamp(f.type)
)
_STRING_FIELDS: tuple[str, ...] = tuple(f.name for f in HF_SCHEMA if pa.types.is_string(f.type))
_COMPUTED_FIELDS = ("unique_id", "content_hash")


@dataclass(frozen=True)
class Rejected:
    """An input record that was refused: where it came from, what it was, and why.

    ``raw_text`` is the input as read (e.g. the JSON line), ``raw`` the record as parsed
    when it could be parsed (stored as jsonb), ``unique_id`` when it could be computed.
    """

    source: str
    raw_text: str | None
    reason: str
    raw: Mapping[str, Any] | None = None
    unique_id: str | None = None


@dataclass(frozen=True)
class ParsedBatch:
    """One inbox file, parsed.

    ``record_sources[i]`` names the line of ``records`` row ``i`` (e.g. ``"inbox
    2026-11-01.jsonl line 5"``), for rejections found later by the writer.
    """

    records: pa.Table
    rejected: list[Rejected]
    lines: int
    duplicates: int = 0
    superseded: int = 0
    record_sources: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.records.num_rows


class _LineError(ValueError):
    """A line's content is not an acceptable record (the message is the reason)."""


def _parse_timestamp(name: str, value: object, *, required: bool) -> datetime | None:
    if value is None or value == "":
        if required:
            raise _LineError(f"missing required field {name!r}")
        return None
    if not isinstance(value, str):
        raise _LineError(
            f"{name} must be an ISO-8601 string with UTC offset, got {type(value).__name__}"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _LineError(f"{name} {value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _LineError(f"{name} {value!r} has no UTC offset")
    return parsed.astimezone(_ZONE)


def _check_string(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _LineError(f"{name} must be a string, got {type(value).__name__}")


def _check_tags(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        got = type(value).__name__
        if isinstance(value, list):
            got = "a list with non-string items"
        raise _LineError(f"tags must be a list of strings, got {got}")
    return value


def parse_record(data: object, known_agencies: Collection[str] | None = None) -> dict[str, Any]:
    """One scraper record (parsed JSON) as an HF_SCHEMA row dict; raises ``ValueError``.

    Every problem found is listed in the message, separated by ``"; "``.
    """
    if not isinstance(data, dict):
        raise _LineError(f"not a JSON object (got {type(data).__name__})")
    problems: list[str] = []
    row: dict[str, Any] = {}
    for name in HF_SCHEMA.names:
        value = data.get(name)
        try:
            if name in _TIMESTAMP_FIELDS:
                row[name] = _parse_timestamp(name, value, required=name in REQUIRED_FIELDS)
            elif name == "tags":
                row[name] = _check_tags(value)
            else:
                text = _check_string(name, value)
                if name in REQUIRED_FIELDS and (text is None or not text.strip()):
                    raise _LineError(f"missing required field {name!r}")
                row[name] = (text or None) if name in _COMPUTED_FIELDS else text
        except _LineError as exc:
            problems.append(str(exc))
    agency = row.get("agency")
    if (
        known_agencies is not None
        and isinstance(agency, str)
        and agency.strip()
        and agency not in known_agencies
    ):
        problems.append(f"unknown agency {agency!r}")
    if problems:
        raise _LineError("; ".join(problems))
    if not row["unique_id"]:
        row["unique_id"] = unique_id(row["agency"], row["published_at"], row["title"])
    if not row["content_hash"]:
        row["content_hash"] = content_hash(row["title"], row["content"])
    return row


def _known_agency_keys() -> frozenset[str]:
    from bi_platform.news.reference_data import load_agencies

    return frozenset(load_agencies())


def parse_inbox(
    path: Path | str,
    known_agencies: Collection[str] | None = None,
    *,
    source: str | None = None,
) -> ParsedBatch:
    """Parse one inbox file (JSON lines) into records, rejections and collapsed duplicates.

    ``known_agencies``: the agency keys accepted (default: those of the packaged
    ``agencies.yaml``). ``source`` prefixes every line's label (default ``"inbox
    <file name>"``): rejections and :attr:`ParsedBatch.record_sources` read
    ``"<source> line <n>"`` with 1-based physical line numbers.
    """
    path = Path(path)
    known = frozenset(known_agencies) if known_agencies is not None else _known_agency_keys()
    label = source or f"inbox {path.name}"
    rows: dict[str, dict[str, Any]] = {}  # unique_id -> row, in first-seen order
    where: dict[str, int] = {}
    rejected: list[Rejected] = []
    lines = duplicates = superseded = 0
    with path.open("rb") as fh:  # lines end at b"\n" only; each is decoded on its own
        for number, raw_line in enumerate(fh, start=1):
            raw_line = raw_line.rstrip(b"\r\n")
            if not raw_line.strip():
                continue
            lines += 1
            line_source = f"{label} line {number}"
            try:
                text = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = raw_line.decode("utf-8", errors="replace")
                reason = f"line {number}: not valid UTF-8 (byte {exc.start + 1})"
                rejected.append(Rejected(line_source, text, reason))
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                rejected.append(
                    Rejected(
                        line_source,
                        text,
                        f"line {number}: invalid JSON: {exc.msg} at column {exc.colno}",
                    )
                )
                continue
            try:
                row = parse_record(data, known)
            except ValueError as exc:
                raw = data if isinstance(data, dict) else None
                rejected.append(Rejected(line_source, text, f"line {number}: {exc}", raw))
                continue
            uid = row["unique_id"]
            if uid in rows:
                duplicates += 1
                if rows[uid] != row:
                    superseded += 1
                    rows[uid] = row  # the later version of the story wins
                    where[uid] = number
                continue
            rows[uid] = row
            where[uid] = number
    order = sorted(rows, key=where.__getitem__)
    records = pa.Table.from_pylist([rows[u] for u in order], schema=HF_SCHEMA)
    batch = ParsedBatch(
        records=records,
        rejected=rejected,
        lines=lines,
        duplicates=duplicates,
        superseded=superseded,
        record_sources=[f"{label} line {where[u]}" for u in order],
    )
    log.info(
        "parsed %s: %d lines, %d records, %d rejected, %d duplicates (%d superseded)",
        path.name,
        lines,
        records.num_rows,
        len(rejected),
        duplicates,
        superseded,
    )
    return batch
