"""StorageAdapter: postgres, huggingface and dual_write backends; reads from either side."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa
import pytest

from bi_platform.news import pg_schema, sample
from bi_platform.news.dataset_repo import CommitInfo
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.ingest import ParsedBatch, parse_inbox
from bi_platform.news.pg_migration import migrate_from_repo
from bi_platform.news.pg_reference import load_reference_data
from bi_platform.news.records import DUPLICATE_URL, HF_SCHEMA, TIMEZONE
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.storage import (
    ReadFrom,
    StorageAdapter,
    StorageBackend,
    merge_into_repo,
    month_bounds,
    storage_mode,
)
from bi_platform.settings import Settings

DAY = date(2026, 11, 1)
PENDING = "(synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at)"


@functools.cache
def existing() -> pa.Table:
    return sample.generate_news(400, seed=7)


@functools.cache
def inbox() -> sample.InboxBatch:
    return sample.inbox_batch(DAY, existing=existing(), seed=7)


@dataclass
class Setup:
    url: str | None
    repo: LocalDatasetRepo
    batch: ParsedBatch
    counts: Mapping[str, int]

    def write(self, adapter: StorageAdapter) -> Any:
        return adapter.write(
            self.batch.records,
            self.batch.rejected,
            source="inbox 2026-11-01.jsonl",
            row_sources=self.batch.record_sources,
        )


def make_setup(tmp_path: Path, url: str | None) -> Setup:
    repo = LocalDatasetRepo(tmp_path / "hf" / "govbrnews")
    repo.commit(sample.month_shards(existing()), message="initial dataset")
    if url is not None:
        pg_schema.migrate(url)
        with psycopg.connect(url) as conn:
            load_reference_data(conn, load_agencies(), load_themes())
        migrate_from_repo(url, repo)
    path = sample.inbox_file(tmp_path / "inbox", DAY)
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(inbox().lines) + "\n", encoding="utf-8")
    return Setup(url, repo, parse_inbox(path), inbox().counts())


@pytest.fixture
def hf_only(tmp_path: Path) -> Setup:
    return make_setup(tmp_path, None)


@pytest.fixture
def both(tmp_path: Path, pg_url: str) -> Setup:
    return make_setup(tmp_path, pg_url)


def scalar(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def malformed(counts: Mapping[str, int]) -> int:
    return sum(counts.get(k, 0) for k in sample.MALFORMED_KINDS)


def batch_ids(setup: Setup) -> list[str]:
    return setup.batch.records.column("unique_id").to_pylist()


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["unique_id"])


class FailingCommitRepo(LocalDatasetRepo):
    """Our DatasetRepo whose commits fail (e.g. the Hub is down)."""

    def commit(self, shards: Mapping[str, pa.Table], **kwargs: Any) -> CommitInfo:
        raise ConnectionError("hub unreachable")


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def test_storage_mode_parses_values_with_defaults() -> None:
    assert storage_mode() == (StorageBackend.POSTGRES, ReadFrom.POSTGRES)
    assert storage_mode(" Dual_Write ", "huggingface") == (
        StorageBackend.DUAL_WRITE,
        ReadFrom.HUGGINGFACE,
    )
    assert storage_mode("", None) == (StorageBackend.POSTGRES, ReadFrom.POSTGRES)
    with pytest.raises(ValueError, match="STORAGE_BACKEND='s3'"):
        storage_mode("s3")
    with pytest.raises(ValueError, match="STORAGE_READ_FROM"):
        storage_mode("postgres", "both")


def test_from_settings_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = LocalDatasetRepo(tmp_path / "repo")
    adapter = StorageAdapter.from_settings(Settings(), conninfo="postgresql://x/y", repo=repo)
    assert (adapter.backend, adapter.read_from) == ("postgres", "postgres")
    monkeypatch.setenv("STORAGE_BACKEND", "dual_write")
    monkeypatch.setenv("STORAGE_READ_FROM", "huggingface")
    adapter = StorageAdapter.from_settings(Settings(), conninfo="postgresql://x/y", repo=repo)
    assert (adapter.backend, adapter.read_from) == (
        StorageBackend.DUAL_WRITE,
        ReadFrom.HUGGINGFACE,
    )
    assert adapter.dead_letter_path == tmp_path / "news_rejected.jsonl"


def test_each_backend_requires_what_it_uses(tmp_path: Path) -> None:
    repo = LocalDatasetRepo(tmp_path / "repo")
    with pytest.raises(ValueError, match="conninfo"):
        StorageAdapter("postgres", "postgres", None, repo)
    with pytest.raises(ValueError, match="dataset repo"):
        StorageAdapter("dual_write", "postgres", "postgresql://x/y", None)
    with pytest.raises(ValueError, match="dataset repo"):
        StorageAdapter("postgres", "huggingface", "postgresql://x/y", None)
    StorageAdapter("huggingface", "huggingface", None, repo)  # dead letters next to the repo


def test_month_bounds_are_sao_paulo_months() -> None:
    start, end = month_bounds("2025-12")
    assert (start.isoformat(), end.isoformat()) == (
        "2025-12-01T00:00:00-03:00",
        "2026-01-01T00:00:00-03:00",
    )
    with pytest.raises(ValueError):
        month_bounds("2025-13")


# --------------------------------------------------------------------------------------
# postgres
# --------------------------------------------------------------------------------------
def test_postgres_backend_writes_records_and_rejections_in_one_go(both: Setup) -> None:
    assert both.url is not None
    head = both.repo.head()
    before = scalar(both.url, "SELECT count(*) FROM news")
    adapter = StorageAdapter("postgres", "postgres", both.url, both.repo)
    outcome = both.write(adapter)
    counts = both.counts
    r = outcome.result
    assert outcome.pg_written and not outcome.hf_written
    assert (r.inserted, r.updated, r.unchanged, r.rejected) == (
        counts[sample.NEW],
        counts[sample.EDIT],
        counts[sample.DUPLICATE_OF_EXISTING],
        0,
    )
    assert outcome.rejected_recorded == malformed(counts)
    assert scalar(both.url, "SELECT count(*) FROM news") == before + counts[sample.NEW]
    assert scalar(both.url, "SELECT count(*) FROM news_rejected") == malformed(counts)
    assert scalar(
        both.url,
        "SELECT count(*) FROM news_rejected r JOIN sync_log l ON l.id = r.sync_log_id "
        "WHERE l.operation = 'ingest' AND l.status = 'success' "
        "AND r.source LIKE 'inbox 2026-11-01.jsonl line %%'",
    ) == malformed(counts)
    assert both.repo.head() == head  # postgres only
    assert outcome.as_dict()["backend"] == "postgres"

    again = both.write(adapter)  # idempotent for the records
    assert (again.result.inserted, again.result.updated) == (0, 0)


def test_read_month_from_postgres_matches_the_shard(both: Setup) -> None:
    assert both.url is not None
    month = both.repo.list_shards()[-1]
    from_pg = StorageAdapter("postgres", "postgres", both.url).read_month(month)
    from_hf = StorageAdapter("postgres", "huggingface", both.url, both.repo).read_month(month)
    assert from_pg.schema == from_hf.schema == HF_SCHEMA
    assert from_pg.num_rows == from_hf.num_rows > 0
    assert from_pg.equals(from_hf)
    assert StorageAdapter("postgres", "postgres", both.url).read_month("1999-01").num_rows == 0


# --------------------------------------------------------------------------------------
# huggingface
# --------------------------------------------------------------------------------------
def test_huggingface_backend_merges_months_in_one_commit(hf_only: Setup) -> None:
    repo = hf_only.repo
    commits, rows = len(repo.log()), repo.row_count()
    adapter = StorageAdapter("huggingface", "huggingface", None, repo)
    outcome = hf_only.write(adapter)
    counts = hf_only.counts
    assert outcome.hf_written and not outcome.pg_written
    assert len(repo.log()) == commits + 1
    assert outcome.hf_revision == repo.head()
    assert repo.row_count() == rows + counts[sample.NEW]
    r = outcome.result
    assert (r.inserted, r.updated, r.unchanged) == (
        counts[sample.NEW],
        counts[sample.EDIT],
        counts[sample.DUPLICATE_OF_EXISTING],
    )
    assert "2026-11" in outcome.hf_months
    # the edited stories carry their new content in their shards
    records = {row["unique_id"]: row for row in hf_only.batch.records.to_pylist()}
    for month in outcome.hf_months:
        shard = adapter.read_month(month)
        assert shard.schema == HF_SCHEMA
        for row in shard.to_pylist():
            if row["unique_id"] in records:
                assert row["content"] == records[row["unique_id"]]["content"]
                assert row["summary"] == records[row["unique_id"]]["summary"]
    # rejections went to the dead-letter file next to the repo
    letters = (repo.root.parent / "news_rejected.jsonl").read_text().splitlines()
    assert len(letters) == malformed(counts) == outcome.rejected_recorded
    first = json.loads(letters[0])
    assert first["source"].startswith("inbox 2026-11-01.jsonl line ")
    assert first["reason"].startswith("line ")
    assert first["raw_text"]

    again = hf_only.write(adapter)  # nothing changes: no new revision
    assert len(repo.log()) == commits + 1
    assert (again.result.inserted, again.result.updated) == (0, 0)


def test_huggingface_backend_records_rejections_in_postgres_when_configured(
    tmp_path: Path, pg_url: str
) -> None:
    setup = make_setup(tmp_path, pg_url)
    adapter = StorageAdapter("huggingface", "huggingface", pg_url, setup.repo)
    before = scalar(pg_url, "SELECT count(*) FROM news")
    outcome = setup.write(adapter)
    assert outcome.rejected_recorded == malformed(setup.counts)
    assert scalar(pg_url, "SELECT count(*) FROM news_rejected") == malformed(setup.counts)
    assert scalar(pg_url, "SELECT count(*) FROM news") == before  # records went to HF only
    assert not (tmp_path / "hf" / "news_rejected.jsonl").exists()


# --------------------------------------------------------------------------------------
# dual_write
# --------------------------------------------------------------------------------------
def test_dual_write_commits_postgres_then_hf_and_marks_rows_synced(both: Setup) -> None:
    assert both.url is not None
    repo = both.repo
    commits = len(repo.log())
    adapter = StorageAdapter("dual_write", "postgres", both.url, repo)
    outcome = both.write(adapter)
    assert outcome.pg_written and outcome.hf_written and outcome.error is None
    assert len(repo.log()) == commits + 1
    assert outcome.hf_revision == repo.head()
    ids = batch_ids(both)
    assert outcome.marked_synced == len(ids)
    with psycopg.connect(both.url) as conn:
        pending, revisions = conn.execute(
            f"SELECT count(*) FILTER (WHERE {PENDING}), array_agg(DISTINCT hf_revision) "
            "FROM news WHERE unique_id = ANY(%s)",
            (ids,),
        ).fetchone()
    assert (pending, revisions) == (0, [repo.head()])
    # both sides now agree on every month the batch touched
    from_hf = StorageAdapter("dual_write", "huggingface", both.url, repo)
    for month in outcome.hf_months:
        assert sorted_rows(adapter.read_month(month)) == sorted_rows(from_hf.read_month(month))
    assert repo.row_count() == scalar(both.url, "SELECT count(*) FROM news")


def test_dual_write_with_a_failing_repo_keeps_rows_pending(tmp_path: Path, pg_url: str) -> None:
    setup = make_setup(tmp_path, pg_url)
    with psycopg.connect(pg_url) as conn:  # the whole table was exported before
        conn.execute("UPDATE news SET synced_to_hf_at = clock_timestamp(), hf_revision = 'r0'")
    repo = FailingCommitRepo(setup.repo.root)
    head = repo.head()
    adapter = StorageAdapter("dual_write", "postgres", pg_url, repo)
    outcome = setup.write(adapter)  # does not raise
    assert outcome.pg_written and not outcome.hf_written
    assert outcome.error is not None and "hub unreachable" in outcome.error
    assert outcome.marked_synced == 0
    assert repo.head() == head
    counts = setup.counts
    with psycopg.connect(pg_url) as conn:
        never, changed = conn.execute(
            "SELECT count(*) FILTER (WHERE synced_to_hf_at IS NULL), "
            "count(*) FILTER (WHERE updated_at > synced_to_hf_at) FROM news"
        ).fetchone()
    assert never == counts[sample.NEW]  # new rows: never synced
    assert changed == counts[sample.EDIT]  # edited rows: changed since their last sync


def test_dual_write_postgres_failure_sends_nothing_to_hf(tmp_path: Path, pg_url: str) -> None:
    setup = make_setup(tmp_path, pg_url)
    head, commits = setup.repo.head(), len(setup.repo.log())
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"postgresql://postgres@127.0.0.1:{s.getsockname()[1]}/nowhere?connect_timeout=2"
    with pytest.raises(psycopg.OperationalError):
        setup.write(StorageAdapter("dual_write", "postgres", dead, setup.repo))
    assert setup.repo.head() == head

    # a failure inside the PostgreSQL transaction: nothing in PG, nothing in HF
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            """
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON news_rejected
                FOR EACH ROW EXECUTE FUNCTION refuse();
            """
        )
    before = scalar(pg_url, "SELECT count(*) FROM news")
    with pytest.raises(psycopg.errors.RaiseException):
        setup.write(StorageAdapter("dual_write", "postgres", pg_url, setup.repo))
    assert scalar(pg_url, "SELECT count(*) FROM news") == before
    assert scalar(pg_url, "SELECT count(*) FROM sync_log WHERE operation = 'ingest'") == 0
    assert setup.repo.head() == head and len(setup.repo.log()) == commits


# --------------------------------------------------------------------------------------
# the shared validator on the HF side: duplicate urls, corrections, unknown fields
# --------------------------------------------------------------------------------------
def scraper_line(record: Mapping[str, Any], **changes: Any) -> str:
    row = {k: record[k] for k in sample.INBOX_FIELDS} | changes
    return json.dumps(
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()},
        ensure_ascii=False,
    )


def write_lines(setup: Setup, adapter: StorageAdapter, lines: list[str]) -> tuple[Any, Any]:
    path = setup.repo.root.parent / "extra.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch = parse_inbox(path)
    outcome = adapter.write(
        batch.records, batch.rejected, source="inbox extra.jsonl", row_sources=batch.record_sources
    )
    return batch, outcome


def dead_letters(setup: Setup) -> list[dict[str, Any]]:
    path = setup.repo.root.parent / "news_rejected.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x]


def test_huggingface_backend_refuses_a_stored_url_under_another_story(hf_only: Setup) -> None:
    """The reported defect: the HF backend used to store a second story on a url."""
    record = existing().slice(5, 1).to_pylist()[0]
    adapter = StorageAdapter("huggingface", "huggingface", None, hf_only.repo)
    rows = hf_only.repo.row_count()
    _, outcome = write_lines(hf_only, adapter, [scraper_line(record, title="Outra manchete")])
    assert outcome.result.rejected_by_reason == {DUPLICATE_URL: 1}
    assert hf_only.repo.row_count() == rows
    [letter] = dead_letters(hf_only)
    assert letter["reason"] == f"{DUPLICATE_URL}: stored as unique_id {record['unique_id']}"
    assert letter["source"] == "inbox extra.jsonl line 1" and letter["fields"] == ["url"]


def test_huggingface_backend_applies_a_correction_across_months(hf_only: Setup) -> None:
    record = existing().slice(7, 1).to_pylist()[0]
    old_month = record["published_at"].strftime("%Y-%m")
    moved = record["published_at"] + timedelta(days=40)
    title = record["title"] + " (corrigido)"
    line = scraper_line(
        record,
        title=title,
        published_at=moved,
        extracted_at=record["extracted_at"] + timedelta(days=41),
    )
    adapter = StorageAdapter("huggingface", "huggingface", None, hf_only.repo)
    rows = hf_only.repo.row_count()
    _, outcome = write_lines(hf_only, adapter, [line])
    r = outcome.result
    assert (r.inserted, r.updated, r.corrected) == (0, 1, 1)
    assert hf_only.repo.row_count() == rows  # replaced, not added
    new_month = moved.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m")
    assert set(outcome.hf_months) == {old_month, new_month}
    assert record["unique_id"] not in hf_only.repo.read_shard(old_month)["unique_id"].to_pylist()
    assert title in hf_only.repo.read_shard(new_month)["title"].to_pylist()


def test_dual_write_applies_a_correction_on_both_sides(both: Setup) -> None:
    assert both.url is not None
    record = existing().slice(9, 1).to_pylist()[0]
    title = record["title"] + " (corrigido)"
    line = scraper_line(
        record, title=title, extracted_at=record["extracted_at"] + timedelta(hours=3)
    )
    adapter = StorageAdapter("dual_write", "postgres", both.url, both.repo)
    _, outcome = write_lines(both, adapter, [line])
    assert outcome.hf_written and outcome.error is None
    assert (outcome.result.updated, outcome.result.corrected, outcome.marked_synced) == (1, 1, 1)
    month = record["published_at"].strftime("%Y-%m")
    from_hf = StorageAdapter("dual_write", "huggingface", both.url, both.repo)
    assert sorted_rows(adapter.read_month(month)) == sorted_rows(from_hf.read_month(month))
    assert record["unique_id"] not in from_hf.read_month(month)["unique_id"].to_pylist()
    assert both.repo.row_count() == scalar(both.url, "SELECT count(*) FROM news")


def test_merge_into_repo_replaces_and_counts(hf_only: Setup) -> None:
    repo = hf_only.repo
    table = existing()
    month = repo.list_shards()[-1]
    shard = repo.read_shard(month)
    old = shard.slice(0, 1).to_pylist()[0]
    new = {**old, "unique_id": "n" * 32, "title": "Nova manchete"}
    merge = merge_into_repo(
        repo,
        pa.Table.from_pylist([new], schema=HF_SCHEMA),
        message="correction",
        replaces={"n" * 32: (old["unique_id"], month)},
    )
    assert (merge.inserted, merge.updated, merge.unchanged, merge.months) == (0, 1, 0, (month,))
    assert merge.corrected == 1
    assert repo.row_count() == table.num_rows
    again = merge_into_repo(repo, pa.Table.from_pylist([new], schema=HF_SCHEMA), message="x")
    assert (again.commit, again.unchanged) == (None, 1)


def test_dead_letters_stay_one_per_line(tmp_path: Path) -> None:
    repo = LocalDatasetRepo(tmp_path / "repo")
    adapter = StorageAdapter("huggingface", "huggingface", None, repo)
    path = tmp_path / "b.jsonl"
    path.write_text('{"title": "a\u2028b\x85c", "agency": "mec"}\n', encoding="utf-8")
    batch = parse_inbox(path)
    adapter.write(batch.records, batch.rejected, source="b")
    text = (tmp_path / "news_rejected.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1
    assert json.loads(text)["raw"]["title"] == "a\u2028b\x85c"
