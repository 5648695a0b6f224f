"""pg_store against a real PostgreSQL: reference data, write_records, sync_log, migration."""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bi_platform.news import hf_sync, pg_schema, pg_store
from bi_platform.news.dataset_repo import LocalDatasetRepo
from bi_platform.news.pg_store import (
    ABANDONED_ERROR,
    DUPLICATE_URL,
    MISSING_FIELD,
    NUL_CHARACTER,
    UNKNOWN_AGENCY,
    UNKNOWN_THEME,
    WRONG_THEME_LEVEL,
    MigrationError,
    close_abandoned_logs,
    finish_log,
    load_reference_data,
    migrate_from_repo,
    start_log,
    succeeded_scopes,
    write_records,
)
from bi_platform.news.records import (
    CONTENT_HASH_MISMATCH,
    HF_SCHEMA,
    OLDER_THAN_STORED,
    OUT_OF_RANGE,
    UNIQUE_ID_MISMATCH,
    content_hash,
    unique_id,
)
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.sample_data.news import generate_news, month_shards

ALL_NEWS_INDEXES = 10  # see test_pg_schema.NEWS_INDEXES


@functools.cache
def sample(n: int, seed: int = 11) -> pa.Table:
    return generate_news(n, seed=seed)


@pytest.fixture
def news_db(pg_url: str) -> str:
    """A database with the news schema and the packaged reference data."""
    pg_schema.migrate(pg_url)
    with psycopg.connect(pg_url) as conn:
        load_reference_data(conn, load_agencies(), load_themes())
    return pg_url


@pytest.fixture
def conn(news_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(news_db) as c:
        yield c


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def replace_column(table: pa.Table, name: str, values: list[Any]) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(
        index, table.schema.field(name), pa.array(values, HF_SCHEMA.field(name).type)
    )


def edit(table: pa.Table, row: int, **changes: Any) -> pa.Table:
    for name, value in changes.items():
        values = table.column(name).to_pylist()
        values[row] = value
        table = replace_column(table, name, values)
    return table


def rehash(table: pa.Table) -> pa.Table:
    """``table`` with the ids the platform computes (after edits of title or content:
    supplied ids that disagree are refused)."""
    table = replace_column(table, "unique_id", [None] * table.num_rows)
    return pg_store.with_ids(replace_column(table, "content_hash", [None] * table.num_rows))


def reconciles(result: pg_store.WriteResult) -> bool:
    return result.rows_in == result.inserted + result.updated + result.unchanged + result.rejected


# --------------------------------------------------------------------------------------
# reference data
# --------------------------------------------------------------------------------------
def test_load_reference_data_is_idempotent_and_follows_renames(pg_url: str) -> None:
    pg_schema.migrate(pg_url)
    agencies, themes = load_agencies(), load_themes()
    with psycopg.connect(pg_url) as conn:
        first = load_reference_data(conn, agencies, themes)
        conn.commit()
        assert first["agencies_inserted"] == len(agencies)
        assert first["themes_inserted"] == len(themes)
        stamp = scalar(conn, "SELECT max(updated_at) FROM agencies")
        again = load_reference_data(conn, agencies, themes)
        conn.commit()
        assert not any(again.values())
        assert scalar(conn, "SELECT max(updated_at) FROM agencies") == stamp

        write_records(conn, sample(60), source="t")
        key = sample(60).column("agency")[0].as_py()
        renamed = dict(agencies)
        renamed[key] = type(agencies[key])(**{**agencies[key].__dict__, "name": "Novo nome"})
        third = load_reference_data(conn, renamed, themes)
        assert third["agencies_updated"] == 1
        assert third["news_agency_names_updated"] >= 1
        assert scalar(
            conn, "SELECT count(*) FROM news WHERE agency_key = %s AND agency_name <> %s",
            (key, "Novo nome"),
        ) == 0  # fmt: skip


# --------------------------------------------------------------------------------------
# write_records
# --------------------------------------------------------------------------------------
def test_insert_then_identical_rerun_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    table = sample(300)
    first = write_records(conn, table, source="t")
    conn.commit()
    assert (first.inserted, first.updated, first.unchanged, first.rejected) == (300, 0, 0, 0)
    assert scalar(conn, "SELECT count(*) FROM news") == 300
    before = conn.execute("SELECT unique_id, updated_at, xmin::text FROM news").fetchall()

    again = write_records(conn, table, source="t")
    conn.commit()
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 300, 0)
    after = conn.execute("SELECT unique_id, updated_at, xmin::text FROM news").fetchall()
    assert sorted(after) == sorted(before)  # not even a new row version
    assert scalar(conn, "SELECT count(*) FROM news_rejected") == 0


