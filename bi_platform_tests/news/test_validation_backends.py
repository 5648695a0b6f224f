"""One adversarial inbox through the three storage backends: the same records accepted,
the same rejections (line and reason), the same stores afterwards.

The three stores start identical (the same generated dataset in a LocalDatasetRepo, and
migrated into PostgreSQL for ``postgres`` and ``dual_write``); the inbox holds every
kind of trouble an adversarial scraper (or user) can send: duplicates, a forged
``unique_id`` naming another story, a forged ``content_hash``, whitespace variants of a
headline, a headline correction, an older extraction, unknown fields, timestamps in year
9999 and year 1, broken JSON, invalid UTF-8, wrong types, an unknown agency, ...
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from bi_platform.news import pg_schema, sample
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.ingest import ParsedBatch, parse_inbox
from bi_platform.news.pg_migration import migrate_from_repo
from bi_platform.news.pg_reference import load_reference_data
from bi_platform.news.records import (
    CONTENT_HASH_MISMATCH,
    DUPLICATE_URL,
    OLDER_THAN_BATCH,
    OLDER_THAN_STORED,
    OUT_OF_RANGE,
    UNIQUE_ID_MISMATCH,
    content_hash,
    normalise_title,
    unique_id,
)
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.storage import StorageAdapter, WriteOutcome
from bi_platform.runtime.postgres import local_url, scratch_database

SOURCE = "inbox 2026-11-01.jsonl"


@functools.cache
def existing() -> pa.Table:
    return sample.generate_news(240, seed=23)


def scraper_row(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A stored record as the scraper sends it (ISO timestamps, no ids), changed."""
    row = {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in record.items()
        if k in sample.INBOX_FIELDS
    }
    row.update({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in changes.items()})
    return row


def new_story(n: int, **changes: Any) -> dict[str, Any]:
    """A story not in the dataset (agency mec, its own url)."""
    row: dict[str, Any] = {
        "agency": "mec",
        "published_at": f"2026-11-01T{8 + n % 10:02d}:15:00-03:00",
        "updated_datetime": None,
        "extracted_at": "2026-11-01T20:00:00-03:00",
        "title": f"MEC anuncia medida número {n} para escolas",
        "subtitle": None,
        "editorial_lead": "Educação",
        "url": f"https://www.gov.br/mec/pt-br/assuntos/noticias/medida-{n}",
        "image_url": None,
        "video_url": None,
        "category": "Notícias",
        "tags": ["Educação"],
        "content": f"Texto da medida {n}.",
        "summary": f"Resumo {n}.",
        "theme_1_level_1_code": None,
        "theme_1_level_2_code": None,
        "theme_1_level_3_code": None,
        "most_specific_theme_code": None,
    }
    row.update(changes)
    return row


@dataclass(frozen=True)
class Inbox:
    """The adversarial batch: its lines, and what each line is expected to become."""

    lines: list[bytes]
    #: line number -> substring of the expected rejection reason
    rejected: dict[int, str]
    #: line number -> the line it is merged into (a duplicate)
    merged: set[int]
    stored: dict[str, dict[str, Any]]  # the existing stories used, by role


