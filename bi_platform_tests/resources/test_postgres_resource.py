"""PostgresResource against the real session server."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from bi_platform.resources import PostgresResource
from bi_platform.runtime import services
from bi_platform.runtime.postgres import PostgresRuntimeError


def test_connection_commits_and_rolls_back(pg_url: str) -> None:
    resource = PostgresResource(database_url=pg_url, max_size=2)
    try:
        with resource.connection() as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
            conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation), resource.connection() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
            conn.execute("INSERT INTO t VALUES (1)")
        with resource.connection() as conn:
            assert conn.execute("SELECT array_agg(id) FROM t").fetchone() == ([1],)
            name = conn.execute("SHOW application_name").fetchone()[0]
        assert name == "bi_platform"
    finally:
        resource.close()


def test_masked_url_hides_the_password() -> None:
    resource = PostgresResource(database_url="postgresql://app:s3cret@db:5432/bi")
    assert resource.masked_url == "postgresql://app:***@db:5432/bi"


def test_default_url_is_the_local_cluster(bi_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BI_PLATFORM_HOME", str(bi_home))
    with pytest.raises(PostgresRuntimeError, match="bi-platform up"):
        PostgresResource().resolved_url()
    from bi_platform.settings import get_settings

    service = services.up(get_settings())
    resource = PostgresResource()
    try:
        assert resource.resolved_url() == service.url
        with resource.connection() as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("bi_platform",)
    finally:
        resource.close()
