"""The OpenAPI 3.1 contract, generated from the catalog, checked with a real validator
(openapi-spec-validator) and against real answers of a live server; and the self-hosted
pages (docs, dashboard): served without a key, no URL outside the server's origin, a
strict Content-Security-Policy."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from bi_platform.retail.queries import CATALOG
from bi_platform.retail.schema import SEGMENTS
from bi_platform.serving.app import FORMATS
from bi_platform.serving.openapi import build_openapi
from bi_platform.serving.pages import PAGES, load_page
from bi_platform_tests.serving.conftest import Deploy, Deployment

ARROW = "application/vnd.apache.arrow.stream"


@pytest.fixture(scope="module")
def api(deploy: Deploy) -> Deployment:
    return deploy("memory")


@pytest.fixture(scope="module")
def spec(api: Deployment) -> dict[str, Any]:
    response = httpx.get(api.url + "/openapi.json", timeout=60)  # no key needed
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def _deref(node: Any, document: dict[str, Any]) -> Any:
    """``node`` with every local ``$ref`` replaced by its target (recursively)."""
    if isinstance(node, dict):
        if "$ref" in node and isinstance(node["$ref"], str):
            target: Any = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _deref(target, document)
        return {key: _deref(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [_deref(item, document) for item in node]
    return node


def test_the_served_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["x-data-version"].startswith("test-")


@pytest.mark.parametrize("auth", [True, False])
def test_the_static_document_is_valid_with_and_without_auth(auth: bool) -> None:
    document = build_openapi(formats=FORMATS, segments=SEGMENTS, auth=auth)
    validate(document)
    assert ("security" in document) is auth
    assert ("securitySchemes" in document["components"]) is auth


def test_one_operation_per_catalog_query_with_typed_parameters(spec: dict[str, Any]) -> None:
    operations = {
        path: item["get"]
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/queries/")
    }
    assert {op["operationId"] for op in operations.values()} == set(CATALOG)
    for name, query in CATALOG.items():
        op = operations[f"/api/v1/queries/{name}"]
        assert op["summary"] == query.question and op["tags"] == [query.cache_class]
        params = {p["name"]: p for p in _deref(op["parameters"], spec)}
        assert set(params) == {p.name for p in query.params} | {"format", "segments"}
        for param in query.params:
            described = params[param.name]
            assert described["in"] == "query" and described["description"]
            assert "example" in described
            schema = described["schema"]
            assert schema["type"] == {int: "integer", float: "number", str: "string"}[param.type]
            assert schema["default"] == param.default
            if param.choices is not None:
                assert schema["enum"] == list(param.choices)
            if param.minimum is not None:
                assert schema["minimum"] == param.minimum
            if param.maximum is not None:
                assert schema["maximum"] == param.maximum
        segments = params["segments"]
        assert segments["schema"]["items"]["enum"] == list(SEGMENTS)
        assert (segments["style"], segments["explode"]) == ("form", False)
        assert params["format"]["schema"]["enum"] == ["json", "arrow", "csv"]
        ok = op["responses"]["200"]["content"]
        assert set(ok) == {"application/json", "text/csv", ARROW}
        for code in ("401", "403", "404", "406", "422", "429", "503"):
            assert code in op["responses"], (name, code)
    limite = {
        p["name"]: p
        for p in _deref(spec["paths"]["/api/v1/queries/top_products_by_une"]["get"], spec)[
            "parameters"
        ]
    }["limite"]
    assert limite["schema"] == {
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": 1000,
        "default": 10,
    }
    assert "1e3" in limite["description"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert set(spec["paths"][path]) == {"get", "head"}


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sales_by_une", {}),
        ("top_products_by_segment", {"segmento": "PAPELARIA", "limite": "5"}),
        ("segment_sales_evolution", {}),
        ("dashboard_totals", {}),
        ("critical_rupture", {"limite": "3"}),
    ],
)
def test_real_answers_match_their_documented_schemas(
    api: Deployment, spec: dict[str, Any], name: str, params: dict[str, str]
) -> None:
    op = _deref(spec["paths"][f"/api/v1/queries/{name}"]["get"], spec)
    response = httpx.get(
        f"{api.url}/api/v1/queries/{name}", params=params, headers=api.headers(), timeout=30
    )
    assert response.status_code == 200
    body = response.json()
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(schema).validate(body)
    documented = schema["allOf"][1]["properties"]
    assert documented["columns"]["const"] == body["columns"]
    assert documented["types"]["const"] == body["types"]
    csv = httpx.get(
        f"{api.url}/api/v1/queries/{name}",
        params={**params, "format": "csv"},
        headers=api.headers(),
        timeout=30,
    )
    header = csv.text.splitlines()[0]
    assert header == op["responses"]["200"]["content"]["text/csv"]["schema"]["examples"][0].strip()
    # an error answer matches the error schema and its parameter is named
    bad = httpx.get(f"{api.url}/api/v1/queries/{name}", params={"nope": "1"}, headers=api.headers())
    error_schema = op["responses"]["422"]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(error_schema).validate(bad.json())
    assert bad.json()["param"] == "nope"


_URL = re.compile(r"(?i)\b(?:https?:)?//[^\s\"'<>)]*")


@pytest.mark.parametrize("path", ["/docs", "/", "/dashboard"])
def test_pages_are_self_hosted_with_no_outside_url(api: Deployment, path: str) -> None:
    response = httpx.get(api.url + path)  # no key: the pages hold no data
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    outside = [url for url in _URL.findall(html) if not url.startswith(api.url)]
    assert outside == [], outside
    assert "<script src" not in html and "stylesheet" not in html and "@import" not in html
    assert re.findall(r"<link [^>]*>", html) == ['<link rel="icon" href="data:,">']
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "http" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    head = httpx.head(api.url + path)
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("name", PAGES)
def test_every_inline_block_is_allowed_by_its_hash(name: str) -> None:
    page = load_page(name)
    html = page.body.decode()
    policy = page.headers["Content-Security-Policy"]
    blocks = re.findall(r"<(script|style)>", html)
    assert blocks.count("script") == 1 and blocks.count("style") == 1
    assert policy.count("'sha256-") == 2
    # the key is never put in a URL: no form that could submit it, no query string built from it
    assert "<form" not in html
    assert 'name="key"' not in html