def adversarial_inbox() -> Inbox:
    table = existing()
    recent = sorted(table.to_pylist(), key=lambda r: r["published_at"])[-8:]
    e0, e1, e2, e3, e4, e5, e6, _ = recent
    later = e2["extracted_at"] + timedelta(days=1)
    spaced_e1 = "  " + e1["title"].replace(" ", "   ", 2) + "\t "
    n8 = new_story(8, title="MEC  abre   inscrições  do programa 8")
    n8_raw_id = unique_id("mec", datetime.fromisoformat(n8["published_at"]), n8["title"])
    lines: list[Any] = [
        new_story(1),  # 1 new
        new_story(1),  # 2 exact copy of line 1 -> merged
        new_story(2),  # 3 new, superseded by line 4
        new_story(2, summary="Resumo revisto.", extracted_at="2026-11-01T21:00:00-03:00"),  # 4
        new_story(3, unique_id=e0["unique_id"]),  # 5 forged id of another story
        new_story(4, content_hash="0" * 64),  # 6 forged content hash
        scraper_row(e1, title=spaced_e1),  # 7 whitespace variant of a stored headline
        new_story(1, title="  MEC anuncia  medida número 1 para escolas "),  # 8 -> merged
        scraper_row(e2, title=e2["title"] + " (corrigido)", extracted_at=later),  # 9
        scraper_row(
            e3,
            summary="Versão antiga.",
            extracted_at=e3["extracted_at"] - timedelta(hours=2),
        ),  # 10 older than the stored version
        new_story(5, author="Ascom/MEC", views=12, nested={"a": [1, 2.5, None]}),  # 11
        new_story(6, published_at="9999-12-31T23:59:59-03:00"),  # 12
        new_story(7, published_at="0001-01-01T00:00:00+03:00"),  # 13
        b'{"agency": "mec", "title": "cortada',  # 14 broken JSON
        new_story(9, title=42, tags="Educação"),  # 15 wrong types
        new_story(10, agency="ministerio-da-magia"),  # 16 unknown agency
        b'{"agency": "mec", "title": "caf\xe9"}',  # 17 invalid UTF-8
        [1, 2],  # 18 not an object
        new_story(11, url=new_story(1)["url"]),  # 19 url of line 1, same extraction
        scraper_row(e4, title="Outra manchete", unique_id=None),  # 20 url of e4, same time
        new_story(12, content="nul \x00 byte"),  # 21 NUL (the validator refuses it)
        new_story(13, theme_1_level_1_code="99"),  # 22 unknown theme
        b'{"agency": "mec", "title": "\\ud800"}',  # 23 lone surrogate
        b'{"agency": "mec", "title": "ok", "score": NaN}',  # 24 non-finite number
        scraper_row(e2),  # 25 e2's old version: line 9 corrects it -> older
        new_story(14, published_at="2026-11-01T10:00:00"),  # 26 no UTC offset
        new_story(15),  # 27 superseded by the correction on line 28
        new_story(15, title="MEC corrige manchete 15", extracted_at="2026-11-02T08:00:00Z"),
        {**n8, "unique_id": n8_raw_id},  # 29 the scraper's id over the title as sent
        scraper_row(e5, summary="Sem data.", extracted_at=None),  # 30 no extraction time
        scraper_row(e6),  # 31 identical re-delivery of a stored story
        b"   ",  # 32 blank: not counted
    ]
    encoded = [
        x if isinstance(x, bytes) else json.dumps(x, ensure_ascii=False).encode() for x in lines
    ]
    rejected = {
        5: UNIQUE_ID_MISMATCH,
        6: CONTENT_HASH_MISMATCH,
        10: OLDER_THAN_STORED,
        12: OUT_OF_RANGE,
        13: OUT_OF_RANGE,
        14: "invalid JSON",
        15: "title must be a string, got int",
        16: "unknown agency 'ministerio-da-magia'",
        17: "not valid UTF-8",
        18: "not a JSON object (got list)",
        19: f"{DUPLICATE_URL}: earlier in the batch",
        20: f"{DUPLICATE_URL}: stored as unique_id {e4['unique_id']}",
        21: "NUL character in content",
        22: "unknown theme code: '99'",
        23: "title is not valid Unicode",
        24: "extra field 'score': holds a non-finite number",
        25: OLDER_THAN_BATCH,
        26: "has no UTC offset",
        30: OLDER_THAN_STORED,
    }
    stored = {"e0": e0, "e1": e1, "e2": e2, "e3": e3, "e4": e4, "e5": e5, "e6": e6}
    return Inbox(encoded, rejected, {2, 3, 8, 27}, stored)


