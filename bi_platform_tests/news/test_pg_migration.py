"""The HF dataset -> PostgreSQL migration against a real PostgreSQL: copy, resume,
parallel shards, deferred indexes, rejections, kept ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from bi_platform.news import pg_schema, sync_log, validation
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.pg_migration import MigrationError, migrate_from_repo
from bi_platform.news.pg_reference import load_reference_data
from bi_platform.news.pg_write import write_records
from bi_platform.news.records import (
    CONTENT_HASH_MISMATCH,
    UNIQUE_ID_MISMATCH,
)
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.sample import month_shards
from bi_platform.news.sync_log import (
    succeeded_scopes,
)
from bi_platform.news.validation import (
    UNKNOWN_AGENCY,
    UNKNOWN_THEME,
)
from bi_platform_tests.news.pg_support import edit, make_repo, sample, scalar

ALL_NEWS_INDEXES = 10  # see test_pg_schema.NEWS_INDEXES


def index_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return scalar(conn, "SELECT count(*) FROM pg_indexes WHERE tablename = 'news'")


def test_migration_copies_everything_and_reruns_do_nothing(news_db: str, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", sample(600))
    shards = repo.list_shards()
    report = migrate_from_repo(news_db, repo)
    assert report.revision == repo.head()
    assert report.migrated == shards and not report.failed
    assert report.inserted == report.rows_in == repo.row_count() == 600
    assert index_count(news_db) == ALL_NEWS_INDEXES  # the fast path rebuilt them
    with psycopg.connect(news_db) as conn:
        assert scalar(conn, "SELECT count(*) FROM news") == 600
        assert succeeded_scopes(conn, "migration") == {f"{repo.head()}:{m}" for m in shards}
        stamp = scalar(conn, "SELECT max(updated_at) FROM news")
        assert scalar(
            conn, "SELECT count(*) FROM sync_log WHERE operation = %s AND status = 'success'",
            (sync_log.INDEX_OPERATION,),
        ) == 1  # fmt: skip

    again = migrate_from_repo(news_db, repo)
    assert again.skipped == shards and again.migrated == [] and again.rows_in == 0
    with psycopg.connect(news_db) as conn:
        assert scalar(conn, "SELECT max(updated_at) FROM news") == stamp

    # a new revision re-reads every shard; all unchanged but the edited one
    month = shards[3]
    edited = edit(repo.read_shard(month), 0, summary="Atualizado.")
    repo.commit({month: edited}, message="edit one story")
    third = migrate_from_repo(news_db, repo)
    assert third.migrated == shards
    assert (third.inserted, third.updated, third.unchanged) == (0, 1, 599)


def structure(url: str) -> tuple[int, int]:
    """(indexes, constraints: primary key, unique keys, foreign keys, CHECKs) of news."""
    with psycopg.connect(url) as conn:
        return index_count(url), scalar(
            conn, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'news'::regclass"
        )


def definitions(url: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every index definition and (name, definition) of every constraint of news."""
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'news' ORDER BY 1"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'news'::regclass ORDER BY 1"
        ).fetchall()
    return [r[0] for r in indexes], [tuple(r) for r in constraints]


def test_the_bulk_load_rebuilds_every_index_and_constraint_as_it_was(
    news_db: str, tmp_path: Path
) -> None:
    intact = definitions(news_db)
    assert any("PRIMARY KEY" in d for _, d in intact[1])
    assert any(d.startswith("CREATE UNIQUE INDEX news_agency_url_key") for d in intact[0])
    migrate_from_repo(news_db, make_repo(tmp_path / "repo", sample(300)))
    assert definitions(news_db) == intact
    with psycopg.connect(news_db) as conn:
        (rebuilt,) = conn.execute(
            "SELECT details -> 'rebuilt' FROM sync_log WHERE operation = %s",
            (sync_log.INDEX_OPERATION,),
        ).fetchone()
    assert {"news_pkey", "news_unique_id_key", "news_agency_url_key"} <= set(rebuilt)


