"""parse_inbox: the scraper's JSON lines into records, rejections and collapsed duplicates."""

from __future__ import annotations

import functools
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from bi_platform.news.ingest import parse_inbox, parse_record
from bi_platform.news.records import HF_SCHEMA, TIMEZONE, content_hash, unique_id
from bi_platform.news.reference_data import load_agencies
from bi_platform.sample_data import news as sample

SP = ZoneInfo(TIMEZONE)
DAY = date(2026, 11, 1)


@functools.cache
def existing() -> pa.Table:
    return sample.generate_news(400, seed=5)


def good_line(**changes: Any) -> dict[str, Any]:
    """A valid scraper record (no unique_id / content_hash), with ``changes`` applied."""
    record: dict[str, Any] = {
        "agency": "mec",
        "published_at": "2026-11-01T10:30:00-03:00",
        "updated_datetime": None,
        "extracted_at": "2026-11-01T12:00:00Z",
        "title": "MEC abre inscrições",
        "subtitle": None,
        "editorial_lead": "Educação",
        "url": "https://www.gov.br/mec/pt-br/assuntos/noticias/mec-abre-inscricoes",
        "image_url": None,
        "video_url": None,
        "category": "Notícias",
        "tags": ["Educação", "Edital"],
        "content": "Texto da notícia.",
        "summary": "Resumo.",
        "theme_1_level_1_code": "02",
        "theme_1_level_1_label": "Educação",
        "theme_1_level_2_code": None,
        "theme_1_level_2_label": None,
        "theme_1_level_3_code": None,
        "theme_1_level_3_label": None,
        "most_specific_theme_code": "02",
        "most_specific_theme_label": "Educação",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_valid_line_becomes_an_hf_record(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "2026-11-01.jsonl", [json.dumps(good_line())])
    batch = parse_inbox(path)
    assert batch.records.schema == HF_SCHEMA
    assert (batch.lines, batch.accepted, batch.rejected, batch.duplicates) == (1, 1, [], 0)
    row = batch.records.to_pylist()[0]
    published = datetime(2026, 11, 1, 10, 30, tzinfo=SP)
    assert row["published_at"] == published
    assert row["extracted_at"] == datetime(2026, 11, 1, 9, 0, tzinfo=SP)  # 12:00Z
    assert row["unique_id"] == unique_id("mec", published, "MEC abre inscrições")
    assert row["content_hash"] == content_hash("MEC abre inscrições", "Texto da notícia.")
    assert row["tags"] == ["Educação", "Edital"]
    assert batch.record_sources == ["inbox 2026-11-01.jsonl line 1"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"agency": "mec", "title": "cut sh', "invalid JSON"),
        ("[1, 2]", "not a JSON object (got list)"),
        (json.dumps(good_line(title=...)), "missing required field 'title'"),
        (json.dumps(good_line(title="  ")), "missing required field 'title'"),
        (json.dumps(good_line(url=None)), "missing required field 'url'"),
        (json.dumps(good_line(published_at="ontem às 18h")), "is not an ISO-8601 timestamp"),
        (json.dumps(good_line(published_at="2026-11-01T10:30:00")), "has no UTC offset"),
        (json.dumps(good_line(published_at=1730000000)), "published_at must be an ISO-8601"),
        (json.dumps(good_line(extracted_at="31/02/2026")), "extracted_at '31/02/2026' is not"),
        (json.dumps(good_line(tags="Educação, Edital")), "tags must be a list of strings, got str"),
        (json.dumps(good_line(tags=3)), "tags must be a list of strings, got int"),
        (json.dumps(good_line(tags=["a", 1])), "a list with non-string items"),
        (
            json.dumps(good_line(agency="ministerio-da-magia")),
            "unknown agency 'ministerio-da-magia'",
        ),
        (json.dumps(good_line(summary=12)), "summary must be a string, got int"),
    ],
)
def test_each_malformed_line_is_rejected_with_its_line_number(
    tmp_path: Path, line: str, reason: str
) -> None:
    lines = [json.dumps(good_line()), "", line, json.dumps(good_line(title="Outra"))]
    batch = parse_inbox(write_lines(tmp_path / "2026-11-01.jsonl", lines))
    assert (batch.lines, batch.accepted, len(batch.rejected)) == (3, 2, 1)
    rejected = batch.rejected[0]
    assert rejected.source == "inbox 2026-11-01.jsonl line 3"
    assert rejected.reason.startswith("line 3: ")
    assert reason in rejected.reason
    assert rejected.raw_text == line
    assert batch.record_sources == [
        "inbox 2026-11-01.jsonl line 1",
        "inbox 2026-11-01.jsonl line 4",
    ]


