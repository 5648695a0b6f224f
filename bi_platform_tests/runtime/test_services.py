"""``bi-platform up/status/down`` and services.env, local and with DATABASE_URL."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bi_platform.runtime import services
from bi_platform.runtime.postgres import PostgresRuntimeError, local_url
from bi_platform.settings import Settings
from bi_platform_tests.conftest import bi_platform_cli


def _cli(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BI_PLATFORM_HOME": str(home), **extra_env}
    return subprocess.run(
        [bi_platform_cli(), *args], env=env, capture_output=True, text=True, check=False
    )


def test_with_database_keeps_server_and_query() -> None:
    url = "postgresql://u:p@h:1/app?sslmode=require"
    assert services.with_database(url, "dagster") == "postgresql://u:p@h:1/dagster?sslmode=require"


def test_cli_up_status_psql_down(bi_home: Path) -> None:
    """The acceptance path: up, status --json, psql on the URL, down."""
    up = _cli(bi_home, "up")
    assert up.returncode == 0, up.stderr
    status = _cli(bi_home, "status", "--json")
    report = json.loads(status.stdout)
    assert report["postgres"]["running"] is True
    url = report["postgres"]["url"]
    assert url.endswith("/bi_platform") and "***" not in url  # no password is used
    psql = subprocess.run(
        ["psql", url, "-tAc", "SELECT current_database()"], capture_output=True, text=True
    )
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.strip() == "bi_platform"

    env_file = bi_home / "services.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = services.read_services_env(env_file)
    assert env["BI_PLATFORM_DATABASE_URL"] == url
    assert env["DAGSTER_PG_DB"] == "dagster"
    assert env["DAGSTER_HOME"] == str(bi_home / "dagster")
    assert (bi_home / "dagster" / "dagster.yaml").read_text() == services.INSTANCE_YAML.read_text()

    exports = _cli(bi_home, "env")
    assert f"export DAGSTER_PG_PORT={env['DAGSTER_PG_PORT']}" in exports.stdout

    down = _cli(bi_home, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    after = json.loads(_cli(bi_home, "status", "--json").stdout)
    assert after["postgres"]["running"] is False


def test_status_before_any_up(bi_home: Path) -> None:
    report = json.loads(_cli(bi_home, "status", "--json").stdout)
    assert report == {
        "postgres": {
            "running": False,
            "url": None,
            "dagster_url": None,
            "mode": "local",
            "data_dir": str(bi_home / "postgres" / "data"),
        }
    }


@pytest.fixture
def external_role(pg_port: int, pg_url: str) -> Iterator[tuple[str, str]]:
    """(role, URL): a password-protected role on the session server, as on a managed one."""
    admin = local_url(pg_port, "postgres")
    database = pg_url.rsplit("/", 1)[1]
    role = f"ext_{database}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD 'hunter2'").format(sql.Identifier(role))
        )
    yield role, f"postgresql://{role}:hunter2@127.0.0.1:{pg_port}/{database}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(f"{role}_dagster")
            )
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_database_url_override_starts_nothing_local(
    bi_home: Path, external_role: tuple[str, str]
) -> None:
    role, url = external_role
    dagster_url = services.with_database(url, f"{role}_dagster")
    extra = {"DATABASE_URL": url, "DAGSTER_DATABASE_URL": dagster_url}
    up = _cli(bi_home, "up", "--json", **extra)
    assert up.returncode == 0, up.stderr
    assert not (bi_home / "postgres").exists()
    assert "hunter2" not in up.stdout + up.stderr

    report = json.loads(_cli(bi_home, "status", "--json", **extra).stdout)["postgres"]
    assert report["mode"] == "external" and report["running"] is True
    assert "hunter2" not in report["url"] and ":***@" in report["url"]

    # The Dagster database did not exist: `up` created it on the external server.
    with psycopg.connect(dagster_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    env = services.read_services_env(bi_home / "services.env")
    assert env["DAGSTER_PG_PASSWORD"] == "hunter2"  # the file is 0600, for dagster.yaml
    assert env["BI_PLATFORM_DATABASE_URL"] == url

    down = _cli(bi_home, "down", **extra)
    assert down.returncode == 0 and "was not running" in down.stdout


def test_database_url_that_does_not_answer_fails_clearly(bi_home: Path) -> None:
    settings = Settings(
        bi_platform_home=bi_home, database_url="postgresql://u:pw@127.0.0.1:1/nowhere"
    )
    with pytest.raises(PostgresRuntimeError, match=r"u:\*\*\*@127.0.0.1:1/nowhere"):
        services.up(settings)


def test_database_url_helper_requires_a_running_cluster(bi_home: Path) -> None:
    with pytest.raises(PostgresRuntimeError, match="bi-platform up"):
        services.database_url(Settings(bi_platform_home=bi_home))
