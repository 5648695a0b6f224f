"""dagster.yaml against a real PostgreSQL: storage, the psycopg2 scheme, the coordinator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import psycopg
import pytest
import yaml

from bi_platform.resources import PostgresResource
from bi_platform.runtime import services
from bi_platform.settings import Settings
from bi_platform_tests.conftest import REPO_ROOT


@pytest.fixture
def instance_env(pg_url: str, bi_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """services.env values for the per-test database, set in os.environ."""
    settings = Settings(bi_platform_home=bi_home)
    service = services.PostgresService("external", True, pg_url, pg_url)
    services.install_dagster_instance(settings)
    env = services.services_env(settings, service)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_instance_config_declares_postgres_psycopg2_and_queue() -> None:
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["scheduler"]["class"] == "DagsterDaemonScheduler"
    assert config["telemetry"]["enabled"] is False


def test_materialize_against_the_instance(instance_env: dict[str, str], pg_url: str) -> None:
    """A run writes its run, events and materialization into PostgreSQL.

    Storing events goes through dagster-postgres's NOTIFY, which breaks when
    SQLAlchemy picks psycopg 3 for a plain postgresql:// URL.
    """

    @dg.asset
    def greeting(postgres: PostgresResource) -> dg.MaterializeResult:
        with postgres.connection() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS greetings (msg text)")
            conn.execute("INSERT INTO greetings VALUES ('olá')")
            count = conn.execute("SELECT count(*) FROM greetings").fetchone()[0]
        return dg.MaterializeResult(metadata={"dagster/row_count": count})

    with dg.DagsterInstance.from_config(instance_env["DAGSTER_HOME"]) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        result = dg.materialize(
            [greeting],
            instance=instance,
            resources={"postgres": PostgresResource(database_url=pg_url)},
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("greeting"))
        assert event is not None
        assert event.asset_materialization.metadata["dagster/row_count"].value == 1
        assert Path(instance.compute_log_manager._base_dir).is_relative_to(
            Path(instance_env["DAGSTER_HOME"])
        )

    dagster_db = urlsplit(pg_url).path.lstrip("/")
    with psycopg.connect(pg_url) as conn:
        runs = conn.execute("SELECT status FROM runs").fetchall()
        events = conn.execute("SELECT count(*) FROM event_logs").fetchone()[0]
        greetings = conn.execute("SELECT msg FROM greetings").fetchall()
    assert runs == [("SUCCESS",)], dagster_db
    assert events > 5
    assert greetings == [("olá",)]


def test_definitions_validate_cli(bi_home: Path) -> None:
    """`dagster definitions validate -m bi_platform.definitions` passes in the checkout.

    The instance config needs the services.env variables, which `make up` exposes to
    Dagster's CLI as the checkout's .env, and a running server.
    """
    services.up(Settings(bi_platform_home=bi_home))
    env = {**os.environ, **services.read_services_env(bi_home / "services.env")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-m",
            "bi_platform.definitions",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed validation" in result.stdout + result.stderr
