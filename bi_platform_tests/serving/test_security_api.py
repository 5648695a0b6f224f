"""Security of the query API, against a real uvicorn server with the in-process and the
Redis backends: injection strings in every parameter, unknown queries, oversized and
malformed input, missing/invalid/revoked keys, row-level security, floods. Each case gets
its 4xx -- never a 5xx, never a row."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from bi_platform.retail.queries import CATALOG
from bi_platform_tests.serving.conftest import Deploy, Deployment

INJECTIONS = (
    "TECIDOS' OR '1'='1",
    "'; DROP TABLE admmat; --",
    "1; DELETE FROM admmat",
    "1 OR 1=1",
    "1) UNION SELECT * FROM warehouse_meta --",
    "TECIDOS\x00",
    "read_parquet('/etc/passwd')",
    "${jndi:ldap://x}",
)
#: Every parameter of every catalog query, plus the reserved ones.
PARAMETERS = [(q.name, p.name) for q in CATALOG.values() for p in q.params] + [
    ("sales_by_une", "segments"),
    ("sales_by_une", "format"),
]
UNKNOWN_QUERIES = (
    "drop_tables",
    "SALES_BY_UNE",
    "sales_by_une;DROP TABLE admmat",
    "sales_by_une' OR '1'='1",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "x" * 2000,
    "warehouse_meta",
)
MALFORMED: list[tuple[str, dict[str, str], str]] = [
    ("top_products_by_une", {"limite": "abc"}, "limite"),
    ("top_products_by_une", {"limite": "1.5"}, "limite"),
    ("top_products_by_une", {"limite": ""}, "limite"),
    ("top_products_by_une", {"limite": "0"}, "limite"),
    ("top_products_by_une", {"limite": "1001"}, "limite"),
    ("top_products_by_une", {"limite": str(10**9)}, "limite"),
    ("top_products_by_une", {"limite": "1e3"}, "limite"),
    ("top_products_by_une", {"limite": "true"}, "limite"),
    ("top_products_by_une", {"une": "-1"}, "une"),
    ("top_products_by_une", {"une": str(10**30)}, "une"),
    ("top_products_by_une", {"une": "9" * 300}, "une"),
    ("near_reorder_point", {"margem": "nan"}, "margem"),
    ("near_reorder_point", {"margem": "inf"}, "margem"),
    ("near_reorder_point", {"margem": "1e309"}, "margem"),
    ("near_reorder_point", {"margem": "-0.1"}, "margem"),
    ("growth_products", {"crescimento_minimo": "x"}, "crescimento_minimo"),
    ("abc_concentration", {"classe": "Z"}, "classe"),
    ("sales_by_une", {"segmento": "NOPE"}, "segmento"),
    ("sales_by_une", {"segmento": "T" * 257}, "segmento"),
    ("sales_by_une", {"segments": "NOPE"}, "segments"),
    ("sales_by_une", {"segments": "TECIDOS,"}, "segments"),
    ("sales_by_une", {"format": "xml"}, "format"),
    ("sales_by_une", {"sql": "SELECT 1"}, "sql"),
    ("dashboard_totals", {"segmento": "TECIDOS"}, "segmento"),
]
BAD_AUTH: list[tuple[str, dict[str, str]]] = [
    ("missing", {}),
    ("empty X-API-Key", {"X-API-Key": ""}),
    ("unknown key", {"X-API-Key": "bik_0123456789abcdef_" + "A" * 43}),
    ("malformed key", {"X-API-Key": "not-a-key"}),
    ("injection as key", {"X-API-Key": "' OR '1'='1"}),
    ("oversized key", {"X-API-Key": "bik_" + "a" * 4000}),
    ("bearer without token", {"Authorization": "Bearer"}),
    ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}),
    ("bearer unknown", {"Authorization": "Bearer bik_0123456789abcdef_" + "B" * 43}),
]


@pytest.fixture(scope="module", params=["memory", "redis"])
def api(request: pytest.FixtureRequest, deploy: Deploy, redis_server: str) -> Deployment:
    return deploy(request.param, redis=redis_server)


def _client_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``status`` (a 4xx), a JSON detail and no rows; return the body."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert "detail" in body and "rows" not in body and "columns" not in body
    return body


def _rows(api: Deployment, name: str, key: str, **params: str) -> list[list[Any]]:
    response = httpx.get(
        f"{api.url}/api/v1/queries/{name}", params=params, headers=api.headers(key), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()["rows"]


@pytest.mark.parametrize(("name", "param"), PARAMETERS, ids=lambda v: str(v))
def test_injection_strings_in_every_parameter_are_rejected(
    api: Deployment, name: str, param: str
) -> None:
    with api.server.client(headers=api.headers()) as client:
        for value in INJECTIONS:
            response = client.get(f"/api/v1/queries/{name}", params={param: value})
            body = _client_error(response, 422)
            assert body["param"] == param
        # the warehouse is intact
        assert client.get("/api/v1/queries/dashboard_totals").json()["rows"]


def test_injection_strings_as_parameter_names_are_rejected(api: Deployment) -> None:
    with api.server.client(headers=api.headers()) as client:
        for value in INJECTIONS:
            response = client.get("/api/v1/queries/sales_by_une", params={value: "1"})
            body = _client_error(response, 422)
            assert "unknown parameter" in body["detail"]


@pytest.mark.parametrize("name", UNKNOWN_QUERIES, ids=lambda n: n[:30])
def test_unknown_query_names_are_404(api: Deployment, name: str) -> None:
    response = httpx.get(f"{api.url}/api/v1/queries/{name}", headers=api.headers())
    _client_error(response, 404)
    assert name[:50] not in response.text or name == "%00"


@pytest.mark.parametrize(("name", "params", "param"), MALFORMED, ids=lambda v: str(v)[:40])
def test_malformed_and_oversized_parameters_are_422_naming_the_param(
    api: Deployment, name: str, params: dict[str, str], param: str
) -> None:
    response = httpx.get(f"{api.url}/api/v1/queries/{name}", params=params, headers=api.headers())
    body = _client_error(response, 422)
    assert body["param"] == param and body["detail"].startswith(param)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limite=1&limite=2", 422),
        ("format=json&format=csv", 422),
        ("&".join(f"p{i}=1" for i in range(40)), 400),
        ("segmento=" + "A" * 5000, 400),
        ("segmento=%FF%FE", 422),
        ("segmento=%00", 422),
        ("limite=%E2%80%AE1", 422),
    ],
    ids=["duplicate", "duplicate-format", "too-many", "too-long", "bad-utf8", "nul", "bidi"],
)
def test_malformed_query_strings(api: Deployment, query: str, status: int) -> None:
    url = f"{api.url}/api/v1/queries/top_products_by_segment?{query}"
    _client_error(httpx.get(url, headers=api.headers()), status)


def test_large_but_valid_values_are_answered(api: Deployment) -> None:
    assert _rows(api, "top_products_by_une", "full", une=str(2**62)) == []
    assert len(_rows(api, "top_products_by_une", "full", une="261", limite="1000")) > 10


@pytest.mark.parametrize(("case", "headers"), BAD_AUTH, ids=[c for c, _ in BAD_AUTH])
@pytest.mark.parametrize("path", ["/api/v1/queries", "/api/v1/queries/sales_by_une"])
def test_missing_and_invalid_keys_are_401(
    api: Deployment, case: str, headers: dict[str, str], path: str
) -> None:
    response = httpx.get(api.url + path, headers=headers)
    body = _client_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert "queries" not in body


def test_bearer_and_header_keys_work_and_a_revoked_key_is_401(api: Deployment) -> None:
    secret = api.add_key("to-revoke", None)
    path = api.url + "/api/v1/queries/sales_by_une"
    assert httpx.get(path, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert httpx.get(path, headers={"X-API-Key": secret}).status_code == 200
    api.store.revoke(api.key_ids["to-revoke"])
    for headers in ({"X-API-Key": secret}, {"Authorization": f"bearer {secret}"}):
        _client_error(httpx.get(path, headers=headers), 401)
        _client_error(httpx.get(api.url + "/api/v1/queries", headers=headers), 401)


def test_other_methods_are_405(api: Deployment) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = httpx.request(
            method, api.url + "/api/v1/queries/sales_by_une", headers=api.headers()
        )
        assert response.status_code == 405


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_a_segment_key_reads_only_its_segment(api: Deployment, name: str) -> None:
    """Every query: the TECIDOS key's rows are exactly an unrestricted key's rows for
    segments=TECIDOS (and a subset of nothing else)."""
    restricted = _rows(api, name, "tecidos")
    assert restricted == _rows(api, name, "full", segments="TECIDOS")
    columns = CATALOG[name].columns
    body = httpx.get(f"{api.url}/api/v1/queries/{name}", headers=api.headers("tecidos")).json()
    if "NOMESEGMENTO" in body["columns"]:
        index = body["columns"].index("NOMESEGMENTO")
        assert {row[index] for row in restricted} <= {"TECIDOS"}
    assert "NOMESEGMENTO" in columns  # every query reads the segment column to filter


def test_a_segment_key_cannot_ask_for_another_segment(api: Deployment) -> None:
    base = f"{api.url}/api/v1/queries"
    tecidos = api.headers("tecidos")
    for path, params in [
        ("sales_by_une", {"segments": "PAPELARIA"}),
        ("sales_by_une", {"segments": "TECIDOS,PAPELARIA"}),
        ("sales_by_une", {"segmento": "PAPELARIA"}),
        ("top_products_by_segment", {"segmento": "papelaria"}),
    ]:
        body = _client_error(httpx.get(f"{base}/{path}", params=params, headers=tecidos), 403)
        assert "PAPELARIA" not in str(body)
    # inside its segments: answered, only those rows
    assert _segments(api, "two", segments="PAPELARIA") == {"PAPELARIA"}
    assert _segments(api, "two") == {"TECIDOS", "PAPELARIA"}
    assert len(_segments(api, "full")) > 2
    # TODOS within a restricted key means "every segment it may see"
    assert _rows(api, "sales_by_une", "tecidos", segmento="TODOS") == _rows(
        api, "sales_by_une", "full", segments="TECIDOS"
    )


def _segments(api: Deployment, key: str, **params: str) -> set[str]:
    """The NOMESEGMENTO values of segment_ranking_quarter (one row per segment)."""
    response = httpx.get(
        f"{api.url}/api/v1/queries/segment_ranking_quarter", params=params, headers=api.headers(key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    index = body["columns"].index("NOMESEGMENTO")
    return {row[index] for row in body["rows"]}


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_flood_past_the_limit_gets_429_with_retry_after(
    backend: str, deploy: Deploy, redis_server: str
) -> None:
    api = deploy(backend, redis=redis_server, rate_limit="5/minute")
    with api.server.client(headers=api.headers()) as client:
        statuses = [client.get("/api/v1/queries/sales_by_une").status_code for _ in range(5)]
        assert statuses == [200] * 5
        for path in ("/api/v1/queries/sales_by_une", "/api/v1/queries"):
            response = client.get(path)
            body = _client_error(response, 429)
            assert "rate limit exceeded" in body["detail"]
            assert 1 <= int(response.headers["retry-after"]) <= 60
    # the budget is per key
    assert httpx.get(api.url + "/api/v1/queries", headers=api.headers("two")).status_code == 200
    # invalid keys are refused before they count
    _client_error(httpx.get(api.url + "/api/v1/queries", headers={"X-API-Key": "x"}), 401)


def test_without_auth_the_limit_is_per_client_address(deploy: Deploy) -> None:
    api = deploy("memory", auth=False, api_keys_file=None, rate_limit="3/minute")
    with api.server.client() as client:
        assert [client.get("/api/v1/queries").status_code for _ in range(3)] == [200] * 3
        _client_error(client.get("/api/v1/queries/sales_by_une"), 429)


def test_secrets_are_never_logged_nor_in_metrics(
    api: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    secret = api.secrets["full"]
    with caplog.at_level(logging.DEBUG):
        with api.server.client(headers=api.headers()) as client:
            client.get("/api/v1/queries/sales_by_une")
            client.get("/api/v1/queries/sales_by_une", params={"limite": "x"})
            client.get("/api/v1/queries/nope")
        httpx.get(api.url + "/api/v1/queries", headers={"X-API-Key": secret + "x"})
        metrics = httpx.get(api.url + "/metrics").text
    assert caplog.records
    assert secret not in caplog.text and secret[:24] not in caplog.text
    assert secret not in metrics and api.key_ids["full"] not in metrics
