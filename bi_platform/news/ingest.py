"""Parsing the scraper's inbox: daily JSON-lines batches into records.

One line is one story as the scraper sends it: the HF columns (``unique_id`` and
``content_hash`` optional), timestamps as ISO-8601 strings with a UTC offset, ``tags`` a
list of strings, and possibly fields the platform does not know. :func:`parse_inbox`
never raises on the content of a file (only when it cannot be read): every failure of a
line, whatever it is (invalid UTF-8, broken JSON, a wrong type, a timestamp out of
range, an unexpected exception in a field), is a :class:`Rejected` naming the file, the
line, the fields and the reason. Every non-blank line ends up as exactly one of

* a record of :attr:`ParsedBatch.records` (:data:`~bi_platform.news.records.RECORD_SCHEMA`:
  the HF columns, timestamps in America/Sao_Paulo, plus ``extra``),
* a :class:`Rejected` entry,
* a merged duplicate (:attr:`ParsedBatch.duplicates`): an exact copy of an earlier line
  (the earlier line is kept), or a version of a story that a later line of the batch
  replaces (:func:`~bi_platform.news.records.resolve_versions`: the newest extraction
  wins; counted in :attr:`ParsedBatch.superseded` as well),

so ``lines == accepted + len(rejected) + duplicates`` (:meth:`ParsedBatch.reconciles`).
Blank lines are skipped and not counted.

Identity is computed, never trusted: the title is normalised
(:func:`~bi_platform.news.records.normalise_title`) and the url trimmed, then
``unique_id`` and ``content_hash`` are computed. A supplied ``unique_id`` is accepted
when it equals the scraper's formula over the normalised title or over the title as
sent (the record gets the former); a supplied ``content_hash`` when it equals the
computed one; anything else is a rejection ("supplied unique_id differs from the
computed one"), never an overwrite of another story. Fields that are not HF columns
are kept in ``extra`` (JSON text; stored in PostgreSQL's ``news.extra``). Theme codes and
NUL characters are checked by the writer (:func:`bi_platform.news.validation.validate_records`,
the same for every storage backend), which applies the same identity rules again.

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
    CONTENT_HASH_MISMATCH,
    DUPLICATE_URL,
    EXTRA_COLUMN,
    HF_SCHEMA,
    RECORD_SCHEMA,
    REQUIRED_FIELDS,
    TIMEZONE,
    UNIQUE_ID_MISMATCH,
    Version,
    content_hash,
    jsonb_problem,
    normalise_title,
    resolve_versions,
    timestamp_problem,
    unique_id,
)

log = logging.getLogger(__name__)

_ZONE = ZoneInfo(TIMEZONE)
_TIMESTAMP_FIELDS: tuple[str, ...] = tuple(
    f.name for f in HF_SCHEMA if pa.types.is_timestamp(f.type)
)
_COMPUTED_FIELDS = ("unique_id", "content_hash")
_HF_NAMES = frozenset(HF_SCHEMA.names)


@dataclass(frozen=True)
class Rejected:
    """An input record that was refused: where it came from, what it was, and why.

    ``raw_text`` is the input as read (e.g. the JSON line), ``raw`` the record as parsed
    when it could be parsed (stored as jsonb), ``unique_id`` when it could be computed,
    ``fields`` the fields the reason is about (empty when the line as a whole failed:
    encoding, JSON, not an object).
    """

    source: str
    raw_text: str | None
    reason: str
    raw: Mapping[str, Any] | None = None
    unique_id: str | None = None
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedBatch:
    """One inbox file, parsed.

    Accounting: ``lines == accepted + len(rejected) + duplicates`` (non-blank lines;
    ``duplicates`` are the merged lines, ``superseded`` the part of them that was an
    older version rather than an exact copy). ``record_sources[i]`` names the line of
    ``records`` row ``i`` (e.g. ``"inbox 2026-11-01.jsonl line 5"``), for rejections
    found later by the writer.
    """

    records: pa.Table
    rejected: list[Rejected]
    lines: int
    duplicates: int = 0
    superseded: int = 0
    record_sources: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Records handed to the writer (one per story)."""
        return self.records.num_rows

    def reconciles(self) -> bool:
        """``lines == accepted + len(rejected) + duplicates``."""
        return self.lines == self.accepted + len(self.rejected) + self.duplicates


