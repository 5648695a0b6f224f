"""Reference data in a real PostgreSQL: agencies and themes, idempotent upserts."""

from __future__ import annotations

import psycopg

from bi_platform.news import pg_schema
from bi_platform.news.pg_reference import load_reference_data
from bi_platform.news.pg_write import write_records
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform_tests.news.pg_support import sample, scalar


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
