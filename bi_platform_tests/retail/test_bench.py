"""`bi-platform bench engines` runs end to end (tiny size) and prints its JSON line last."""

import json
import os
import subprocess
from pathlib import Path

from bi_platform_tests.conftest import bi_platform_cli


def test_bench_engines_prints_the_json_line(tmp_path: Path) -> None:
    env = {**os.environ, "BI_PLATFORM_HOME": str(tmp_path)}
    result = subprocess.run(
        [
            bi_platform_cli(),
            "bench",
            "engines",
            "--rows",
            "3000",
            "--repeats",
            "1",
            "--queries",
            "top_products_by_une,seasonality",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["bench"] == "engines" and report["rows"] == 3000 and report["queries"] == 2
    assert report["parity"] is True, report["parity_problems"]
    for ratio in ("dask_over_hybrid", "hybrid_over_duckdb", "hybrid_overhead"):
        assert isinstance(report[ratio], float)
    assert set(report["peak_rss_mb"]) == {"hybrid", "polars", "dask", "duckdb"}
    assert all(value > 0 for value in report["peak_rss_mb"].values())
    assert "top_products_by_une" in result.stdout  # the table precedes the JSON line


def test_seed_cli_is_idempotent(tmp_path: Path) -> None:
    env = {**os.environ, "BI_PLATFORM_HOME": str(tmp_path)}
    command = [bi_platform_cli(), "seed", "--profile", "small"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "retail: 12 raw exports" in first.stdout
    admmat = tmp_path / "raw" / "retail" / "admmat.parquet"
    mtime = admmat.stat().st_mtime_ns
    subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert admmat.stat().st_mtime_ns == mtime
