"""Stratified random sample of the parsed records and estimated totals with confidence intervals.

Strata are products. The design, with its reasons:

* **Allocation** -- ``n_h`` proportional to ``sqrt(N_h)`` (a compromise between proportional
  allocation and equal allocation that gives rare products a usable sample), at least
  ``min(min_per_stratum, N_h)`` per stratum (two, so a within-stratum variance can be
  estimated) and at most ``N_h``; the proportionality constant is found by bisection so the
  sample size is ``round(fraction * N)`` (more only when the minimums alone exceed it), and
  the integer sizes are fixed by largest remainders.
* **Sampling** -- simple random sampling without replacement inside each stratum by
  *bottom-k on a seeded hash*: every row gets ``key = splitmix64(seed, key columns)``
  (by default all integer and timestamp columns but the stratum: ``id, timestamp,
  quantity, value``) and the sample of a stratum is its ``n_h`` rows with the smallest keys.
  The hash is computed with integer expressions (not ``Expr.hash``, whose output may change
  between Polars versions), so the same records and seed give the same sample whatever the
  row or file order and whatever the Polars version. Exact duplicate rows share a key; a
  clean record set has none.
* **Memory** -- the records are only scanned: one streaming aggregation gives ``N_h`` and
  the exact totals; a second streaming pass keeps the rows whose uniform key falls under a
  per-stratum threshold a little above ``n_h / N_h`` (the candidates, about 1.5 times the
  sample), and the ``n_h`` smallest keys are taken from them. A stratum left short (rare) is
  scanned again with a wider threshold, so the result is exactly the bottom-k sample.
* **Estimator** -- expansion estimator ``T = sum N_h * mean_h`` (weights ``N_h / n_h``) with
  ``Var = sum N_h^2 (1 - n_h / N_h) s_h^2 / n_h`` (finite population correction) and a normal
  interval ``T +- z * SE``, ``z`` from :class:`statistics.NormalDist`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)

_MASK64 = 2**64 - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_KEY = "__sample_key"
_UNIFORM = "__sample_u"
_THRESHOLD = "__sample_q"
_RANK = "__sample_rank"


@dataclass(frozen=True)
class TotalEstimate:
    """The estimated total of one column, its interval and, when known, the exact total."""

    column: str
    estimate: float
    standard_error: float
    ci_low: float
    ci_high: float
    exact: float | None = None
    relative_error: float | None = None  # |estimate - exact| / |exact|
    covers: bool | None = None  # ci_low <= exact <= ci_high

    def as_metadata(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "estimate": self.estimate,
            "standard_error": self.standard_error,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "exact": self.exact,
            "relative_error": self.relative_error,
            "covers": self.covers,
        }


@dataclass(frozen=True)
class EstimationResult:
    """Totals estimated from one stratified sample."""

    fraction: float
    seed: int
    confidence: float
    population: int
    sample_size: int
    strata: int
    estimates: dict[str, TotalEstimate]
    seconds: float
    method: str = field(
        default="stratified SRSWOR (bottom-k seeded hash), sqrt(N_h) allocation, "
        "expansion estimator with finite population correction, normal interval"
    )

    def as_metadata(self) -> dict[str, Any]:
        """A JSON-able dict (the report and the Dagster metadata read it)."""
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "confidence": self.confidence,
            "population": self.population,
            "sample_size": self.sample_size,
            "strata": self.strata,
            "seconds": self.seconds,
            "method": self.method,
            "estimates": {name: est.as_metadata() for name, est in self.estimates.items()},
        }


# -- allocation --------------------------------------------------------------------------------


def _check_fraction(fraction: float) -> None:
    if not (0 < fraction <= 1) or math.isnan(fraction):
        raise ValueError(f"sample fraction must be in (0, 1], got {fraction!r}")


def allocate(
    populations: dict[str, int] | pl.DataFrame, fraction: float, min_per_stratum: int = 2
) -> pl.DataFrame:
    """Sample size per stratum: columns ``stratum, N_h, n_h`` sorted by stratum.

    ``n_h`` is proportional to ``sqrt(N_h)``, within ``[min(min_per_stratum, N_h), N_h]``, and
    the sizes add up to ``round(fraction * N)`` (or to the sum of the minimums if larger).
    ``populations`` is a mapping stratum -> N_h or a frame with columns ``stratum, N_h``.
    """
    _check_fraction(fraction)
    if min_per_stratum < 1:
        raise ValueError(
            f"min_per_stratum must be >= 1 (a stratum without sample has no estimate), "
            f"got {min_per_stratum}"
        )
    if isinstance(populations, pl.DataFrame):
        missing = {"stratum", "N_h"} - set(populations.columns)
        if missing:
            raise ValueError(f"populations frame lacks column(s) {sorted(missing)}")
        frame = populations.select("stratum", pl.col("N_h").cast(pl.Int64))
    else:
        frame = pl.DataFrame(
            {"stratum": list(populations), "N_h": list(populations.values())},
            schema_overrides={"N_h": pl.Int64},
        )
    if frame.height and frame["N_h"].min() < 1:  # type: ignore[operator]
        bad = frame.filter(pl.col("N_h") < 1)["stratum"].to_list()[:5]
        raise ValueError(f"stratum population must be >= 1; strata {bad!r} are not")
    frame = frame.sort("stratum", nulls_last=True)
    sizes = frame["N_h"].to_numpy().astype(np.int64)
    n_h = _allocate_sizes(sizes, fraction, min_per_stratum)
    return frame.with_columns(n_h=pl.Series(n_h, dtype=pl.Int64))


def _allocate_sizes(sizes: np.ndarray, fraction: float, min_per_stratum: int) -> np.ndarray:
    if sizes.size == 0:
        return sizes.copy()
    total = int(sizes.sum())
    low = np.minimum(min_per_stratum, sizes)
    target = min(total, max(round(fraction * total), int(low.sum())))
    if target >= total:
        return sizes.copy()
    root = np.sqrt(sizes.astype(np.float64))

    def allotted(scale: float) -> np.ndarray:
        return np.clip(scale * root, low, sizes)

    # sum(allotted(c)) is non-decreasing in c; at c = sqrt(max N_h) every stratum is full.
    lo_c, hi_c = 0.0, float(np.sqrt(sizes.max()))
    for _ in range(200):
        mid = (lo_c + hi_c) / 2
        if allotted(mid).sum() < target:
            lo_c = mid
        else:
            hi_c = mid
        if hi_c - lo_c <= 1e-12 * max(hi_c, 1.0):
            break
    real = allotted(hi_c)
    whole = np.floor(real).astype(np.int64)
    missing = target - int(whole.sum())
    if missing > 0:
        # Largest remainders first; ties keep stratum order (stable sort) -> deterministic.
        remainder = np.where(whole < sizes, real - whole, -1.0)
        order = np.argsort(-remainder, kind="stable")[:missing]
        whole[order] += 1
    elif missing < 0:  # floating rounding above target: take back from the largest excess
        excess = np.where(whole > low, real - low, -1.0)
        order = np.argsort(-excess, kind="stable")[:-missing]
        whole[order] -= 1
    return whole


# -- sampling ----------------------------------------------------------------------------------


def _u64(value: int) -> pl.Expr:
    return pl.lit(value & _MASK64, dtype=pl.UInt64)


def _mix(frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
    """splitmix64 finaliser of column ``name``, wrapping UInt64 arithmetic (``// 2**k`` is
    ``>> k``). One ``with_columns`` per step: nesting the expressions would repeat ``z``."""
    z = pl.col(name)
    frame = frame.with_columns((z + _u64(_GOLDEN)).alias(name))
    frame = frame.with_columns((z.xor(z // _u64(2**30)) * _u64(_MIX1)).alias(name))
    frame = frame.with_columns((z.xor(z // _u64(2**27)) * _u64(_MIX2)).alias(name))
    return frame.with_columns(z.xor(z // _u64(2**31)).alias(name))


def _as_u64(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype.is_temporal():
        col = col.dt.epoch("us") if isinstance(dtype, pl.Datetime | pl.Date) else col.cast(pl.Int64)
        return col.fill_null(0).reinterpret(signed=False)
    if dtype == pl.Boolean:
        return col.cast(pl.UInt64).fill_null(0)
    if dtype.is_unsigned_integer():
        return col.cast(pl.UInt64).fill_null(0)
    return col.cast(pl.Int64).fill_null(0).reinterpret(signed=False)


def with_sample_key(
    frame: pl.LazyFrame, seed: int, key_columns: dict[str, pl.DataType], name: str = _KEY
) -> pl.LazyFrame:
    """``frame`` plus column ``name``: a seeded 64-bit hash of the key columns, the same
    whatever the row order and the Polars version."""
    frame = frame.with_columns(_u64(seed).alias(name))
    frame = _mix(frame, name)
    for column, dtype in key_columns.items():
        frame = frame.with_columns(pl.col(name).xor(_as_u64(column, dtype)).alias(name))
        frame = _mix(frame, name)
    return frame


def _key_columns(
    schema: pl.Schema, stratum: str, key_columns: tuple[str, ...] | None
) -> dict[str, pl.DataType]:
    def usable(dtype: pl.DataType) -> bool:
        return dtype.is_integer() or dtype.is_temporal() or dtype == pl.Boolean

    if key_columns is None:
        chosen = {n: t for n, t in schema.items() if n != stratum and usable(t)}
        if not chosen:
            raise ValueError(
                "no integer or timestamp column to derive the sample key from; "
                "pass key_columns explicitly"
            )
        return chosen
    chosen = {}
    for name in key_columns:
        if name not in schema:
            raise ValueError(f"key column {name!r} is not among the records' columns")
        if not usable(schema[name]):
            raise ValueError(
                f"key column {name!r} has type {schema[name]}; integer, boolean or temporal needed"
            )
        chosen[name] = schema[name]
    return chosen


def _draw_sample(
    records: pl.LazyFrame,
    alloc: pl.DataFrame,
    *,
    stratum: str,
    columns: tuple[str, ...],
    seed: int,
    key_columns: dict[str, pl.DataType],
    oversample: float = 1.5,
    slack: float = 16.0,
) -> pl.DataFrame:
    """The n_h rows with the smallest keys in every stratum (columns: stratum, key, columns).

    A first pass keeps the rows whose uniform key is under ``oversample * n_h/N_h +
    slack/N_h`` (~``1.5 n_h + 16`` candidates per stratum); strata left short are scanned
    again with a wider threshold until complete, so the result is the exact bottom-k.
    """
    needed = list(dict.fromkeys([stratum, *columns, *key_columns]))
    keyed = with_sample_key(records.select(needed), seed, key_columns)
    keyed = keyed.select(pl.col(stratum), *columns, _KEY).with_columns(
        (pl.col(_KEY) // _u64(2**11)).cast(pl.Float64).truediv(2.0**53).alias(_UNIFORM)
    )
    wanted = alloc.filter(pl.col("n_h") > 0).select(pl.col("stratum").alias(stratum), "N_h", "n_h")
    ratio = pl.col("n_h") / pl.col("N_h")
    pending = wanted.with_columns(
        pl.min_horizontal(pl.lit(1.0), oversample * ratio + slack / pl.col("N_h")).alias(_THRESHOLD)
    )
    parts: list[pl.DataFrame] = []
    passes = 0
    while pending.height:
        passes += 1
        candidates = (
            keyed.join(
                pending.lazy().select(stratum, "n_h", _THRESHOLD),
                on=stratum,
                how="inner",
                nulls_equal=True,
            )
            .filter(pl.col(_UNIFORM) < pl.col(_THRESHOLD))
            .drop(_UNIFORM)
            .collect(engine="streaming")
        )
        chosen = (
            candidates.sort([stratum, _KEY], nulls_last=True)
            .with_columns(pl.int_range(pl.len()).over(stratum).alias(_RANK))
            .filter(pl.col(_RANK) < pl.col("n_h"))
        )
        got = chosen.group_by(stratum).agg(pl.len().alias("got"))
        status = pending.join(got, on=stratum, how="left", nulls_equal=True).with_columns(
            pl.col("got").fill_null(0)
        )
        complete = status.filter(
            (pl.col("got") >= pl.col("n_h")) | (pl.col(_THRESHOLD) >= 1.0)
        ).select(stratum)
        parts.append(chosen.join(complete, on=stratum, how="semi", nulls_equal=True))
        pending = status.filter(
            (pl.col("got") < pl.col("n_h")) & (pl.col(_THRESHOLD) < 1.0)
        ).select(
            stratum,
            "N_h",
            "n_h",
            pl.min_horizontal(pl.lit(1.0), 2.0 * pl.col(_THRESHOLD) + ratio).alias(_THRESHOLD),
        )
        if pending.height:
            logger.debug("sample pass %d: %d strata short, widening", passes, pending.height)
    logger.debug("sample drawn in %d pass(es)", passes)
    if not parts:
        return keyed.select(stratum, *columns, _KEY).limit(0).collect()
    return pl.concat(parts).drop("n_h", _THRESHOLD, _RANK, strict=False).sort([stratum, _KEY])


def stratified_sample(
    records: pl.LazyFrame | pl.DataFrame,
    *,
    stratum: str = "product",
    columns: tuple[str, ...] = ("quantity", "value"),
    fraction: float = 0.005,
    seed: int = 42,
    min_per_stratum: int = 2,
    key_columns: tuple[str, ...] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The allocation (``stratum, N_h, n_h``) and the sample rows (stratum, key, columns)."""
    lazy = records.lazy()
    schema = lazy.collect_schema()
    _check_columns(schema, stratum, columns)
    lazy = _normalise_stratum(lazy, schema, stratum)
    counts = (lazy.group_by(stratum).agg(pl.len().alias("N_h")).collect(engine="streaming")).rename(
        {stratum: "stratum"}
    )
    alloc = allocate(counts, fraction, min_per_stratum)
    keys = _key_columns(schema, stratum, key_columns)
    sample = _draw_sample(
        lazy, alloc, stratum=stratum, columns=columns, seed=seed, key_columns=keys
    )
    return alloc, sample