def test_stored_values_round_trip(conn: psycopg.Connection[Any]) -> None:
    table = sample(120)
    write_records(conn, table, source="t")
    rows = conn.execute(
        "SELECT unique_id, agency, published_at, extracted_at, title, tags, content, "
        "theme_1_level_2_code, theme_1_level_2_label, content_hash, agency_name FROM news_hf"
    ).fetchall()
    stored = {r[0]: r for r in rows}
    agencies = load_agencies()
    for rec in table.to_pylist():
        got = stored[rec["unique_id"]]
        assert got[1:10] == (
            rec["agency"],
            rec["published_at"],
            rec["extracted_at"],
            rec["title"],
            rec["tags"],
            rec["content"],
            rec["theme_1_level_2_code"],
            rec["theme_1_level_2_label"],
            rec["content_hash"],
        )
        assert got[10] == agencies[rec["agency"]].name


AWKWARD_TAGS = [
    ["a,b", 'quote "q"', "back\\slash", "{braces}", "NULL", "", " spaced "],
    [],
    None,
    ["line\nbreak", "semi;colon", "ção"],
]


def test_awkward_values_survive_the_csv_copy(conn: psycopg.Connection[Any]) -> None:
    """Quotes, commas, braces, backslashes and newlines in texts and tags, empty strings
    vs nulls, empty vs null tag lists: stored exactly as given."""
    table = sample(4, seed=5)
    table = replace_column(table, "tags", AWKWARD_TAGS)
    table = edit(table, 0, title='Título com "aspas", vírgulas e \\ barra', summary="")
    table = edit(table, 1, content='linha 1\nlinha 2\r\n"fim"', subtitle=None)
    table = edit(table, 2, category=",", editorial_lead="\\N")
    table = rehash(table)  # title and content changed: so do the computed ids
    assert write_records(conn, table, source="t").inserted == 4
    rows = conn.execute(
        "SELECT unique_id, title, summary, content, subtitle, category, editorial_lead, tags "
        "FROM news_hf"
    ).fetchall()
    stored = {r[0]: r[1:] for r in rows}
    for rec in table.to_pylist():
        assert stored[rec["unique_id"]] == (
            rec["title"],
            rec["summary"],
            rec["content"],
            rec["subtitle"],
            rec["category"],
            rec["editorial_lead"],
            rec["tags"],
        )
    # the array literal of a null element is NULL, not the string "NULL"
    assert pg_store._pg_text_array(pa.array([["x", None]], pa.list_(pa.string()))).to_pylist() == [
        '{"x",NULL}'
    ]


def test_assume_new_falls_back_to_the_merge_on_collisions(conn: psycopg.Connection[Any]) -> None:
    table = sample(200)
    fresh = write_records(conn, table.slice(0, 100), source="t", assume_new=True)
    assert (fresh.inserted, fresh.unchanged, fresh.rejected) == (100, 0, 0)
    # half of these are stored already, and one steals a stored row's URL (extracted at
    # the same time: not a correction, see test_validation_backends)
    batch = edit(table.slice(50, 100), 99, url=table.column("url")[0].as_py())
    batch = edit(batch, 99, agency=table.column("agency")[0].as_py(), unique_id=None)
    batch = edit(batch, 99, extracted_at=table.column("extracted_at")[0].as_py())
    mixed = write_records(conn, batch, source="t", assume_new=True)
    assert (mixed.inserted, mixed.unchanged, mixed.rejected) == (49, 50, 1)
    assert mixed.rejected_by_reason == {DUPLICATE_URL: 1}
    assert scalar(conn, "SELECT count(*) FROM news") == 149


