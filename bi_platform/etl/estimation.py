"""Stratified random sample of the parsed records and estimated totals with confidence intervals.

Strata are products. The design, with its reasons:

* **Sample size** -- ``round(fraction * N)`` rows (``ETL_SAMPLE_FRACTION``), raised when a
  pilot sample says the data are too skewed for an interval from that many rows:
  Cochran's rule ``n >= 25 * g1**2`` (g1: the population skewness of the most skewed
  estimated column, estimated with expansion weights from a pilot sample drawn with
  independent keys, re-estimated on a larger pilot while it keeps asking for more). The
  pilot is independent of the sample, so the size does not depend on the sample it sizes.
  The result says the real size, the fraction of the records and why
  (:attr:`EstimationResult.size_reason`).
* **Allocation and collapsed strata** -- each product gets a share of the sample
  proportional to ``sqrt(N_h)`` (a compromise between proportional and equal allocation
  that gives rare products a usable sample), at most ``N_h``. A product whose share is
  under ``min_per_stratum`` (3: a variance needs two rows, the skewness used by the
  interval three) is not given that many rows of its own (with thousands of rare products
  that multiplied the sample: 2 rows each made 14% of the small sample inbox); such
  products are pooled, by size, into *collapsed strata* whose pooled share reaches the
  minimum. Sampling strata
  are then the large products and the collapsed strata; the integer sizes are fixed by
  largest remainders, so they add up to the sample size.
* **Sampling** -- simple random sampling without replacement inside each sampling stratum
  by *bottom-k on a seeded hash*: every row gets ``key = splitmix64(seed, key columns)``
  (by default all integer and timestamp columns but the stratum: ``id, timestamp,
  quantity, value``) and the sample of a stratum is its ``n_h`` rows with the smallest keys.
  The hash is computed with integer expressions (not ``Expr.hash``, whose output may change
  between Polars versions), so the same records and seed give the same sample whatever the
  row or file order and whatever the Polars version. Exact duplicate rows share a key; a
  clean record set has none.
* **Memory** -- the records are only scanned: one streaming aggregation gives ``N_h`` and
  the exact totals; a further streaming pass per sample keeps the rows whose uniform key
  falls under a per-stratum threshold a little above ``n_h / N_h`` (the candidates, about
  1.5 times the sample), and the ``n_h`` smallest keys are taken from them. A stratum left
  short (rare) is scanned again with a wider threshold, so the result is exactly the
  bottom-k sample.
* **Estimator** -- expansion estimator ``T = sum N_h * mean_h`` (weights ``N_h / n_h``)
  with ``Var = sum N_h^2 (1 - n_h / N_h) s_h^2 / n_h`` (finite population correction). The
  interval uses Student's t with Satterthwaite's effective degrees of freedom (a variance
  summed from many small strata has few), widened on the side the estimator is skewed
  toward by the Cornish-Fisher term ``g (2 t^2 + 1) / 6`` standard errors (``g``: the
  estimated skewness of ``T``, from the strata's third moments; Hall 1992); it is never
  narrower than the t interval. Right-skewed values (sales) otherwise miss high.
* **Exact totals** -- summed in 128-bit integers (Python ints in the output): no wrap,
  whatever the values.
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
_GROUP = "__sample_stratum"

#: Cochran's rule for a sample mean of a skewed population: n >= 25 * skewness**2.
COCHRAN_FACTOR = 25.0
#: The pilot sample's keys: the seed mixed with this constant (independent of the sample).
PILOT_SALT = 0x5EED_0F_C0C4_2A17
#: Pilot rounds at most (each a larger pilot when the previous one asked for more).
PILOT_ROUNDS = 3

METHOD = (
    "stratified SRSWOR (bottom-k seeded hash), sqrt(N_h) allocation with rare products "
    "pooled into collapsed strata, size raised by Cochran's rule (pilot sample) when "
    "skewness requires, expansion estimator with finite population correction, Student t "
    "interval (Satterthwaite df) widened on the skewed side (Cornish-Fisher)"
)


@dataclass(frozen=True)
class TotalEstimate:
    """The estimated total of one column, its interval and, when known, the exact total."""

    column: str
    estimate: float
    standard_error: float
    ci_low: float
    ci_high: float
    exact: int | float | None = None  # an int for integer columns (exact, no wrap)
    relative_error: float | None = None  # |estimate - exact| / |exact|
    covers: bool | None = None  # ci_low <= exact <= ci_high
    df: float | None = None  # Satterthwaite's effective degrees of freedom
    skewness: float | None = None  # estimated skewness of the estimator

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
            "df": self.df,
            "skewness": self.skewness,
        }


@dataclass(frozen=True)
class EstimationResult:
    """Totals estimated from one stratified sample, and how the sample was sized."""

    fraction: float  # the configured fraction
    seed: int
    confidence: float
    population: int
    sample_size: int  # the real sample size
    strata: int  # products (strata of the population)
    estimates: dict[str, TotalEstimate]
    seconds: float
    sampling_strata: int = 0  # large products + collapsed strata
    collapsed_products: int = 0
    collapsed_strata: int = 0
    target_size: int = 0  # round(fraction * N), at least the minimum
    required_size: int = 0  # Cochran's rule from the pilot (0: not computed)
    size_reason: str = ""
    method: str = field(default=METHOD)

    @property
    def sample_fraction(self) -> float:
        """The real share of the records in the sample."""
        return self.sample_size / self.population if self.population else 0.0

    def as_metadata(self) -> dict[str, Any]:
        """A JSON-able dict (the report and the Dagster metadata read it)."""
        return {
            "fraction": self.fraction,
            "sample_fraction": self.sample_fraction,
            "seed": self.seed,
            "confidence": self.confidence,
            "population": self.population,
            "sample_size": self.sample_size,
            "target_size": self.target_size,
            "required_size": self.required_size,
            "size_reason": self.size_reason,
            "strata": self.strata,
            "sampling_strata": self.sampling_strata,
            "collapsed_products": self.collapsed_products,
            "collapsed_strata": self.collapsed_strata,
            "seconds": self.seconds,
            "method": self.method,
            "estimates": {name: est.as_metadata() for name, est in self.estimates.items()},
        }


# -- Student t -------------------------------------------------------------------------------


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    log_front += a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * result / a


def student_t_cdf(t: float, df: float) -> float:
    """Student's t distribution function.

    Args:
        t: The point.
        df: Degrees of freedom (> 0, may be fractional).

    Returns:
        P(T <= t).
    """
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`student_t_cdf`; the normal quantile beyond 1e7 degrees of freedom).

    Args:
        p: A probability in (0, 1).
        df: Degrees of freedom (> 0, may be fractional).

    Returns:
        The quantile.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if not df > 0:
        raise ValueError(f"df must be > 0, got {df!r}")
    if df > 1e7:
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


# -- allocation --------------------------------------------------------------------------------


def _check_fraction(fraction: float) -> None:
    if not (0 < fraction <= 1) or math.isnan(fraction):
        raise ValueError(f"sample fraction must be in (0, 1], got {fraction!r}")


def _populations_frame(populations: dict[Any, int] | pl.DataFrame) -> pl.DataFrame:
    """``stratum, N_h`` sorted by stratum, validated."""
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
    return frame.sort("stratum", nulls_last=True)


def sqrt_shares(sizes: np.ndarray, total: float) -> np.ndarray:
    """Continuous sample shares proportional to ``sqrt(N_h)``.

    Args:
        sizes: ``N_h`` of each stratum.
        total: The sample size to share out.

    Returns:
        ``min(c * sqrt(N_h), N_h)`` adding up to ``total`` (``c`` by bisection); ``N_h``
        when ``total`` reaches the population.
    """
    if sizes.size == 0 or total <= 0:
        return np.zeros(sizes.size)
    if total >= sizes.sum():
        return sizes.astype(np.float64)
    root = np.sqrt(sizes.astype(np.float64))
    low, high = 0.0, float(np.sqrt(sizes.max()))
    for _ in range(200):
        mid = (low + high) / 2
        if np.minimum(mid * root, sizes).sum() < total:
            low = mid
        else:
            high = mid
        if high - low <= 1e-12 * max(high, 1.0):
            break
    return np.minimum(high * root, sizes)


def _round_to(shares: np.ndarray, total: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Integers within ``[low, high]`` near ``shares`` adding up to ``total`` when the
    bounds allow (largest remainders first; ties in order, so deterministic)."""
    whole = np.clip(np.floor(shares).astype(np.int64), low, high)
    missing = total - int(whole.sum())
    if missing > 0:
        room = np.where(whole < high, shares - whole, -np.inf)
        for index in np.argsort(-room, kind="stable")[:missing]:
            if whole[index] < high[index]:
                whole[index] += 1
    elif missing < 0:
        excess = np.where(whole > low, whole - shares, -np.inf)
        for index in np.argsort(-excess, kind="stable")[:-missing]:
            if whole[index] > low[index]:
                whole[index] -= 1
    return whole


