"""``bi-platform bench engines``: the retail query battery on admmat through four paths.

Paths, all measured in the same run on the same typed Parquet file:

- ``hybrid``: the IO manager's load path (:func:`~bi_platform.io_managers.load_parquet`
  into a narwhals LazyFrame, engine chosen by size) then the query;
- ``polars``: raw ``pl.scan_parquet`` then the same query;
- ``dask``: ``dd.read_parquet`` then the same query;
- ``duckdb``: DuckDB over the file (the narwhals query compiles to DuckDB's relational
  API, i.e. SQL).

Each (path, query) pair runs in a fresh process (so its peak RSS is its own): one
warm-up, then ``repeats`` timed runs; the median is kept. Results of the four paths are
compared with the parity rules of the asset checks. Peak RSS is sampled during the runs
(absolute, so it includes the interpreter and libraries: ``baseline_rss_mb``). Prints a
table, then one JSON line.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import psutil

from bi_platform.lib.benchmarking import ratio

PATHS = ("hybrid", "polars", "dask", "duckdb")
DEFAULT_ROWS = 1_113_822
TARGETS = {
    "dask_over_hybrid": (">=", 10.0),
    "hybrid_over_duckdb": ("<=", 1.3),
    "hybrid_overhead": ("<=", 0.10),
    "hybrid_rss_over_duckdb_max": ("<=", 2.0),
}


class PeakRss:
    """Samples this process's RSS every ``interval`` s in a thread; ``peak_mb`` is the
    largest seen. (``ru_maxrss`` cannot be used: a child inherits its parent's
    high-water mark across fork and exec.)"""

    def __init__(self, interval: float = 0.002) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak_mb = self.current_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def current_mb(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_mb = max(self.peak_mb, self.current_mb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())


@dataclass(frozen=True)
class Task:
    path_kind: str
    query: str
    parquet: str
    repeats: int
    out_dir: str


def _source(path_kind: str, parquet: str) -> Any:
    import narwhals as nw
    import polars as pl

    from bi_platform.io_managers.engines import EngineConfig, load_parquet
    from bi_platform.retail.queries import scan_admmat

    if path_kind == "hybrid":
        return load_parquet(parquet, nw.LazyFrame, EngineConfig.from_settings()).frame
    if path_kind == "polars":
        return nw.from_native(pl.scan_parquet(parquet))
    return scan_admmat(parquet, path_kind)


def run_task(task: Task) -> dict[str, Any]:
    """One (path, query): warm-up + timed runs, in this (fresh) process."""
    from bi_platform.retail.parity import to_polars
    from bi_platform.retail.queries import get_query, run_query

    query = get_query(task.query)
    times = []
    result = None
    with PeakRss() as rss:
        baseline = rss.current_mb()  # interpreter + libraries, before any data
        for attempt in range(task.repeats + 1):
            start = time.perf_counter()
            result = run_query(query, _source(task.path_kind, task.parquet))
            if attempt:  # the first run warms caches
                times.append(time.perf_counter() - start)
    out = Path(task.out_dir) / f"{task.path_kind}__{task.query}.parquet"
    to_polars(result).write_parquet(out)
    return {
        "path": task.path_kind,
        "query": task.query,
        "median_s": statistics.median(times),
        "times_s": times,
        "rows": len(result),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(rss.peak_mb, 1),
        "result": str(out),
    }


def prepare_admmat(rows: int, workdir: Path, seed: int = 38) -> Path:
    """The typed admmat of ``rows`` rows (generated, cleaned, written once and cached)."""
    import narwhals as nw

    from bi_platform.io_managers.engines import write_parquet
    from bi_platform.retail.cleaning import typed_table
    from bi_platform.retail.sample import generate_admmat
    from bi_platform.retail.schema import TABLES

    path = workdir / f"admmat_{rows}_{seed}.parquet"
    if not path.exists():
        raw = nw.from_native(generate_admmat(rows, seed=seed).lazy())
        write_parquet(typed_table(raw, TABLES["admmat"]), path)
    return path


def summarize(measurements: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """The JSON line: ratios of summed medians, peak RSS, parity, targets."""
    import polars as pl

    from bi_platform.retail.parity import compare_frames
    from bi_platform.retail.queries import get_query

    by = {(m["path"], m["query"]): m for m in measurements}
    queries = sorted({m["query"] for m in measurements})
    total = {p: sum(by[p, q]["median_s"] for q in queries) for p in PATHS}
    problems = []
    for q in queries:
        for other in ("polars", "dask", "duckdb"):
            parity = compare_frames(
                pl.read_parquet(by["hybrid", q]["result"]),
                pl.read_parquet(by[other, q]["result"]),
                sort_by=get_query(q).sort_by,
                names=("hybrid", other),
                query=q,
            )
            problems += parity.problems
    rss_ratios = {
        q: by["hybrid", q]["peak_rss_mb"] / by["duckdb", q]["peak_rss_mb"] for q in queries
    }
    report = {
        "bench": "engines",
        "rows": rows,
        "queries": len(queries),
        "parity": not problems,
        "dask_over_hybrid": ratio(total["dask"], total["hybrid"]),
        "hybrid_over_duckdb": ratio(total["hybrid"], total["duckdb"]),
        "hybrid_overhead": round(ratio(total["hybrid"], total["polars"]) - 1, 3),
        "hybrid_rss_over_duckdb_max": round(max(rss_ratios.values()), 3),
        "total_median_s": {p: round(t, 4) for p, t in total.items()},
        "peak_rss_mb": {p: max(by[p, q]["peak_rss_mb"] for q in queries) for p in PATHS},
    }
    report["targets_met"] = {
        name: (report[name] >= bound if op == ">=" else report[name] <= bound)
        for name, (op, bound) in TARGETS.items()
    }
    report["parity_problems"] = problems[:5]
    return report


def run(
    rows: int = DEFAULT_ROWS,
    *,
    repeats: int = 3,
    queries: list[str] | None = None,
    workdir: Path | None = None,
    progress: Any = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure every (path, query) in a fresh process; return (measurements, summary)."""
    from bi_platform.retail.queries import CATALOG
    from bi_platform.settings import get_settings

    workdir = workdir or get_settings().home_dir / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    parquet = prepare_admmat(rows, workdir)
    names = queries or sorted(CATALOG)
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise ValueError(f"unknown queries {unknown}; see `bi-platform bench engines --help`")
    measurements = []
    with tempfile.TemporaryDirectory(prefix="bench_results_", dir=workdir) as out_dir:
        tasks = [Task(p, q, str(parquet), repeats, out_dir) for q in names for p in PATHS]
        # One process per task (max_tasks_per_child=1): each peak RSS is that task's own.
        with ProcessPoolExecutor(
            max_workers=1, mp_context=get_context("spawn"), max_tasks_per_child=1
        ) as pool:
            for measurement in pool.map(run_task, tasks):
                measurements.append(measurement)
                if progress:
                    progress(measurement)
        summary = summarize(measurements, rows)
    return measurements, summary
