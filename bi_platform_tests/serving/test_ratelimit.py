"""Rate limiting per API key (or client address), in memory and in a real Redis shared by
two app instances (two workers), through a small FastAPI app wired as the API wires it."""

from __future__ import annotations

import time

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.testclient import TestClient
from slowapi import Limiter

from bi_platform.serving.auth import ApiKey
from bi_platform.serving.ratelimit import (
    RateLimitExceeded,
    check_rate_limit,
    make_limiter,
    rate_limit_exceeded_handler,
    rate_limit_key,
)
from bi_platform_tests.serving.redis_server import _free_port, redis_server, redis_url

__all__ = ["redis_server", "redis_url"]  # fixtures used below

KEYS = {
    "secret-a": ApiKey("aaaaaaaaaaaaaaaa", "a", None, "2024-01-01T00:00:00+00:00", None),
    "secret-b": ApiKey("bbbbbbbbbbbbbbbb", "b", ("SEG",), "2024-01-01T00:00:00+00:00", None),
}


def build_app(limiter: Limiter, rate: str) -> FastAPI:
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, rate_limit_exceeded_handler)

    def authenticate(request: Request) -> None:
        secret = request.headers.get("X-API-Key")
        if secret is not None:
            if secret not in KEYS:
                raise HTTPException(401, "invalid API key")
            request.state.api_key = KEYS[secret]

    def limited(request: Request, _: None = Depends(authenticate)) -> None:
        check_rate_limit(limiter, request)

    @app.get("/shared/{name}", dependencies=[Depends(limited)])
    async def shared(name: str) -> Response:
        return Response(name.encode(), media_type="text/plain")

    @app.get("/decorated")
    @limiter.limit(rate)
    async def decorated(request: Request, _: None = Depends(authenticate)) -> Response:
        return Response(b"ok", media_type="text/plain")

    return app


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


def _client(redis: str | None, rate: str = "3/minute") -> TestClient:
    return TestClient(build_app(make_limiter(rate=rate, redis_url=redis), rate))


def test_limit_is_per_key_with_429_and_retry_after(storage: str | None) -> None:
    client = _client(storage)
    a = {"X-API-Key": "secret-a"}
    # one budget across every query name
    assert [client.get(f"/shared/q{i}", headers=a).status_code for i in range(3)] == [200] * 3
    refused = client.get("/shared/q9", headers=a)
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("rate limit exceeded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert client.get("/shared/q0", headers={"X-API-Key": "secret-b"}).status_code == 200
    assert client.get("/shared/q0").status_code == 200  # no key: by client address
    assert client.get("/shared/q0", headers={"X-API-Key": "bogus"}).status_code == 401


def test_decorated_route_uses_the_key_set_by_the_auth_dependency(storage: str | None) -> None:
    client = _client(storage, rate="2/minute")
    a, b = {"X-API-Key": "secret-a"}, {"X-API-Key": "secret-b"}
    assert [client.get("/decorated", headers=a).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/decorated", headers=b).status_code == 200
    refused = client.get("/decorated", headers=a)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1


def test_redis_budget_is_shared_by_two_workers(redis_url: str) -> None:
    worker_1 = _client(redis_url, rate="4/minute")
    worker_2 = _client(redis_url, rate="4/minute")
    a = {"X-API-Key": "secret-a"}
    codes = [(worker_1 if i % 2 else worker_2).get("/shared/x", headers=a) for i in range(5)]
    assert [r.status_code for r in codes] == [200, 200, 200, 200, 429]


def test_the_budget_comes_back_after_the_window() -> None:
    client = _client(None, rate="2/second")
    a = {"X-API-Key": "secret-a"}
    assert [client.get("/shared/x", headers=a).status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(1.05)
    assert client.get("/shared/x", headers=a).status_code == 200


def test_rate_limit_key_prefers_the_api_key() -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [],
        "client": ("10.1.2.3", 5555),
        "query_string": b"",
    }
    request = Request(scope)
    assert rate_limit_key(request) == "addr:10.1.2.3"
    request.state.api_key = KEYS["secret-a"]
    assert rate_limit_key(request) == "key:aaaaaaaaaaaaaaaa"


def test_malformed_rates_fail_at_startup() -> None:
    with pytest.raises(ValueError):
        make_limiter(rate="lots", redis_url=None)


def test_unreachable_redis_degrades_to_counting_in_memory() -> None:
    client = _client(f"redis://127.0.0.1:{_free_port()}/0", rate="2/minute")
    a = {"X-API-Key": "secret-a"}
    assert [client.get("/shared/x", headers=a).status_code for _ in range(3)] == [200, 200, 429]
    assert [client.get("/decorated", headers=a).status_code for _ in range(3)] == [200, 200, 429]