def test_edit_updates_and_bumps_updated_at(conn: psycopg.Connection[Any]) -> None:
    table = sample(200)
    write_records(conn, table, source="t")
    conn.commit()
    before = dict(conn.execute("SELECT unique_id, updated_at FROM news").fetchall())
    edited = edit(table, 5, content="Texto corrigido.", content_hash=None)
    edited = edit(edited, 9, summary="Resumo novo.")
    result = write_records(conn, edited, source="t")
    conn.commit()
    assert (result.inserted, result.updated, result.unchanged) == (0, 2, 198)
    after = dict(conn.execute("SELECT unique_id, updated_at FROM news").fetchall())
    changed = {u for u in after if after[u] != before[u]}
    ids = table.column("unique_id").to_pylist()
    assert changed == {ids[5], ids[9]}
    assert all(after[u] > before[u] for u in changed)
    row = conn.execute(
        "SELECT content, content_hash FROM news WHERE unique_id = %s", (ids[5],)
    ).fetchone()
    assert row == ("Texto corrigido.", content_hash(table["title"][5].as_py(), "Texto corrigido."))


def test_missing_ids_are_computed(conn: psycopg.Connection[Any]) -> None:
    table = sample(20)
    blank = replace_column(table, "unique_id", [None] * 10 + [""] * 10)
    blank = replace_column(blank, "content_hash", [None] * 20)
    result = write_records(conn, blank.drop_columns(["theme_1_level_1_label"]), source="t")
    assert result.inserted == 20
    stored = conn.execute("SELECT unique_id, content_hash FROM news").fetchall()
    assert sorted(stored) == sorted(
        zip(table["unique_id"].to_pylist(), table["content_hash"].to_pylist(), strict=True)
    )


def test_each_invalid_row_is_rejected_with_source_and_reason(
    conn: psycopg.Connection[Any],
) -> None:
    table = sample(40)
    bad = edit(table, 1, title="   ")
    bad = edit(bad, 2, url=None)
    bad = edit(bad, 3, agency="ministerio-da-magia", unique_id=None)
    bad = edit(bad, 4, theme_1_level_1_code="99")
    bad = edit(bad, 5, most_specific_theme_code="77.77.77")
    bad = edit(bad, 6, theme_1_level_1_code="01.01")
    bad = edit(bad, 7, content="nul \x00 char")
    bad = edit(bad, 8, tags=["ok", "bad\x00tag"])
    result = write_records(conn, bad, source="shard 2025-03", log_id=None)
    assert reconciles(result)
    assert (result.inserted, result.rejected) == (32, 8)
    assert result.rejected_by_reason == {
        MISSING_FIELD: 2,
        UNKNOWN_AGENCY: 1,
        UNKNOWN_THEME: 2,
        WRONG_THEME_LEVEL: 1,
        f"{NUL_CHARACTER} in content": 1,
        f"{NUL_CHARACTER} in tags": 1,
    }
    rows = conn.execute(
        "SELECT source, reason, raw ->> 'title', raw_text, unique_id FROM news_rejected ORDER BY id"
    ).fetchall()
    by_source = {r[0]: r for r in rows}
    assert set(by_source) == {f"shard 2025-03 row {i}" for i in range(1, 9)}
    assert by_source["shard 2025-03 row 1"][1] == f"{MISSING_FIELD}: 'title'"
    assert by_source["shard 2025-03 row 2"][1] == f"{MISSING_FIELD}: 'url'"
    assert by_source["shard 2025-03 row 3"][1] == f"{UNKNOWN_AGENCY}: 'ministerio-da-magia'"
    assert by_source["shard 2025-03 row 3"][4] is None  # no id given, none computed
    assert by_source["shard 2025-03 row 4"][1] == (f"{UNKNOWN_THEME}: '99' in theme_1_level_1_code")
    assert by_source["shard 2025-03 row 5"][1] == (
        f"{UNKNOWN_THEME}: '77.77.77' in most_specific_theme_code"
    )
    assert by_source["shard 2025-03 row 6"][1].startswith(
        f"{WRONG_THEME_LEVEL}: '01.01' in theme_1_level_1_code is a level-2 theme"
    )
    assert by_source["shard 2025-03 row 2"][2] == table["title"][2].as_py()  # raw kept
    assert by_source["shard 2025-03 row 4"][4] == table["unique_id"][4].as_py()
    assert scalar(conn, "SELECT count(*) FROM news") == 32


def test_row_sources_name_the_rejections(conn: psycopg.Connection[Any]) -> None:
    table = edit(sample(3), 0, agency="agencia-x")
    sources = [f"inbox 2026-11-01.jsonl line {n}" for n in (4, 7, 9)]
    write_records(conn, table, source="inbox 2026-11-01.jsonl", row_sources=sources)
    assert conn.execute("SELECT source FROM news_rejected").fetchall() == [(sources[0],)]


