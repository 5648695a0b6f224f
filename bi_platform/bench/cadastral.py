"""``bi-platform bench cadastral``: the Spark pipeline and the PostgreSQL sync.

Everything is measured in the same run, on the same generated data, in a scratch
directory and a scratch database (``bench_cadastral_<random>``, dropped at the end):

- ``spark_startup``: starting the session (reported apart, excluded from throughput);
- ``pipeline_first``: the five stages (raw snapshot -> Delta, each stage reading its
  inputs back through the Delta log) on load date D0, the session's first job (JIT cold);
- ``pipeline``: the same on D1 = D0 plus a change set (1% updates, 0.5% inserts, 0.5%
  deletes): ``rows_per_s_per_core`` = persons / seconds / cores of this warm run;
- ``initial_sync``: D0's ``cadastro_consolidado`` into an empty PostgreSQL table
  (untimed in the ratio), then copied server-side into two more tables, so three
  tables start from the same state;
- ``sync``: D1 synced into table A by :func:`~bi_platform.cadastral.pg_sync.sync_to_postgres`
  (incremental: the Delta-version diff, no PostgreSQL read);
- ``sync_full_compare``: D1 into table C with ``full_compare`` (parallel JDBC read of
  PostgreSQL's keys and hashes + full outer join);
- ``baseline``: D1 into table B by the plan's old CompareData
  (:func:`~bi_platform.cadastral.compare_baseline.collect_compare_sync`: ``collect()`` to
  the driver, Python compare, apply from the driver);
- ``verify``: :func:`~bi_platform.cadastral.pg_sync.verify_in_sync` on all three tables
  (hashes recomputed by PostgreSQL from the columns): ``diff_after_sync`` is the sum of
  their differences.

The driver's peak RSS is sampled (this Python process plus the local JVM) during the
pipeline and the optimized sync, and apart during the baseline.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bi_platform.bench.news import admin_url
from bi_platform.runtime.postgres import scratch_database

DEFAULT_PERSONS = 1_000_000
SCRATCH_PREFIX = "bench_cadastral_"
D0, D1 = date(2026, 11, 20), date(2026, 11, 21)
TARGETS = {
    "rows_per_s_per_core": (">=", 40_000),
    "sync_speedup_vs_collect": (">=", 10.0),
    "diff_after_sync": ("==", 0),
}


class BenchError(RuntimeError):
    """The benchmark cannot run (no PostgreSQL, no Java, ...)."""


class PeakRss:
    """Samples the RSS of this process and its children (the local JVM) every 50 ms."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.peak_mb = 0.0
        self.peak_python_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                python = self._proc.memory_info().rss
                children = sum(c.memory_info().rss for c in self._proc.children(recursive=True))
            except psutil.Error:
                continue
            self.peak_python_mb = max(self.peak_python_mb, python / 2**20)
            self.peak_mb = max(self.peak_mb, (python + children) / 2**20)

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextmanager
def _timed(stages: dict[str, dict[str, Any]], name: str, rows: int) -> Iterator[dict[str, Any]]:
    stage: dict[str, Any] = {"rows": rows}
    started = time.perf_counter()
    yield stage
    stage["seconds"] = time.perf_counter() - started
    stage["rows_per_s"] = rows / stage["seconds"] if stage["seconds"] else 0.0
    stages[name] = stage


