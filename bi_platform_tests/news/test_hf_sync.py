"""The PostgreSQL -> HF dataset sync, against a real server and a local dataset repo."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bi_platform.news import hf_sync, pg_reference, pg_schema, pg_write
from bi_platform.news.dataset_repo import (
    CommitInfo,
    DatasetRepo,
    HubError,
    Published,
    PublishedDifference,
    month_of,
)
from bi_platform.news.dataset_repo_hub import HubDatasetRepo
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.records import HF_SCHEMA, TIMEZONE, content_hash
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.sample import generate_news, month_shards
from bi_platform_tests.news import hub_test_server as _hub

# The local Hub imitation's fixtures (assigned, not imported, so they register here).
hub_test_server = _hub.hub_test_server

N_RECORDS = 2_500
SEED = 11


@pytest.fixture(scope="module")
def records() -> pa.Table:
    """A few thousand generated stories over 24 months (HF_SCHEMA)."""
    return generate_news(N_RECORDS, seed=SEED)


@pytest.fixture
def db(pg_url: str, records: pa.Table) -> str:
    """A migrated database holding the reference data and ``records``; its URL."""
    pg_schema.migrate(pg_url)
    with psycopg.connect(pg_url) as conn:
        pg_reference.load_reference_data(conn, load_agencies(), load_themes())
        result = pg_write.write_records(conn, records, source="test")
    assert result.inserted == N_RECORDS, result
    return pg_url


@pytest.fixture
def repo(tmp_path: Path) -> LocalDatasetRepo:
    return LocalDatasetRepo(tmp_path / "dataset")


# -- helpers ----------------------------------------------------------------------------------
def scalar(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def pending_months(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return hf_sync.pending_months(conn)


def last_log(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM sync_log WHERE operation = 'hf_sync' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return row


def edit(url: str, records: pa.Table, unique_id: str, content: str) -> None:
    """Re-deliver one story with new content through the ingest's write path."""
    row = records.filter(pc.equal(records["unique_id"], unique_id))
    assert row.num_rows == 1
    title = row["title"][0].as_py()
    row = row.set_column(row.schema.get_field_index("content"), "content", pa.array([content]))
    row = row.set_column(
        row.schema.get_field_index("content_hash"),
        "content_hash",
        pa.array([content_hash(title, content)]),
    )
    with psycopg.connect(url) as conn:
        result = pg_write.write_records(conn, row, source="edit")
    assert result.updated == 1, result


def repo_unique_ids(repo: DatasetRepo) -> list[str]:
    return [uid for m in repo.list_shards() for uid in repo.read_shard(m)["unique_id"].to_pylist()]


def shard_object(repo: LocalDatasetRepo, month: str, revision: str) -> Path:
    """The immutable object holding the month's file at ``revision``."""
    return repo.download_shard(month, revision)


def story_in_month(records: pa.Table, month: str, k: int = 0) -> str:
    ids = month_shards(records)[month]["unique_id"].to_pylist()
    return ids[k]


class FailingRepo(DatasetRepo):
    """Our DatasetRepo interface over a LocalDatasetRepo, whose commit fails midway.

    ``commit`` reads ``read`` months of the lazy mapping (exporting them from PG), then
    raises ``error``; reads go to the wrapped repo.
    """

    def __init__(self, inner: LocalDatasetRepo, error: Exception, read: int = 2) -> None:
        self.inner = inner
        self.error = error
        self.read = read
        self.parent_revisions: list[str | None] = []

    def head(self) -> str | None:
        return self.inner.head()

    def list_shards(self, revision: str | None = None) -> list[str]:
        return self.inner.list_shards(revision)

    def download_shard(self, month: str, revision: str | None = None) -> Path:
        return self.inner.download_shard(month, revision)

    def log(self) -> list[CommitInfo]:
        return self.inner.log()

    def row_count(self, revision: str | None = None) -> int:
        return self.inner.row_count(revision)

    def resolve_revision(self, revision: str | None = None) -> str:
        return self.inner.resolve_revision(revision)

    def list_files(self, revision: str | None = None) -> list[str]:
        return self.inner.list_files(revision)

    def download_file(self, path: str, revision: str | None = None) -> Path:
        return self.inner.download_file(path, revision)

    def published(self) -> Published:
        return self.inner.published()

    def published_differences(self) -> list[PublishedDifference]:
        return self.inner.published_differences()

    def commit(
        self,
        shards: Mapping[str, pa.Table],
        *,
        message: str,
        delete: Iterable[str] = (),
        parent_revision: str | None = None,
        verify: Callable[[Mapping[str, Path]], None] | None = None,
    ) -> CommitInfo:
        self.parent_revisions.append(parent_revision)
        for month in sorted(shards)[: self.read]:
            assert shards[month].num_rows > 0
        raise self.error


