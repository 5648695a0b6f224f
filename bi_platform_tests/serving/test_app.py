"""The query API against a real uvicorn server on loopback, with the in-process and the
Redis cache: endpoints, formats, cache hits, single flight, fresh data after a rebuild."""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from bi_platform.retail.queries import CATALOG
from bi_platform.serving.app import ServingConfig, csv_payload
from bi_platform.serving.queries import execute
from bi_platform_tests.serving import SmallLake
from bi_platform_tests.serving.conftest import Deploy, Deployment, build_test_warehouse

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module", params=["memory", "redis"])
def api(request: pytest.FixtureRequest, deploy: Deploy, redis_server: str) -> Deployment:
    return deploy(request.param, redis=redis_server)


def _get(api: Deployment, path: str, key: str = "full", **kwargs: object) -> httpx.Response:
    headers = {**api.headers(key), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    with api.server.client() as client:
        response = client.get(path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code < 500, response.text
    return response


def test_health_ready_and_metrics(api: Deployment) -> None:
    with api.server.client() as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
        metrics = client.get("/metrics")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    version = api.app.state.pool.data_version()
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "data_version": version}
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert f'bi_serving_warehouse_data_version{{data_version="{version}"}} 1.0' in text
    assert 'bi_serving_requests_total{query="readyz",status="200"}' in text


def test_catalog_lists_every_query_with_typed_params(api: Deployment) -> None:
    response = _get(api, "/api/v1/queries")
    assert response.status_code == 200
    body = response.json()
    listed = {q["name"]: q for q in body["queries"]}
    assert set(listed) == set(CATALOG)
    params = {p["name"]: p for p in listed["top_products_by_une"]["params"]}
    assert params["limite"] == {
        "name": "limite",
        "type": "int",
        "default": 10,
        "description": params["limite"]["description"],
        "choices": None,
        "minimum": 1,
        "maximum": 1000,
    }
    assert "TECIDOS" in body["segments"] and body["formats"] == ["json", "arrow", "csv"]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sales_by_une", {}),
        ("top_products_by_segment", {"segmento": "papelaria", "limite": "7"}),
        ("near_reorder_point", {"margem": "0.25", "segmento": "TECIDOS"}),
    ],
)
def test_json_equals_the_query_battery(api: Deployment, name: str, params: dict[str, str]) -> None:
    response = _get(api, f"/api/v1/queries/{name}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    expected = execute(api.app.state.pool, name, params).table
    assert body["query"] == name
    assert body["data_version"] == response.headers["x-data-version"]
    assert body["columns"] == expected.schema.names
    assert body["row_count"] == expected.num_rows == len(body["rows"]) > 0
    got = pa.Table.from_pylist(
        [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]],
        schema=expected.schema,
    )
    assert got.equals(expected)


def test_cache_hit_after_a_miss(api: Deployment) -> None:
    params = {"une": "261", "limite": str(random.randint(1, 1000))}
    first = _get(api, "/api/v1/queries/top_products_by_une", params=params)
    second = _get(api, "/api/v1/queries/top_products_by_une", params=params)
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    a, b = first.json(), second.json()
    assert (a.pop("cached"), b.pop("cached")) == (False, True)
    assert a == b and a["rows"]
    # the same parameters spelled differently share the entry
    third = _get(api, "/api/v1/queries/top_products_by_une", params={**params, "une": " 261"})
    assert third.headers["x-cache"] == "HIT"
    metrics = httpx.get(api.url + "/metrics").text
    assert 'bi_serving_cache_hits_total{query="top_products_by_une"}' in metrics
    assert 'bi_serving_cache_misses_total{query="top_products_by_une"}' in metrics


