"""Small helpers of the retail sample generator: seeded RNGs, allocation, the
Brazilian number formatting of the raw string columns."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

import numpy as np
import polars as pl

from bi_platform.retail.sample.profiles import _REF_DAY, JUNK_SHARE, JUNK_VALUES, RAW_NULL_SHARE
from bi_platform.retail.sample.vocabulary import _BASE_SEASON
from bi_platform.retail.schema import RetailTable

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    """A generator derived from the seed and a stable name (crc32, not ``hash``)."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    entropy = [seed, *(zlib.crc32(p.encode()) if isinstance(p, str) else p for p in parts)]
    return np.random.default_rng(entropy)


def _allocate(total: int, weights: np.ndarray, caps: np.ndarray | None = None) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder),
    never above ``caps``."""
    w = np.asarray(weights, dtype=np.float64) + 1e-12
    raw = total * w / w.sum()
    out = np.floor(raw).astype(np.int64)
    out[np.argsort(-(raw - out), kind="stable")[: total - int(out.sum())]] += 1
    if caps is None:
        return out
    caps = np.asarray(caps, dtype=np.int64)
    if caps.sum() < total:
        raise ValueError(f"cannot place {total} rows in {int(caps.sum())} slots")
    out = np.minimum(out, caps)
    while (deficit := total - int(out.sum())) > 0:
        room = caps - out
        out += np.minimum(_allocate(deficit, np.where(room > 0, w, 0.0)), room)
    return out


def _conform(frame: pl.DataFrame, table: RetailTable) -> pl.DataFrame:
    """Select and cast the columns to exactly the table's raw schema."""
    return frame.select([pl.col(c).cast(t) for c, t in table.raw_schema.items()])


def _nullable(values: np.ndarray | pl.Series, null_mask: np.ndarray | None) -> pl.Series:
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    if null_mask is None or not null_mask.any():
        return series
    return series.scatter(np.flatnonzero(null_mask), None)


def _dates(days: np.ndarray, null_mask: np.ndarray | None = None) -> pl.Series:
    """Epoch-day integers as a ``pl.Date`` series."""
    return _nullable(np.asarray(days, dtype=np.int32), null_mask).cast(pl.Date)


def _pick(values: tuple[str, ...] | list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(idx, dtype=np.int64))


def _choice(
    rng: np.random.Generator, values: tuple[str, ...], p: tuple[float, ...], n: int
) -> pl.Series:
    probs = np.asarray(p, dtype=np.float64)
    return _pick(values, rng.choice(len(values), size=n, p=probs / probs.sum()))


def _sn(mask: np.ndarray) -> pl.Series:
    """Boolean mask as the ERP's "S" / "N" flags."""
    return _pick(("N", "S"), mask.astype(np.int64))


def _round2(x: np.ndarray) -> np.ndarray:
    return np.round(x, 2)


