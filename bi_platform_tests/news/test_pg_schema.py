"""The news PostgreSQL schema and its migration runner, against a real server."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from bi_platform.news.pg_schema import (
    LOCK_KEY,
    MIGRATIONS_DIR,
    ChecksumMismatchError,
    MigrationError,
    applied_versions,
    checksum,
    discover_migrations,
    migrate,
    schema_status,
)
from bi_platform.news.records import HF_COLUMNS

ALL_VERSIONS = [m.version for m in discover_migrations()]

NEWS_INDEXES = {
    "news_pkey",
    "news_unique_id_key",
    "news_agency_url_key",
    "news_published_at_idx",
    "news_agency_published_at_idx",
    "news_theme_l1_published_at_idx",
    "news_theme_l2_published_at_idx",
    "news_theme_l3_published_at_idx",
    "news_most_specific_theme_published_at_idx",
    "news_hf_pending_idx",
}

PENDING = "synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at"

UPSERT = """
INSERT INTO news (unique_id, agency_key, agency_name, published_at, title, subtitle, url,
                  tags, content, summary, theme_l1_code, theme_l2_code,
                  most_specific_theme_code, content_hash)
VALUES (%(unique_id)s, %(agency_key)s, %(agency_name)s, %(published_at)s, %(title)s,
        %(subtitle)s, %(url)s, %(tags)s, %(content)s, %(summary)s, %(theme_l1_code)s,
        %(theme_l2_code)s, %(most_specific_theme_code)s, %(content_hash)s)
ON CONFLICT (unique_id) DO UPDATE SET
    agency_key = EXCLUDED.agency_key, agency_name = EXCLUDED.agency_name,
    published_at = EXCLUDED.published_at, title = EXCLUDED.title,
    subtitle = EXCLUDED.subtitle, url = EXCLUDED.url, tags = EXCLUDED.tags,
    content = EXCLUDED.content, summary = EXCLUDED.summary,
    theme_l1_code = EXCLUDED.theme_l1_code, theme_l2_code = EXCLUDED.theme_l2_code,
    most_specific_theme_code = EXCLUDED.most_specific_theme_code,
    content_hash = EXCLUDED.content_hash, updated_at = now()