def test_concurrent_misses_compute_once(api: Deployment) -> None:
    pool = api.app.state.pool
    params = {"dias": str(random.randint(1, 365)), "limite": str(random.randint(1, 1000))}
    before = pool.stats().acquired
    barrier = threading.Barrier(12)

    def one(_: int) -> httpx.Response:
        barrier.wait()
        return _get(api, "/api/v1/queries/low_stock_high_demand", params=params)

    with ThreadPoolExecutor(max_workers=12) as executor:
        responses = list(executor.map(one, range(12)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["row_count"] for r in responses}) == 1
    assert pool.stats().acquired - before == 1


def test_arrow_round_trip(api: Deployment) -> None:
    params = {"segmento": "TECIDOS", "limite": "25"}
    by_accept = _get(
        api, "/api/v1/queries/top_products_by_segment", params=params, headers={"Accept": ARROW}
    )
    by_param = _get(
        api, "/api/v1/queries/top_products_by_segment", params={**params, "format": "arrow"}
    )
    expected = execute(api.app.state.pool, "top_products_by_segment", params).table
    for response in (by_accept, by_param):
        assert response.status_code == 200
        assert response.headers["content-type"] == ARROW
        table = pa.ipc.open_stream(response.content).read_all()
        assert table.schema.metadata[b"query"] == b"top_products_by_segment"
        assert table.schema.metadata[b"data_version"] == response.headers["x-data-version"].encode()
        assert table.replace_schema_metadata(None).equals(expected.replace_schema_metadata(None))
    assert by_param.headers["x-cache"] == "HIT"  # same format, same entry