def test_all_problems_of_a_line_are_listed(tmp_path: Path) -> None:
    line = json.dumps(good_line(title="", tags="x", agency="agencia-x"))
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", [line]))
    reason = batch.rejected[0].reason
    assert "missing required field 'title'" in reason
    assert "tags must be a list of strings" in reason
    assert "unknown agency 'agencia-x'" in reason
    assert batch.rejected[0].raw is not None and batch.rejected[0].raw["agency"] == "agencia-x"


def test_duplicates_are_collapsed_and_later_versions_win(tmp_path: Path) -> None:
    first = json.dumps(good_line())
    other = json.dumps(good_line(title="Outra notícia", url="https://www.gov.br/mec/x"))
    revised = json.dumps(good_line(summary="Resumo revisto."))
    lines = [first, other, first, revised, other]
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", lines))
    assert (batch.lines, batch.accepted, batch.duplicates, batch.superseded) == (5, 2, 3, 1)
    assert batch.lines == batch.accepted + len(batch.rejected) + batch.duplicates
    summaries = dict(
        zip(batch.records["title"].to_pylist(), batch.records["summary"].to_pylist(), strict=True)
    )
    assert summaries == {"MEC abre inscrições": "Resumo revisto.", "Outra notícia": "Resumo."}
    assert batch.record_sources == ["inbox b.jsonl line 2", "inbox b.jsonl line 4"]


def test_known_agencies_and_source_can_be_given(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "b.jsonl", [json.dumps(good_line(agency="nova"))])
    assert parse_inbox(path).rejected[0].reason == "line 1: unknown agency 'nova'"
    batch = parse_inbox(path, {"nova"}, source="scraper run 7")
    assert batch.accepted == 1
    assert batch.record_sources == ["scraper run 7 line 1"]


def test_a_given_unique_id_is_kept() -> None:
    row = parse_record(good_line(unique_id="abc", content_hash=""), {"mec"})
    assert row["unique_id"] == "abc"
    assert row["content_hash"] == content_hash(row["title"], row["content"])


def test_a_generated_inbox_batch_reconciles(tmp_path: Path) -> None:
    table = existing()
    batch = sample.inbox_batch(DAY, existing=table, seed=5)
    path = sample.write_inbox(tmp_path / "inbox", DAY, existing=table, seed=5)
    counts = batch.counts()
    parsed = parse_inbox(path, set(load_agencies()))

    assert parsed.lines == len(batch.lines)
    assert parsed.lines == parsed.accepted + len(parsed.rejected) + parsed.duplicates
    malformed = sum(counts.get(k, 0) for k in sample.MALFORMED_KINDS)
    assert len(parsed.rejected) == malformed
    assert parsed.duplicates == counts[sample.DUPLICATE_IN_BATCH]
    assert parsed.accepted == (
        counts[sample.NEW]
        + counts.get(sample.EDIT, 0)
        + counts.get(sample.DUPLICATE_OF_EXISTING, 0)
    )
    # ids are reproduced: new records match the generator's, edits hit existing stories
    ids = set(parsed.records["unique_id"].to_pylist())
    assert set(batch.new_records["unique_id"].to_pylist()) <= ids
    assert set(batch.edited_ids) <= ids & set(table["unique_id"].to_pylist())
    # each malformed line is rejected with its own line number
    kinds = {n: k for n, k in enumerate(batch.kinds, start=1) if k in sample.MALFORMED_KINDS}
    rejected_lines = {int(r.source.rsplit(" ", 1)[1]): r.reason for r in parsed.rejected}
    assert set(rejected_lines) == set(kinds)
    expected = {
        "missing_title": "missing required field 'title'",
        "bad_published_at": "published_at",
        "unknown_agency": "unknown agency",
        "broken_json": "invalid JSON",
        "bad_tags_type": "tags must be a list of strings",
    }
    for number, kind in kinds.items():
        assert rejected_lines[number].startswith(f"line {number}: ")
        assert expected[kind] in rejected_lines[number]


def test_invalid_utf8_is_rejected_and_crlf_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    good = json.dumps(good_line(), ensure_ascii=False).encode()
    other = json.dumps(good_line(title="Outra"), ensure_ascii=False).encode()
    path.write_bytes(good + b"\r\n" + b'{"title": "caf\xe9"}\r\n' + other + b"\n")
    batch = parse_inbox(path)
    assert (batch.lines, batch.accepted) == (3, 2)
    assert [r.reason for r in batch.rejected] == ["line 2: not valid UTF-8 (byte 15)"]