def _copy_table(url: str, source: str, target: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE cadastral.{target} (LIKE cadastral.{source} INCLUDING ALL)")
        conn.execute(f"INSERT INTO cadastral.{target} SELECT * FROM cadastral.{source}")
        conn.execute(f"ANALYZE cadastral.{target}")


def _targets_met(summary: dict[str, Any]) -> dict[str, bool]:
    met = {}
    for name, (op, bound) in TARGETS.items():
        value = summary[name]
        met[name] = value >= bound if op == ">=" else value == bound
    return met


def run(
    persons: int = DEFAULT_PERSONS,
    *,
    database_url: str | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run the benchmark; returns (stages, summary) — the summary is the JSON line."""
    from bi_platform.cadastral.compare_baseline import collect_compare_sync
    from bi_platform.cadastral.delta import read_delta
    from bi_platform.cadastral.pg_sync import sync_to_postgres, verify_in_sync
    from bi_platform.cadastral.pipeline import KEY, run_pipeline, table_uri
    from bi_platform.cadastral.spark_session import start_spark, total_cores
    from bi_platform.sample_data.cadastral import generate_cadastral_sources, generate_change_set
    from bi_platform.settings import get_settings

    settings = get_settings()
    admin = admin_url(database_url)
    stages: dict[str, dict[str, Any]] = {}
    cores = total_cores(settings)
    with (
        tempfile.TemporaryDirectory(prefix="bench_cadastral_", dir=workdir) as tmp,
        scratch_database(admin, SCRATCH_PREFIX) as url,
    ):
        raw_root, delta_root = Path(tmp) / "raw", Path(tmp) / "delta"
        progress(f"generating {persons:,} persons (D0) and a change set (D1)")
        with _timed(stages, "generate", persons):
            generate_cadastral_sources(raw_root, persons=persons, load_date=D0)
            change = generate_change_set(
                raw_root,
                from_date=D0,
                to_date=D1,
                update_rate=0.01,
                insert_rate=0.005,
                delete_rate=0.005,
            )
        progress("starting Spark")
        with _timed(stages, "spark_startup", 0):
            spark = start_spark(settings, extra={"spark.local.dir": str(Path(tmp) / "spark")})
        uri = table_uri(delta_root, "cadastro_consolidado")
        try:
            with PeakRss() as optimized_rss:
                progress("pipeline on D0 (first job of the session)")
                with _timed(stages, "pipeline_first", persons):
                    first = run_pipeline(spark, raw_root, delta_root, load_date=D0)
                v0 = first.commits["cadastro_consolidado"].version
                progress("initial sync of D0 into PostgreSQL")
                d0_rows = first.commits["cadastro_consolidado"].rows
                with _timed(stages, "initial_sync", d0_rows):
                    sync_to_postgres(
                        spark,
                        read_delta(spark, uri, v0),
                        url,
                        table="cad_a",
                        key=KEY,
                        delta_uri=uri,
                        delta_version=v0,
                    )
                for copy in ("cad_b", "cad_c"):
                    _copy_table(url, "cad_a", copy)
                progress("pipeline on D1 (warm)")
                d1_persons = persons + change.inserted - change.deleted
                with _timed(stages, "pipeline", d1_persons) as stage:
                    second = run_pipeline(spark, raw_root, delta_root, load_date=D1)
                stage["per_stage_seconds"] = {k: round(v, 3) for k, v in second.seconds.items()}
                v1 = second.commits["cadastro_consolidado"].version
                rows = second.commits["cadastro_consolidado"].rows
                progress("incremental sync of D1 (Delta-version diff)")
                with _timed(stages, "sync", rows) as stage:
                    result = sync_to_postgres(
                        spark,
                        read_delta(spark, uri, v1),
                        url,
                        table="cad_a",
                        key=KEY,
                        delta_uri=uri,
                        delta_version=v1,
                    )
                stage.update(
                    mode=result.mode,
                    inserted=result.inserted,
                    updated=result.updated,
                    deleted=result.deleted,
                )
            progress("full-compare sync of D1 (JDBC read of PostgreSQL)")
            with _timed(stages, "sync_full_compare", rows) as stage:
                full = sync_to_postgres(
                    spark,
                    read_delta(spark, uri, v1),
                    url,
                    table="cad_c",
                    key=KEY,
                    delta_uri=uri,
                    delta_version=v1,
                    full_compare=True,
                )
            stage.update(
                mode=full.mode, inserted=full.inserted, updated=full.updated, deleted=full.deleted
            )
            progress("baseline: collect() to the driver, compare in Python")
            with PeakRss() as baseline_rss, _timed(stages, "baseline", rows) as stage:
                base = collect_compare_sync(
                    spark, read_delta(spark, uri, v1), url, table="cad_b", key=KEY
                )
            stage.update(inserted=base.inserted, updated=base.updated, deleted=base.deleted)
            progress("verifying the three tables against Delta (hashes recomputed in PG)")
            diffs = {}
            with _timed(stages, "verify", rows) as stage:
                for table in ("cad_a", "cad_b", "cad_c"):
                    check = verify_in_sync(
                        spark, read_delta(spark, uri, v1), url, table=table, key=KEY
                    )
                    diffs[table] = (
                        check.hash_differences
                        + abs(check.pg_count - check.source_count)
                        + check.mismatched_buckets
                    )
            stage["differences"] = diffs
        finally:
            spark.stop()
    sync_s = stages["sync"]["seconds"]
    summary: dict[str, Any] = {
        "bench": "cadastral",
        "rows": d1_persons,
        "cores": cores,
        "rows_per_s_per_core": round(d1_persons / stages["pipeline"]["seconds"] / cores, 1),
        "rows_per_s_per_core_first_run": round(
            persons / stages["pipeline_first"]["seconds"] / cores, 1
        ),
        "pipeline_s": round(stages["pipeline"]["seconds"], 3),
        "pipeline_first_s": round(stages["pipeline_first"]["seconds"], 3),
        "pipeline_stage_s": stages["pipeline"]["per_stage_seconds"],
        "spark_startup_s": round(stages["spark_startup"]["seconds"], 3),
        "changes": {
            "updated": change.updated,
            "inserted": change.inserted,
            "deleted": change.deleted,
        },
        "sync_mode": stages["sync"]["mode"],
        "sync_s": round(sync_s, 3),
        "sync_full_compare_s": round(stages["sync_full_compare"]["seconds"], 3),
        "baseline_collect_s": round(stages["baseline"]["seconds"], 3),
        "initial_sync_s": round(stages["initial_sync"]["seconds"], 3),
        "verify_s": round(stages["verify"]["seconds"] / 3, 3),
        "sync_speedup_vs_collect": round(stages["baseline"]["seconds"] / sync_s, 2),
        "full_compare_speedup_vs_collect": round(
            stages["baseline"]["seconds"] / stages["sync_full_compare"]["seconds"], 2
        ),
        "sync_counts": {k: stages["sync"][k] for k in ("inserted", "updated", "deleted")},
        "baseline_counts": {k: stages["baseline"][k] for k in ("inserted", "updated", "deleted")},
        "diff_after_sync": sum(diffs.values()),
        "driver_peak_rss_mb": round(optimized_rss.peak_mb, 1),
        "driver_python_peak_rss_mb": round(optimized_rss.peak_python_mb, 1),
        "baseline_driver_peak_rss_mb": round(baseline_rss.peak_mb, 1),
        "baseline_driver_python_peak_rss_mb": round(baseline_rss.peak_python_mb, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    summary["targets_met"] = _targets_met(summary)
    return stages, summary