def colliding_shards(table: pa.Table) -> dict[str, pa.Table]:
    """Month shards of ``table`` where a story of one month has the ``unique_id`` of a
    story of another, and another story the (agency, url) of a story of a third month."""
    shards = month_shards(table)
    months = sorted(shards)
    first, second, third, fourth = (shards[m] for m in months[:4])
    shards[months[1]] = edit(second, 0, unique_id=first.column("unique_id")[0].as_py())
    shards[months[3]] = edit(
        fourth,
        0,
        agency=third.column("agency")[0].as_py(),
        url=third.column("url")[0].as_py(),
        extracted_at=third.column("extracted_at")[0].as_py(),
    )
    return shards


def test_shards_sharing_keys_are_loaded_after_the_rebuild_as_the_merge_would(
    pg_port: int, tmp_path: Path
) -> None:
    from bi_platform.runtime.postgres import local_url, scratch_database

    repo = LocalDatasetRepo(tmp_path / "repo")
    repo.commit(colliding_shards(sample(400)), message="stories stored twice")
    columns = "unique_id, agency_key, url, title, content, published_at, extracted_at"
    outcomes = []
    for defer_indexes, workers in ((False, 1), (True, 1), (True, 3)):
        with scratch_database(local_url(pg_port, "postgres"), "test_") as url:
            pg_schema.migrate(url)
            with psycopg.connect(url) as conn:
                load_reference_data(conn, load_agencies(), load_themes())
            intact = definitions(url)
            report = migrate_from_repo(url, repo, defer_indexes=defer_indexes, workers=workers)
            assert definitions(url) == intact
            assert not report.failed and set(report.migrated) == set(repo.list_shards())
            assert report.rows_in == report.inserted + report.updated + report.unchanged + (
                report.rejected
            )
            with psycopg.connect(url) as conn:
                total, ids, keys = conn.execute(
                    "SELECT count(*), count(DISTINCT unique_id), count(DISTINCT (agency_key, url)) "
                    "FROM news"
                ).fetchone()
                assert total == ids == keys
                rows = conn.execute(f"SELECT {columns} FROM news ORDER BY 1").fetchall()
                rejected = conn.execute("SELECT reason FROM news_rejected ORDER BY 1").fetchall()
            outcomes.append((rows, rejected, report.rows_in))
            # the bulk load held back the shards whose keys were taken
            assert len(report.deferred) == (2 if defer_indexes else 0)
    assert outcomes[0][2] == 400
    assert outcomes[1] == outcomes[0]  # one worker: the same order as the indexed load
    assert len(outcomes[2][0]) == len(outcomes[0][0])


def test_writers_wait_while_the_unique_indexes_are_missing(news_db: str, tmp_path: Path) -> None:
    """A write during the bulk load waits for the rebuild (its ON CONFLICT needs the
    unique index), then merges with what the migration loaded."""
    import threading

    table = sample(300)
    repo = make_repo(tmp_path / "repo", table)
    first = repo.list_shards()[0]
    story = repo.read_shard(first).slice(0, 1)
    results: list[Any] = []

    def write_during_load(month: str, _pid: int) -> None:
        if month != first or results:
            return

        def writer() -> None:
            with psycopg.connect(news_db) as other:
                results.append(write_records(other, story, source="concurrent", identity="keep"))

        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(timeout=2)
        assert thread.is_alive()  # waiting for the migration's write lock
        results.append(thread)

    report = migrate_from_repo(news_db, repo, hook=write_during_load, workers=1)
    thread = results[0]
    thread.join(timeout=60)
    assert not thread.is_alive()
    written = results[1]
    assert (written.inserted, written.updated, written.unchanged) == (0, 0, 1)
    assert report.inserted == 300
    with psycopg.connect(news_db) as conn:
        assert scalar(conn, "SELECT count(*) FROM news") == 300


def assert_complete_and_unique(url: str, repo: LocalDatasetRepo, table: pa.Table) -> None:
    with psycopg.connect(url) as conn:
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT unique_id) FROM news"
        ).fetchone()
        assert total == distinct == repo.row_count() == table.num_rows
        assert scalar(conn, "SELECT count(*) FROM news_rejected") == 0
        ids = {r[0] for r in conn.execute("SELECT unique_id FROM news")}
    assert ids == set(table.column("unique_id").to_pylist())