# --------------------------------------------------------------------------------------
# the three backends
# --------------------------------------------------------------------------------------
@dataclass
class Run:
    backend: str
    batch: ParsedBatch
    outcome: WriteOutcome
    url: str | None
    repo: LocalDatasetRepo
    dead_letter: Path

    def rejections(self) -> set[tuple[str, str]]:
        if self.url is not None:
            with psycopg.connect(self.url) as conn:
                return set(conn.execute("SELECT source, reason FROM news_rejected").fetchall())
        letters = self.dead_letter.read_text(encoding="utf-8").splitlines()
        return {(x["source"], x["reason"]) for x in map(json.loads, letters)}

    def stored_rows(self, store: str) -> list[dict[str, Any]]:
        """Every record of PostgreSQL (``"pg"``) or of the repo (``"hf"``)."""
        if store == "hf":
            months = self.repo.list_shards()
            tables = [self.repo.read_shard(m) for m in months]
        else:
            adapter = StorageAdapter("postgres", "postgres", self.url)
            with psycopg.connect(self.url) as conn:
                months = [
                    m
                    for (m,) in conn.execute(
                        "SELECT DISTINCT to_char(published_at AT TIME ZONE "
                        "'America/Sao_Paulo', 'YYYY-MM') FROM news ORDER BY 1"
                    )
                ]
            tables = [adapter.read_month(m) for m in months]
        rows = [r for t in tables for r in t.to_pylist()]
        return sorted(rows, key=lambda r: r["unique_id"])


def prepare(root: Path, url: str | None) -> LocalDatasetRepo:
    repo = LocalDatasetRepo(root / "hf" / "govbrnews")
    repo.commit(sample.month_shards(existing()), message="initial dataset")
    if url is not None:
        pg_schema.migrate(url)
        with psycopg.connect(url) as conn:
            load_reference_data(conn, load_agencies(), load_themes())
        migrate_from_repo(url, repo)
    return repo


def run_backend(backend: str, root: Path, url: str | None, inbox: Inbox) -> Run:
    repo = prepare(root, url)
    path = root / "inbox" / "2026-11-01.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(inbox.lines) + b"\n")
    batch = parse_inbox(path)
    dead_letter = root / "dead_letter.jsonl"
    read_from = "huggingface" if backend == "huggingface" else "postgres"
    adapter = StorageAdapter(backend, read_from, url, repo, dead_letter_path=dead_letter)
    outcome = adapter.write(
        batch.records, batch.rejected, source=SOURCE, row_sources=batch.record_sources
    )
    return Run(backend, batch, outcome, url, repo, dead_letter)


@pytest.fixture
def runs(tmp_path: Path, pg_url: str, pg_port: int) -> Iterator[dict[str, Run]]:
    inbox = adversarial_inbox()
    with scratch_database(local_url(pg_port, "postgres"), "test_") as other_url:
        yield {
            "postgres": run_backend("postgres", tmp_path / "pg", pg_url, inbox),
            "huggingface": run_backend("huggingface", tmp_path / "hf", None, inbox),
            "dual_write": run_backend("dual_write", tmp_path / "dual", other_url, inbox),
        }


def counts(outcome: WriteOutcome) -> dict[str, Any]:
    r = outcome.result
    return {
        "rows_in": r.rows_in,
        "inserted": r.inserted,
        "updated": r.updated,
        "unchanged": r.unchanged,
        "rejected": r.rejected,
        "duplicates": r.duplicates,
        "corrected": r.corrected,
        "rejected_by_reason": dict(r.rejected_by_reason),
        "rejected_recorded": outcome.rejected_recorded,
        "rows_stored": outcome.rows_stored,
        "rows_rejected": outcome.rows_rejected,
        "rows_merged": outcome.rows_merged,
    }


def line_of(source: str) -> int:
    return int(source.rsplit(" ", 1)[1])


