"""The query cache: keys, TTL classes, both backends (in process and a real Redis) and
single flight under real threads -- for Redis across two independent cache instances,
standing for two worker processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
import redis

from bi_platform.retail.queries import CATALOG
from bi_platform.serving.cache import (
    TTL_BY_CLASS,
    InProcessCache,
    NullCache,
    QueryCache,
    RedisCache,
    cache_key,
    make_cache,
    query_class,
    ttl_for,
)
from bi_platform_tests.serving.redis_server import _free_port, redis_server, redis_url

__all__ = ["redis_server", "redis_url"]  # fixtures used below


class Counter:
    """A compute function that counts its calls and can be slow."""

    def __init__(self, value: bytes = b"v", delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.value


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[QueryCache]:
    if request.param == "memory":
        backend: QueryCache = InProcessCache()
    else:
        backend = RedisCache(request.getfixturevalue("redis_url"))
    yield backend
    backend.close()


# -- keys and TTLs -----------------------------------------------------------------------
def test_cache_key_normalises_params_and_segments() -> None:
    base = cache_key("sales_by_une", {"une": 261, "limit": 10}, "v1", ["B", "A"])
    assert base == cache_key("sales_by_une", {"limit": 10, "une": 261}, "v1", ["A", "B", "A"])
    assert base == cache_key("sales_by_une", {"limit": 10.0, "une": 261}, "v1", ("A", "B"))
    assert base.startswith("sales_by_une:") and len(base.split(":")[1]) == 64
    others = {
        cache_key("sales_by_une", {"une": 2, "limit": 10}, "v1", ["A", "B"]),
        cache_key("sales_by_une", {"une": 261, "limit": 10}, "v2", ["A", "B"]),
        cache_key("sales_by_une", {"une": 261, "limit": 10}, "v1", ["A"]),
        cache_key("sales_by_une", {"une": 261, "limit": 10}, "v1", None),
        cache_key("sales_by_une", {"une": 261, "limit": 10}, "v1", []),
        cache_key("compare_unes", {"une": 261, "limit": 10}, "v1", ["A", "B"]),
        cache_key("sales_by_une", {"une": "261", "limit": 10}, "v1", ["A", "B"]),
    }
    assert base not in others and len(others) == 7
    day = cache_key("q", {"since": date(2024, 1, 31)}, "v1", None)
    assert day == cache_key("q", {"since": "2024-01-31"}, "v1", None)


def test_cache_key_prefix_is_sanitised_and_rejects_bad_input() -> None:
    key = cache_key("x'; DROP TABLE admmat; --\r\n*", {}, "v1", None)
    prefix = key.rsplit(":", 1)[0]
    assert set(prefix) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    with pytest.raises(TypeError):
        cache_key("q", {}, "v1", "SEGMENT")
    with pytest.raises(TypeError):
        cache_key("q", {"x": object()}, "v1", None)


def test_every_catalog_query_has_a_ttl_class() -> None:
    assert len(CATALOG) == 25
    classes = {name: query_class(name) for name in CATALOG}
    assert set(classes.values()) == {"top_products", "dashboard", "forecast", "suppliers"}
    assert classes["top_products_by_une"] == "top_products"
    assert classes["dashboard_totals"] == "dashboard"
    assert classes["manufacturer_ranking"] == "suppliers"
    assert ttl_for("top_products_by_une") == 3600
    assert ttl_for("dashboard_totals") == 300
    assert ttl_for("weekly_trend") == 3600
    assert ttl_for("manufacturer_ranking") == 21600
    assert query_class("no_such_query") == "default"
    assert ttl_for("no_such_query") == TTL_BY_CLASS["default"] == 900
    assert ttl_for("dashboard_totals", {"dashboard": 60}) == 60
    assert ttl_for("dashboard_totals", {"dashboard": 60, "dashboard_totals": 5}) == 5
    assert ttl_for("weekly_trend", {"dashboard": 60}) == 3600


# -- behaviour common to both backends --------------------------------------------------
def test_hit_after_miss_and_stats(cache: QueryCache) -> None:
    compute = Counter(b'{"rows": []}')
    assert cache.get_or_compute("k1", 60, compute) == (b'{"rows": []}', False)
    assert cache.get_or_compute("k1", 60, compute) == (b'{"rows": []}', True)
    assert cache.get_or_compute("k2", 60, Counter(b"other")) == (b"other", False)
    assert compute.calls == 1
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (1, 2)
    assert cache.enabled


def test_entries_expire_after_their_ttl(cache: QueryCache) -> None:
    compute = Counter()
    cache.get_or_compute("short", 0.15, compute)
    assert cache.get_or_compute("short", 0.15, compute)[1] is True
    time.sleep(0.3)
    assert cache.get_or_compute("short", 0.15, compute) == (b"v", False)
    assert compute.calls == 2
    cache.get_or_compute("never", 0, compute)  # ttl <= 0: computed, not stored
    assert cache.get_or_compute("never", 0, compute)[1] is False
    assert compute.calls == 4


def test_compute_must_return_bytes(cache: QueryCache) -> None:
    with pytest.raises(TypeError, match="bytes"):
        cache.get_or_compute("bad", 60, lambda: "text")  # type: ignore[arg-type, return-value]


def _hammer(
    caches: list[QueryCache], key: str, compute: Callable[[], bytes], threads: int
) -> list[tuple[bytes, bool]]:
    barrier = threading.Barrier(threads)

    def one(i: int) -> tuple[bytes, bool]:
        barrier.wait()
        return caches[i % len(caches)].get_or_compute(key, 60, compute)

    with ThreadPoolExecutor(max_workers=threads) as executor:
        return list(executor.map(one, range(threads)))


def test_concurrent_misses_compute_once(cache: QueryCache) -> None:
    compute = Counter(b"slow result", delay=0.3)
    results = _hammer([cache], "hot", compute, threads=16)
    assert compute.calls == 1
    assert {value for value, _ in results} == {b"slow result"}
    assert sorted(hit for _, hit in results) == [False] + [True] * 15


def test_a_failed_computation_reaches_every_waiter_and_is_not_cached(cache: QueryCache) -> None:
    calls = Counter()

    def boom() -> bytes:
        calls()
        time.sleep(0.2)
        raise RuntimeError("warehouse unavailable")

    barrier = threading.Barrier(6)

    def one(_: int) -> str:
        barrier.wait()
        try:
            cache.get_or_compute("fails", 60, boom)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(max_workers=6) as executor:
        outcomes = list(executor.map(one, range(6)))
    assert outcomes == ["warehouse unavailable"] * 6
    assert calls.calls == 1
    assert cache.get_or_compute("fails", 60, Counter(b"ok")) == (b"ok", False)


# -- in process ------------------------------------------------------------------------
def test_in_process_cache_evicts_least_recently_used() -> None:
    cache = InProcessCache(max_entries=2)
    cache.get_or_compute("a", 60, Counter(b"a"))
    cache.get_or_compute("b", 60, Counter(b"b"))
    assert cache.get_or_compute("a", 60, Counter(b"x"))[1] is True  # a is now most recent
    cache.get_or_compute("c", 60, Counter(b"c"))  # evicts b
    assert cache.get_or_compute("a", 60, Counter(b"x")) == (b"a", True)
    assert cache.get_or_compute("b", 60, Counter(b"b2")) == (b"b2", False)
    stats = cache.stats()
    assert stats["entries"] == 2 and stats["evictions"] == 2
    with pytest.raises(ValueError):
        InProcessCache(max_entries=0)


def test_null_cache_always_computes() -> None:
    cache = NullCache()
    compute = Counter()
    assert cache.get_or_compute("k", 60, compute) == (b"v", False)
    assert cache.get_or_compute("k", 60, compute) == (b"v", False)
    assert compute.calls == 2 and not cache.enabled
    assert cache.stats() == {"hits": 0, "misses": 2, "entries": 0}


def test_make_cache_picks_the_backend(redis_url: str) -> None:
    assert isinstance(make_cache(enabled=False, redis_url=redis_url), NullCache)
    assert isinstance(make_cache(enabled=True, redis_url=None), InProcessCache)
    backend = make_cache(enabled=True, redis_url=redis_url)
    assert isinstance(backend, RedisCache) and isinstance(backend, QueryCache)
    backend.close()


# -- Redis: shared by processes --------------------------------------------------------
def test_redis_cache_is_shared_between_instances(redis_url: str) -> None:
    first, second = RedisCache(redis_url), RedisCache(redis_url)
    try:
        assert first.get_or_compute("shared", 60, Counter(b"one")) == (b"one", False)
        assert second.get_or_compute("shared", 60, Counter(b"two")) == (b"one", True)
        client = redis.Redis.from_url(redis_url)
        assert client.get("bi:cache:shared") == b"one"
        assert 0 < client.pttl("bi:cache:shared") <= 60_000
        other_prefix = RedisCache(redis_url, prefix="other:")
        assert other_prefix.get_or_compute("shared", 60, Counter(b"three"))[0] == b"three"
        other_prefix.clear()
        assert client.get("other:shared") is None and client.get("bi:cache:shared") == b"one"
        other_prefix.close()
        client.close()
    finally:
        first.close()
        second.close()


def test_redis_single_flight_across_two_instances(redis_url: str) -> None:
    caches: list[QueryCache] = [RedisCache(redis_url), RedisCache(redis_url)]
    compute = Counter(b"computed once", delay=0.4)
    try:
        results = _hammer(caches, "hot", compute, threads=16)
    finally:
        for cache in caches:
            cache.close()
    assert compute.calls == 1
    assert {value for value, _ in results} == {b"computed once"}
    assert [hit for _, hit in results].count(False) == 1
    client = redis.Redis.from_url(redis_url)
    assert client.exists("bi:cache:lock:hot") == 0  # released by its owner
    client.close()


def test_redis_lock_of_a_dead_process_expires(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    # another worker took the lock and died before storing a value
    client.set("bi:cache:lock:orphan", "dead-token", px=300)
    cache = RedisCache(redis_url, lock_timeout=5)
    started = time.monotonic()
    assert cache.get_or_compute("orphan", 60, Counter(b"recovered")) == (b"recovered", False)
    waited = time.monotonic() - started
    assert 0.2 < waited < 2.0
    assert client.get("bi:cache:orphan") == b"recovered"
    cache.close()
    client.close()


def test_redis_waiter_gives_up_after_lock_timeout(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("bi:cache:lock:stuck", "someone", px=60_000)  # a very slow other worker
    cache = RedisCache(redis_url, lock_timeout=0.3)
    started = time.monotonic()
    assert cache.get_or_compute("stuck", 60, Counter(b"mine")) == (b"mine", False)
    assert 0.25 < time.monotonic() - started < 2.0
    assert client.get("bi:cache:lock:stuck") == b"someone"  # not ours: left alone
    cache.close()
    client.close()


def test_redis_outage_degrades_to_computing(caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://:s3cret-password@127.0.0.1:{_free_port()}/0"  # nothing listens
    cache = RedisCache(url, socket_timeout=0.5)
    compute = Counter(b"fresh")
    with caplog.at_level("WARNING", logger="bi_platform.serving.cache"):
        assert cache.get_or_compute("k", 60, compute) == (b"fresh", False)
        assert cache.get_or_compute("k", 60, compute) == (b"fresh", False)
    assert compute.calls == 2 and cache.stats()["errors"] == 2
    assert "s3cret-password" not in caplog.text and "redis cache read failed" in caplog.text
    cache.close()


def test_in_process_peek_counts_hits_only() -> None:
    cache = InProcessCache()
    assert cache.peek("k") is None
    assert cache.get_or_compute("k", 60, Counter(b"v")) == (b"v", False)
    assert cache.peek("k") == b"v"
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (1, 1)
    cache.clear()
    assert cache.peek("k") is None