@pytest.mark.parametrize("workers", [1, 3])
def test_migration_resumes_after_its_connection_is_killed(
    news_db: str, tmp_path: Path, workers: int
) -> None:
    table = sample(600)
    repo = make_repo(tmp_path / "repo", table)
    shards = repo.list_shards()
    victim = shards[2]
    intact = structure(news_db)

    def kill(month: str, pid: int) -> None:
        if month == victim:
            with psycopg.connect(news_db, autocommit=True) as other:
                assert scalar(other, "SELECT pg_terminate_backend(%s)", (pid,)) is True

    with pytest.raises(psycopg.OperationalError):
        migrate_from_repo(news_db, repo, hook=kill, workers=workers)

    with psycopg.connect(news_db) as conn:
        done = succeeded_scopes(conn, "migration")
        committed = {scope.split(":", 1)[1] for scope in done}
        assert victim not in committed  # the shard in flight rolled back ...
        expected = sum(repo.read_shard(m).num_rows for m in committed)
        assert scalar(conn, "SELECT count(*) FROM news") == expected  # ... the others not
    if workers == 1:
        assert committed == set(shards[:2])  # in order, one at a time
    indexes, constraints = structure(news_db)
    assert indexes < intact[0] and constraints < intact[1]  # still deferred: the run died

    report = migrate_from_repo(news_db, repo, workers=workers)
    assert set(report.skipped) == committed
    assert set(report.migrated) == set(shards) - committed
    assert structure(news_db) == intact == (ALL_NEWS_INDEXES, intact[1])
    assert_complete_and_unique(news_db, repo, table)


def test_parallel_migration_equals_the_sequential_one(pg_port: int, tmp_path: Path) -> None:
    from bi_platform.runtime.postgres import local_url, scratch_database

    table = sample(600)
    repo = make_repo(tmp_path / "repo", table)
    columns = "unique_id, title, content, tags, published_at, theme_l3_code, agency_name"
    stored = []
    for workers in (1, 4):
        with scratch_database(local_url(pg_port, "postgres"), "test_") as url:
            pg_schema.migrate(url)
            with psycopg.connect(url) as conn:
                load_reference_data(conn, load_agencies(), load_themes())
            report = migrate_from_repo(url, repo, workers=workers)
            assert report.inserted == 600 and not report.failed
            assert_complete_and_unique(url, repo, table)
            with psycopg.connect(url) as conn:
                stored.append(conn.execute(f"SELECT {columns} FROM news ORDER BY 1").fetchall())
    assert stored[0] == stored[1]


def test_rejected_rows_of_a_bad_shard_land_in_news_rejected(news_db: str, tmp_path: Path) -> None:
    table = sample(300)
    shards = month_shards(table)
    month = sorted(shards)[5]
    bad = edit(edit(shards[month], 0, agency="orgao-desconhecido"), 2, theme_1_level_2_code="88.88")
    shards[month] = bad
    repo = LocalDatasetRepo(tmp_path / "repo")
    repo.commit(shards, message="with bad rows")
    report = migrate_from_repo(news_db, repo)
    assert report.rejected == 2
    assert report.inserted + report.rejected == repo.row_count()
    with psycopg.connect(news_db) as conn:
        rows = conn.execute(
            "SELECT r.source, r.reason, l.scope FROM news_rejected r "
            "JOIN sync_log l ON l.id = r.sync_log_id ORDER BY r.source"
        ).fetchall()
        logged = conn.execute(
            "SELECT rows_in, rows_written, rows_rejected FROM sync_log WHERE scope = %s",
            (f"{repo.head()}:{month}",),
        ).fetchone()
    scope = f"{repo.head()}:{month}"
    assert rows == [
        (f"shard {month} row 0", f"{UNKNOWN_AGENCY}: 'orgao-desconhecido'", scope),
        (f"shard {month} row 2", f"{UNKNOWN_THEME}: '88.88' in theme_1_level_2_code", scope),
    ]
    assert logged == (bad.num_rows, bad.num_rows - 2, 2)


class FlakyRepo(LocalDatasetRepo):
    """A repo whose shard of one month cannot be read (until fixed)."""

    broken: str | None = None

    def read_shard(self, month: str, revision: str | None = None) -> pa.Table:
        if month == self.broken:
            raise OSError(f"cannot read {month}")
        return super().read_shard(month, revision)