# -- tests ------------------------------------------------------------------------------------
def test_export_month_round_trips_the_records(db: str, records: pa.Table) -> None:
    expected = month_shards(records)
    month = sorted(expected)[5]
    with psycopg.connect(db) as conn:
        table = hf_sync.export_month(conn, month)
        empty = hf_sync.export_month(conn, "2001-01")
        with pytest.raises(ValueError, match="YYYY-MM"):
            hf_sync.export_month(conn, "2024-13")
    assert table.schema.equals(HF_SCHEMA)
    assert table.schema.field("published_at").type.tz == "America/Sao_Paulo"
    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.equals(expected[month].cast(HF_SCHEMA))  # same values, same order
    assert empty.num_rows == 0 and empty.schema.equals(HF_SCHEMA)


def test_first_sync_exports_everything_then_nothing_is_pending(
    db: str, repo: LocalDatasetRepo, records: pa.Table
) -> None:
    months = sorted(month_shards(records))
    assert pending_months(db) == {m: t.num_rows for m, t in month_shards(records).items()}

    report = hf_sync.sync_to_hf(db, repo)

    assert report.months == months and len(months) >= 20
    assert report.rows_exported == report.rows_marked == N_RECORDS
    assert report.committed and report.revision == repo.head()
    assert report.peak_rss_mb is not None and report.peak_rss_mb > 0
    assert repo.list_shards() == months
    assert repo.row_count() == N_RECORDS == scalar(db, "SELECT count(*) FROM news")
    assert (
        scalar(
            db,
            "SELECT count(*) FROM news WHERE synced_to_hf_at >= updated_at AND hf_revision = %s",
            (report.revision,),
        )
        == N_RECORDS
    )
    assert pending_months(db) == {}
    entry = last_log(db)
    assert entry["status"] == "success" and entry["revision"] == report.revision
    assert entry["scope"] == ",".join(months)
    assert (entry["rows_in"], entry["rows_written"]) == (N_RECORDS, N_RECORDS)

    history = repo.log()
    again = hf_sync.sync_to_hf(db, repo)
    assert repo.log() == history  # no empty revision
    assert (again.months, again.rows_exported, again.committed) == ([], 0, False)
    assert again.revision == report.revision
    assert last_log(db)["status"] == "success"


def test_edit_rewrites_only_its_month(db: str, repo: LocalDatasetRepo, records: pa.Table) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    month = sorted(first.months)[3]
    uid = story_in_month(records, month, 7)
    edit(db, records, uid, "Conteúdo corrigido pela assessoria de imprensa.")
    assert pending_months(db) == {month: 1}

    report = hf_sync.sync_to_hf(db, repo)

    assert report.months == [month] and report.committed
    assert report.rows_marked == 1
    assert report.rows_exported == month_shards(records)[month].num_rows
    assert repo.log()[0].added == (month,)
    for m in first.months:  # other shards are the very same objects
        same = shard_object(repo, m, first.revision) == shard_object(repo, m, report.revision)
        assert same == (m != month), m
    shard = repo.read_shard(month)
    row = shard.filter(pc.equal(shard["unique_id"], uid))
    assert row["content"].to_pylist() == ["Conteúdo corrigido pela assessoria de imprensa."]
    ids = repo_unique_ids(repo)
    assert len(ids) == len(set(ids)) == N_RECORDS == repo.row_count()
    assert scalar(db, "SELECT hf_revision FROM news WHERE unique_id = %s", (uid,)) == (
        report.revision
    )
    # the untouched rows of the rewritten month keep the revision they were last written in
    assert scalar(db, "SELECT count(*) FROM news WHERE hf_revision = %s", (first.revision,)) == (
        N_RECORDS - 1
    )
    assert pending_months(db) == {}


