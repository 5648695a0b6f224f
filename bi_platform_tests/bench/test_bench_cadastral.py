"""`bi-platform bench cadastral` runs end to end (a few thousand persons) on the session's
PostgreSQL with its own Spark, prints its JSON line last and drops its scratch database."""

import json
import os
import subprocess
from pathlib import Path

import psycopg

from bi_platform.bench.cadastral import SCRATCH_PREFIX
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
        "sync_speedup_vs_collect",
        "diff_after_sync",
    }
    with psycopg.connect(admin) as conn:
        leftovers = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (SCRATCH_PREFIX + "%",)
        ).fetchall()
    assert leftovers == []
