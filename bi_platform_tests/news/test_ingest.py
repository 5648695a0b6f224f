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

from bi_platform.news import sample
from bi_platform.news.ingest import parse_inbox, parse_record
from bi_platform.news.records import (
    CONTENT_HASH_MISMATCH,
    DUPLICATE_URL,
    OLDER_THAN_BATCH,
    OUT_OF_RANGE,
    RECORD_SCHEMA,
    TIMEZONE,
    UNIQUE_ID_MISMATCH,
    content_hash,
    unique_id,
)
from bi_platform.news.reference_data import load_agencies

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


def other_line(**changes: Any) -> dict[str, Any]:
    """Another story of the same agency (its own title and url)."""
    return good_line(title="Outra", url="https://www.gov.br/mec/pt-br/outra", **changes)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_valid_line_becomes_an_hf_record(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "2026-11-01.jsonl", [json.dumps(good_line())])
    batch = parse_inbox(path)
    assert batch.records.schema == RECORD_SCHEMA  # the HF columns + extra
    assert (batch.lines, batch.accepted, batch.rejected, batch.duplicates) == (1, 1, [], 0)
    row = batch.records.to_pylist()[0]
    published = datetime(2026, 11, 1, 10, 30, tzinfo=SP)
    assert row["published_at"] == published
    assert row["extracted_at"] == datetime(2026, 11, 1, 9, 0, tzinfo=SP)  # 12:00Z
    assert row["unique_id"] == unique_id("mec", published, "MEC abre inscrições")
    assert row["content_hash"] == content_hash("MEC abre inscrições", "Texto da notícia.")
    assert row["tags"] == ["Educação", "Edital"]
    assert row["extra"] is None
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
    lines = [json.dumps(good_line()), "", line, json.dumps(other_line())]
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


def test_a_supplied_unique_id_must_agree_with_the_computed_one() -> None:
    """Changed rule: a supplied unique_id used to be kept as given (it could name another
    story); now it is accepted only when it is the computed one."""
    row = parse_record(good_line(content_hash=""), {"mec"})
    assert row["content_hash"] == content_hash(row["title"], row["content"])
    agreeing = parse_record(good_line(unique_id=row["unique_id"]), {"mec"})
    assert agreeing["unique_id"] == row["unique_id"]
    with pytest.raises(ValueError, match="supplied unique_id differs from the computed one"):
        parse_record(good_line(unique_id="abc"), {"mec"})


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
    other = json.dumps(other_line(), ensure_ascii=False).encode()
    path.write_bytes(good + b"\r\n" + b'{"title": "caf\xe9"}\r\n' + other + b"\n")
    batch = parse_inbox(path)
    assert (batch.lines, batch.accepted) == (3, 2)
    assert [r.reason for r in batch.rejected] == ["line 2: not valid UTF-8 (byte 15)"]


# --------------------------------------------------------------------------------------
# no line can crash the parser; identity is computed; newsroom rules
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "published_at", ["9999-12-31T23:59:59-03:00", "0001-01-01T00:00:00+03:00", "2150-01-01T00:00Z"]
)
def test_a_timestamp_out_of_range_rejects_its_line_only(tmp_path: Path, published_at: str) -> None:
    lines = [json.dumps(good_line()), json.dumps(other_line(published_at=published_at))]
    batch = parse_inbox(write_lines(tmp_path / "2026-11-01.jsonl", lines))
    assert (batch.lines, batch.accepted) == (2, 1)
    [rejected] = batch.rejected
    assert rejected.source == "inbox 2026-11-01.jsonl line 2"  # file and line
    assert rejected.fields == ("published_at",)
    assert rejected.reason.startswith(f"line 2: {OUT_OF_RANGE}: published_at ")
    assert "outside the supported range 1900-01-01 to 2099-12-31" in rejected.reason


def test_an_exception_in_a_field_rejects_the_line_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bi_platform.news import ingest

    def explode(value: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ingest, "_check_tags", explode)
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", [json.dumps(good_line())]))
    assert batch.accepted == 0 and batch.reconciles()
    assert batch.rejected[0].reason == "line 1: tags: RuntimeError: boom"
    assert batch.rejected[0].fields == ("tags",)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: RecursionError"),
        ('{"title": ' + "9" * 5000 + "}", "invalid JSON: ValueError"),
        ('{"title": "\\udc00"}', "title is not valid Unicode (lone surrogate at character 1)"),
        ('{"tags": ["\\ud800"]}', "tags is not valid Unicode"),
        ("NaN", "not a JSON object (got float)"),
    ],
)
def test_hostile_json_is_a_rejection(tmp_path: Path, line: str, reason: str) -> None:
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", [line, json.dumps(good_line())]))
    assert (batch.lines, batch.accepted, len(batch.rejected)) == (2, 1, 1)
    assert reason in batch.rejected[0].reason