def test_failed_commit_marks_nothing_and_the_next_sync_recovers(
    db: str, repo: LocalDatasetRepo, records: pa.Table
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    months = sorted(first.months)
    edit(db, records, story_in_month(records, months[1]), "primeira correção")
    edit(db, records, story_in_month(records, months[-1]), "segunda correção")
    before = pending_months(db)
    assert before == {months[1]: 1, months[-1]: 1}

    failing = FailingRepo(repo, HubError("push refused (HTTP 500)", 500), read=1)
    with pytest.raises(HubError, match="push refused"):
        hf_sync.sync_to_hf(db, failing)

    assert failing.parent_revisions == [first.revision]
    assert pending_months(db) == before
    assert repo.head() == first.revision
    entry = last_log(db)
    assert entry["status"] == "failed" and "push refused" in entry["error"]
    assert entry["finished_at"] is not None and entry["revision"] is None

    report = hf_sync.sync_to_hf(db, repo)
    assert report.months == [months[1], months[-1]] and report.rows_marked == 2
    assert pending_months(db) == {}
    assert repo.row_count() == N_RECORDS
    assert last_log(db)["status"] == "success"


def test_invalid_shard_fails_the_commit_and_marks_nothing(db: str, repo: LocalDatasetRepo) -> None:
    # A shard the repo refuses (here: ISO-string timestamps, the old sync's mistake): the
    # commit raises while staging, after some months were exported.
    original = hf_sync._export

    def broken(conn: psycopg.Connection[Any], month: str) -> tuple[pa.Table, Any]:
        table, keys = original(conn, month)
        index = table.schema.get_field_index("published_at")
        as_text = pc.cast(table["published_at"], pa.string())
        return table.set_column(index, "published_at", as_text), keys

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hf_sync, "_export", broken)
        with pytest.raises(Exception, match="ISO-string timestamps"):
            hf_sync.sync_to_hf(db, repo)
    assert repo.head() is None
    assert sum(pending_months(db).values()) == N_RECORDS
    assert last_log(db)["status"] == "failed"
    assert hf_sync.sync_to_hf(db, repo).rows_marked == N_RECORDS


