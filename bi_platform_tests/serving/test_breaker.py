"""The Redis circuit breaker's state machine (a fake clock) and the client options that
bound one Redis call."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bi_platform.serving.breaker import CircuitBreaker, redis_client_options


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_open_the_breaker_and_a_probe_closes_it() -> None:
    clock = Clock()
    states: list[str] = []
    breaker = CircuitBreaker(
        failure_threshold=2, cooldown=2.0, clock=clock, on_change=states.append
    )
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure(TimeoutError())
    assert breaker.state == "closed" and breaker.allow()  # one failure: still closed
    breaker.failure(TimeoutError())
    assert breaker.state == "open" and breaker.is_open()
    assert [breaker.allow() for _ in range(3)] == [False] * 3  # skipped, no waiting
    clock.now += 1.99
    assert not breaker.allow()
    clock.now += 0.02
    assert breaker.state == "half_open" and not breaker.is_open()  # a probe is due
    assert breaker.allow()  # the probe
    assert breaker.is_open() and not breaker.allow()  # the others are still skipped
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and not breaker.is_open()
    assert states == ["open", "half_open", "closed"]
    stats = breaker.stats()
    assert (stats["opened"], stats["closed"], stats["failures"], stats["skipped"]) == (1, 1, 2, 5)


def test_a_failed_probe_reopens_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.failure(ConnectionError())
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 0.5
    assert not breaker.allow()
    clock.now += 0.5
    assert breaker.allow()


def test_a_lost_probe_is_replaced_after_a_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()  # this probe never reports
    clock.now += 0.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    breaker.abandon()  # a cancelled probe frees the slot at once
    assert breaker.allow()


def test_successes_reset_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown=1.0, clock=Clock())
    for _ in range(5):
        breaker.failure()
        breaker.success()
    assert breaker.state == "closed"


def test_one_probe_among_many_threads() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    barrier = threading.Barrier(16)

    def one(_: int) -> bool:
        barrier.wait()
        return breaker.allow()

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(one, range(16))) == 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown=0)
    with pytest.raises(ValueError):
        redis_client_options(0)


def test_client_options_bound_a_call_without_retries() -> None:
    options = redis_client_options(0.1)
    assert options["socket_timeout"] == 0.1 and options["socket_connect_timeout"] == 0.05
    assert options["retry"].get_retries() == 0
    assert redis_client_options(0.1, asyncio=True)["retry"].get_retries() == 0