def _retail_price(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Prices ending in ,99 / ,90 / ,49 / ,00 like a shelf tag."""
    cents = np.array([0.99, 0.90, 0.49, 0.00])[rng.choice(4, x.size, p=[0.55, 0.25, 0.1, 0.1])]
    return np.maximum(np.floor(x), 0) + cents


def _grouped(digits: pl.Expr) -> pl.Expr:
    """Digits grouped in threes with "." from the right: "1534567" -> "1.534.567"."""
    return (
        digits.str.reverse()
        .str.replace_all(r"([0-9]{3})", "$1.")
        .str.strip_chars_end(".")
        .str.reverse()
    )


def _format_numbers(
    values: np.ndarray, rng: np.random.Generator, *, currency: bool = False
) -> pl.Series:
    """Numbers as the Brazilian ERP writes them, rounded to cents: "1.534,00", "1534,00",
    "1.534", "0", "12,5", "15,0" (and, with ``currency``, ~1/4 of them prefixed "R$ " or
    "R$"), a few padded with spaces, ~0.4% junk from :data:`JUNK_VALUES` and ~0.1% nulls.

    Draws exactly what the English-format version did from ``rng`` (so every other
    column of the table is unchanged); vectorised, no Python loop per value.
    """
    n = values.size
    rounded = np.round(values, 2)
    style = rng.integers(0, 100, n)
    cents = np.round(np.abs(rounded) * 100).astype(np.int64)
    units, inverse = np.unique(cents // 100, return_inverse=True)  # group each value once
    grouped = pl.select(_grouped(pl.Series(units).cast(pl.String))).to_series()
    frame = pl.DataFrame(
        {
            "cents": cents,
            "negative": rounded < 0,
            "style": style,
            "grouped": grouped.gather(inverse.ravel()),
        }
    )
    whole = (pl.col("cents") % 100 == 0).alias("whole")
    digits = (pl.col("cents") // 100).cast(pl.String).alias("digits")
    cents2 = (pl.col("cents") % 100).cast(pl.String).str.zfill(2).alias("cents2")
    frame = frame.with_columns(whole, digits, cents2).with_columns(
        pl.col("cents2").str.strip_chars_end("0").replace("", "0").alias("short"),
    )
    s, whole = pl.col("style"), pl.col("whole")
    digits, grouped, cents2, short = (pl.col(c) for c in ("digits", "grouped", "cents2", "short"))
    number = (
        pl.when(s < 25)
        .then(pl.concat_str(grouped, pl.lit(","), cents2))  # "1.534,00"
        .when(s < 45)
        .then(pl.concat_str(digits, pl.lit(","), cents2))  # "1534,00"
        .when(whole & (s < 60))
        .then(grouped)  # "1.534", "0"
        .when(whole & (s < 85))
        .then(digits)  # "1534", "15"
        .when(s >= 95)
        .then(pl.concat_str(grouped, pl.lit(","), short))  # "1.534,5"
        .otherwise(pl.concat_str(digits, pl.lit(","), short))  # "12,5", "15,0"
    )
    prefix = pl.when(pl.col("negative")).then(pl.lit("-")).otherwise(pl.lit(""))
    if currency:
        prefix = pl.concat_str(
            prefix,
            pl.when(s % 8 == 1)
            .then(pl.lit("R$ "))
            .when(s % 8 == 5)
            .then(pl.lit("R$"))
            .otherwise(pl.lit("")),
        )
    text = frame.select(pl.concat_str(prefix, number)).to_series()
    padded = np.flatnonzero(rng.random(n) < 0.002)
    text = text.scatter(padded, " " + text.gather(padded) + " ")
    junk = np.flatnonzero(rng.random(n) < JUNK_SHARE)
    text = text.scatter(junk, _pick(JUNK_VALUES, rng.integers(0, len(JUNK_VALUES), junk.size)))
    return text.scatter(np.flatnonzero(rng.random(n) < RAW_NULL_SHARE), None)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` for int64 via a sort (numpy's hash-based unique is much slower)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]]


def _unique_codes(
    rng: np.random.Generator, target: int, draw: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Exactly ``target`` distinct int64 codes (sorted) from repeated draws; fewer only if
    the code space is exhausted."""
    codes = _sorted_unique(draw(int(target * 1.15) + 16))
    for _ in range(30):
        if codes.size >= target:
            break
        codes = _sorted_unique(np.concatenate([codes, draw(2 * (target - codes.size) + 16)]))
    if codes.size > target:
        codes = np.sort(rng.choice(codes, size=target, replace=False))
    elif codes.size < target:
        logger.warning("only %d distinct keys for %d requested rows", codes.size, target)
    return codes


def _draw_days(rng: np.random.Generator, n: int, first: int, last: int) -> np.ndarray:
    """Epoch days in [first, last], weighted by season and weekday (Sunday quiet)."""
    day = np.arange(first, last + 1)
    month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    w = _BASE_SEASON[month] * np.array([0.95, 0.9, 0.95, 1.0, 1.15, 1.35, 0.45])[weekday]
    return day[rng.choice(day.size, size=n, p=w / w.sum())]


def _seasonal_days(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """Epoch days within the last ``days`` days up to the reference date."""
    return _draw_days(rng, n, _REF_DAY - days + 1, _REF_DAY)
