"""HTTP details of the query API against a real uvicorn: content negotiation with
q-values (406 when nothing is acceptable), HEAD on the operational endpoints, the
status-class series exported from 0, precise messages for numbers in exponent or decimal
notation, ``param`` on every 4xx, and a restricted key's default segment."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bi_platform.retail.schema import SEGMENTS
from bi_platform.serving.app import negotiate_accept, parse_accept
from bi_platform_tests.serving.conftest import Deploy, Deployment

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def api(deploy: Deploy) -> Deployment:
    deployment = deploy("memory")
    deployment.add_key("papelaria", ("PAPELARIA",))
    deployment.add_key("festas-bazar", ("FESTAS", "BAZAR"))
    return deployment


def _get(api: Deployment, path: str, key: str = "full", **kwargs: object) -> httpx.Response:
    headers = {**api.headers(key), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    with api.server.client() as client:
        response = client.get(path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code < 500, response.text
    return response


# -- content negotiation -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", "json"),
        ("*/*", "json"),
        ("application/json", "json"),
        (ARROW, "arrow"),
        ("text/csv", "csv"),
        (f"application/json, {ARROW};q=0", "json"),
        (f"{ARROW};q=0, application/json", "json"),
        (f"{ARROW}, application/json", "arrow"),  # equal q: the client's order
        (f"application/json;q=0.5, {ARROW};q=0.9", "arrow"),
        ("text/csv;q=0.2, */*;q=0.1", "csv"),
        ("application/*", "json"),
        (f"application/*;q=0.3, {ARROW}", "arrow"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),
        ("application/json;q=0", None),
        ("application/xml", None),
        ("*/*;q=0", None),
        (f"*/*;q=0.5, application/json;q=0, {ARROW};q=0", "csv"),
        ("TEXT/CSV", "csv"),
        ("text/csv; charset=utf-8; q=0.7", "csv"),
        ("garbage", "json"),  # no valid range: as no header
        ("application/json;q=2", "json"),  # a malformed q drops the range
        ("text/csv;q=abc, application/json;q=0.1", "json"),
    ],
)
def test_accept_negotiation(accept: str, expected: str | None) -> None:
    assert negotiate_accept(accept) == expected


def test_parse_accept_keeps_q_values_and_order() -> None:
    assert parse_accept("text/csv;q=0.5, */*;q=0.1, bad, application/json") == [
        ("text", "csv", 0.5, 0),
        ("*", "*", 0.1, 1),
        ("application", "json", 1.0, 3),
    ]


def test_q_zero_is_not_acceptable_and_nothing_acceptable_is_406(api: Deployment) -> None:
    path = "/api/v1/queries/sales_by_une"
    json_only = _get(api, path, headers={"Accept": f"application/json, {ARROW};q=0"})
    assert json_only.status_code == 200
    assert json_only.headers["content-type"] == "application/json"
    assert json_only.headers["vary"] == "Accept"
    arrow = _get(api, path, headers={"Accept": f"application/json;q=0.1, {ARROW}"})
    assert arrow.headers["content-type"] == ARROW
    refused = _get(api, path, headers={"Accept": "application/xml, application/json;q=0"})
    assert refused.status_code == 406
    body = refused.json()
    assert body["param"] == "Accept" and body["detail"].startswith("Accept:")
    assert "rows" not in body
    # format= overrides the Accept header
    explicit = _get(api, path, params={"format": "csv"}, headers={"Accept": "application/xml"})
    assert explicit.status_code == 200 and explicit.headers["content-type"].startswith("text/csv")


# -- HEAD --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_head_on_operational_endpoints(api: Deployment, path: str) -> None:
    with api.server.client() as client:
        head = client.head(path)
        get = client.get(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


# -- metrics -----------------------------------------------------------------------------
def test_status_class_series_exist_at_zero_from_the_start(deploy: Deploy) -> None:
    fresh = deploy("off")
    text = httpx.get(fresh.url + "/metrics").text
    values = {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "bi_serving_responses_total"
    }
    assert set(values) == {"2xx", "3xx", "4xx", "5xx"}
    assert values["5xx"] == 0 and values["4xx"] == 0
    assert "bi_serving_redis_breaker_open 0.0" in text
    httpx.get(fresh.url + "/api/v1/queries/nope", headers=fresh.headers())
    text = httpx.get(fresh.url + "/metrics").text
    assert 'bi_serving_responses_total{status="4xx"} 1.0' in text
    assert 'bi_serving_responses_total{status="5xx"} 0.0' in text


# -- numbers -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"limite": "1e3"}, "limite", ["plain digits", "exponent", "write 1000"]),
        ({"limite": "5.0"}, "limite", ["plain digits", "decimal", "write 5"]),
        ({"limite": "2.5E1"}, "limite", ["write 25"]),
        ({"limite": "1.5"}, "limite", ["fractional part"]),
        ({"limite": "1e400"}, "limite", ["too large"]),
        ({"limite": "nan"}, "limite", ["non-finite"]),
        ({"limite": "ten"}, "limite", ["plain digits", "e.g. 10"]),
        ({"limite": "\uff11\uff10"}, "limite", ["plain digits"]),  # fullwidth digits
        ({"limite": "1_000"}, "limite", ["plain digits"]),
        ({"une": "2.61e2"}, "une", ["write 261"]),
    ],
)
def test_numbers_in_other_notations_are_refused_saying_why(
    api: Deployment, params: dict[str, str], param: str, words: list[str]
) -> None:
    response = _get(api, "/api/v1/queries/top_products_by_une", params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["param"] == param and body["detail"].startswith(f"{param}: ")
    for word in words:
        assert word in body["detail"], body["detail"]
    assert "not a number" not in body["detail"]


def test_decimal_parameters_accept_exponents_and_refuse_non_finite(api: Deployment) -> None:
    ok = _get(api, "/api/v1/queries/near_reorder_point", params={"margem": "2.5e-1"})
    same = _get(api, "/api/v1/queries/near_reorder_point", params={"margem": "0.25"})
    assert ok.status_code == same.status_code == 200
    assert ok.json()["rows"] == same.json()["rows"]
    assert same.headers["x-cache"] == "HIT"  # one value, one cache entry
    for value, words in (("inf", "finite"), ("0,25", "decimal number"), ("1e309", "finite")):
        body = _get(api, "/api/v1/queries/near_reorder_point", params={"margem": value}).json()
        assert body["param"] == "margem" and words in body["detail"], body


# -- param on every 4xx ------------------------------------------------------------------
def test_every_client_error_names_its_parameter(api: Deployment) -> None:
    cases: list[tuple[str, dict[str, str], str, int, str]] = [
        ("/api/v1/queries/nope", {}, "full", 404, "name"),
        ("/api/v1/queries/sales_by_une", {"segments": "PAPELARIA"}, "tecidos", 403, "segments"),
        ("/api/v1/queries/sales_by_une", {"segmento": "PAPELARIA"}, "tecidos", 403, "segmento"),
        ("/api/v1/queries/sales_by_une", {"x": "1"}, "full", 422, "x"),
        (
            "/api/v1/queries/sales_by_une",
            {f"p{i}": "1" for i in range(40)},
            "full",
            400,
            "query_string",
        ),
    ]
    for path, params, key, status, param in cases:
        response = _get(api, path, key, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert response.json()["param"] == param, response.json()
    for headers, param in (
        ({}, "X-API-Key"),
        ({"X-API-Key": "nope"}, "X-API-Key"),
        ({"Authorization": "Bearer nope"}, "Authorization"),
    ):
        response = httpx.get(api.url + "/api/v1/queries/sales_by_une", headers=headers)
        assert response.status_code == 401
        assert response.json()["param"] == param
        assert response.headers["www-authenticate"] == "Bearer"


# -- a restricted key's default segment --------------------------------------------------
@pytest.mark.parametrize(
    "name", ["top_products_by_segment", "segment_sales_evolution", "category_ranking_in_segment"]
)
def test_a_restricted_key_defaults_to_its_own_segment(api: Deployment, name: str) -> None:
    """These queries default to segmento=TECIDOS; a PAPELARIA key asking without a
    segment used to get TECIDOS' empty result."""
    own = _get(api, f"/api/v1/queries/{name}", "papelaria")
    explicit = _get(api, f"/api/v1/queries/{name}", "full", params={"segmento": "PAPELARIA"})
    assert own.status_code == explicit.status_code == 200
    rows = own.json()["rows"]
    assert rows and rows == explicit.json()["rows"]
    # two segments, neither the default: the first in catalog order (FESTAS before BAZAR)
    assert SEGMENTS.index("FESTAS") < SEGMENTS.index("BAZAR")
    two = _get(api, f"/api/v1/queries/{name}", "festas-bazar")
    festas = _get(api, f"/api/v1/queries/{name}", "full", params={"segmento": "FESTAS"})
    assert two.json()["rows"] == festas.json()["rows"]
    # segments= narrows a key (or an unrestricted one) the same way
    narrowed = _get(api, f"/api/v1/queries/{name}", "full", params={"segments": "PAPELARIA"})
    assert narrowed.json()["rows"] == rows
    # a key that may read the default keeps it; an explicit segmento is never replaced
    tecidos = _get(api, f"/api/v1/queries/{name}", "two")
    assert (
        tecidos.json()["rows"]
        == _get(api, f"/api/v1/queries/{name}", "full", params={"segmento": "TECIDOS"}).json()[
            "rows"
        ]
    )
    refused = _get(api, f"/api/v1/queries/{name}", "papelaria", params={"segmento": "TECIDOS"})
    assert refused.status_code == 403 and refused.json()["param"] == "segmento"


def test_top_products_of_a_restricted_key_show_its_segment_only(api: Deployment) -> None:
    body = _get(api, "/api/v1/queries/top_products_by_segment", "papelaria").json()
    index = body["columns"].index("NOMESEGMENTO")
    assert {row[index] for row in body["rows"]} == {"PAPELARIA"}