class _LineError(ValueError):
    """A line's content is not an acceptable record (the message is the reason)."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


def _check_text(name: str, value: str) -> str:
    """``value`` if it can be stored as UTF-8 (JSON escapes may carry lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _LineError(
            f"{name} is not valid Unicode (lone surrogate at character {exc.start + 1})"
        ) from None
    return value


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
    problem = timestamp_problem(name, parsed)
    if problem is not None:
        raise _LineError(problem)
    return parsed.astimezone(_ZONE)


def _check_string(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _check_text(name, value)
    raise _LineError(f"{name} must be a string, got {type(value).__name__}")


def _check_tags(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        got = type(value).__name__
        if isinstance(value, list):
            got = "a list with non-string items"
        raise _LineError(f"tags must be a list of strings, got {got}")
    return [_check_text("tags", t) for t in value]


def _extra_fields(data: Mapping[str, Any], problems: list[str], bad: list[str]) -> str | None:
    """The fields of ``data`` that are not HF columns, as JSON text (None: none)."""
    extra = {k: v for k, v in data.items() if k not in _HF_NAMES}
    if not extra:
        return None
    failed = False
    for key, value in extra.items():
        problem = jsonb_problem(key) or jsonb_problem(value)
        if problem is not None:
            problems.append(f"extra field {key!r}: {problem}")
            bad.append(key)
            failed = True
    if failed:
        return None
    try:
        return json.dumps(extra, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (RecursionError, ValueError) as exc:  # nested too deep to store
        problems.append(f"extra fields cannot be stored: {type(exc).__name__}: {exc}")
        bad.extend(extra)
        return None


def parse_record(data: object, known_agencies: Collection[str] | None = None) -> dict[str, Any]:
    """One scraper record (parsed JSON) as a ``RECORD_SCHEMA`` row dict.

    Every field is checked on its own (any exception in one field becomes a problem of
    that field); then, if all fields are fine, the identity is computed (see the module
    docstring). Title normalised, url trimmed, unknown fields in ``extra``.

    Args:
        data: the parsed JSON value of one line.
        known_agencies: the agency keys accepted (None: any).

    Returns:
        The row, with ``unique_id`` and ``content_hash`` computed.

    Raises:
        ValueError: every problem found, separated by ``"; "`` (its ``fields``
            attribute names the fields concerned).
    """
    if not isinstance(data, dict):
        raise _LineError(f"not a JSON object (got {type(data).__name__})")
    problems: list[str] = []
    bad: list[str] = []
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
            bad.append(name)
        except Exception as exc:  # whatever a value does, it only fails its own field
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            bad.append(name)
    row[EXTRA_COLUMN] = _extra_fields(data, problems, bad)
    agency = row.get("agency")
    if (
        known_agencies is not None
        and isinstance(agency, str)
        and agency.strip()
        and agency not in known_agencies
    ):
        problems.append(f"unknown agency {agency!r}")
        bad.append("agency")
    if not problems:
        _derive_identity(row, problems, bad)
    if problems:
        raise _LineError("; ".join(problems), tuple(dict.fromkeys(bad)))
    return row


def _derive_identity(row: dict[str, Any], problems: list[str], bad: list[str]) -> None:
    """Normalise title and url, compute ``unique_id`` and ``content_hash`` into ``row``;
    a supplied value that disagrees is a problem."""
    sent_title = row["title"]
    row["title"] = normalise_title(sent_title)
    row["url"] = row["url"].strip()
    computed = unique_id(row["agency"], row["published_at"], row["title"])
    supplied = row["unique_id"]
    if supplied and supplied != computed:
        as_sent = unique_id(row["agency"], row["published_at"], sent_title)
        if supplied != as_sent:
            problems.append(f"{UNIQUE_ID_MISMATCH}: {supplied!r} != {computed!r}")
            bad.append("unique_id")
    row["unique_id"] = computed
    digest = content_hash(row["title"], row["content"])
    if row["content_hash"] and row["content_hash"] != digest:
        problems.append(f"{CONTENT_HASH_MISMATCH}: {row['content_hash']!r} != {digest!r}")
        bad.append("content_hash")
    row["content_hash"] = digest


def _known_agency_keys() -> frozenset[str]:
    from bi_platform.news.reference_data import load_agencies

    return frozenset(load_agencies())


@dataclass
class _Line:
    number: int
    text: str
    data: dict[str, Any]
    row: dict[str, Any]


def _table(
    lines: list[_Line], label: str, rejected: list[Rejected]
) -> tuple[pa.Table, list[_Line]]:
    """The rows as a RECORD_SCHEMA table; a row Arrow refuses (not expected after the
    checks, but a line must never fail the batch) becomes a rejection."""
    try:
        return pa.Table.from_pylist([x.row for x in lines], schema=RECORD_SCHEMA), lines
    except Exception:
        log.exception("%s: the records do not convert as a whole; converting row by row", label)
    kept: list[_Line] = []
    for line in lines:
        try:
            pa.Table.from_pylist([line.row], schema=RECORD_SCHEMA)
        except Exception as exc:
            rejected.append(
                Rejected(
                    f"{label} line {line.number}",
                    line.text,
                    f"line {line.number}: cannot be stored: {type(exc).__name__}: {exc}",
                    line.data,
                    line.row.get("unique_id"),
                )
            )
            continue
        kept.append(line)
    return pa.Table.from_pylist([x.row for x in kept], schema=RECORD_SCHEMA), kept


def parse_inbox(
    path: Path | str,
    known_agencies: Collection[str] | None = None,
    *,
    source: str | None = None,
) -> ParsedBatch:
    """Parse one inbox file (JSON lines) into records, rejections and merged duplicates.

    Args:
        path: the file; lines end at ``b"\\n"`` (a trailing ``b"\\r"`` is dropped), each
            is decoded as UTF-8 on its own.
        known_agencies: the agency keys accepted (default: those of the packaged
            ``agencies.yaml``).
        source: prefix of every line's label (default ``"inbox <file name>"``):
            rejections and :attr:`ParsedBatch.record_sources` read ``"<source> line
            <n>"`` with 1-based physical line numbers, and every reason starts with
            ``"line <n>: "``.

    Returns:
        The :class:`ParsedBatch`; ``reconciles()`` always holds.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    known = frozenset(known_agencies) if known_agencies is not None else _known_agency_keys()
    label = source or f"inbox {path.name}"
    parsed: list[_Line] = []
    rejected: list[Rejected] = []
    lines = 0
    with path.open("rb") as fh:
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
                reason = f"line {number}: invalid JSON: {exc.msg} at column {exc.colno}"
                rejected.append(Rejected(line_source, text, reason))
                continue
            except Exception as exc:  # RecursionError, a number too long, ...
                reason = f"line {number}: invalid JSON: {type(exc).__name__}: {exc}"
                rejected.append(Rejected(line_source, text, reason))
                continue
            try:
                row = parse_record(data, known)
            except _LineError as exc:
                raw = data if isinstance(data, dict) else None
                reason = f"line {number}: {exc}"
                rejected.append(Rejected(line_source, text, reason, raw, fields=exc.fields))
                continue
            except Exception as exc:  # not expected: parse_record guards every field
                log.exception("%s: unexpected failure", line_source)
                raw = data if isinstance(data, dict) else None
                reason = f"line {number}: unexpected error: {type(exc).__name__}: {exc}"
                rejected.append(Rejected(line_source, text, reason, raw))
                continue
            parsed.append(_Line(number, text, data, row))

    resolution = resolve_versions(
        [
            Version(x.row["unique_id"], x.row["agency"], x.row["url"], x.row["extracted_at"])
            for x in parsed
        ],
        identical=lambda i, j: parsed[i].row == parsed[j].row,
    )
    for i, reason in sorted(resolution.rejected.items()):
        x = parsed[i]
        fields = ("url",) if reason.startswith(DUPLICATE_URL) else ("extracted_at",)
        rejected.append(
            Rejected(
                f"{label} line {x.number}",
                x.text,
                f"line {x.number}: {reason}",
                x.data,
                x.row["unique_id"],
                fields,
            )
        )
    records, kept = _table([parsed[i] for i in resolution.winners], label, rejected)
    rejected.sort(key=lambda r: int(r.source.rsplit(" ", 1)[1]))  # in line order
    batch = ParsedBatch(
        records=records,
        rejected=rejected,
        lines=lines,
        duplicates=len(resolution.merged),
        superseded=resolution.superseded,
        record_sources=[f"{label} line {x.number}" for x in kept],
    )
    log.info(
        "parsed %s: %d lines, %d records, %d rejected, %d duplicates (%d superseded)",
        path.name,
        lines,
        records.num_rows,
        len(rejected),
        batch.duplicates,
        batch.superseded,
    )
    return batch