@dataclass(frozen=True)
class Design:
    """Sampling strata for one sample size: ``strata`` maps each product (``stratum``,
    ``N_h``) to its sampling stratum (``group``); ``groups`` has ``group, N_h, n_h,
    products`` per sampling stratum (the large products first, then the collapsed ones)."""

    strata: pl.DataFrame
    groups: pl.DataFrame
    collapsed_products: int
    collapsed_strata: int

    @property
    def sample_size(self) -> int:
        return int(self.groups["n_h"].sum()) if self.groups.height else 0


def collapse_strata(
    populations: dict[Any, int] | pl.DataFrame, sample_size: int, min_per_stratum: int = 3
) -> Design:
    """The sampling strata of a ``sample_size`` stratified sample (see the module).

    Args:
        populations: Stratum -> ``N_h``, or a frame with columns ``stratum, N_h``.
        sample_size: Rows wanted (clipped to ``[min(min_per_stratum, N), N]``).
        min_per_stratum: The least rows of a sampling stratum (at least 1).

    Returns:
        The :class:`Design`. Products whose ``sqrt(N_h)`` share is under
        ``min_per_stratum`` are pooled in size order (then stratum order) into collapsed
        strata whose pooled share reaches it; a last pool short of it joins the previous
        collapsed stratum.
    """
    if min_per_stratum < 1:
        raise ValueError(
            f"min_per_stratum must be >= 1 (a stratum without sample has no estimate), "
            f"got {min_per_stratum}"
        )
    frame = _populations_frame(populations)
    sizes = frame["N_h"].to_numpy().astype(np.int64)
    total = int(sizes.sum())
    empty = pl.DataFrame(
        schema={"group": pl.Int64, "N_h": pl.Int64, "n_h": pl.Int64, "products": pl.Int64}
    )
    if total == 0:
        return Design(frame.with_columns(group=pl.lit(0, pl.Int64)), empty, 0, 0)
    wanted = min(total, max(int(sample_size), min(min_per_stratum, total)))
    shares = sqrt_shares(sizes, wanted)
    small = np.flatnonzero(shares < min_per_stratum)
    small = small[np.lexsort((small, sizes[small]))]  # by size, then stratum order
    group = np.full(len(sizes), -1, np.int64)
    pools: list[list[int]] = []
    pooled = 0.0
    current: list[int] = []
    for index in small:
        current.append(int(index))
        pooled += shares[index]
        if pooled >= min_per_stratum:
            pools.append(current)
            current, pooled = [], 0.0
    if current:
        if pools:
            pools[-1].extend(current)
        else:
            pools.append(current)
    large = np.flatnonzero(shares >= min_per_stratum)
    for number, index in enumerate(large):
        group[index] = number
    for number, members in enumerate(pools, start=len(large)):
        group[members] = number
    count = len(large) + len(pools)
    group_sizes = np.bincount(group, weights=sizes, minlength=count).astype(np.int64)
    group_shares = np.bincount(group, weights=shares, minlength=count)
    products = np.bincount(group, minlength=count).astype(np.int64)
    n_h = _round_to(group_shares, wanted, np.minimum(min_per_stratum, group_sizes), group_sizes)
    groups = pl.DataFrame(
        {
            "group": np.arange(count, dtype=np.int64),
            "N_h": group_sizes,
            "n_h": n_h,
            "products": products,
        }
    )
    return Design(
        frame.with_columns(group=pl.Series(group, dtype=pl.Int64)),
        groups,
        len(small),
        len(pools),
    )


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
    """The exact sum of a column: 128-bit integers for integers (no wrap), else floats."""
    if dtype.is_integer():
        return pl.col(name).cast(pl.Int128).sum()
    return pl.col(name).cast(pl.Float64).sum()