def test_the_three_backends_accept_and_reject_exactly_the_same(runs: dict[str, Run]) -> None:
    inbox = adversarial_inbox()
    pg, hf, dual = runs["postgres"], runs["huggingface"], runs["dual_write"]

    # the same rejections, line and reason, on every backend
    rejections = pg.rejections()
    assert hf.rejections() == rejections == dual.rejections()
    by_line = {line_of(source): reason for source, reason in rejections}
    assert set(by_line) == set(inbox.rejected)
    for number, expected in inbox.rejected.items():
        assert expected in by_line[number], (number, by_line[number])
    assert all(source.startswith(f"{SOURCE} line ") for source, _ in rejections)

    # the same counts, and every line accounted for
    assert counts(pg.outcome) == counts(hf.outcome) == counts(dual.outcome)
    for run in runs.values():
        batch, outcome = run.batch, run.outcome
        assert batch.lines == 31  # the blank line is not counted
        assert batch.reconciles()
        assert batch.lines == (
            outcome.rows_stored + outcome.rows_rejected + batch.duplicates + outcome.rows_merged
        )
    merged = {line_of(s) for s in pg.batch.record_sources} ^ set(range(1, 32))
    assert merged - set(inbox.rejected) == inbox.merged

    # the same stores afterwards: PostgreSQL == repo, on every backend
    reference = hf.stored_rows("hf")
    assert pg.stored_rows("pg") == reference
    assert dual.stored_rows("pg") == reference
    assert dual.stored_rows("hf") == reference


def test_what_the_adversarial_inbox_did_to_the_store(runs: dict[str, Run]) -> None:
    inbox = adversarial_inbox()
    hf = runs["huggingface"]
    rows = {r["unique_id"]: r for r in hf.stored_rows("hf")}
    s = inbox.stored
    before = {r["unique_id"]: r for r in existing().to_pylist()}

    # the forged id did not touch the story it named
    assert rows[s["e0"]["unique_id"]] == before[s["e0"]["unique_id"]]
    # the whitespace variant is the same story, unchanged
    assert rows[s["e1"]["unique_id"]] == before[s["e1"]["unique_id"]]
    assert normalise_title(" x  y\t") == "x y"
    # the correction replaced e2: same agency and url, new title, new id
    corrected_title = s["e2"]["title"] + " (corrigido)"
    new_id = unique_id(s["e2"]["agency"], s["e2"]["published_at"], corrected_title)
    assert s["e2"]["unique_id"] not in rows
    assert rows[new_id]["title"] == corrected_title
    assert rows[new_id]["url"] == s["e2"]["url"]
    assert rows[new_id]["content_hash"] == content_hash(corrected_title, s["e2"]["content"])
    # the older extraction and the undated one changed nothing
    assert rows[s["e3"]["unique_id"]] == before[s["e3"]["unique_id"]]
    assert rows[s["e5"]["unique_id"]] == before[s["e5"]["unique_id"]]
    # the version with the newest extraction of story 2 won; story 15 was corrected
    story2 = unique_id(
        "mec", datetime.fromisoformat("2026-11-01T10:15:00-03:00"), new_story(2)["title"]
    )
    assert rows[story2]["summary"] == "Resumo revisto."
    titles = {r["title"] for r in rows.values()}
    assert "MEC corrige manchete 15" in titles
    assert new_story(15)["title"] not in titles
    # the scraper's id over the raw title was accepted; the story got the normalised one
    assert "MEC abre inscrições do programa 8" in titles
    new = len(rows) - len(before)
    assert new == 5  # stories 1, 2, 5, 8 and 15; the correction replaced e2
    for run in runs.values():
        assert run.outcome.result.corrected == 1


def test_unknown_fields_are_kept_in_postgresql_only(runs: dict[str, Run]) -> None:
    story = new_story(5)
    uid = unique_id("mec", datetime.fromisoformat(story["published_at"]), story["title"])
    for name in ("postgres", "dual_write"):
        run = runs[name]
        with psycopg.connect(run.url) as conn:
            extra = conn.execute("SELECT extra FROM news WHERE unique_id = %s", (uid,)).fetchone()
            others = conn.execute(
                "SELECT count(*) FROM news WHERE extra IS NOT NULL AND unique_id <> %s", (uid,)
            ).fetchone()
        assert extra == ({"author": "Ascom/MEC", "views": 12, "nested": {"a": [1, 2.5, None]}},)
        assert others == (0,)
        assert run.outcome.extra_not_stored == 0
    hf = runs["huggingface"]
    assert hf.outcome.extra_not_stored == 1  # accepted, but the HF dataset cannot hold it
    assert "extra" not in hf.repo.read_shard("2026-11").column_names
