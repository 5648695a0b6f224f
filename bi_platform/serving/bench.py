"""``bi-platform bench serving``: the query API under 30 concurrent connections, with a
warm cache and with the cache off.

The API runs as a deployment does (:func:`bi_platform.serving.server.serve` in a child
process on 127.0.0.1, ``workers`` uvicorn workers): API keys required (``KEYS`` keys in a
scratch key file, requests spread over them), the rate limiter on but raised to
:data:`RATE_LIMIT` so the test measures the service, Prometheus metrics (multiprocess),
and the cache (in-process, or Redis with ``redis_url``).

The warehouse: ``warehouse`` when given; else, for the ``default`` profile, the one
``make run`` builds (``settings.warehouse_path``) when it exists; else one built in the
scratch directory from a seeded retail lake of ``profile`` (sample exports, the retail
assets materialized in a child process with its own ``BI_PLATFORM_HOME``, then
:func:`~bi_platform.serving.warehouse.build_warehouse`). The summary says which.

The load generator is ``wrk`` (``make system-deps``): one locust process tops out near
1,700 req/s on these machines, wrk does not. A Lua script cycles through the BI query
mix (every catalog query, with several segments / UNEs / classes each, the default
parameters weighted higher) and the API keys; a small share of requests
(:data:`TAIL_FRACTION`) draws a random ``limite`` -- the long tail a real cache misses.
``done()`` prints the latency percentiles and request/error counts as one JSON line.

Two runs over the same mix: ``cached`` (warm-up passes until one hits at least
:data:`WARM_HIT_RATE` of its requests, for at most ``max_warmup_s``; then the timed run;
the hit rate is the difference of ``bi_serving_cache_hits_total`` / ``_misses_total``
on ``/metrics`` before and after) and ``uncached`` (the server restarted with
``cache=False``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bi_platform.lib.benchmarking import BenchError, met

logger = logging.getLogger(__name__)

KEYS = 30
RATE_LIMIT = "1000000/minute"
WRK_THREADS = 2
WARMUP_S = 5.0
#: Warm-up passes repeat until one hits at least this rate, for at most MAX_WARMUP_S.
WARM_HIT_RATE = 0.95
MAX_WARMUP_S = 120.0
TAIL_FRACTION = 0.01
#: UNEs (stores) and segments each parameterised query is asked about.
UNES_PER_QUERY = 6
SEGMENTS_PER_QUERY = 8
DEFAULT_WEIGHT = 3
READY_TIMEOUT_S = 60.0
TARGETS = {
    "p95_ms_cached": ("<=", 25.0),
    "rps_cached": (">=", 2000.0),
    "p95_ms_uncached": ("<=", 300.0),
    "rps_uncached": (">=", 150.0),
    "hit_rate": (">=", 0.8),
    "errors": ("<=", 0),
}
RESULT_TAG = "BENCH_SERVING_RESULT"
_SERVE_ENV = "BI_BENCH_SERVING_CHILD"
_METRIC_RE = re.compile(r"^(bi_serving_cache_(?:hits|misses)_total)(?:\{[^}]*\})?\s+(\S+)$")


# --------------------------------------------------------------------------------------
# The warehouse
# --------------------------------------------------------------------------------------
def _build_child(home: str, profile: str, target: str, version: str) -> None:
    """In a child process with ``BI_PLATFORM_HOME=home``: seed the retail exports of
    ``profile``, materialize the retail tables (their checks publish them), build the
    warehouse at ``target``."""
    import dagster as dg

    from bi_platform.retail.assets import mart_assets, raw_exports, typed_tables
    from bi_platform.retail.checks import retail_checks
    from bi_platform.retail.definitions import defs as retail_defs
    from bi_platform.retail.sample import write_retail_exports
    from bi_platform.serving.warehouse import build_warehouse

    root = Path(home)
    write_retail_exports(root / "raw" / "retail", profile)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*raw_exports, *typed_tables, *mart_assets, *retail_checks],
            resources=retail_defs.resources,
            instance=instance,
        )
    if not result.success:
        raise RuntimeError("retail materialization failed")
    build_warehouse(root / "lake", Path(target), version)


def build_scratch_warehouse(root: Path, profile: str) -> Path:
    """A warehouse of ``profile`` under ``root`` (lake and Dagster state there too)."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    target = root / "bi_warehouse.duckdb"
    version = f"bench-{profile}-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BI_PLATFORM_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    (home / "dagster").mkdir(exist_ok=True)
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING, stream=sys.stderr); "
        "from bi_platform.serving.bench import _build_child; "
        f"_build_child({str(home)!r}, {profile!r}, {str(target)!r}, {version!r})"
    )
    log = root / "build.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0 or not target.exists():
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"building the {profile} warehouse failed:\n{tail}")
    shutil.rmtree(home / "lake", ignore_errors=True)
    shutil.rmtree(home / "raw", ignore_errors=True)
    return target