def test_url_conflicts_are_rejected_without_aborting(conn: psycopg.Connection[Any]) -> None:
    table = sample(50)
    write_records(conn, table.slice(0, 40), source="t")
    conn.commit()
    stored_id = table["unique_id"][3].as_py()
    # a different story (other title -> other unique_id) with the URL of a stored one,
    # extracted at the same time (a later extraction would be a headline correction)
    clash = edit(table.slice(3, 1), 0, title="Outro título", unique_id=None, content_hash=None)
    # two new stories sharing one URL, extracted at the same time: the first one wins
    pair = edit(
        table.slice(45, 2),
        1,
        url=table["url"][45].as_py(),
        agency=table["agency"][45].as_py(),
        extracted_at=table["extracted_at"][45].as_py(),
        unique_id=None,
    )
    batch = pa.concat_tables([table.slice(40, 5), clash, pair, table.slice(0, 2)])
    result = write_records(conn, batch, source="b")
    conn.commit()
    assert reconciles(result)
    assert (result.inserted, result.unchanged, result.rejected) == (6, 2, 2)
    assert result.rejected_by_reason == {DUPLICATE_URL: 2}
    reasons = dict(conn.execute("SELECT source, reason FROM news_rejected").fetchall())
    assert reasons == {
        "b row 5": f"{DUPLICATE_URL}: stored as unique_id {stored_id}",
        "b row 7": f"{DUPLICATE_URL}: earlier in the batch as unique_id "
        f"{table['unique_id'][45].as_py()}",
    }
    assert scalar(conn, "SELECT count(*) FROM news") == 46


def test_duplicate_ids_in_a_batch_keep_the_last(conn: psycopg.Connection[Any]) -> None:
    table = sample(10)
    later = edit(table.slice(2, 1), 0, summary="Versão final.")
    batch = pa.concat_tables([table, table.slice(2, 1), later])
    result = write_records(conn, batch, source="t")
    assert reconciles(result)
    assert (result.rows_in, result.inserted, result.unchanged, result.duplicates) == (12, 10, 2, 2)
    summary = scalar(
        conn, "SELECT summary FROM news WHERE unique_id = %s", (table["unique_id"][2].as_py(),)
    )
    assert summary == "Versão final."


