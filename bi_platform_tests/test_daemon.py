"""The platform under a real ``dagster-daemon`` (PostgreSQL-backed instance, the checkout's
workspace.yaml), sensors turned on from the CLI as users do, observed with bounded waits:

- a dropped ETL file becomes a successful run and the report refreshes;
- a new news inbox day (after a gap of missing days) is ingested and ``hf_news_sync``
  follows by declarative automation, so PostgreSQL and the HF dataset hold the same rows;
- a new cadastral load date is processed as its own run, the older dates left alone;
- a retail export that breaks a blocking check stops the warehouse's automation, and a
  fixed export lets it follow again;
- a run whose process is killed is marked failed by run monitoring.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TypeVar

import dagster as dg
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bi_platform.cadastral.sample import generate_change_set
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.sample import write_inbox
from bi_platform.runtime.run_launcher import RUN_WORKER_TAG
from bi_platform.serving.assets import bi_warehouse
from bi_platform.serving.warehouse import read_data_version
from bi_platform_tests.conftest import REPO_ROOT, VENV_BIN, Platform

pytestmark = pytest.mark.daemon

T = TypeVar("T")
S = dg.DagsterRunStatus
NEWS_DAY = "2026-11-10"  # the small profile's inbox ends on 11-03: six days are missing
NEW_LOAD_DATE = date(2026, 11, 22)
LATE_FILE = "late_export.csv"
WORKSPACE = str(REPO_ROOT / "workspace.yaml")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 240) -> T:
    """``probe()`` until it returns something truthy; fails naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _runs(instance: dg.DagsterInstance, **filters) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(**filters)))


def _finished(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun | None:
    latest = instance.get_run_by_id(run.run_id)
    return latest if latest is not None and latest.is_finished else None


def _run_of(instance: dg.DagsterInstance, job: str, partition: str | None = None, after=0.0):
    """The first run of ``job`` (for ``partition``) created after ``after``, if any."""
    tags = {"dagster/partition": partition} if partition else None
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, tags=tags), order_by="create_timestamp", ascending=True
    )
    for record in records:
        if record.create_timestamp.timestamp() > after:
            return record.dagster_run
    return None


def _wait_success(platform: Platform, what: str, find: Callable, timeout: float = 240):
    """Wait for the run ``find(instance)`` returns to exist and finish; assert SUCCESS."""
    with platform.instance() as instance:
        run = wait_for(what, lambda: find(instance), timeout)
        done = wait_for(f"{what} to finish", lambda: _finished(instance, run), timeout)
        assert done.status == S.SUCCESS, f"{what}: run {run.run_id} ended {done.status}"
        return done


def _existing_news(home: Path) -> pa.Table:
    shards = sorted((home / "raw" / "news" / "initial" / "data").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in shards])