def test_forged_ids_are_rejected_and_agreeing_ones_accepted(tmp_path: Path) -> None:
    computed = parse_record(good_line(), {"mec"})
    other = parse_record(other_line(), {"mec"})
    lines = [
        good_line(unique_id=other["unique_id"]),  # the id of another story
        good_line(content_hash="f" * 64),
        good_line(unique_id=computed["unique_id"], content_hash=computed["content_hash"]),
    ]
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", [json.dumps(x) for x in lines]))
    assert (batch.accepted, batch.duplicates) == (1, 0)
    first, second = batch.rejected
    assert first.reason == (
        f"line 1: {UNIQUE_ID_MISMATCH}: {other['unique_id']!r} != {computed['unique_id']!r}"
    )
    assert first.fields == ("unique_id",)
    assert second.reason.startswith(f"line 2: {CONTENT_HASH_MISMATCH}: '{'f' * 64}' != ")
    assert batch.records["unique_id"].to_pylist() == [computed["unique_id"]]


def test_whitespace_variants_of_a_title_are_one_story(tmp_path: Path) -> None:
    sent = "  MEC   abre\tinscrições  "
    published = datetime(2026, 11, 1, 10, 30, tzinfo=SP)
    scraper_id = unique_id("mec", published, sent)  # the scraper hashes what it sends
    lines = [
        good_line(title="MEC abre inscrições"),
        good_line(title=sent, unique_id=scraper_id),
        good_line(title="MEC abre inscrições\n"),
    ]
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", [json.dumps(x) for x in lines]))
    assert (batch.accepted, batch.duplicates, batch.rejected) == (1, 2, [])
    row = batch.records.to_pylist()[0]
    assert row["title"] == "MEC abre inscrições"
    assert row["unique_id"] == unique_id("mec", published, "MEC abre inscrições") != scraper_id
    assert batch.record_sources == ["inbox b.jsonl line 1"]  # exact copies keep the first


def test_unknown_fields_are_kept_in_extra(tmp_path: Path) -> None:
    lines = [
        good_line(author="Ascom", views=3, nested={"b": [1, None], "a": "ç"}),
        other_line(author="nul\x00"),
        good_line(title="Terceira", url="https://x/3", score=float("nan")),
    ]
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", [json.dumps(x) for x in lines]))
    assert batch.accepted == 1
    extra = batch.records["extra"].to_pylist()[0]
    assert json.loads(extra) == {
        "author": "Ascom",
        "views": 3,
        "nested": {"b": [1, None], "a": "ç"},
    }
    assert [(r.fields, r.reason) for r in batch.rejected] == [
        (("author",), "line 2: extra field 'author': holds a NUL character"),
        (("score",), "line 3: extra field 'score': holds a non-finite number (nan)"),
    ]


def test_corrections_and_older_versions_in_one_batch(tmp_path: Path) -> None:
    lines = [
        good_line(),  # 1: replaced by the correction on line 2
        good_line(title="MEC abre inscrições até sexta", extracted_at="2026-11-01T15:00:00Z"),
        good_line(),  # 3: the old headline again, older than line 2
        good_line(title="Outro título", extracted_at="2026-11-01T15:00:00Z"),  # 4: same time
        other_line(),  # 5
        other_line(summary="Nova.", extracted_at="2026-11-01T11:00:00Z"),  # 6: older
    ]
    batch = parse_inbox(write_lines(tmp_path / "b.jsonl", [json.dumps(x) for x in lines]))
    assert batch.reconciles()
    assert batch.record_sources == ["inbox b.jsonl line 2", "inbox b.jsonl line 5"]
    assert (batch.duplicates, batch.superseded) == (1, 1)
    reasons = {r.source.rsplit(" ", 1)[1]: r.reason for r in batch.rejected}
    assert reasons["3"].startswith(f"line 3: {OLDER_THAN_BATCH}: extracted_at ")
    assert reasons["4"].startswith(f"line 4: {DUPLICATE_URL}: earlier in the batch as ")
    assert reasons["6"].startswith(f"line 6: {OLDER_THAN_BATCH}: ")
    assert {r.fields for r in batch.rejected} == {("extracted_at",), ("url",)}