def test_a_failing_batch_leaves_nothing(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = 'boom' THEN RAISE EXCEPTION 'refused by test trigger'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON news FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    conn.commit()
    boom = edit(sample(30), 4, title="boom", unique_id=None, content_hash=None)
    batch = edit(boom, 7, agency="agencia-x")
    with pytest.raises(psycopg.errors.RaiseException):
        write_records(conn, batch, source="t")
    conn.rollback()
    assert scalar(conn, "SELECT count(*) FROM news") == 0
    assert scalar(conn, "SELECT count(*) FROM news_rejected") == 0


def test_empty_and_all_rejected_batches(conn: psycopg.Connection[Any]) -> None:
    empty = write_records(conn, HF_SCHEMA.empty_table(), source="t")
    assert (empty.rows_in, empty.inserted, empty.rejected) == (0, 0, 0)
    bad = replace_column(sample(5), "agency", ["agencia-x"] * 5)
    result = write_records(conn, bad, source="t")
    assert (result.rows_in, result.inserted, result.unchanged, result.rejected) == (5, 0, 0, 5)
    assert scalar(conn, "SELECT count(*) FROM news_rejected") == 5


def test_autocommit_connection_gets_its_own_transaction(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as conn:
        result = write_records(conn, sample(30), source="t")
        assert result.inserted == 30
    with psycopg.connect(news_db) as other:
        assert scalar(other, "SELECT count(*) FROM news") == 30


def test_conform_refuses_string_timestamps() -> None:
    table = sample(3)
    strings = table.set_column(
        table.schema.get_field_index("published_at"),
        "published_at",
        pc.cast(pc.strftime(table["published_at"]), pa.string()),
    )
    with pytest.raises(ValueError, match="published_at"):
        pg_store.conform(strings)
    with pytest.raises(ValueError, match="unknown"):
        pg_store.conform(table.append_column("surprise", pa.array([1, 2, 3])))
    with pytest.raises(ValueError, match="extra: expected the text of a JSON object"):
        pg_store.conform(table.append_column("extra", pa.array([1, 2, 3])))


# --------------------------------------------------------------------------------------
# sync_log
# --------------------------------------------------------------------------------------
def test_sync_log_helpers(conn: psycopg.Connection[Any]) -> None:
    a = start_log(conn, "migration", "rev:2025-01", {"month": "2025-01"})
    b = start_log(conn, "migration", "rev:2025-02")
    c = start_log(conn, "ingest", "inbox x")
    finish_log(conn, a, "success", 10, 9, 1, details={"extra": 1}, revision="rev")
    finish_log(conn, b, "failed", error="boom")
    finish_log(conn, c, "success", 1, 1, 0)
    assert succeeded_scopes(conn, "migration") == {"rev:2025-01"}
    assert succeeded_scopes(conn, "migration", prefix="other:") == set()
    row = conn.execute(
        "SELECT status, rows_in, rows_written, rows_rejected, details, revision, "
        "finished_at >= started_at FROM sync_log WHERE id = %s",
        (a,),
    ).fetchone()
    backend = row[4].pop(pg_store.BACKEND_KEY)  # recorded by start_log
    assert backend["pid"] == conn.info.backend_pid and backend["backend_start"]
    assert row == ("success", 10, 9, 1, {"month": "2025-01", "extra": 1}, "rev", True)
    with pytest.raises(ValueError):
        finish_log(conn, a, "running")
    with pytest.raises(LookupError):
        finish_log(conn, 10**9, "success")


# --------------------------------------------------------------------------------------
# migration
# --------------------------------------------------------------------------------------
def make_repo(root: Path, table: pa.Table) -> LocalDatasetRepo:
    repo = LocalDatasetRepo(root)
    repo.commit(month_shards(table), message="initial dataset")
    return repo


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
            (pg_store.INDEX_OPERATION,),
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
    """(indexes, foreign keys + CHECK constraints) of news."""
    with psycopg.connect(url) as conn:
        return index_count(url), scalar(
            conn,
            "SELECT count(*) FROM pg_constraint "
            "WHERE conrelid = 'news'::regclass AND contype IN ('f', 'c')",
        )


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


# --------------------------------------------------------------------------------------
# sync_log: runs abandoned by killed processes
# --------------------------------------------------------------------------------------
def backend_gone(url: str, pid: int, timeout: float = 10.0) -> bool:
    """Wait until backend ``pid`` has left pg_stat_activity."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if not scalar(
                conn, "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,)
            ):
                return True
            time.sleep(0.05)
    return False


def terminate(url: str, pid: int) -> None:
    """Kill backend ``pid`` (as a crash would) and wait for it to be gone."""
    with psycopg.connect(url, autocommit=True) as other:
        assert scalar(other, "SELECT pg_terminate_backend(%s, 10000)", (pid,)) is True
    assert backend_gone(url, pid)


def log_row(url: str, log_id: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM sync_log WHERE id = %s", (log_id,)).fetchone()
    assert row is not None
    return row


def start_and_die(url: str, operation: str, *, how: str = "terminate") -> tuple[int, int]:
    """A run whose process dies after committing its ``running`` row: (row id, pid)."""
    victim = psycopg.connect(url, autocommit=True)
    log_id = start_log(victim, operation, "scope x", {"month": "2025-01"})
    pid = victim.info.backend_pid
    if how == "terminate":
        terminate(url, pid)
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
    else:  # the client goes away without a word
        victim.close()
        assert backend_gone(url, pid)
    return log_id, pid


@pytest.mark.parametrize("how", ["terminate", "close"])
def test_a_run_whose_process_died_is_closed_when_the_next_run_starts(
    news_db: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead, pid = start_and_die(news_db, "hf_sync", how=how)
    before = log_row(news_db, dead)
    assert before["status"] == "running"
    assert before["details"][pg_store.BACKEND_KEY]["pid"] == pid
    assert before["details"][pg_store.BACKEND_KEY]["backend_start"] is not None

    with (
        caplog.at_level(logging.WARNING, logger="bi_platform.news.pg_store"),
        psycopg.connect(news_db) as conn,  # in a transaction, as ingest and migration
    ):
        new = start_log(conn, "ingest", "inbox y", {"backend": "postgres"})
    after = log_row(news_db, dead)
    assert after["status"] == "failed"
    assert after["finished_at"] >= after["started_at"]
    assert after["error"].startswith(ABANDONED_ERROR)
    assert f"pid {pid} started" in after["error"]
    assert after["error"].endswith(f"closed when sync_log row {new} started")
    assert after["details"]["month"] == "2025-01"
    assert after["details"]["abandoned"]["closed_by_row"] == new
    assert "closed 1 abandoned run(s)" in caplog.text and f"{dead} (hf_sync scope x)" in caplog.text

    fresh = log_row(news_db, new)  # the new row is running, with its own backend
    assert fresh["status"] == "running" and fresh["details"]["backend"] == "postgres"
    assert fresh["details"][pg_store.BACKEND_KEY]["pid"] != pid


def test_a_run_whose_backend_lives_is_left_running(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as alive:
        live = start_log(alive, "hf_sync", "2025-01")  # committed: visible to everyone
        with psycopg.connect(news_db) as conn:
            start_log(conn, "ingest", "inbox y")
            assert close_abandoned_logs(conn) == 0
            conn.commit()
        assert log_row(news_db, live)["status"] == "running"
        finish_log(alive, live, "success", 1, 1, 0)  # its owner finishes it normally
    row = log_row(news_db, live)
    assert (row["status"], row["error"]) == ("success", None)


def test_a_backend_started_after_the_transaction_looked_is_alive(news_db: str) -> None:
    """pg_stat_activity is cached per transaction; the closer reads it afresh."""
    with psycopg.connect(news_db) as conn:
        scalar(conn, "SELECT count(*) FROM pg_stat_activity")  # snapshot taken here
        with psycopg.connect(news_db, autocommit=True) as late:
            live = start_log(late, "hf_sync", "2025-02")
            assert close_abandoned_logs(conn) == 0
            start_log(conn, "ingest", "inbox y")
            assert scalar(conn, "SELECT status FROM sync_log WHERE id = %s", (live,)) == "running"


def test_a_live_backend_of_another_role_counts_as_alive(news_db: str) -> None:
    """A role without pg_read_all_stats sees other roles' backend_start as NULL."""
    with psycopg.connect(news_db, autocommit=True) as admin:
        role = f"sync_log_closer_{admin.info.dbname}"
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT SELECT, UPDATE ON sync_log TO {}").format(sql.Identifier(role))
        )
        try:
            live = start_log(admin, "hf_sync", "2025-04")  # the superuser's session
            with psycopg.connect(news_db, autocommit=True) as other:
                other.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                assert scalar(
                    other,
                    "SELECT backend_start IS NULL FROM pg_stat_activity WHERE pid = %s",
                    (admin.info.backend_pid,),
                )
                assert close_abandoned_logs(other) == 0
            assert log_row(news_db, live)["status"] == "running"
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_reused_pid_does_not_keep_a_dead_run_alive(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as conn:
        log_id = start_log(conn, "hf_sync", "2025-03")
        # as if an earlier backend with this pid had started it
        conn.execute(
            "UPDATE sync_log SET details = jsonb_set(details, '{pg_backend,backend_start}', "
            "to_jsonb(now() - interval '1 day')) WHERE id = %s",
            (log_id,),
        )
        assert close_abandoned_logs(conn) == 1
        assert scalar(conn, "SELECT status FROM sync_log WHERE id = %s", (log_id,)) == "failed"


def test_rows_without_a_recorded_backend_count_as_abandoned(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as conn:
        old = scalar(
            conn,
            "INSERT INTO sync_log (operation, scope) VALUES ('hf_sync', 'old') RETURNING id",
        )
        assert close_abandoned_logs(conn) == 1
        assert close_abandoned_logs(conn) == 0  # idempotent
        row = log_row(news_db, old)
    assert row["status"] == "failed"
    assert row["error"] == (
        f"{ABANDONED_ERROR} (no PostgreSQL backend recorded); closed by close_abandoned_logs"
    )


def test_deferred_index_rows_are_never_closed(news_db: str) -> None:
    marker, _ = start_and_die(news_db, pg_store.INDEX_OPERATION)
    with psycopg.connect(news_db, autocommit=True) as conn:
        legacy = scalar(
            conn,
            "INSERT INTO sync_log (operation, scope) VALUES (%s, 'news') RETURNING id",
            (pg_store.INDEX_OPERATION,),
        )
        start_log(conn, "ingest", "inbox y")
        assert close_abandoned_logs(conn) == 0
    for log_id in (marker, legacy):
        assert log_row(news_db, log_id)["status"] == "running"


def test_a_failing_cleanup_does_not_fail_the_new_run(
    news_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(news_db) as conn:
        conn.execute(
            "INSERT INTO sync_log (operation, details) "
            'VALUES (\'hf_sync\', \'{"pg_backend": {"pid": "not a pid"}}\')'
        )
        with caplog.at_level(logging.WARNING, logger="bi_platform.news.pg_store"):
            log_id = start_log(conn, "ingest", "inbox y")  # the closer fails on that row
        assert "could not close abandoned runs" in caplog.text
        finish_log(conn, log_id, "success", 1, 1, 0)  # the transaction is still usable
        conn.commit()
    assert log_row(news_db, log_id)["status"] == "success"


def _sync_and_die(url: str, repo_root: str) -> None:
    """In a child process: an HF sync whose process dies (no cleanup) mid-commit."""

    def die(month: str, rows: int) -> None:
        os._exit(3)

    hf_sync.sync_to_hf(url, LocalDatasetRepo(Path(repo_root)), on_month_exported=die)


def test_a_killed_hf_sync_is_closed_by_the_next_sync(news_db: str, tmp_path: Path) -> None:
    with psycopg.connect(news_db) as conn:
        assert write_records(conn, sample(300), source="test").inserted == 300
    root = tmp_path / "dataset"
    child = multiprocessing.get_context("spawn").Process(
        target=_sync_and_die, args=(news_db, str(root))
    )
    child.start()
    child.join(120)
    assert child.exitcode == 3
    with psycopg.connect(news_db) as conn:
        dead, details = conn.execute(
            "SELECT id, details FROM sync_log WHERE operation = %s AND status = 'running'",
            (hf_sync.SYNC_OPERATION,),
        ).fetchone()
    assert backend_gone(news_db, details[pg_store.BACKEND_KEY]["pid"])

    report = hf_sync.sync_to_hf(news_db, LocalDatasetRepo(root))
    assert report.rows_exported == report.rows_marked == 300
    old, new = log_row(news_db, dead), log_row(news_db, report.log_id)
    assert old["status"] == "failed" and old["error"].startswith(ABANDONED_ERROR)
    assert old["error"].endswith(f"closed when sync_log row {report.log_id} started")
    assert new["status"] == "success"
    with psycopg.connect(news_db) as conn:
        assert scalar(conn, "SELECT count(*) FROM sync_log WHERE status = 'running'") == 0


# --------------------------------------------------------------------------------------
# identity and versions (the rules shared by every backend)
# --------------------------------------------------------------------------------------
def stamps(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return dict(conn.execute("SELECT unique_id, updated_at FROM news").fetchall())


def test_a_forged_unique_id_never_overwrites_another_story(conn: psycopg.Connection[Any]) -> None:
    table = sample(20)
    write_records(conn, table, source="t")
    conn.commit()
    before = stamps(conn)
    victim = table["unique_id"][0].as_py()
    forged = edit(table.slice(1, 1), 0, unique_id=victim, summary="Sequestrada.")
    result = write_records(conn, forged, source="t")
    conn.commit()
    assert (result.rejected, result.written) == (1, 0)
    assert result.rejected_by_reason == {UNIQUE_ID_MISMATCH: 1}
    assert stamps(conn) == before
    reason = scalar(conn, "SELECT reason FROM news_rejected")
    computed = table["unique_id"][1].as_py()
    assert reason == f"{UNIQUE_ID_MISMATCH}: {victim!r} != {computed!r}"
    # an agreeing id and hash are accepted
    assert write_records(conn, table.slice(1, 1), source="t").unchanged == 1


def test_a_supplied_content_hash_must_agree(conn: psycopg.Connection[Any]) -> None:
    table = edit(sample(3), 0, content_hash="0" * 64)
    result = write_records(conn, table, source="t")
    assert (result.inserted, result.rejected_by_reason) == (2, {CONTENT_HASH_MISMATCH: 1})


def test_a_headline_correction_updates_the_story(conn: psycopg.Connection[Any]) -> None:
    table = sample(20)
    write_records(conn, table, source="t")
    conn.execute("UPDATE news SET synced_to_hf_at = clock_timestamp(), hf_revision = 'r0'")
    conn.commit()
    old = table.slice(3, 1).to_pylist()[0]
    row_id, created = conn.execute(
        "SELECT id, created_at FROM news WHERE unique_id = %s", (old["unique_id"],)
    ).fetchone()
    title = old["title"] + " (corrigido)"
    later = old["extracted_at"] + timedelta(hours=1)
    fix = edit(table.slice(3, 1), 0, title=title, extracted_at=later, unique_id=None)
    result = write_records(conn, edit(fix, 0, content_hash=None), source="t")
    conn.commit()
    assert (result.inserted, result.updated, result.corrected, result.rejected) == (0, 1, 1, 0)
    new_id = unique_id(old["agency"], old["published_at"], title)
    month = old["published_at"].strftime("%Y-%m")
    assert result.replaced == {new_id: (old["unique_id"], month)}
    stored = conn.execute(
        "SELECT id, created_at, unique_id, title, url, extracted_at, content_hash, "
        "updated_at > synced_to_hf_at FROM news WHERE id = %s",
        (row_id,),
    ).fetchone()
    assert stored == (
        row_id,  # the same story, edited in place
        created,
        new_id,
        title,
        old["url"],
        later,
        content_hash(title, old["content"]),
        True,  # pending for the HF sync
    )
    assert scalar(conn, "SELECT count(*) FROM news") == 20
    # the old headline re-sent afterwards is older than the stored version
    again = write_records(conn, table.slice(3, 1), source="t")
    assert again.rejected_by_reason == {OLDER_THAN_STORED: 1}


def test_an_older_extraction_is_rejected_and_an_equal_one_updates(
    conn: psycopg.Connection[Any],
) -> None:
    table = sample(10)
    write_records(conn, table, source="t")
    conn.commit()
    when = table["extracted_at"][2].as_py()
    older = edit(table.slice(2, 1), 0, summary="Antigo.", extracted_at=when - timedelta(hours=1))
    result = write_records(conn, older, source="t")
    assert (result.updated, result.rejected_by_reason) == (0, {OLDER_THAN_STORED: 1})
    reason = scalar(conn, "SELECT reason FROM news_rejected")
    assert reason.startswith(f"{OLDER_THAN_STORED}: extracted_at ")
    assert reason.endswith(f"of unique_id {table['unique_id'][2].as_py()}")
    same_time = edit(table.slice(2, 1), 0, summary="Revisto.")
    assert write_records(conn, same_time, source="t").updated == 1


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
    migrated = write_records(conn, table, source="shard", identity=pg_store.Identity.KEEP)
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
    assert result.rejected_by_reason == {pg_store.BAD_EXTRA: 3}


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


def test_timestamps_out_of_range_are_rejected_not_raised(conn: psycopg.Connection[Any]) -> None:
    table = sample(4)
    micros = pa.array([0, 0, 4_102_444_800_000_000, 253_402_300_800_000_000], pa.int64())
    far = pc.cast(micros, pa.timestamp("us", tz="UTC"))  # 1970, 1970, 2100, year 10000
    table = table.set_column(
        table.schema.get_field_index("updated_datetime"), "updated_datetime", far
    )
    result = write_records(conn, table.slice(2, 2), source="t")
    assert result.rejected_by_reason == {OUT_OF_RANGE: 2}
    reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM news_rejected"))
    assert reasons[0].startswith(f"{OUT_OF_RANGE}: updated_datetime 2099-12-31T21:00:00-03:00")
    assert reasons[1] == (
        f"{OUT_OF_RANGE}: updated_datetime 253402300800000000 microseconds from 1970-01-01 UTC "
        "is outside the supported range 1900-01-01 to 2099-12-31 (UTC)"
    )


def test_write_result_accounting(conn: psycopg.Connection[Any]) -> None:
    table = sample(10)
    write_records(conn, table.slice(0, 5), source="t")
    batch = pa.concat_tables([table, table.slice(7, 1), edit(table.slice(0, 1), 0, agency="x")])
    r = write_records(conn, batch, source="t")
    assert (r.rows_in, r.inserted, r.unchanged, r.duplicates, r.rejected) == (12, 5, 6, 1, 1)
    assert (r.identical, r.stored) == (5, 10)
    assert r.rows_in == r.stored + r.rejected + r.duplicates
    assert "unique_ids" not in r.as_dict() and r.as_dict()["corrected"] == 0
