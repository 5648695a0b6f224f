"""What the benchmarks (``bi-platform bench NAME``; ``<domain>/bench.py``) share: the
error they raise, ratios and targets (the PostgreSQL server their scratch databases go
to is :func:`bi_platform.runtime.services.admin_url`).

Each benchmark prints a table, then one JSON line whose ratios compare against a baseline
measured in the same run."""

from __future__ import annotations


class BenchError(RuntimeError):
    """The benchmark cannot run (no PostgreSQL server, no Java, no wrk, ...)."""


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` to 3 decimals; infinite when the denominator is 0."""
    return round(numerator / denominator, 3) if denominator else float("inf")


def met(value: float, op: str, bound: float) -> bool:
    """Whether ``value`` meets a target ``op bound`` (``op`` is ``">="`` or ``"<="``)."""
    return value >= bound if op == ">=" else value <= bound
