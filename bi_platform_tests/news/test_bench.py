"""`bi-platform bench news` runs end to end (tiny size) on the session's PostgreSQL, prints
its JSON line last and drops its scratch databases."""

import json
import os
import subprocess
from pathlib import Path

from bi_platform.news.bench import SCRATCH_PREFIX, scratch_databases
from bi_platform.runtime.postgres import LocalPostgres, local_url
from bi_platform_tests.conftest import bi_platform_cli


def test_bench_news_prints_the_json_line(tmp_path: Path, pg_cluster: LocalPostgres) -> None:
    port = pg_cluster.status().port
    assert port is not None
    admin = local_url(port, "postgres")
    env = {**os.environ, "BI_PLATFORM_HOME": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [
            bi_platform_cli(),
            "bench",
            "news",
            "--rows",
            "2000",
            "--baseline-rows",
            "1000",
            "--rounds",
            "2",
            "--database-url",
            admin,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bench"] == "news" and report["rows"] == 2000
    assert report["baseline_rows"] == 1000
    # two alternating rounds of floor and migration; the medians are the reported rates
    assert report["rounds"] == 2
    assert len(report["copy_runs_s"]) == len(report["migration_runs_s"]) == 2
    assert all(x > 0 for x in report["copy_runs_s"] + report["migration_runs_s"])
    for key in (
        "copy_rows_per_s",
        "migration_rows_per_s",
        "baseline_rows_per_s",
        "fraction_of_raw_copy",
        "speedup_vs_batch_insert",
        "sync_fraction_of_full",
        "sync_peak_rss_mb",
    ):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["pg_count"] == report["hf_count"] == 2000
    assert report["sync_edited_rows"] == 20
    assert set(report["targets_met"]) == {
        "fraction_of_raw_copy",
        "speedup_vs_batch_insert",
        "sync_fraction_of_full",
        "sync_peak_rss_mb",
        "pg_count_equals_hf_count",
    }
    assert all(isinstance(v, bool) for v in report["targets_met"].values())
    assert report["targets_met"]["pg_count_equals_hf_count"] is True
    assert "migration" in result.stdout  # the table precedes the JSON line
    assert scratch_databases(admin) == [], f"{SCRATCH_PREFIX}* databases left behind"


def test_bench_news_without_a_server_says_to_start_one(tmp_path: Path) -> None:
    env = {**os.environ, "BI_PLATFORM_HOME": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [bi_platform_cli(), "bench", "news", "--rows", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "bi-platform up" in result.stderr