def _warehouse_facts(path: Path) -> tuple[str, list[int], int]:
    """(data_version, the busiest UNEs, admmat rows) of the warehouse at ``path``."""
    from bi_platform.serving.warehouse import open_read_only, read_meta

    con = open_read_only(path, threads=1)
    try:
        version, _ = read_meta(con)
        unes = [
            int(row[0])
            for row in con.execute(
                'SELECT "UNE" FROM admmat GROUP BY 1 ORDER BY sum("VENDA_30DD") DESC, 1 '
                f"LIMIT {UNES_PER_QUERY}"
            ).fetchall()
        ]
        (rows,) = con.execute("SELECT count(*) FROM admmat").fetchone()
    finally:
        con.close()
    return version, unes, int(rows)


# --------------------------------------------------------------------------------------
# The query mix
# --------------------------------------------------------------------------------------
def _path(name: str, params: dict[str, Any]) -> str:
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    return f"/api/v1/queries/{name}" + (f"?{query}" if query else "")


def query_mix(unes: list[int], seed: int = 7) -> list[str]:
    """Request paths of the BI mix: every catalog query with its defaults (weighted
    :data:`DEFAULT_WEIGHT`) and with several segments / UNEs / classes, shuffled."""
    from bi_platform.serving.queries import catalog

    rng = random.Random(seed)
    paths: list[str] = []
    for query in catalog():
        name = query["name"]
        paths.extend([_path(name, {})] * DEFAULT_WEIGHT)
        for param in query["params"]:
            pname = param["name"]
            if param["choices"]:
                choices = [c for c in param["choices"] if c != param["default"]]
                for value in choices[:SEGMENTS_PER_QUERY]:
                    paths.append(_path(name, {pname: value}))
            elif pname in ("une", "une_a"):
                for une in unes:
                    paths.append(_path(name, {pname: une}))
            elif pname == "une_b":
                for une_a, une_b in itertools.pairwise(unes):
                    paths.append(_path(name, {"une_a": une_a, "une_b": une_b}))
    rng.shuffle(paths)
    return paths


def _tail_templates() -> list[tuple[str, list[str]]]:
    """(path prefix ending in ``limite=``, [``&segmento=..`` suffixes]) of the queries
    with a ``limite`` and a ``segmento``: the tail draws a random limit for them."""
    from bi_platform.serving.queries import catalog

    templates = []
    for query in catalog():
        names = {p["name"]: p for p in query["params"]}
        if "limite" in names and "segmento" in names:
            suffixes = [
                "&segmento=" + urllib.parse.quote(str(v), safe="")
                for v in names["segmento"]["choices"]
            ]
            templates.append((f"/api/v1/queries/{query['name']}?limite=", suffixes))
    return templates


def _lua_str(value: str) -> str:
    return json.dumps(value)  # ASCII-only (quoted URLs, key secrets): valid Lua too


