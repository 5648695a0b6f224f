"""Shared fixtures: one real PostgreSQL server per test session, a clean database per test.

The server is started through the same runtime code as ``bi-platform up``
(:class:`bi_platform.runtime.postgres.LocalPostgres`) in a throwaway directory on a
free port, and stopped at the end of the session. The tests marked ``cluster`` also get
real local clusters (Spark standalone, Spark Connect, Dask), each started on first use
and stopped, with every process it spawned, at the end of the session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from bi_platform.runtime import clusters, services
from bi_platform.runtime.postgres import LocalPostgres, local_url, scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: Screenshots and other files a test leaves for people to look at (git-ignored).
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"
#: Headless Chromium on a machine with no network beyond the package registries.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str:
    """Debian's chromium (installed by `make system-deps`)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (browser tests need it): run `make system-deps`")
    return exe


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


def _cluster_dir(kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bi_platform_test_{kind}_"))


@contextlib.contextmanager
def _running_cluster(state: clusters.ClusterState) -> Iterator[clusters.ClusterState]:
    """Yield ``state``; stop its process groups afterwards, and at exit should pytest
    die before its finalizers."""

    def stop() -> None:
        clusters.stop(state)

    atexit.register(stop)
    try:
        yield state
    finally:
        stop()
        atexit.unregister(stop)
        shutil.rmtree(state.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def spark_standalone() -> Iterator[clusters.ClusterState]:
    """A Spark standalone cluster from the pyspark wheel (a master and one worker JVM,
    2 cores, 2 GB for executors), started on first use by the same code as
    ``bi-platform cluster up spark``; ``.address`` is the ``SPARK_MASTER`` to use."""
    with _running_cluster(clusters.start_spark_standalone(_cluster_dir("spark"))) as state:
        yield state


@pytest.fixture(scope="session")
def spark_connect_server() -> Iterator[clusters.ClusterState]:
    """A Spark Connect server from the pyspark wheel (local[2], 1 GB heap, event log under
    ``.event_log_dir``), started on first use by the same code as
    ``bi-platform cluster up spark-connect``; ``.address`` is the ``SPARK_REMOTE``."""
    from bi_platform.cadastral.spark_config import connect_server_settings

    server = clusters.start_spark_connect(_cluster_dir("connect"), conf=connect_server_settings())
    with _running_cluster(server) as state:
        yield state


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[object]:
    """A real ``distributed`` cluster: a scheduler and two worker processes (one thread,
    1 GiB each) on 127.0.0.1, started on first use."""
    from distributed import LocalCluster

    from bi_platform.io_managers.engines import close_dask_clients

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="1GiB",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # a free port: never clash on 8787
    ) as cluster:
        try:
            yield cluster
        finally:
            close_dask_clients()


@dataclass
class Platform:
    """A platform as `make run` leaves it, on the `small` profile: `bi-platform up`
    (against two scratch databases of the session server), `seed`, `materialize`, all
    through the installed CLI. Commands run outside the checkout (whose .env would point
    Dagster elsewhere) with :attr:`env`."""

    home: Path
    env: dict[str, str]
    materialize: subprocess.CompletedProcess
    materialize_seconds: float

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def run(
        self, *argv: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` (a program of the venv's bin, e.g. ``bi-platform``) in the home."""
        program = argv[0] if "/" in argv[0] else str(VENV_BIN / argv[0])
        result = subprocess.run(
            [program, *argv[1:]],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=timeout,
            check=False,
        )
        if check:
            assert result.returncode == 0, (
                f"{' '.join(argv)} exited {result.returncode}\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
            )
        return result

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The platform's Dagster instance (PostgreSQL storage), opened in this process."""
        with pytest.MonkeyPatch.context() as patch:
            for key, value in self.env.items():
                patch.setenv(key, value)
            with dg.DagsterInstance.from_config(str(self.dagster_home)) as instance:
                yield instance


@pytest.fixture(scope="session")
def platform(pg_port: int) -> Iterator[Platform]:
    """One materialized platform for the tests that drive it as users do (CLI, daemon,
    browser); they may add inputs to it but never break it for the next one."""
    admin = local_url(pg_port, "postgres")
    home = Path(tempfile.mkdtemp(prefix="bi_platform_e2e_"))
    with (
        scratch_database(admin, "e2e_app_") as app_url,
        scratch_database(admin, "e2e_dagster_") as dagster_url,
    ):
        env = {
            **os.environ,
            "BI_PLATFORM_HOME": str(home),
            "DATABASE_URL": app_url,
            "DAGSTER_DATABASE_URL": dagster_url,
            "ETL_WORKERS": "1",
            "SPARK_DRIVER_MEMORY": "2g",
        }
        env.pop("DAGSTER_HOME", None)
        platform = Platform(home, env, subprocess.CompletedProcess([], 0), 0.0)
        platform.run("bi-platform", "up")
        platform.env.update(services.read_services_env(home / "services.env"))
        platform.run("bi-platform", "seed", "--profile", "small")
        started = time.perf_counter()
        platform.materialize = platform.run("bi-platform", "materialize", check=False)
        platform.materialize_seconds = time.perf_counter() - started
        try:
            yield platform
        finally:
            shutil.rmtree(home, ignore_errors=True)