@pytest.fixture(scope="module")
def daemon(platform: Platform) -> Iterator[subprocess.Popen]:
    """New inputs for each domain, then `dagster-daemon run` and the sensors turned on
    (one by name with -m, the rest with --start-all on the workspace): their first ticks
    see the new inputs."""
    assert platform.materialize.returncode == 0, platform.materialize.stdout[-2000:]
    home = platform.home
    shutil.copy(home / "etl" / "inbox" / "export_0001.csv", home / "etl" / "inbox" / LATE_FILE)
    write_inbox(
        home / "news" / "inbox", date.fromisoformat(NEWS_DAY), existing=_existing_news(home)
    )
    generate_change_set(
        home / "raw" / "cadastral",
        from_date=date(2026, 11, 21),
        to_date=NEW_LOAD_DATE,
        seed=77,
    )
    log = (home / "daemon.log").open("w")
    process = subprocess.Popen(
        ["env", "--default-signal=INT,TERM", str(VENV_BIN / "dagster-daemon"), "run",
         "-w", WORKSPACE],
        env=platform.env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        started = platform.run(
            "dagster", "sensor", "start", "-m", "bi_platform.definitions", "etl_inbox_sensor"
        )
        assert "Started sensor etl_inbox_sensor" in started.stdout + started.stderr
        platform.run("dagster", "sensor", "start", "-w", WORKSPACE, "--start-all")
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()


def test_sensors_started_from_the_cli_are_the_ones_the_daemon_ticks(
    platform: Platform, daemon: subprocess.Popen
) -> None:
    with platform.instance() as instance:

        def ticked() -> list:
            states = instance.all_instigator_state()
            names = {s.instigator_name: s for s in states if s.status.value == "RUNNING"}
            state = names.get("etl_inbox_sensor")
            return state and instance.get_ticks(state.instigator_origin_id, state.selector_id)

        ticks = wait_for("a tick of etl_inbox_sensor", ticked, timeout=120)
        assert ticks[0].status.value in ("SUCCESS", "SKIPPED")


def test_a_dropped_etl_file_runs_and_the_report_refreshes(
    platform: Platform, daemon: subprocess.Popen
) -> None:
    def file_run(instance):
        runs = _runs(instance, job_name="etl_file_job")
        return next(
            (r for r in runs if r.tags.get("dagster/partition", "").startswith(f"{LATE_FILE}@")),
            None,
        )

    file = _wait_success(platform, "the etl_file_job run of the dropped file", file_run)
    with platform.instance() as instance:
        created = instance.get_run_record_by_id(file.run_id).create_timestamp.timestamp()
    _wait_success(
        platform,
        "the report refresh after it",
        lambda instance: _run_of(instance, "etl_report_job", after=created),
    )
    report = (platform.home / "etl" / "report" / "report.json").read_text()
    assert file.tags["dagster/partition"] in report


def test_a_new_news_day_is_ingested_and_the_sync_follows(
    platform: Platform, daemon: subprocess.Popen
) -> None:
    ingest = _wait_success(
        platform,
        f"the ingest of {NEWS_DAY}",
        lambda instance: _run_of(instance, "news_ingest_job", NEWS_DAY),
    )
    with platform.instance() as instance:
        after = instance.get_run_record_by_id(ingest.run_id).create_timestamp.timestamp()

    def sync_run(instance):
        for record in instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/sensor_name": "platform_automation"})
        ):
            run = record.dagster_run
            keys = run.asset_selection or set()
            if dg.AssetKey(["news", "hf_news_sync"]) in keys and (
                record.create_timestamp.timestamp() > after
            ):
                return run
        return None

    _wait_success(platform, "hf_news_sync launched by the automation", sync_run, timeout=300)
    with psycopg.connect(platform.env["DATABASE_URL"]) as conn:
        pg_count = conn.execute("SELECT count(*) FROM news").fetchone()[0]
    assert LocalDatasetRepo(platform.home / "hf" / "govbrnews").row_count() == pg_count


def test_a_new_load_date_is_processed_as_its_own_run(
    platform: Platform, daemon: subprocess.Popen
) -> None:
    run = _wait_success(
        platform,
        f"the cadastral_job run of {NEW_LOAD_DATE}",
        lambda instance: _run_of(instance, "cadastral_job", NEW_LOAD_DATE.isoformat()),
        timeout=300,
    )
    assert run.tags["dagster/sensor_name"] == "cadastral_new_load_sensor"
    with platform.instance() as instance:
        by_sensor = _runs(instance, tags={"dagster/sensor_name": "cadastral_new_load_sensor"})
        assert [r.tags["dagster/partition"] for r in by_sensor] == [NEW_LOAD_DATE.isoformat()]
        synced = instance.get_latest_materialization_event(
            dg.AssetKey(["cadastral", "cadastral_pg_sync"])
        )
        assert synced.asset_materialization.partition == NEW_LOAD_DATE.isoformat()


def _launch_retail(platform: Platform) -> float:
    """`dagster job launch` of retail_tables: queued, then run by the daemon."""
    launched = time.time()
    platform.run("dagster", "job", "launch", "-m", "bi_platform.definitions", "-j", "retail_tables")
    return launched