# -- estimation --------------------------------------------------------------------------------


def _check_columns(schema: pl.Schema, stratum: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in (stratum, *columns) if c not in schema]
    if missing:
        raise ValueError(f"records lack column(s) {missing}; they have {list(schema.names())}")
    for name in columns:
        if not schema[name].is_numeric():
            raise ValueError(f"column {name!r} has type {schema[name]}; a numeric type is needed")


def _normalise_stratum(lazy: pl.LazyFrame, schema: pl.Schema, stratum: str) -> pl.LazyFrame:
    if isinstance(schema[stratum], pl.Categorical | pl.Enum):
        return lazy.with_columns(pl.col(stratum).cast(pl.String))
    return lazy


def _sum_expr(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_integer():
        return pl.col(name).cast(pl.Int64).sum()
    return pl.col(name).cast(pl.Float64).sum()


def stratified_estimate(
    records: pl.LazyFrame | pl.DataFrame,
    *,
    stratum: str = "product",
    columns: tuple[str, ...] = ("quantity", "value"),
    fraction: float = 0.005,
    seed: int = 42,
    min_per_stratum: int = 2,
    confidence: float = 0.95,
    with_exact: bool = True,
    key_columns: tuple[str, ...] | None = None,
) -> EstimationResult:
    """Estimate the totals of ``columns`` from a seeded stratified random sample.

    ``records`` is scanned lazily (only the sample is collected); with ``with_exact`` the
    exact totals come from the same aggregation that counts the strata, and every estimate
    carries its relative error and whether its interval covers the exact total.
    """
    if not (0 < confidence < 1):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    _check_fraction(fraction)
    started = time.perf_counter()
    lazy = records.lazy()
    schema = lazy.collect_schema()
    _check_columns(schema, stratum, columns)
    lazy = _normalise_stratum(lazy, schema, stratum)
    exact_aggs = (
        [_sum_expr(c, schema[c]).alias(f"exact_{c}") for c in columns] if with_exact else []
    )
    counts = (
        lazy.group_by(stratum)
        .agg(pl.len().alias("N_h"), *exact_aggs)
        .collect(engine="streaming")
        .rename({stratum: "stratum"})
    )
    alloc = allocate(counts.select("stratum", "N_h"), fraction, min_per_stratum)
    keys = _key_columns(schema, stratum, key_columns)
    sample = _draw_sample(
        lazy, alloc, stratum=stratum, columns=columns, seed=seed, key_columns=keys
    )

    population = int(alloc["N_h"].sum()) if alloc.height else 0
    sample_size = sample.height
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    estimates: dict[str, TotalEstimate] = {}
    if sample_size:
        per_stratum = (
            sample.group_by(stratum)
            .agg(
                pl.len().alias("n_h"),
                *[pl.col(c).cast(pl.Float64).mean().alias(f"mean_{c}") for c in columns],
                *[pl.col(c).cast(pl.Float64).var(ddof=1).alias(f"var_{c}") for c in columns],
            )
            .rename({stratum: "stratum"})
            .join(alloc.select("stratum", "N_h"), on="stratum", how="left", nulls_equal=True)
        )
        n_h = per_stratum["n_h"].cast(pl.Float64).to_numpy()
        big_n = per_stratum["N_h"].cast(pl.Float64).to_numpy()
        fpc = 1.0 - n_h / big_n
        unestimable = int(((n_h < 2) & (fpc > 0)).sum())
        if unestimable:
            logger.warning(
                "%d strata have a single sampled row and no full census: their variance "
                "cannot be estimated and counts as 0 (raise min_per_stratum)",
                unestimable,
            )
    exact_totals = {c: float(counts[f"exact_{c}"].sum()) for c in columns} if with_exact else {}
    for c in columns:
        if sample_size:
            mean = per_stratum[f"mean_{c}"].to_numpy()
            var = np.nan_to_num(per_stratum[f"var_{c}"].fill_null(0.0).to_numpy())
            estimate = float(np.sum(big_n * mean))
            variance = float(np.sum(big_n**2 * fpc * var / n_h))
        else:
            estimate, variance = 0.0, 0.0
        se = math.sqrt(max(variance, 0.0))
        low, high = estimate - z * se, estimate + z * se
        exact = exact_totals.get(c)
        rel = None
        covers = None
        if exact is not None:
            rel = abs(estimate - exact) / abs(exact) if exact else (0.0 if estimate == 0 else None)
            covers = bool(low <= exact <= high)
        estimates[c] = TotalEstimate(
            column=c,
            estimate=estimate,
            standard_error=se,
            ci_low=low,
            ci_high=high,
            exact=exact,
            relative_error=rel,
            covers=covers,
        )
    seconds = time.perf_counter() - started
    result = EstimationResult(
        fraction=fraction,
        seed=seed,
        confidence=confidence,
        population=population,
        sample_size=sample_size,
        strata=alloc.height,
        estimates=estimates,
        seconds=seconds,
    )
    logger.info(
        "stratified estimate: N=%d, n=%d over %d strata (fraction %.4g, seed %d) in %.2fs",
        population,
        sample_size,
        alloc.height,
        fraction,
        seed,
        seconds,
    )
    return result