def test_edit_landing_during_the_export_stays_pending(
    db: str, repo: LocalDatasetRepo, records: pa.Table
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    month = sorted(first.months)[10]
    uid = story_in_month(records, month)
    edit(db, records, uid, "versão exportada")
    calls: list[tuple[str, int]] = []

    def late_edit(exported: str, rows: int) -> None:
        calls.append((exported, rows))
        if exported == month:  # the row is exported; it changes before it is marked
            edit(db, records, uid, "versão posterior")

    report = hf_sync.sync_to_hf(db, repo, on_month_exported=late_edit)

    assert calls == [(month, month_shards(records)[month].num_rows)]
    assert report.rows_exported == month_shards(records)[month].num_rows
    assert report.rows_marked == 0
    shard = repo.read_shard(month)
    assert shard.filter(pc.equal(shard["unique_id"], uid))["content"].to_pylist() == [
        "versão exportada"
    ]
    assert pending_months(db) == {month: 1}
    assert scalar(db, "SELECT hf_revision FROM news WHERE unique_id = %s", (uid,)) == (
        first.revision
    )

    final = hf_sync.sync_to_hf(db, repo)
    assert final.rows_marked == 1 and pending_months(db) == {}
    shard = repo.read_shard(month)
    assert shard.filter(pc.equal(shard["unique_id"], uid))["content"].to_pylist() == [
        "versão posterior"
    ]


def test_lazy_shards_hold_one_month_at_a_time(
    db: str, repo: LocalDatasetRepo, records: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = hf_sync._export
    live: set[int] = set()
    alive_at_export: list[int] = []
    arrow_bytes_at_export: list[int] = []
    sizes: list[int] = []

    def tracked(conn: psycopg.Connection[Any], month: str) -> tuple[pa.Table, Any]:
        alive_at_export.append(len(live))
        arrow_bytes_at_export.append(pa.total_allocated_bytes())
        table, keys = original(conn, month)
        key = id(table)
        live.add(key)
        weakref.finalize(table, live.discard, key)
        sizes.append(table.nbytes)
        return table, keys

    monkeypatch.setattr(hf_sync, "_export", tracked)
    baseline = pa.total_allocated_bytes()
    report = hf_sync.sync_to_hf(db, repo, full=True)

    assert len(alive_at_export) == len(report.months) >= 20
    assert max(alive_at_export) == 0  # the previous month was released before the next
    assert not live
    dataset = sum(sizes)
    # Arrow memory in use when a month starts: never more than about one month
    assert max(arrow_bytes_at_export) - baseline <= max(sizes) + 2**20 < dataset / 4
    assert report.peak_rss_mb is not None and report.start_rss_mb is not None
    assert report.peak_rss_mb >= report.start_rss_mb


def test_lazy_mapping_contract(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        shards = hf_sync.LazyMonthShards(conn, ["2025-03", "2025-01"])
        assert list(shards) == ["2025-01", "2025-03"] and len(shards) == 2
        assert "2025-01" in shards and "2025-02" not in shards
        assert shards.exported == {}  # membership and iteration export nothing
        table = shards["2025-01"]
        assert table.num_rows == len(shards.exported["2025-01"].ids) > 0
        with pytest.raises(KeyError):
            shards["2025-02"]


def test_full_reexport_matches_and_removes_months_absent_from_pg(
    db: str, repo: LocalDatasetRepo, records: pa.Table
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    # A shard PostgreSQL does not have (e.g. left by the old sync): only full removes it.
    orphan = records.slice(0, 1)
    orphan = orphan.set_column(
        orphan.schema.get_field_index("published_at"),
        "published_at",
        pa.array(
            [datetime(2020, 1, 15, 9, tzinfo=ZoneInfo(TIMEZONE))], orphan["published_at"].type
        ),
    )
    stray_month = month_of(orphan["published_at"][0])
    repo.commit({stray_month: orphan}, message="stray", parent_revision=first.revision)
    assert hf_sync.sync_to_hf(db, repo).months == []  # nothing pending: kept
    assert stray_month in repo.list_shards()

    report = hf_sync.sync_to_hf(db, repo, full=True)

    assert report.deleted == [stray_month] and report.committed
    assert report.months == first.months
    assert report.rows_exported == report.rows_marked == N_RECORDS
    assert repo.list_shards() == first.months
    assert repo.row_count() == N_RECORDS
    assert (
        scalar(db, "SELECT count(*) FROM news WHERE hf_revision = %s", (report.revision,))
        == N_RECORDS
    )
    with psycopg.connect(db) as conn:
        for month in report.months:
            assert repo.read_shard(month).equals(hf_sync.export_month(conn, month)), month
    # the shard files themselves did not change: only the stray month is gone
    assert repo.log()[0].added == () and repo.log()[0].deleted == (stray_month,)

    history = repo.log()
    again = hf_sync.sync_to_hf(db, repo, full=True)
    assert repo.log() == history and not again.committed
    assert again.revision == report.revision
    assert again.rows_exported == N_RECORDS and again.rows_marked == 0  # all carry it


def test_explicit_months_and_empty_repo(
    db: str, repo: LocalDatasetRepo, records: pa.Table, tmp_path: Path
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    month = first.months[0]
    forced = hf_sync.sync_to_hf(db, repo, months=[month, "2001-01"])
    assert forced.months == [month] and not forced.committed and forced.rows_marked == 0
    with pytest.raises(ValueError, match="YYYY-MM"):
        hf_sync.sync_to_hf(db, repo, months=["2025/01"])

    fresh = LocalDatasetRepo(tmp_path / "recreated")  # e.g. the HF repo was recreated
    report = hf_sync.sync_to_hf(db, fresh)
    assert report.months == first.months and fresh.row_count() == N_RECORDS
    assert report.rows_marked == N_RECORDS


def test_pending_months_reads_the_partial_index(
    db: str, repo: LocalDatasetRepo, records: pa.Table
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    month = first.months[-2]
    edit(db, records, story_in_month(records, month), "nova versão")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("ANALYZE news")
        assert hf_sync.pending_months(conn) == {month: 1}
        query = hf_sync._months_query(hf_sync._PENDING).as_string(conn)
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN " + query, {"tz": "America/Sao_Paulo"})
        )
    assert "news_hf_pending_idx" in plan, plan


def test_one_sync_at_a_time(db: str, repo: LocalDatasetRepo) -> None:
    with psycopg.connect(db, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (hf_sync.SYNC_LOCK_KEY,))
        with pytest.raises(hf_sync.SyncInProgressError):
            hf_sync.sync_to_hf(db, repo)
    assert repo.head() is None
    assert hf_sync.sync_to_hf(db, repo).rows_marked == N_RECORDS


def test_marking_failure_after_the_commit_heals_on_the_next_sync(
    db: str, repo: LocalDatasetRepo, records: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    month = first.months[4]
    edit(db, records, story_in_month(records, month), "corrigido")

    def lost(*_: Any, **__: Any) -> int:
        raise psycopg.OperationalError("connection lost while marking")

    with monkeypatch.context() as patch:
        patch.setattr(hf_sync, "_mark_synced", lost)
        with pytest.raises(psycopg.OperationalError):
            hf_sync.sync_to_hf(db, repo)
    committed = repo.head()
    assert committed != first.revision  # the edit is in HF ...
    assert pending_months(db) == {month: 1}  # ... but PG does not know it
    entry = last_log(db)
    assert entry["status"] == "failed" and f"committed {committed}" in entry["error"]

    report = hf_sync.sync_to_hf(db, repo)  # identical shard: no new revision
    assert report.months == [month] and not report.committed
    assert report.revision == committed == repo.head() and report.rows_marked == 1
    assert pending_months(db) == {}


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
def test_sync_to_the_hub_backend_survives_a_failed_push(
    db: str, records: pa.Table, hub_test_server: _hub.HubTestServer, tmp_path: Path
) -> None:
    hub = HubDatasetRepo(
        "test-org/govbrnews-sync",
        token=_hub.TEST_TOKEN,
        endpoint=hub_test_server.url,
        cache_dir=tmp_path / "hf-cache",
    )
    first = hf_sync.sync_to_hf(db, hub)
    assert first.revision == hub_test_server.head_of(hub.repo_id)
    assert hub.row_count() == N_RECORDS and pending_months(db) == {}

    month = first.months[-1]
    uid = story_in_month(records, month)
    edit(db, records, uid, "editado no Hub")
    hub_test_server.fail_next("commit", status=500)
    with pytest.raises(HubError):
        hf_sync.sync_to_hf(db, hub)
    assert hub_test_server.head_of(hub.repo_id) == first.revision
    assert pending_months(db) == {month: 1} and last_log(db)["status"] == "failed"

    report = hf_sync.sync_to_hf(db, hub)
    assert report.months == [month] and report.committed and report.rows_marked == 1
    assert hub.log()[0].added == (month,)
    shard = hub.read_shard(month)
    assert shard.filter(pc.equal(shard["unique_id"], uid))["content"].to_pylist() == [
        "editado no Hub"
    ]
    assert hub.row_count() == N_RECORDS and pending_months(db) == {}