def _warehouse_runs(instance: dg.DagsterInstance, after: float) -> list[dg.DagsterRun]:
    return [
        record.dagster_run
        for record in instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/sensor_name": "platform_automation"})
        )
        if bi_warehouse.key in (record.dagster_run.asset_selection or set())
        and record.create_timestamp.timestamp() > after
    ]


def _gate_evaluation(instance: dg.DagsterInstance, after: float):
    """The latest automation evaluation of bi_warehouse after ``after``: its
    ``all_deps_blocking_checks_passed`` node, if evaluated on a candidate."""
    records = instance.schedule_storage.get_auto_materialize_asset_evaluations(
        key=bi_warehouse.key, limit=5
    )
    for record in records:
        if record.timestamp <= after:
            continue
        stack = [record.get_evaluation_with_run_ids().evaluation]
        while stack:
            node = stack.pop()
            label = node.condition_snapshot.label
            if label == "all_deps_blocking_checks_passed" and node.candidate_subset.size:
                return node
            stack.extend(node.child_evaluations)
    return None


def test_a_broken_gate_stops_the_warehouse_automation_until_fixed(
    platform: Platform, daemon: subprocess.Popen
) -> None:
    raw = platform.home / "raw" / "retail" / "admmat.parquet"
    good = raw.read_bytes()
    frame = pl.read_parquet(raw)
    pl.concat([frame, frame.head(3)]).write_parquet(raw)  # duplicated keys: key_unique fails
    try:
        launched = _launch_retail(platform)
        with platform.instance() as instance:
            run = wait_for(
                "the retail run", lambda: _run_of(instance, "retail_tables", after=launched)
            )
            failed = wait_for("the retail run to end", lambda: _finished(instance, run))
            assert failed.status == S.FAILURE
            ended = time.time()
            gate = wait_for(
                "an automation evaluation that stops at the gate",
                lambda: _gate_evaluation(instance, ended),
                timeout=150,
            )
            assert gate.true_subset.size == 0  # visible in the UI's automation history
            assert _warehouse_runs(instance, launched) == []
    finally:
        raw.write_bytes(good)
    # fixed export: the retail run passes its gates and the warehouse follows
    before = read_data_version(platform.home / "warehouse" / "bi_warehouse.duckdb")
    launched = _launch_retail(platform)
    _wait_success(
        platform,
        "the fixed retail run",
        lambda instance: _run_of(instance, "retail_tables", after=launched),
    )
    warehouse = _wait_success(
        platform,
        "the warehouse rebuilt by the automation",
        lambda instance: next(iter(_warehouse_runs(instance, launched)), None),
        timeout=180,
    )
    after = read_data_version(platform.home / "warehouse" / "bi_warehouse.duckdb")
    assert after == warehouse.run_id != before


def test_a_killed_run_is_marked_failed_by_run_monitoring(
    platform: Platform, daemon: subprocess.Popen
) -> None:
    process = subprocess.Popen(
        [str(VENV_BIN / "bi-platform"), "materialize", "--domain", "retail"],
        env=platform.env,
        cwd=platform.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with platform.instance() as instance:

            def started() -> dg.DagsterRun | None:
                runs = _runs(instance, job_name="retail_tables", statuses=[S.STARTED])
                mine = [
                    r
                    for r in runs
                    if r.tags.get(RUN_WORKER_TAG, "").split(":")[1:2] == [str(process.pid)]
                ]
                return mine[0] if mine else None

            run = wait_for("the retail run to start", started, timeout=120)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            killed_at = time.monotonic()
            done = wait_for(
                "run monitoring to mark the killed run failed",
                lambda: _finished(instance, run),
                timeout=150,
            )
            assert done.status == S.FAILURE
            assert time.monotonic() - killed_at < 120
            messages = [e.message for e in instance.all_logs(run.run_id) if e.message]
            assert any(f"pid {process.pid} on" in m and "is gone" in m for m in messages), messages
    finally:
        if process.poll() is None:
            process.kill()
