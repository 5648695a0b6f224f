"""`bi-platform materialize` as `make run` calls it: every domain's named jobs in
dependency order, the partitions the sensors would request, a summary; a second call does
only what is new; a killed call's run is marked failed by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import dagster as dg

from bi_platform.etl.automation import etl_file_job
from bi_platform.news.automation import news_ingest_job
from bi_platform.orchestration.plan import STEPS, steps_for
from bi_platform.orchestration.runner import LAUNCHED_BY_TAG
from bi_platform.runtime.run_launcher import RUN_WORKER_TAG
from bi_platform_tests.conftest import VENV_BIN, Platform


def _runs(instance: dg.DagsterInstance, job: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=job)))


def test_materialize_runs_every_domain_and_summarises(platform: Platform) -> None:
    out = platform.materialize.stdout
    assert platform.materialize.returncode == 0, out[-3000:] + platform.materialize.stderr[-3000:]
    assert "== bi-platform materialize: OK" in out
    for step in STEPS:
        assert f"  {step.name}" in out
    # the deliberately malformed ETL files fail their (non-blocking) dead-letter rate
    assert "failed: etl/etl_records:dead_letter_rate [bad_" in out
    assert f"ETL report: {platform.home / 'etl' / 'report' / 'report.html'}" in out
    assert "query API:  bi-platform serve" in out and "Dagster UI: make ui" in out
    with platform.instance() as instance:
        inbox_days = sorted(p.stem for p in (platform.home / "news" / "inbox").glob("*.jsonl"))
        ingested = sorted(r.tags["dagster/partition"] for r in _runs(instance, "news_ingest_job"))
        assert ingested == inbox_days
        dates = sorted(r.tags["dagster/partition"] for r in _runs(instance, "cadastral_job"))
        assert dates == ["2026-11-20", "2026-11-21"]
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert all(r.tags.get(LAUNCHED_BY_TAG) == "bi-platform materialize" for r in runs)
        assert all(RUN_WORKER_TAG in r.tags for r in runs)
        # the lake, the warehouse, HF and PostgreSQL hold what the summary says
        for job in ("retail_tables", "serving_warehouse", "hf_news_sync_job", "etl_report_job"):
            assert len(_runs(instance, job)) == 1, job


def test_a_second_materialize_does_only_what_is_new(platform: Platform) -> None:
    with platform.instance() as instance:
        before = {job: len(_runs(instance, job)) for job in ("cadastral_job", etl_file_job.name)}
    again = platform.run("bi-platform", "materialize", "--domain", "etl", "--domain", "cadastral")
    assert "etl files        nothing to do" in again.stdout
    assert "cadastral        nothing to do" in again.stdout
    with platform.instance() as instance:
        after = {job: len(_runs(instance, job)) for job in before}
        assert after == before
        assert _runs(instance, news_ingest_job.name)  # untouched domains still there


def test_steps_for_keeps_the_dependency_order() -> None:
    names = [step.name for step in steps_for(["cadastral", "retail", "serving"])]
    assert names == ["retail tables", "warehouse", "cadastral"]


def test_a_killed_materialize_leaves_a_run_the_next_one_marks_failed(platform: Platform) -> None:
    process = subprocess.Popen(
        [str(VENV_BIN / "bi-platform"), "materialize", "--domain", "retail"],
        env=platform.env,
        cwd=platform.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with platform.instance() as instance:
            deadline = time.monotonic() + 120
            started = []
            while not started and time.monotonic() < deadline:
                started = [
                    r
                    for r in instance.get_runs(
                        filters=dg.RunsFilter(
                            job_name="retail_tables", statuses=[dg.DagsterRunStatus.STARTED]
                        )
                    )
                    if r.tags.get(RUN_WORKER_TAG, "").split(":")[1:2] == [str(process.pid)]
                ]
                time.sleep(0.2)
            assert started, "the retail run never started"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            (killed,) = started
            assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
    finally:
        if process.poll() is None:
            process.kill()
    # the next materialize (any domain) marks it failed before it starts its own runs
    platform.run("bi-platform", "materialize", "--domain", "serving")
    with platform.instance() as instance:
        run = instance.get_run_by_id(killed.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        messages = [e.message for e in instance.all_logs(killed.run_id) if e.message]
        assert any("Run worker died" in m and str(process.pid) in m for m in messages)