def _exact_total(values: pl.Series) -> int | float:
    if values.dtype.is_integer():
        return sum((int(v) for v in values.to_list() if v is not None), 0)
    return float(values.sum())


@dataclass(frozen=True)
class _Moments:
    """Per sampling stratum: n, mean, variance (n - 1), unbiased third central moment."""

    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    k3: np.ndarray


def _moments(group: np.ndarray, values: np.ndarray, count: int) -> _Moments:
    n = np.bincount(group, minlength=count).astype(np.float64)
    safe = np.maximum(n, 1.0)
    mean = np.bincount(group, weights=values, minlength=count) / safe
    dev = values - mean[group]
    m2 = np.bincount(group, weights=dev * dev, minlength=count)
    m3 = np.bincount(group, weights=dev * dev * dev, minlength=count)
    var = np.where(n > 1, m2 / np.maximum(n - 1, 1.0), 0.0)
    k3 = np.where(n > 2, n * m3 / np.maximum((n - 1) * (n - 2), 1.0), 0.0)
    return _Moments(n, mean, var, k3)


def population_skewness(group: np.ndarray, values: np.ndarray, sizes: np.ndarray) -> float:
    """The population skewness of a column estimated from a stratified sample.

    Args:
        group: Each sampled row's sampling stratum.
        values: Each sampled row's value.
        sizes: ``N_h`` of each sampling stratum (expansion weights ``N_h / n_h``).

    Returns:
        The estimated skewness (0 with fewer than 3 rows or no spread).
    """
    if len(values) < 3:
        return 0.0
    n = np.bincount(group, minlength=len(sizes)).astype(np.float64)
    weights = (sizes / np.maximum(n, 1.0))[group]
    mean = float(np.sum(weights * values) / np.sum(weights))
    dev = values - mean
    m2 = float(np.sum(weights * dev * dev) / np.sum(weights))
    m3 = float(np.sum(weights * dev**3) / np.sum(weights))
    return m3 / m2**1.5 if m2 > 0 else 0.0


