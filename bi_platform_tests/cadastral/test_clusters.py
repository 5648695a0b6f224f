"""The cadastral pipeline and its PostgreSQL sync on real Spark clusters give the local
results: a standalone cluster (master + worker JVMs from the pyspark wheel, executors
doing the work) and a Spark Connect server (the client process runs no JVM at all).

Each cluster run is a Dagster materialization of every cadastral asset and check per
load date in a driver subprocess whose environment holds ``SPARK_MASTER`` /
``SPARK_REMOTE``: D0 (first, full sync) on the standalone cluster; D0 then D1 (a change
set: incremental sync with inserts, updates and deletes) over Spark Connect, whose
DataFrame-only code paths are the ones at risk. The local reference is the same
materializations in this process on the local-mode session fixture. Every Delta version
must hold the same rows (``exceptAll`` empty both ways) and, after each load date, the
PostgreSQL table and sync state must be equal.

Runtime on 2 cores: ~1 min per cluster run (driver start-up included), ~1 min for the
local reference.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bi_platform.cadastral.delta import read_delta, table_version
from bi_platform.cadastral.pipeline import TABLES
from bi_platform.cadastral.sample import generate_cadastral_sources, generate_change_set
from bi_platform.runtime.clusters import ClusterState
from bi_platform.runtime.postgres import local_url, scratch_database
from bi_platform_tests.cadastral.cluster_run import REPORT_PREFIX, materialize_cadastral
from bi_platform_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.cluster

D0, D1 = date(2026, 11, 20), date(2026, 11, 21)
DATES = [D0.isoformat(), D1.isoformat()]
PERSONS = 2_000


@dataclass
class CadastralRun:
    """Where one materialization wrote (its BI_PLATFORM_HOME and database) and its report."""

    home: Path
    pg_url: str
    report: dict[str, Any]

    def table(self, name: str) -> Path:
        return self.home / "delta" / "cadastral" / name


@pytest.fixture(scope="module")
def raw_root() -> Iterator[Path]:
    """D0 (2,000 persons) and D1 (D0 plus a change set) raw exports, shared read-only."""
    root = Path(tempfile.mkdtemp(prefix="cadastral_cluster_raw_"))
    generate_cadastral_sources(root, persons=PERSONS, load_date=D0, seed=11)
    generate_change_set(root, from_date=D0, to_date=D1, seed=12)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def homes(raw_root: Path, pg_port: int) -> Iterator[Any]:
    """Makes a BI_PLATFORM_HOME (raw exports linked in) and a scratch database per run."""
    made: list[Path] = []
    with contextlib.ExitStack() as stack:

        def make(name: str) -> tuple[Path, str]:
            home = Path(tempfile.mkdtemp(prefix=f"cadastral_{name}_"))
            made.append(home)
            (home / "raw").mkdir()
            (home / "raw" / "cadastral").symlink_to(raw_root)
            url = stack.enter_context(
                scratch_database(local_url(pg_port, "postgres"), f"cluster_{name}_")
            )
            return home, url

        yield make
    for home in made:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def local_run(spark, homes) -> CadastralRun:
    """The reference: the same materializations in this process, Spark in local mode."""
    home, url = homes("local")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BI_PLATFORM_HOME", str(home))
        report = materialize_cadastral(url, DATES)
    _assert_succeeded(report)
    return CadastralRun(home, url, report)


def _cluster_run(
    homes, name: str, dates: list[str], env: dict[str, str], spark_config: dict[str, str]
) -> CadastralRun:
    """The materializations in a driver subprocess with ``env`` (the cluster's variable)."""
    home, url = homes(name)
    child_env = {
        **os.environ,
        "BI_PLATFORM_HOME": str(home),
        "SPARK_TOTAL_CORES": "2",
        "SPARK_DRIVER_MEMORY": "1g",
        **env,
    }
    args = json.dumps({"pg_url": url, "dates": dates, "spark_config": spark_config})
    done = subprocess.run(
        [sys.executable, "-m", "bi_platform_tests.cadastral.cluster_run", args],
        cwd=REPO_ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(REPORT_PREFIX)]
    assert done.returncode == 0 and lines, (
        f"cluster run exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    report = json.loads(lines[-1].removeprefix(REPORT_PREFIX))
    _assert_succeeded(report)
    return CadastralRun(home, url, report)


def _assert_succeeded(report: dict[str, Any]) -> None:
    for run in report["runs"]:
        assert run["success"], run["failures"]
        assert len(run["checks"]) == 12 and all(run["checks"].values()), run["checks"]
        assert run["checks"]["cadastral/cadastral_pg_sync:cadastral_pg_in_sync"]
        assert run["postgres"]["rows"] > 0
    modes = [r["sync"]["mode"] for r in report["runs"]]
    assert modes == ["full", "incremental"][: len(modes)]


def _assert_same_results(spark, local: CadastralRun, other: CadastralRun) -> None:
    """Every Delta version the other run wrote has the local version's rows, and after
    each load date PostgreSQL held the same rows and sync state."""
    runs = len(other.report["runs"])
    for name in TABLES:
        assert table_version(other.table(name)) == runs - 1, name
        for version in range(runs):
            mine = read_delta(spark, local.table(name), version)
            theirs = read_delta(spark, other.table(name), version)
            assert mine.schema == theirs.schema, name
            assert mine.count() == theirs.count(), (name, version)
            assert mine.exceptAll(theirs).count() == 0, (name, version)
            assert theirs.exceptAll(mine).count() == 0, (name, version)
    assert _sync_counts(other) == _sync_counts(local)[:runs]
    postgres = [r["postgres"] for r in local.report["runs"]][:runs]
    assert [r["postgres"] for r in other.report["runs"]] == postgres


def _sync_counts(run: CadastralRun) -> list[dict[str, Any]]:
    """What each sync did (not how many apply partitions it used: over Spark Connect the
    first sync keeps the source's partitions, whose number the client cannot ask)."""
    return [{k: v for k, v in r["sync"].items() if k != "partitions"} for r in run.report["runs"]]


def _spark_events(directory: Path) -> list[dict[str, Any]]:
    """Every listener event of the (uncompressed, non-rolling) Spark event logs."""
    events = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            events += [json.loads(line) for line in path.read_text().splitlines() if line]
    return events


def _writing_tasks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``Task Info`` of the successful tasks that wrote output files (bytes written > 0)."""
    return [
        e["Task Info"]
        for e in events
        if e["Event"] == "SparkListenerTaskEnd"
        and e["Task End Reason"]["Reason"] == "Success"
        and e.get("Task Metrics", {}).get("Output Metrics", {}).get("Bytes Written", 0) > 0
    ]


def test_standalone_cluster_gives_the_local_results(
    spark, homes, local_run: CadastralRun, spark_standalone: ClusterState
) -> None:
    events_dir = Path(tempfile.mkdtemp(prefix="cadastral_events_"))
    run = _cluster_run(
        homes,
        "standalone",
        DATES[:1],
        {"SPARK_MASTER": spark_standalone.address},
        {
            "spark.executor.memory": "1g",
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": events_dir.as_uri(),
            "spark.eventLog.compress": "false",
            "spark.eventLog.rolling.enabled": "false",
        },
    )
    assert run.report["master"] == spark_standalone.address
    assert run.report["session"] == "pyspark.sql.session"
    _assert_same_results(spark, local_run, run)

    # The Parquet files were written by executors of the worker, not by the driver.
    events = _spark_events(events_dir)
    (app_id,) = [e["App ID"] for e in events if e["Event"] == "SparkListenerApplicationStart"]
    executors = {
        e["Executor ID"]: e["Executor Info"]["Host"]
        for e in events
        if e["Event"] == "SparkListenerExecutorAdded"
    }
    writers = _writing_tasks(events)
    assert len(writers) >= len(TABLES)  # at least one file per table
    assert {task["Executor ID"] for task in writers} <= set(executors)
    assert "driver" not in {task["Executor ID"] for task in writers}
    assert set(executors.values()) == {"127.0.0.1"}
    # ... and those executors were JVMs the worker launched (its per-executor work dirs).
    work = Path(spark_standalone.directory) / "work" / app_id
    assert {p.name for p in work.iterdir()} >= {task["Executor ID"] for task in writers}


def test_spark_connect_gives_the_local_results(
    spark, homes, local_run: CadastralRun, spark_connect_server: ClusterState
) -> None:
    assert spark_connect_server.event_log_dir is not None
    events_dir = Path(spark_connect_server.event_log_dir)
    written_before = len(_writing_tasks(_spark_events(events_dir)))
    run = _cluster_run(homes, "connect", DATES, {"SPARK_REMOTE": spark_connect_server.address}, {})
    assert run.report["session"] == "pyspark.sql.connect.session"
    assert run.report["master"] is None
    assert run.report["java_children"] == []  # the client ran no JVM: the server did the work
    _assert_same_results(spark, local_run, run)
    # The server wrote the files (its event log is flushed as it goes).
    written = len(_writing_tasks(_spark_events(events_dir))) - written_before
    assert written >= len(TABLES) * len(DATES)