RETURNING updated_at
"""


def record(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "unique_id": "u1",
        "agency_key": "mec",
        "agency_name": "Ministério da Educação",
        "published_at": "2025-03-04 10:30:00-03",
        "title": "Nova política",
        "subtitle": None,
        "url": "https://www.gov.br/mec/noticia-1",
        "tags": ["educação", "escolas"],
        "content": "Texto da notícia.",
        "summary": None,
        "theme_l1_code": "01",
        "theme_l2_code": "01.02",
        "most_specific_theme_code": "01.02",
        "content_hash": "h1",
    }
    values.update(overrides)
    return values


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a fresh database with the whole schema applied."""
    migrate(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The schema plus two agencies and a small theme tree."""
    db.execute(
        "INSERT INTO agencies (key, name) VALUES"
        " ('mec', 'Ministério da Educação'), ('saude', 'Ministério da Saúde')"
    )
    db.execute(
        "INSERT INTO themes (code, label, level, parent_code) VALUES"
        " ('01', 'Economia', 1, NULL), ('01.02', 'Política Fiscal', 2, '01'),"
        " ('01.02.03', 'Impostos', 3, '01.02')"
    )
    return db


def copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, target)
    return target


# -- discovery ----------------------------------------------------------------------------


def test_packaged_migrations_are_numbered_from_one() -> None:
    migrations = discover_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].path.name.startswith("0001_")
    assert all(m.checksum == checksum(m.path.read_text()) for m in migrations)
    assert len({m.checksum for m in migrations}) == len(migrations)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;"}, "missing: 0002"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"}, "0001_a.sql, 0001_b.sql"),
        ({"0001_a.sql": "SELECT 1;", "2_b.sql": "SELECT 1;"}, "2_b.sql"),
        ({"0001_a.sql": "  \n"}, "empty"),
    ],
)
def test_discover_rejects_gaps_duplicates_and_bad_names(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "README.md").write_text("not a migration, ignored")
    with pytest.raises(MigrationError, match=message):
        discover_migrations(tmp_path)


# -- applying -----------------------------------------------------------------------------


def test_fresh_database_has_everything_pending(pg_url: str) -> None:
    assert applied_versions(pg_url) == {}
    status = schema_status(pg_url)
    assert status["current_version"] == 0
    assert status["pending"] == ALL_VERSIONS
    assert not status["up_to_date"]


def test_migrate_creates_tables_indexes_triggers_and_view(pg_url: str) -> None:
    assert migrate(pg_url) == ALL_VERSIONS
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        }
        assert tables == {
            "schema_version",
            "agencies",
            "themes",
            "news",
            "news_rejected",
            "sync_log",
        }
        columns = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT column_name, data_type, is_nullable, is_identity, identity_generation"
                " FROM information_schema.columns WHERE table_name = 'news'"
            )
        }
        assert columns["id"] == ("bigint", "NO", "YES", "ALWAYS")
        assert columns["unique_id"][:2] == ("text", "NO")
        assert columns["published_at"][:2] == ("timestamp with time zone", "NO")
        assert columns["tags"][0] == "ARRAY"
        assert columns["content_hash"][:2] == ("text", "NO")
        assert columns["synced_to_hf_at"][:2] == ("timestamp with time zone", "YES")
        assert {"hf_revision", "agency_name", "most_specific_theme_code"} <= set(columns)

        indexes = dict(
            conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'news'")
        )
        assert set(indexes) == NEWS_INDEXES  # and no full-text index
        assert "UNIQUE" in indexes["news_agency_url_key"]
        assert "WHERE (url IS NOT NULL)" in indexes["news_agency_url_key"]
        assert indexes["news_hf_pending_idx"].endswith(
            "WHERE ((synced_to_hf_at IS NULL) OR (updated_at > synced_to_hf_at))"
        )
        assert "WHERE (theme_l1_code IS NOT NULL)" in indexes["news_theme_l1_published_at_idx"]
        assert {
            r[0]
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'sync_log'")
        } >= {"sync_log_success_idx", "sync_log_operation_started_at_idx"}

        triggers = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal"
            )
        }
        assert triggers == {
            ("news", "news_touch_updated_at"),
            ("agencies", "agencies_touch_updated_at"),
            ("themes", "themes_touch_updated_at"),
        }

        view_columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'news_hf' ORDER BY ordinal_position"
            )
        ]
        assert tuple(view_columns[: len(HF_COLUMNS)]) == HF_COLUMNS

        rows = conn.execute(
            "SELECT version, name, checksum FROM schema_version ORDER BY 1"
        ).fetchall()
        assert rows == [(m.version, m.name, m.checksum) for m in discover_migrations()]
    assert schema_status(pg_url)["up_to_date"]


def test_rerun_applies_nothing_and_target_stops_early(pg_url: str) -> None:
    assert migrate(pg_url, target=2) == [1, 2]
    assert schema_status(pg_url)["pending"] == ALL_VERSIONS[2:]
    assert migrate(pg_url) == ALL_VERSIONS[2:]
    assert migrate(pg_url) == []
    assert sorted(applied_versions(pg_url)) == ALL_VERSIONS
    with pytest.raises(ValueError, match="target 99"):
        migrate(pg_url, target=99)


def test_migrate_on_a_callers_connection(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT 1")  # opens a transaction
        with pytest.raises(MigrationError, match="without an open transaction"):
            migrate(conn)
        conn.rollback()
        assert migrate(conn) == ALL_VERSIONS
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert migrate(conn) == []


def test_concurrent_callers_apply_each_migration_once(pg_url: str) -> None:
    """Callers queue on the advisory lock; together they apply every version exactly once."""
    results: list[list[int]] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(pg_url))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    with psycopg.connect(pg_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        threads = [threading.Thread(target=run) for _ in range(3)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # all three callers are waiting on the lock
            with psycopg.connect(pg_url, autocommit=True) as probe:
                waiting = probe.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                    " WHERE l.locktype = 'advisory' AND NOT l.granted"
                    " AND d.datname = current_database()"
                ).fetchone()
            if waiting and waiting[0] == 3:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the callers never queued on the advisory lock")
        holder.commit()  # releases the lock
    for thread in threads:
        thread.join(timeout=30)

    assert not failures, failures
    assert sorted(v for applied in results for v in applied) == ALL_VERSIONS
    with psycopg.connect(pg_url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_version").fetchone()
    assert count == (len(ALL_VERSIONS),)


def test_edited_applied_migration_is_refused_by_name(pg_url: str, tmp_path: Path) -> None:
    directory = copy_migrations(tmp_path)
    migrate(pg_url, directory=directory)
    target = next(directory.glob("0002_*.sql"))

    target.write_bytes(target.read_bytes().replace(b"\n", b"\r\n"))  # CRLF is not an edit
    assert migrate(pg_url, directory=directory) == []

    target.write_text(target.read_text() + "\nCREATE TABLE sneaky (a int);\n")
    with pytest.raises(ChecksumMismatchError, match=re.escape(target.name)) as raised:
        migrate(pg_url, directory=directory)
    assert str(target) in str(raised.value)
    status = schema_status(pg_url, directory=directory)
    assert status["changed"] == [target.name]
    assert not status["up_to_date"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('sneaky')").fetchone() == (None,)


def test_failing_migration_rolls_back_entirely(pg_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "sql"
    directory.mkdir()
    shutil.copy(next(MIGRATIONS_DIR.glob("0001_*.sql")), directory)
    broken = directory / "0002_broken.sql"
    broken.write_text(
        "CREATE TABLE half_done (a int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "ALTER TABLE agencies ADD COLUMN extra text;\n"
        "SELECT no_such_function();\n"
    )
    with pytest.raises(MigrationError, match=re.escape("0002_broken.sql")) as raised:
        migrate(pg_url, directory=directory)
    assert isinstance(raised.value.__cause__, errors.UndefinedFunction)

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        extra = conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'agencies' AND column_name = 'extra'"
        ).fetchone()
        assert extra == (0,)
    assert sorted(applied_versions(pg_url)) == [1]  # 0001 committed on its own

    broken.write_text("CREATE TABLE half_done (a int);\n")  # fixed before it ever applied
    assert migrate(pg_url, directory=directory) == [2]


# -- constraints ----------------------------------------------------------------------------


def test_news_constraints(seeded: psycopg.Connection[Any]) -> None:
    db = seeded
    db.execute(UPSERT, record())

    with pytest.raises(errors.ForeignKeyViolation):
        db.execute(UPSERT, record(unique_id="u2", agency_key="nope", url=None))
    with pytest.raises(errors.UniqueViolation, match="news_unique_id_key"):
        db.execute(
            "INSERT INTO news (unique_id, agency_key, published_at, title, content_hash)"
            " VALUES ('u1', 'mec', now(), 't', 'h')"
        )
    with pytest.raises(errors.UniqueViolation, match="news_agency_url_key"):
        db.execute(UPSERT, record(unique_id="u2"))  # same agency, same url
    db.execute(UPSERT, record(unique_id="u3", agency_key="saude"))  # other agency: fine
    db.execute(UPSERT, record(unique_id="u4", url=None))
    db.execute(UPSERT, record(unique_id="u5", url=None))  # several URL-less stories

    with pytest.raises(errors.ForeignKeyViolation):
        db.execute(UPSERT, record(unique_id="u6", url=None, theme_l1_code="09"))
    with pytest.raises(errors.CheckViolation, match="news_theme_l1_shape"):
        db.execute(UPSERT, record(unique_id="u6", url=None, theme_l1_code="01.02"))
    with pytest.raises(errors.CheckViolation, match="news_title_not_blank"):
        db.execute(UPSERT, record(unique_id="u6", url=None, title="  "))
    with pytest.raises(errors.NotNullViolation):
        db.execute(UPSERT, record(unique_id="u6", url=None, content_hash=None))
    with pytest.raises(errors.GeneratedAlways):
        db.execute(
            "INSERT INTO news (id, unique_id, agency_key, published_at, title, content_hash)"
            " VALUES (1, 'u7', 'mec', now(), 't', 'h')"
        )


THEME_VIOLATIONS = [
    # code, level, parent_code, error, constraint
    ("01.03", 1, None, errors.CheckViolation, "themes_code_matches_level"),
    ("01", 2, None, errors.CheckViolation, "themes_code_matches_level"),
    ("1", 1, None, errors.CheckViolation, "themes_code_matches_level"),
    ("01.03.04.05", 4, "01.03.04", errors.CheckViolation, "themes_level_range"),
    ("01.03", 2, None, errors.CheckViolation, "themes_parent_matches_code"),
    ("01.03", 2, "02", errors.CheckViolation, "themes_parent_matches_code"),
    ("02.01", 2, "02", errors.ForeignKeyViolation, "themes_parent_code_fkey"),
]


def test_theme_level_matches_code_and_parent(seeded: psycopg.Connection[Any]) -> None:
    insert = "INSERT INTO themes (code, label, level, parent_code) VALUES (%s, 'x', %s, %s)"
    for code, level, parent, error, constraint in THEME_VIOLATIONS:
        with pytest.raises(error, match=constraint):
            seeded.execute(insert, (code, level, parent))
    seeded.execute(insert, ("01.03", 2, "01"))
    seeded.execute(insert, ("01.03.01", 3, "01.03"))
    with seeded.transaction():  # a tree loaded child-first, parent FK deferred
        seeded.execute("SET CONSTRAINTS ALL DEFERRED")
        seeded.execute(insert, ("02.01", 2, "02"))
        seeded.execute(insert, ("02", 1, None))


def test_bookkeeping_tables(seeded: psycopg.Connection[Any]) -> None:
    db = seeded
    run_id = db.execute(
        "INSERT INTO sync_log (operation, scope, rows_in) VALUES ('migration', 'shard-0', 10)"
        " RETURNING id"
    ).fetchone()[0]
    with pytest.raises(errors.CheckViolation, match="sync_log_status_known"):
        db.execute(
            "UPDATE sync_log SET status = 'done', finished_at = now() WHERE id = %s", (run_id,)
        )
    with pytest.raises(errors.CheckViolation, match="sync_log_finished_iff_done"):
        db.execute("UPDATE sync_log SET status = 'success' WHERE id = %s", (run_id,))
    db.execute(
        "UPDATE sync_log SET status = 'success', finished_at = clock_timestamp(),"
        " rows_written = 9, rows_rejected = 1, details = %s WHERE id = %s",
        (json.dumps({"file": "train-0000.parquet"}), run_id),
    )
    db.execute(
        "INSERT INTO news_rejected (source, reason, raw, sync_log_id)"
        " VALUES ('train-0000.parquet#7', 'missing title', %s, %s)",
        (json.dumps({"agency": "mec"}), run_id),
    )
    with pytest.raises(errors.CheckViolation, match="news_rejected_has_payload"):
        db.execute("INSERT INTO news_rejected (source, reason) VALUES ('x', 'y')")
    done = db.execute(
        "SELECT scope FROM sync_log WHERE operation = 'migration' AND status = 'success'"
    ).fetchall()
    assert done == [("shard-0",)]


# -- updated_at -----------------------------------------------------------------------------


def test_updated_at_moves_only_on_real_changes(seeded: psycopg.Connection[Any]) -> None:
    db = seeded

    def row() -> tuple[Any, ...]:
        return db.execute(
            "SELECT created_at, updated_at FROM news WHERE unique_id = 'u1'"
        ).fetchone()

    first = db.execute(UPSERT, record()).fetchone()[0]
    time.sleep(0.002)
    # The identical record again (NULLs and arrays included), even with SET updated_at = now().
    assert db.execute(UPSERT, record()).fetchone()[0] == first
    db.execute("UPDATE news SET updated_at = now() - interval '1 day' WHERE unique_id = 'u1'")
    assert row()[1] == first  # the trigger owns updated_at

    changed = db.execute(UPSERT, record(tags=["educação"])).fetchone()[0]
    assert changed > first
    again = db.execute(UPSERT, record(tags=["educação"], summary="Resumo")).fetchone()[0]
    assert again > changed
    assert row()[0] <= first  # created_at never moves

    # The sync marks the row exported: no bump, and it is no longer pending.
    marked = db.execute(
        "UPDATE news SET synced_to_hf_at = clock_timestamp(), hf_revision = 'abc123'"
        " WHERE unique_id = 'u1' AND updated_at = %s RETURNING updated_at",
        (again,),
    ).fetchone()
    assert marked == (again,)
    assert db.execute(f"SELECT count(*) FROM news WHERE {PENDING}").fetchone() == (0,)

    db.execute(UPSERT, record(tags=["educação"], summary="Resumo"))  # re-delivered as is
    assert db.execute(f"SELECT count(*) FROM news WHERE {PENDING}").fetchone() == (0,)
    db.execute(UPSERT, record(tags=["educação"], summary="Resumo corrigido"))
    assert db.execute(f"SELECT unique_id FROM news WHERE {PENDING}").fetchall() == [("u1",)]


def test_reference_tables_touch_updated_at_on_change_only(seeded: psycopg.Connection[Any]) -> None:
    db = seeded
    before = db.execute("SELECT updated_at FROM agencies WHERE key = 'mec'").fetchone()
    time.sleep(0.002)
    db.execute("UPDATE agencies SET name = name, updated_at = now() + interval '1 h'")
    assert db.execute("SELECT updated_at FROM agencies WHERE key = 'mec'").fetchone() == before
    db.execute("UPDATE agencies SET url = 'https://www.gov.br/mec' WHERE key = 'mec'")
    assert db.execute("SELECT updated_at FROM agencies WHERE key = 'mec'").fetchone() != before


# -- storage and indexes ------------------------------------------------------------------


def test_large_text_uses_lz4_when_the_server_has_it(seeded: psycopg.Connection[Any]) -> None:
    db = seeded
    enumvals = db.execute(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    ).fetchone()
    has_lz4 = enumvals is not None and "lz4" in enumvals[0]
    compression = dict(
        db.execute(
            "SELECT attname, attcompression FROM pg_attribute"
            " WHERE attrelid = 'news'::regclass AND attname IN ('content', 'summary', 'url')"
        ).fetchall()
    )
    if not has_lz4:
        assert compression["content"] in ("", "p")
        return
    assert compression == {"content": "l", "summary": "l", "url": ""}
    db.execute(UPSERT, record(content="Texto da notícia sobre escolas. " * 200))
    stored = db.execute("SELECT pg_column_compression(content) FROM news").fetchone()
    assert stored == ("lz4",)


def test_pending_index_serves_the_sync_queries(seeded: psycopg.Connection[Any]) -> None:
    db = seeded
    db.execute(
        """
        INSERT INTO news (unique_id, agency_key, published_at, title, url, content, content_hash)
        SELECT md5(i::text), CASE WHEN i % 2 = 0 THEN 'mec' ELSE 'saude' END,
               timestamptz '2024-01-01' + i * interval '1 hour', 'Título ' || i,
               'https://www.gov.br/n/' || i, repeat('texto ', 50), md5(i::text)
        FROM generate_series(1, 4000) AS i
        """
    )
    db.execute("UPDATE news SET synced_to_hf_at = clock_timestamp() WHERE id % 100 <> 0")
    db.execute("UPDATE news SET content = content || ' corrigido' WHERE id % 500 = 1")
    db.execute("ANALYZE news")

    expected = {i for i in range(1, 4001) if i % 100 == 0 or i % 500 == 1}
    query = f"SELECT id FROM news WHERE {PENDING} ORDER BY id"
    assert {r[0] for r in db.execute(query)} == expected
    never = "SELECT id FROM news WHERE synced_to_hf_at IS NULL ORDER BY id"
    assert {r[0] for r in db.execute(never)} == {i for i in range(1, 4001) if i % 100 == 0}

    def plan(q: str) -> str:
        return json.dumps(db.execute(f"EXPLAIN (FORMAT JSON) {q}").fetchone()[0])

    assert "news_hf_pending_idx" in plan(query)
    assert "news_hf_pending_idx" in plan(never)
    view_query = f"SELECT unique_id, title FROM news_hf WHERE {PENDING} ORDER BY id LIMIT 1000"
    view_plan = plan(view_query)
    assert "news_hf_pending_idx" in view_plan
    assert '"themes"' not in view_plan  # no label selected: the joins are removed


def test_news_hf_view_joins_theme_labels(seeded: psycopg.Connection[Any]) -> None:
    db = seeded
    db.execute(
        UPSERT, record(theme_l1_code="01", theme_l2_code=None, most_specific_theme_code="01")
    )
    db.execute(
        UPSERT,
        record(
            unique_id="u2",
            url=None,
            theme_l1_code=None,
            theme_l2_code=None,
            most_specific_theme_code=None,
        ),
    )
    rows = db.execute(
        "SELECT unique_id, agency, theme_1_level_1_label, theme_1_level_2_label,"
        " most_specific_theme_label FROM news_hf ORDER BY unique_id"
    ).fetchall()
    assert rows == [
        ("u1", "mec", "Economia", None, "Economia"),
        ("u2", "mec", None, None, None),
    ]