def total_estimate(
    column: str,
    group: np.ndarray,
    values: np.ndarray,
    sizes: np.ndarray,
    confidence: float,
    exact: int | float | None = None,
) -> TotalEstimate:
    """The total of ``values`` estimated from a stratified sample (see the module).

    Args:
        column: The column's name.
        group: Each sampled row's sampling stratum (0..len(sizes) - 1).
        values: Each sampled row's value.
        sizes: ``N_h`` of each sampling stratum.
        confidence: The interval's confidence level.
        exact: The exact total, when known (relative error and coverage then).

    Returns:
        The :class:`TotalEstimate`.
    """
    sizes = sizes.astype(np.float64)
    m = _moments(group, values.astype(np.float64), len(sizes))
    sampled = m.n > 0
    big_n, n = sizes[sampled], m.n[sampled]
    share = n / big_n
    estimate = float(np.sum(big_n * m.mean[sampled]))
    parts = big_n**2 * (1.0 - share) * m.var[sampled] / n
    variance = float(np.sum(parts))
    se = math.sqrt(max(variance, 0.0))
    several = n > 1
    denominator = float(np.sum(parts[several] ** 2 / (n[several] - 1.0)))
    df = variance**2 / denominator if denominator > 0 else math.inf
    third = float(np.sum(big_n**3 * (1 - share) * (1 - 2 * share) * m.k3[sampled] / n**2))
    skew = third / variance**1.5 if variance > 0 else 0.0
    level = 0.5 + confidence / 2
    q = student_t_quantile(level, df) if math.isfinite(df) else NormalDist().inv_cdf(level)
    if se > 0:
        shift = skew * (2 * q * q + 1) / 6
        low = estimate - (q + max(-shift, 0.0)) * se
        high = estimate + (q + max(shift, 0.0)) * se
    else:
        low = high = estimate
    rel = covers = None
    if exact is not None:
        zero = 0.0 if estimate == 0 else None
        rel = abs(estimate - exact) / abs(exact) if exact else zero
        covers = bool(low <= exact <= high)
    return TotalEstimate(
        column=column,
        estimate=estimate,
        standard_error=se,
        ci_low=low,
        ci_high=high,
        exact=exact,
        relative_error=rel,
        covers=covers,
        df=df if math.isfinite(df) else None,
        skewness=skew,
    )