def test_a_failing_shard_is_logged_and_the_rest_goes_on(news_db: str, tmp_path: Path) -> None:
    make_repo(tmp_path / "repo", sample(300))
    repo = FlakyRepo(tmp_path / "repo")
    shards = repo.list_shards()
    repo.broken = shards[1]
    with pytest.raises(MigrationError) as raised:
        migrate_from_repo(news_db, repo)
    assert raised.value.report.failed == [shards[1]]
    assert len(raised.value.report.migrated) == len(shards) - 1
    assert index_count(news_db) == ALL_NEWS_INDEXES
    with psycopg.connect(news_db) as conn:
        assert scalar(
            conn, "SELECT error FROM sync_log WHERE status = 'failed' AND scope = %s",
            (f"{repo.head()}:{shards[1]}",),
        ) == f"OSError: cannot read {shards[1]}"  # fmt: skip
    repo.broken = None
    report = migrate_from_repo(news_db, repo)
    assert report.migrated == [shards[1]]
    with psycopg.connect(news_db) as conn:
        assert scalar(conn, "SELECT count(*) FROM news") == repo.row_count()


def test_months_limit_the_migration_and_empty_repo_is_a_no_op(news_db: str, tmp_path: Path) -> None:
    assert migrate_from_repo(news_db, LocalDatasetRepo(tmp_path / "empty")).revision is None
    repo = make_repo(tmp_path / "repo", sample(300))
    first = repo.list_shards()[:2]
    report = migrate_from_repo(news_db, repo, months=[*first, "1999-01"])
    assert report.migrated == first


def test_extra_is_stored_as_jsonb_and_the_migration_keeps_it(
    conn: psycopg.Connection[Any],
) -> None:
    table = sample(5)
    extra = [json.dumps({"author": "Ascom", "views": 3}), None, None, None, None]
    with_extra = table.append_column("extra", pa.array(extra, pa.string()))
    assert write_records(conn, with_extra, source="t").inserted == 5
    conn.commit()
    uid = table["unique_id"][0].as_py()

    def stored() -> tuple[Any, Any]:
        return conn.execute(
            "SELECT extra, updated_at FROM news WHERE unique_id = %s", (uid,)
        ).fetchone()

    first, stamp = stored()
    assert first == {"author": "Ascom", "views": 3}
    # the HF dataset never carries extra: a migration (KEEP) leaves it alone
    migrated = write_records(conn, table, source="shard", identity=validation.Identity.KEEP)
    assert (migrated.unchanged, stored()) == (5, (first, stamp))
    # a new version from the scraper replaces it (only extra changed: updated_at moves)
    changed = with_extra.set_column(
        with_extra.schema.get_field_index("extra"),
        "extra",
        pa.array([json.dumps({"author": "Outro"}), None, None, None, None], pa.string()),
    )
    assert write_records(conn, changed, source="t").updated == 1
    conn.commit()
    second, later = stored()
    assert second == {"author": "Outro"} and later > stamp
    assert write_records(conn, table, source="t").updated == 1  # no extra in the new version
    assert stored()[0] is None
    bad = with_extra.set_column(
        with_extra.schema.get_field_index("extra"),
        "extra",
        pa.array(["[1, 2]", '{"a": NaN}', "{oops", None, None], pa.string()),
    )
    result = write_records(conn, bad, source="bad")
    assert result.rejected_by_reason == {validation.BAD_EXTRA: 3}


def test_the_migration_keeps_the_datasets_ids(news_db: str, tmp_path: Path) -> None:
    table = sample(30)
    legacy = edit(table, 0, unique_id="legacy-id-0", content_hash="legacy-hash")
    repo = make_repo(tmp_path / "repo", legacy)
    report = migrate_from_repo(news_db, repo)
    assert (report.inserted, report.rejected) == (30, 0)
    with psycopg.connect(news_db) as conn:
        assert conn.execute(
            "SELECT content_hash FROM news WHERE unique_id = 'legacy-id-0'"
        ).fetchone() == ("legacy-hash",)
        # the ingest computes identity: the same row is refused there
        result = write_records(conn, legacy.slice(0, 1), source="inbox")
        assert set(result.rejected_by_reason) == {UNIQUE_ID_MISMATCH, CONTENT_HASH_MISMATCH}
