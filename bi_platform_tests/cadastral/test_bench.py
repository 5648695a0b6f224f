"""`bi-platform bench cadastral` runs end to end (a few thousand persons) on the session's
PostgreSQL with its own Spark, prints its JSON line last and drops its scratch database."""

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from bi_platform.cadastral.bench import SCRATCH_PREFIX
from bi_platform.runtime.postgres import LocalPostgres, local_url
from bi_platform_tests.conftest import bi_platform_cli


def test_bench_cadastral_prints_the_json_line(tmp_path: Path, pg_cluster: LocalPostgres) -> None:
    port = pg_cluster.status().port
    assert port is not None
    admin = local_url(port, "postgres")
    env = {**os.environ, "BI_PLATFORM_HOME": str(tmp_path), "SPARK_DRIVER_MEMORY": "1g"}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [
            bi_platform_cli(),
            "bench",
            "cadastral",
            "--persons",
            "4000",
            "--database-url",
            admin,
            "--workdir",
            str(tmp_path),
            "--scale",
            "1,2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bench"] == "cadastral"
    assert report["cores"] >= 1
    changes = report["changes"]
    assert report["rows"] == 4000 + changes["inserted"] - changes["deleted"]
    for key in (
        "rows_per_s_per_core",
        "sync_speedup_vs_collect",
        "full_compare_speedup_vs_collect",
        "driver_peak_rss_mb",
        "spark_startup_s",
    ):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["diff_after_sync"] == 0
    assert report["sync_mode"] == "incremental"
    # the three syncs applied the same change set
    assert report["sync_counts"] == report["baseline_counts"]
    assert report["sync_counts"]["inserted"] > 0 and report["sync_counts"]["deleted"] > 0
    assert set(report["targets_met"]) == {
        "rows_per_s_per_core",
        "rows_per_s_per_core_stretch",
        "sync_speedup_vs_collect",
        "diff_after_sync",
        "scale_rate_ratio",
        "incremental_not_slower",
    }
    # every sync variant ran three times (alternating order); the medians are reported
    assert {k: len(v) for k, v in report["sync_runs_s"].items()} == {
        "incremental": 3,
        "full": 3,
        "collect": 3,
    }
    # three warm pipeline runs; the rate is the median one's
    runs = report["pipeline_runs_s"]
    assert len(runs) == 3 and report["pipeline_s"] == sorted(runs)[1]
    per_core = report["rows"] / report["cores"]
    assert report["rows_per_s_per_core"] == pytest.approx(per_core / sorted(runs)[1], rel=1e-3)
    first_warm = report["rows_per_s_per_core_first_warm_run"]
    assert first_warm == pytest.approx(per_core / runs[0], rel=1e-3)
    # per-scale rates and peak memory
    assert set(report["scale_rows_per_s_per_core"]) == {"1", "2"}
    assert all(v > 0 for v in report["scale_rows_per_s_per_core"].values())
    assert set(report["scale_driver_peak_rss_mb"]) == {"1", "2"}
    anon, rss = report["scale_driver_peak_anon_mb"], report["scale_driver_peak_rss_mb"]
    assert set(anon) == {"1", "2"} and all(0 < anon[k] <= rss[k] for k in anon)
    jvm = report["scale_driver_jvm_peak_rss_mb"]  # the local JVM, without this process
    assert set(jvm) == {"1", "2"} and all(0 < jvm[k] < rss[k] for k in jvm)
    assert set(report["scale_python_workers_peak_rss_mb"]) == {"1", "2"}
    # Spark's own stage metrics of the warm pipeline, per stage
    metrics = report["pipeline_stage_metrics"]
    assert set(metrics) == {
        "coletapedt001",
        "coletapedt002",
        "coletapedt003",
        "coletapedt205",
        "cadastro_consolidado",
    }
    assert all(m["stages"] >= 1 for m in metrics.values())
    assert metrics["coletapedt003"]["shuffle_bytes"] > 0  # its one by-key shuffle
    assert report["stages"] == sum(m["stages"] for m in metrics.values())
    assert report["shuffle_bytes"] == sum(m["shuffle_bytes"] for m in metrics.values())
    assert report["sync_stage_metrics"]["incremental"]["stages"] >= 1
    with psycopg.connect(admin) as conn:
        leftovers = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX + "%",)
        ).fetchall()
    assert leftovers == []


def test_peak_rss_counts_pyspark_python_workers_apart_from_the_driver() -> None:
    """A child process whose command line is a PySpark worker's holds 200 MB: it shows in
    ``peak_workers_mb``, not in the driver's figures."""
    import sys
    import time

    from bi_platform.cadastral.bench import PYTHON_WORKER, PeakRss

    with PeakRss() as before:
        time.sleep(0.3)
    hold = (
        "import sys, time; x = b'\\x01' * (200 * 2**20); print('ready', flush=True); time.sleep(30)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", hold, PYTHON_WORKER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        with PeakRss() as rss:
            time.sleep(0.5)
    finally:
        child.kill()
        child.wait()
    assert rss.peak_workers_mb >= 200
    assert rss.peak_mb < before.peak_mb + 100  # the driver's figure leaves it out
    assert 0 < rss.peak_anon_mb <= rss.peak_mb


def test_peak_rss_samples_past_a_zombie_child() -> None:
    """The local JVM runs a shell it never reaps: a zombie child (whose command line psutil
    refuses) is left out of the sample instead of discarding the whole sample."""
    import sys
    import time

    import psutil

    from bi_platform.cadastral.bench import PeakRss

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        with PeakRss() as rss:
            time.sleep(0.3)
        assert psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE  # still unreaped
    finally:
        zombie.wait()
    own_mb = psutil.Process().memory_info().rss / 2**20
    assert rss.peak_mb >= own_mb / 2 and rss.peak_python_mb > 0
    assert 0 < rss.peak_anon_mb <= rss.peak_mb