def wrk_script(paths: list[str], secrets: list[str], tail_fraction: float) -> str:
    """The wrk Lua script: cycle through ``paths`` and ``secrets`` (each thread from its
    own offset), a ``tail_fraction`` of random-limit requests, and one JSON result line
    from ``done()`` (latency in microseconds from wrk's histogram)."""
    templates = _tail_templates()
    lua_paths = ",\n".join(_lua_str(p) for p in paths)
    lua_keys = ",\n".join(_lua_str(s) for s in secrets)
    lua_tail = ",\n".join(
        "{" + _lua_str(prefix) + ", {" + ", ".join(_lua_str(s) for s in suffixes) + "}}"
        for prefix, suffixes in templates
    )
    return f"""-- generated by bi_platform.serving.bench
local paths = {{
{lua_paths}
}}
local keys = {{
{lua_keys}
}}
local tail = {{
{lua_tail}
}}
local tail_fraction = {tail_fraction!r}
local np, nk, nt = #paths, #keys, #tail
local counter = 0
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  local tid = tonumber(tid) or 0
  counter = tid * 7919
  math.randomseed(1000 + tid)
end

function request()
  counter = counter + 1
  local path
  if nt > 0 and math.random() < tail_fraction then
    local t = tail[math.random(nt)]
    path = t[1] .. math.random(1, 1000) .. t[2][math.random(#t[2])]
  else
    path = paths[(counter % np) + 1]
  end
  return wrk.format("GET", path, {{["X-API-Key"] = keys[(counter % nk) + 1]}})
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{RESULT_TAG} {{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"status_errors":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


# --------------------------------------------------------------------------------------
# The server and the load generator
# --------------------------------------------------------------------------------------
def _serve_child() -> None:
    """Child process entry: serve the config in :data:`_SERVE_ENV` (JSON)."""
    from bi_platform.serving.app import ServingConfig
    from bi_platform.serving.server import serve

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(os.environ[_SERVE_ENV])
    serve(
        ServingConfig.from_json(spec["config"]),
        host="127.0.0.1",
        port=spec["port"],
        workers=spec["workers"],
        log_level="warning",
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(config: Any, workers: int, log_path: Path) -> Iterator[str]:
    """The API of ``config`` served by a child process; yields its base URL once
    ``/readyz`` answers 200; stops the child (SIGTERM, then SIGKILL) on exit."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env[_SERVE_ENV] = json.dumps({"config": config.to_json(), "port": port, "workers": workers})
    code = "from bi_platform.serving.bench import _serve_child; _serve_child()"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise BenchError(f"the API exited with {proc.returncode}:\n{tail}")
                try:
                    if client.get(url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"the API did not become ready in {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "the load generator 'wrk' is not installed; run `make system-deps` (Debian package wrk)"
        )
    return path


def run_wrk(url: str, script: Path, *, connections: int, duration_s: float) -> dict[str, Any]:
    """One wrk run; the ``done()`` line plus rps, milliseconds and the error total."""
    threads = max(1, min(WRK_THREADS, connections))
    seconds = max(1, round(duration_s))
    command = [
        _wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG + " ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr[-2000:]}{proc.stdout}")
    result = json.loads(line[len(RESULT_TAG) + 1 :])
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", proc.stdout)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["errors"] = (
        max(result["status_errors"], result["non_2xx"])
        + result["connect_errors"]
        + result["read_errors"]
        + result["write_errors"]
        + result["timeouts"]
    )
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    for p in ("p50", "p95", "p99", "max"):
        result[f"{p}_ms"] = result[f"{p}_us"] / 1000
    result["threads"] = threads
    return result


