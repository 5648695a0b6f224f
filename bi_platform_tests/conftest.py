"""Shared fixtures: one real PostgreSQL server per test session, a clean database per test.

The server is started through the same runtime code as ``bi-platform up``
(:class:`bi_platform.runtime.postgres.LocalPostgres`) in a throwaway directory on a
free port, and stopped at the end of the session.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bi_platform.runtime.postgres import LocalPostgres, local_url, scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def bi_platform_cli() -> str:
    """The installed ``bi-platform`` script next to this interpreter."""
    return str(VENV_BIN / "bi-platform")


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment() -> Iterator[Path]:
    """Tests never touch the checkout's .bi_platform nor an external DATABASE_URL."""
    home = Path(tempfile.mkdtemp(prefix="bi_platform_test_home_"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BI_PLATFORM_HOME", str(home))
        patch.delenv("DATABASE_URL", raising=False)
        patch.delenv("DAGSTER_HOME", raising=False)
        yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server for the whole session (throwaway data dir, free port)."""
    root = Path(tempfile.mkdtemp(prefix="bi_platform_test_pg_"))
    cluster = LocalPostgres(root / "postgres", databases=("bi_platform",))
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_port(pg_cluster: LocalPostgres) -> int:
    port = pg_cluster.status().port
    assert port is not None
    return port


@pytest.fixture
def pg_url(pg_port: int) -> Iterator[str]:
    """A fresh, empty database on the session server; dropped after the test."""
    with scratch_database(local_url(pg_port, "postgres"), "test_") as url:
        yield url


@pytest.fixture
def bi_home() -> Iterator[Path]:
    """An empty BI_PLATFORM_HOME; any cluster started in it is stopped afterwards.

    Made with mkdtemp under the system temp dir rather than pytest's tmp_path, whose
    parent is private to the test user and so unreachable for the cluster's OS user.
    """
    home = Path(tempfile.mkdtemp(prefix="bi_home_"))
    yield home
    cluster = LocalPostgres(home / "postgres")
    if cluster.initialized:
        cluster.down()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One real local-mode Spark session for the whole test session (started on first use).

    Built by :func:`bi_platform.cadastral.spark_session.start_spark`, so the tests run the
    configuration the assets run; two local cores, as on the CI machines.
    """
    from bi_platform.cadastral.spark_session import start_spark
    from bi_platform.settings import get_settings

    local_dir = Path(tempfile.mkdtemp(prefix="bi_platform_test_spark_"))
    session = start_spark(
        get_settings(),
        master="local[2]",
        extra={"spark.driver.memory": "2g", "spark.local.dir": str(local_dir)},
    )
    try:
        yield session
    finally:
        session.stop()
        shutil.rmtree(local_dir, ignore_errors=True)