class StratifiedEstimator:
    """Totals of ``columns`` estimated from seeded stratified random samples of
    ``records`` (see the module). The strata sizes and the exact totals are computed
    once, by one streaming aggregation; each :meth:`estimate` then draws its samples.

    Args:
        records: The records (scanned lazily; only samples are collected).
        stratum: The stratum column (product).
        columns: The numeric columns whose totals are estimated.
        min_per_stratum: The least rows of a sampling stratum.
        confidence: The intervals' confidence level.
        with_exact: Compute the exact totals too (relative error, coverage).
        key_columns: The columns hashed into the sample keys (default: every integer,
            boolean or temporal column but the stratum).
    """

    def __init__(
        self,
        records: pl.LazyFrame | pl.DataFrame,
        *,
        stratum: str = "product",
        columns: tuple[str, ...] = ("quantity", "value"),
        min_per_stratum: int = 3,
        confidence: float = 0.95,
        with_exact: bool = True,
        key_columns: tuple[str, ...] | None = None,
    ):
        if not (0 < confidence < 1):
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        if min_per_stratum < 1:
            raise ValueError(f"min_per_stratum must be >= 1, got {min_per_stratum}")
        started = time.perf_counter()
        lazy = records.lazy()
        schema = lazy.collect_schema()
        _check_columns(schema, stratum, columns)
        self.lazy = _normalise_stratum(lazy, schema, stratum)
        self.stratum = stratum
        self.columns = columns
        self.min_per_stratum = min_per_stratum
        self.confidence = confidence
        self.keys = _key_columns(schema, stratum, key_columns)
        exact_aggs = (
            [_sum_expr(c, schema[c]).alias(f"exact_{c}") for c in columns] if with_exact else []
        )
        counts = (
            self.lazy.group_by(stratum)
            .agg(pl.len().alias("N_h"), *exact_aggs)
            .collect(engine="streaming")
            .rename({stratum: "stratum"})
        )
        self.populations = _populations_frame(counts.select("stratum", "N_h"))
        self.population = int(self.populations["N_h"].sum()) if counts.height else 0
        self.exact: dict[str, int | float] = (
            {c: _exact_total(counts[f"exact_{c}"]) for c in columns} if with_exact else {}
        )
        self._designs: dict[int, Design] = {}
        self.setup_seconds = time.perf_counter() - started

    def design(self, sample_size: int) -> Design:
        """The sampling strata for a sample size (cached).

        Args:
            sample_size: Rows wanted.

        Returns:
            The :class:`Design`.
        """
        if sample_size not in self._designs:
            self._designs[sample_size] = collapse_strata(
                self.populations, sample_size, self.min_per_stratum
            )
        return self._designs[sample_size]

    def sample(self, sample_size: int, seed: int) -> tuple[Design, pl.DataFrame]:
        """Draw one bottom-k stratified sample.

        Args:
            sample_size: Rows wanted.
            seed: The sample's seed.

        Returns:
            ``(design, sample)``; the sample's columns: the sampling stratum
            (``__sample_stratum``), the stratum, the key and the estimated columns.
        """
        design = self.design(sample_size)
        if design.groups.height == 0:
            empty = self.lazy.select(self.stratum, *self.columns).limit(0).collect()
            return design, empty.with_columns(pl.lit(0, pl.Int64).alias(_GROUP))
        mapping = design.strata.select(
            pl.col("stratum").alias(self.stratum), pl.col("group").alias(_GROUP)
        )
        grouped = self.lazy.join(
            mapping.lazy(), on=self.stratum, how="left", nulls_equal=True
        ).with_columns(pl.col(_GROUP).cast(pl.Int64))
        alloc = design.groups.select(pl.col("group").alias("stratum"), "N_h", "n_h")
        sample = _draw_sample(
            grouped,
            alloc,
            stratum=_GROUP,
            columns=(self.stratum, *self.columns),
            seed=seed,
            key_columns=self.keys,
        )
        return design, sample

    def _required_size(self, target: int, seed: int) -> tuple[int, float, str | None]:
        """Cochran's ``25 g1^2`` from pilot samples (independent keys), the skewness and
        its column; re-estimated on a larger pilot while it asks for more."""
        size, need, skew, column = target, 0, 0.0, None
        for _ in range(PILOT_ROUNDS):
            design, pilot = self.sample(size, seed ^ PILOT_SALT)
            group = pilot[_GROUP].to_numpy()
            sizes = design.groups["N_h"].to_numpy()
            found = []
            for c in self.columns:
                values = pilot[c].cast(pl.Float64).to_numpy()
                found.append((abs(population_skewness(group, values, sizes)), c))
            skew, column = max(found) if found else (0.0, None)
            need = min(self.population, math.ceil(COCHRAN_FACTOR * skew**2))
            if need <= 1.05 * size or size >= self.population:
                break
            size = need
        return need, skew, column

    def estimate(self, fraction: float = 0.005, seed: int = 42) -> EstimationResult:
        """Estimate every column's total from one sample (see the module).

        Args:
            fraction: The share of the records to sample (``ETL_SAMPLE_FRACTION``).
            seed: The sample's seed.

        Returns:
            The :class:`EstimationResult` (real sample size, fraction and why).
        """
        _check_fraction(fraction)
        started = time.perf_counter()
        population = self.population
        target = min(population, max(round(fraction * population), self.min_per_stratum))
        required, skew, column = (0, 0.0, None)
        if population and target < population:
            required, skew, column = self._required_size(target, seed)
        design, sample = self.sample(max(target, required), seed)
        group = sample[_GROUP].to_numpy()
        sizes = design.groups["N_h"].to_numpy()
        estimates = {
            c: total_estimate(
                c,
                group,
                sample[c].cast(pl.Float64).to_numpy(),
                sizes,
                self.confidence,
                self.exact.get(c),
            )
            for c in self.columns
        }
        result = EstimationResult(
            fraction=fraction,
            seed=seed,
            confidence=self.confidence,
            population=population,
            sample_size=sample.height,
            strata=self.populations.height,
            estimates=estimates,
            seconds=time.perf_counter() - started + self.setup_seconds,
            sampling_strata=design.groups.height,
            collapsed_products=design.collapsed_products,
            collapsed_strata=design.collapsed_strata,
            target_size=target if population else 0,
            required_size=required,
            size_reason=_size_reason(
                fraction, population, target, required, skew, column, design, sample.height,
                self.min_per_stratum,
            ),
        )  # fmt: skip
        logger.info(
            "stratified estimate: N=%d, n=%d (%.3g%%) over %d sampling strata, seed %d: %s",
            population,
            result.sample_size,
            100 * result.sample_fraction,
            result.sampling_strata,
            seed,
            result.size_reason,
        )
        return result