def cache_counters(url: str) -> tuple[float, float]:
    """(hits, misses) summed over queries from ``/metrics``."""
    text = httpx.get(url + "/metrics", timeout=10).text
    totals = {"bi_serving_cache_hits_total": 0.0, "bi_serving_cache_misses_total": 0.0}
    for line in text.splitlines():
        match = _METRIC_RE.match(line)
        if match:
            totals[match.group(1)] += float(match.group(2))
    return totals["bi_serving_cache_hits_total"], totals["bi_serving_cache_misses_total"]


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------
def run(
    *,
    duration_s: float = 20,
    users: int = 30,
    workers: int = 2,
    profile: str = "default",
    warehouse: Path | None = None,
    redis_url: str | None = None,
    warmup_s: float = WARMUP_S,
    max_warmup_s: float = MAX_WARMUP_S,
    tail_fraction: float = TAIL_FRACTION,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Serve, load, measure: (per-run measurements, the JSON summary)."""
    from bi_platform.serving.app import ServingConfig
    from bi_platform.serving.auth import ApiKeyStore
    from bi_platform.settings import get_settings

    _wrk_binary()
    if users < 1 or workers < 1 or duration_s <= 0:
        raise ValueError("users, workers and duration_s must be positive")
    stages: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        root = Path(tmp)
        if warehouse is not None:
            path, source = Path(warehouse), "given"
        elif profile == "default" and get_settings().warehouse_path.exists():
            path, source = get_settings().warehouse_path, "settings.warehouse_path"
        else:
            progress(f"no {profile} warehouse: building one from a seeded {profile} lake")
            started = time.perf_counter()
            path = build_scratch_warehouse(root / "build", profile)
            source = f"built ({profile} lake, {time.perf_counter() - started:.0f} s)"
        if not path.exists():
            raise BenchError(f"warehouse {path} does not exist")
        version, unes, rows = _warehouse_facts(path)
        progress(f"warehouse {path} ({source}): data_version {version}, {rows:,} admmat rows")

        store = ApiKeyStore(root / "api_keys.json")
        secrets = [store.create(f"bench-user-{i:02d}", None)[1] for i in range(KEYS)]
        paths = query_mix(unes)
        script = root / "mix.lua"
        script.write_text(wrk_script(paths, secrets, tail_fraction), encoding="utf-8")
        base = ServingConfig(
            warehouse_path=path,
            auth=True,
            api_keys_file=root / "api_keys.json",
            rate_limit=RATE_LIMIT,
            cache=True,
            redis_url=redis_url,
        )
        load_avg_start = os.getloadavg()[0]

        progress(
            f"cached: {workers} worker(s), warm-up passes of {warmup_s:.0f} s, then {duration_s} s"
        )
        with running_server(base, workers, root / "server_cached.log") as url:
            # warm-up passes until the hot set is cached (a pass hits >= WARM_HIT_RATE)
            warm: dict[str, Any] = {"requests": 0, "errors": 0, "passes": 0, "seconds": 0.0}
            hits0, misses0 = cache_counters(url)
            while True:
                one = run_wrk(url, script, connections=users, duration_s=warmup_s)
                hits1, misses1 = cache_counters(url)
                pass_rate = (hits1 - hits0) / max(1.0, hits1 - hits0 + misses1 - misses0)
                hits0, misses0 = hits1, misses1
                warm["requests"] += one["requests"]
                warm["errors"] += one["errors"]
                warm["passes"] += 1
                warm["seconds"] += one["duration_us"] / 1e6
                warm["last_pass_hit_rate"] = round(pass_rate, 4)
                if pass_rate >= WARM_HIT_RATE or warm["seconds"] >= max_warmup_s:
                    break
            stages["warmup"] = warm
            progress(
                f"  warm-up: {warm['passes']} pass(es), {warm['seconds']:.0f} s, "
                f"last pass hit rate {pass_rate:.3f}"
            )
            cached = run_wrk(url, script, connections=users, duration_s=duration_s)
            hits1, misses1 = cache_counters(url)
        hits, misses = hits1 - hits0, misses1 - misses0
        hit_rate = hits / (hits + misses) if hits + misses else 0.0
        cached["cache_hits"], cached["cache_misses"] = int(hits), int(misses)
        stages["cached"] = cached
        progress(
            f"  cached: {cached['rps']:,.0f} req/s, p95 {cached['p95_ms']:.1f} ms, "
            f"hit rate {hit_rate:.3f}, errors {cached['errors']}"
        )

        progress(f"uncached: server restarted with cache off, {duration_s} s")
        off = dataclasses.replace(base, cache=False)
        with running_server(off, workers, root / "server_uncached.log") as url:
            uncached = run_wrk(url, script, connections=users, duration_s=duration_s)
        stages["uncached"] = uncached
        progress(
            f"  uncached: {uncached['rps']:,.0f} req/s, p95 {uncached['p95_ms']:.1f} ms, "
            f"errors {uncached['errors']}"
        )

    summary: dict[str, Any] = {
        "bench": "serving",
        "users": users,
        "generator": "wrk",
        "p95_ms_cached": round(cached["p95_ms"], 2),
        "rps_cached": round(cached["rps"], 1),
        "p95_ms_uncached": round(uncached["p95_ms"], 2),
        "rps_uncached": round(uncached["rps"], 1),
        "hit_rate": round(hit_rate, 4),
        "errors": int(cached["errors"] + uncached["errors"]),
        "p50_ms_cached": round(cached["p50_ms"], 2),
        "p99_ms_cached": round(cached["p99_ms"], 2),
        "p50_ms_uncached": round(uncached["p50_ms"], 2),
        "p99_ms_uncached": round(uncached["p99_ms"], 2),
        "requests_cached": cached["requests"],
        "requests_uncached": uncached["requests"],
        "warmup_requests": warm["requests"],
        "warmup_errors": warm["errors"],
        "workers": workers,
        "wrk_threads": cached["threads"],
        "duration_s": duration_s,
        "warmup_s": round(warm["seconds"], 1),
        "warmup_passes": warm["passes"],
        "profile": profile,
        "warehouse": source,
        "warehouse_rows": rows,
        "mix_paths": len(paths),
        "tail_fraction": tail_fraction,
        "api_keys": KEYS,
        "auth": True,
        "rate_limit": RATE_LIMIT,
        "cache_backend": "redis" if redis_url else "in-process",
        "cpu_count": os.cpu_count(),
        "load_avg_1m_start": round(load_avg_start, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    summary["targets_met"] = {
        name: met(summary[name], op, bound) for name, (op, bound) in TARGETS.items()
    }
    logger.info("bench serving: %s", summary)
    return stages, summary