def test_csv_round_trip(api: Deployment) -> None:
    json_body = _get(api, "/api/v1/queries/sales_by_une").json()
    response = _get(api, "/api/v1/queries/sales_by_une", headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="sales_by_une.csv"' in response.headers["content-disposition"]
    table = pacsv.read_csv(io.BytesIO(response.content))
    assert table.schema.names == json_body["columns"]
    rows = [list(r.values()) for r in table.to_pylist()]
    assert len(rows) == json_body["row_count"]
    for got, want in zip(rows, json_body["rows"], strict=True):
        assert got == pytest.approx(want)
    again = _get(api, "/api/v1/queries/sales_by_une", params={"format": "csv"})
    assert again.content == response.content and again.headers["x-cache"] == "HIT"


def test_csv_cells_are_neutralised() -> None:
    table = pa.table({"=NAME": ["=cmd|' /C calc'!A0", "+1", "ok"], "N": [1, 2, 3]})
    parsed = pacsv.read_csv(io.BytesIO(csv_payload(table)))
    assert parsed.schema.names == ["'=NAME", "N"]
    assert parsed.column(0).to_pylist() == ["'=cmd|' /C calc'!A0", "'+1", "ok"]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_rebuilt_warehouse_is_never_served_stale(
    backend: str, deploy: Deploy, redis_server: str, serving_lake: SmallLake
) -> None:
    api = deploy(backend, redis=redis_server)
    path = "/api/v1/queries/sales_by_une"
    v1 = api.app.state.pool.data_version()
    first, hit = _get(api, path), _get(api, path)
    assert (first.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert hit.json()["data_version"] == v1
    arrow_v1 = _get(api, path, params={"format": "arrow"})
    assert arrow_v1.headers["x-data-version"] == v1
    v2 = build_test_warehouse(serving_lake, api.warehouse)
    assert v2 != v1
    for _ in range(2):  # the old entries stay cached but are never read again
        fresh = _get(api, path)
        assert fresh.json()["data_version"] == fresh.headers["x-data-version"] == v2
        arrow = _get(api, path, params={"format": "arrow"})
        assert pa.ipc.open_stream(arrow.content).schema.metadata[b"data_version"] == v2.encode()
    assert fresh.headers["x-cache"] == "HIT"
    assert httpx.get(api.url + "/readyz").json()["data_version"] == v2


def test_pool_exhaustion_is_a_503_with_retry_after(deploy: Deploy) -> None:
    api = deploy("off", pool_size=1, pool_timeout=0.2)
    with api.app.state.pool.acquire():
        busy = _get_raw(api, "/api/v1/queries/sales_by_une")
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "rows" not in busy.json()
    again = _get(api, "/api/v1/queries/sales_by_une")
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"  # cache off
    assert _get(api, "/api/v1/queries/sales_by_une").headers["x-cache"] == "MISS"


def _get_raw(api: Deployment, path: str) -> httpx.Response:
    with api.server.client() as client:
        return client.get(path, headers=api.headers())


def test_a_missing_warehouse_is_not_ready(deploy: Deploy, tmp_path: Path) -> None:
    api = deploy("memory", warehouse=tmp_path / "nowhere.duckdb")
    with api.server.client() as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        query = client.get("/api/v1/queries/sales_by_une", headers=api.headers())
    assert ready.status_code == 503 and ready.json() == {"detail": "warehouse not available"}
    assert query.status_code == 503 and "nowhere" not in query.text


def test_serve_runs_uvicorn_workers(serving_lake: SmallLake, tmp_path: Path) -> None:
    """`serve` with 2 workers in a subprocess: the factory reads the exported config and
    the metrics of both workers are merged."""
    warehouse = tmp_path / "bi_warehouse.duckdb"
    version = build_test_warehouse(serving_lake, warehouse)
    config = ServingConfig(warehouse_path=warehouse, auth=False, pool_size=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "import logging, sys; logging.basicConfig(level='INFO', stream=sys.stderr);"
        "from bi_platform.serving.app import ServingConfig;"
        "from bi_platform.serving.server import serve;"
        f"serve(ServingConfig.from_json({config.to_json()!r}), '127.0.0.1', {port}, 2,"
        " log_level='warning')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 40
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        with httpx.Client(base_url=url) as client:
            bodies = [client.get("/api/v1/queries/sales_by_une").json() for _ in range(20)]
            metrics = client.get("/metrics").text
        assert {b["data_version"] for b in bodies} == {version}
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('bi_serving_requests_total{query="sales_by_une",status="200"}')
        )
        assert total == 20
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    assert f"http://127.0.0.1:{port} with 2 worker(s)" in stderr


def test_a_redis_outage_degrades_to_computing_not_to_errors(deploy: Deploy) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    api = deploy("redis", redis=dead)
    for _ in range(2):
        response = _get(api, "/api/v1/queries/sales_by_une")
        assert response.status_code == 200 and response.json()["rows"]
        assert response.headers["x-cache"] == "MISS"


def test_in_process_hits_skip_the_threadpool(
    api: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bi_platform.serving import app as app_module

    hops: list[str] = []
    real = app_module.run_in_threadpool

    async def counting(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(func, "__name__", "?"))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(app_module, "run_in_threadpool", counting)
    params = {"segmento": "PAPELARIA", "limite": str(random.randint(1, 1000))}
    first = _get(api, "/api/v1/queries/top_products_by_segment", params=params)
    assert first.headers["x-cache"] == "MISS" and hops == ["lookup"]
    second = _get(api, "/api/v1/queries/top_products_by_segment", params=params)
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["x-data-version"] == first.headers["x-data-version"]
    expected = [] if api.config.redis_url is None else ["lookup"]  # Redis: I/O, threadpool
    assert hops[1:] == expected
    a, b = first.json(), second.json()
    assert (a.pop("cached"), b.pop("cached")) == (False, True)
    assert a == b


def test_serve_shares_the_cores_between_the_workers_duckdb_threads(tmp_path: Path) -> None:
    from bi_platform.serving.server import with_worker_threads
    from bi_platform.serving.warehouse import default_threads

    config = ServingConfig(warehouse_path=tmp_path / "wh.duckdb", auth=False)
    assert with_worker_threads(config, 1).duckdb_threads == default_threads()
    assert with_worker_threads(config, 2).duckdb_threads == max(1, default_threads() // 2)
    assert with_worker_threads(config, 64).duckdb_threads == 1
    pinned = ServingConfig(warehouse_path=tmp_path / "wh.duckdb", auth=False, duckdb_threads=3)
    assert with_worker_threads(pinned, 2).duckdb_threads == 3