def _size_reason(
    fraction: float,
    population: int,
    target: int,
    required: int,
    skew: float,
    column: str | None,
    design: Design,
    size: int,
    minimum: int,
) -> str:
    """Why the sample has ``size`` rows (for the report)."""
    if not population:
        return "no records"
    share = f"{size / population:.3g}" if size < population else "1"
    if size >= population:
        text = f"all {population:,} records (a census)"
        if target < population:
            text += f": Cochran's rule asked for {required:,} rows ({column} skewness {skew:.1f})"
    elif required > target:
        text = (
            f"raised from {target:,} rows ({fraction:.3g} of the records) to {size:,} "
            f"(share {share}): Cochran's rule n >= {COCHRAN_FACTOR:g} g1^2 for the skewness "
            f"g1 = {skew:.1f} of {column!r} estimated from a pilot sample, so the interval holds"
        )
    elif target > round(fraction * population):
        text = f"{size:,} rows: the minimum of {minimum} (the fraction gives fewer)"
    else:
        text = f"{size:,} rows: the configured fraction {fraction:.3g} of {population:,} records"
    if design.collapsed_products:
        text += (
            f"; {design.collapsed_products:,} of {design.strata.height:,} products with a share "
            f"under {minimum} rows pooled into {design.collapsed_strata:,} collapsed strata"
        )
    return text


def stratified_sample(
    records: pl.LazyFrame | pl.DataFrame,
    *,
    stratum: str = "product",
    columns: tuple[str, ...] = ("quantity", "value"),
    fraction: float = 0.005,
    seed: int = 42,
    min_per_stratum: int = 3,
    key_columns: tuple[str, ...] | None = None,
) -> tuple[Design, pl.DataFrame]:
    """The design and the sample of ``round(fraction * N)`` rows (no pilot sizing).

    Args:
        records: The records.
        stratum: The stratum column.
        columns: Columns to keep in the sample.
        fraction: The share of the records.
        seed: The sample's seed.
        min_per_stratum: The least rows of a sampling stratum.
        key_columns: The hashed columns (see :class:`StratifiedEstimator`).

    Returns:
        ``(design, sample)``; the sample has the sampling stratum (``__sample_stratum``),
        the stratum, the key and ``columns``.
    """
    _check_fraction(fraction)
    estimator = StratifiedEstimator(
        records,
        stratum=stratum,
        columns=columns,
        min_per_stratum=min_per_stratum,
        with_exact=False,
        key_columns=key_columns,
    )
    size = max(round(fraction * estimator.population), min_per_stratum)
    return estimator.sample(size, seed)


def stratified_estimate(
    records: pl.LazyFrame | pl.DataFrame,
    *,
    stratum: str = "product",
    columns: tuple[str, ...] = ("quantity", "value"),
    fraction: float = 0.005,
    seed: int = 42,
    min_per_stratum: int = 3,
    confidence: float = 0.95,
    with_exact: bool = True,
    key_columns: tuple[str, ...] | None = None,
) -> EstimationResult:
    """Estimate the totals of ``columns`` from a seeded stratified random sample.

    ``records`` is scanned lazily (only samples are collected); with ``with_exact`` the
    exact totals come from the same aggregation that counts the strata, and every estimate
    carries its relative error and whether its interval covers the exact total. See
    :class:`StratifiedEstimator` for the arguments.

    Returns:
        The :class:`EstimationResult`.
    """
    _check_fraction(fraction)
    estimator = StratifiedEstimator(
        records,
        stratum=stratum,
        columns=columns,
        min_per_stratum=min_per_stratum,
        confidence=confidence,
        with_exact=with_exact,
        key_columns=key_columns,
    )
    return estimator.estimate(fraction, seed)
