"""Engine parity: the same business query must give the same answer on every engine.

:func:`compare_frames` compares two results of one query (any native frame: a Polars
DataFrame, the pandas DataFrame Dask computes, the pyarrow Table DuckDB returns, or a
narwhals frame), normalised to Polars:

* the same columns in the same order;
* the same dtype *family* per column: integer, float and decimal are ``numeric``
  (DuckDB sums integers into decimals, Dask turns nullable integers into floats),
  string and categorical are ``string``, then ``date``, ``datetime``, ``bool``; a
  datetime column of midnights matches a date column (numpy-backed pandas has no dates);
* the same number of rows;
* per numeric column the same null count, and sum, min and max within ``rel_tol``
  (relative; the sum's tolerance is relative to the sum of absolute values, so that
  cancelling sums do not fail on rounding); NaN counts as null (pandas has no null);
* the same top-N order: the first ``top_n`` rows' ``sort_by`` key values identical;
* the same values: both frames sorted by every column (exact ``sort_by`` keys first,
  then other non-float columns, then floats, so rows align on their keys), each cell
  equal, numbers within ``rel_tol``.

:func:`check_battery_parity` runs the query battery on several engines over one Parquet
file and compares every engine to the first.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import narwhals as nw
import polars as pl

from bi_platform.io_managers.engines import EngineConfig, dask_scheduler
from bi_platform.retail.queries import (
    CATALOG,
    BusinessQuery,
    Engine,
    get_query,
    run_query,
    scan_admmat,
)

logger = logging.getLogger(__name__)

#: Relative tolerance of the aggregate and value comparisons (0.01%).
DEFAULT_REL_TOL = 1e-4
#: Absolute tolerance for values near zero (differences of nearly equal numbers).
DEFAULT_ABS_TOL = 1e-9
#: How many problems of one kind are spelled out before summarising.
_MAX_DETAILS = 5


@dataclass
class ParityResult:
    """The comparison of one query's results on two engines."""

    query: str
    engines: tuple[str, str]
    ok: bool
    problems: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: the verdict, row counts and the first problem."""
        pair = " vs ".join(self.engines)
        counts = ", ".join(f"{k}={v}" for k, v in self.rows.items())
        if self.ok:
            return f"{self.query} [{pair}]: OK ({counts})"
        return f"{self.query} [{pair}]: {len(self.problems)} problem(s): {self.problems[0]}"


# --------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------
def to_polars(frame: Any) -> pl.DataFrame:
    """Any engine's result (native or narwhals, eager or lazy) as a Polars DataFrame."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pl.LazyFrame):
        return frame.collect()
    wrapped = frame if isinstance(frame, nw.DataFrame | nw.LazyFrame) else nw.from_native(frame)
    if isinstance(wrapped, nw.LazyFrame):
        return wrapped.collect(backend="polars").to_native()
    return wrapped.to_polars()


def dtype_family(dtype: pl.DataType) -> str:
    """The family a dtype belongs to for parity: numeric, string, date, datetime, bool..."""
    if dtype.is_numeric():  # integers, floats and decimals
        return "numeric"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Categorical | pl.Enum):
        return "string"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.Null:
        return "null"
    return dtype.base_type().__name__.lower()


def _dates_as_dates(left: pl.DataFrame, right: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A datetime column holding only midnights, facing a date column, becomes a date
    (numpy-backed pandas has no date dtype)."""

    def fix(frame: pl.DataFrame, other: pl.DataFrame) -> pl.DataFrame:
        for name, dtype in frame.schema.items():
            if (
                isinstance(dtype, pl.Datetime)
                and other.schema.get(name) == pl.Date
                and frame.select((pl.col(name).dt.time() == dt.time(0)).all()).item()
            ):
                frame = frame.with_columns(pl.col(name).dt.date())
        return frame

    return fix(left, right), fix(right, left)


def _normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """Numeric columns as Float64 with NaN as null; categoricals as strings."""
    exprs = []
    for name, dtype in frame.schema.items():
        family = dtype_family(dtype)
        if family == "numeric":
            col = pl.col(name).cast(pl.Float64)
            exprs.append(col.fill_nan(None).alias(name))
        elif family == "string" and dtype != pl.String:
            exprs.append(pl.col(name).cast(pl.String))
        elif isinstance(dtype, pl.Datetime):  # naive, microseconds, UTC wall time
            col = pl.col(name)
            if dtype.time_zone is not None:
                col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            exprs.append(col.cast(pl.Datetime("us")))
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------
def _close(a: float | None, b: float | None, rel_tol: float, scale: float = 0.0) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isinf(a) or math.isinf(b):
        return a == b
    bound = max(abs(a), abs(b), scale)
    return abs(a - b) <= max(rel_tol * bound, DEFAULT_ABS_TOL)


def _fmt(value: Any) -> str:
    return f"{value:.10g}" if isinstance(value, float) else repr(value)


def compare_frames(
    left: Any,
    right: Any,
    *,
    sort_by: Sequence[str] = (),
    rel_tol: float = DEFAULT_REL_TOL,
    top_n: int = 10,
    names: tuple[str, str] = ("polars", "dask"),
    query: str = "result",
) -> ParityResult:
    """Compare two results of one query; see the module docstring for the rules."""
    lname, rname = names
    prefix = f"{query} [{lname} vs {rname}]"
    raw_left, raw_right = _dates_as_dates(to_polars(left), to_polars(right))
    problems: list[str] = []
    rows = {lname: raw_left.height, rname: raw_right.height}

    # schema: names in order, dtype families
    if raw_left.columns != raw_right.columns:
        only_l = [c for c in raw_left.columns if c not in raw_right.columns]
        only_r = [c for c in raw_right.columns if c not in raw_left.columns]
        if only_l or only_r:
            problems.append(
                f"{prefix}: columns differ: only in {lname} {only_l}, only in {rname} {only_r}"
            )
        else:
            problems.append(
                f"{prefix}: column order differs: {lname} {raw_left.columns} "
                f"vs {rname} {raw_right.columns}"
            )
    common = [c for c in raw_left.columns if c in raw_right.columns]
    comparable = []
    for name in common:
        lfam = dtype_family(raw_left.schema[name])
        rfam = dtype_family(raw_right.schema[name])
        if lfam == rfam or "null" in (lfam, rfam):
            comparable.append(name)
        else:
            problems.append(
                f"{prefix}: column {name!r} dtype family differs: {lname} {lfam} "
                f"({raw_left.schema[name]}) vs {rname} {rfam} ({raw_right.schema[name]})"
            )
    lf, rf = _normalise(raw_left.select(comparable)), _normalise(raw_right.select(comparable))

    if lf.height != rf.height:
        problems.append(f"{prefix}: row count differs: {lname} {lf.height} vs {rname} {rf.height}")

    problems.extend(_compare_aggregates(lf, rf, prefix, names, rel_tol))
    keys = [c for c in sort_by if c in comparable]
    problems.extend(_compare_top(lf, rf, keys, top_n, prefix, names, rel_tol, raw_left, raw_right))
    if lf.height == rf.height and lf.width:
        floats = {
            c for c in comparable if raw_left.schema[c].is_float() or raw_right.schema[c].is_float()
        }
        problems.extend(
            _compare_values(lf, rf, prefix, names, rel_tol, sort_by=sort_by, floats=floats)
        )

    return ParityResult(query, names, not problems, problems, rows)


def _compare_aggregates(
    lf: pl.DataFrame, rf: pl.DataFrame, prefix: str, names: tuple[str, str], rel_tol: float
) -> list[str]:
    """Per column null counts; per numeric column sum, min and max."""
    lname, rname = names
    problems = []
    for name in lf.columns:
        lcol, rcol = lf[name], rf[name]
        if lcol.null_count() != rcol.null_count():
            problems.append(
                f"{prefix}: column {name!r} null count differs: {lname} {lcol.null_count()} "
                f"vs {rname} {rcol.null_count()}"
            )
        if lcol.dtype != pl.Float64 or rcol.dtype != pl.Float64:
            continue
        scale = max(_abs_sum(lcol), _abs_sum(rcol))
        for agg, a, b, sc in (
            ("sum", lcol.sum(), rcol.sum(), scale),
            ("min", lcol.min(), rcol.min(), 0.0),
            ("max", lcol.max(), rcol.max(), 0.0),
        ):
            if not _close(a, b, rel_tol, sc):  # type: ignore[arg-type]
                problems.append(
                    f"{prefix}: column {name!r} {agg} differs beyond {rel_tol:g}: "
                    f"{lname} {_fmt(a)} vs {rname} {_fmt(b)}"
                )
    return problems


def _abs_sum(series: pl.Series) -> float:
    total = series.abs().sum()
    return float(total) if total is not None else 0.0


def _key_equal(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return _close(a, b, rel_tol)
    return a == b


def _compare_top(
    lf: pl.DataFrame,
    rf: pl.DataFrame,
    keys: Sequence[str],
    top_n: int,
    prefix: str,
    names: tuple[str, str],
    rel_tol: float,
    raw_left: pl.DataFrame,
    raw_right: pl.DataFrame,
) -> list[str]:
    """The first ``top_n`` rows' key values, in the engines' order (shown as returned)."""
    if not keys:
        return []
    lname, rname = names
    ltop = lf.select(keys).head(top_n).rows()
    rtop = rf.select(keys).head(top_n).rows()
    for i, (lrow, rrow) in enumerate(zip(ltop, rtop, strict=False)):
        if not all(_key_equal(a, b, rel_tol) for a, b in zip(lrow, rrow, strict=True)):
            return [
                f"{prefix}: top-{top_n} order differs at row {i} on {list(keys)}: "
                f"{lname} {raw_left.select(keys).row(i)} vs {rname} {raw_right.select(keys).row(i)}"
            ]
    return []


def _float_mismatch(a: pl.Series, b: pl.Series, rel_tol: float) -> pl.Series:
    """True where two float columns differ beyond the tolerance (null equals only null)."""
    x, y = pl.col("a"), pl.col("b")
    tol = pl.max_horizontal(pl.max_horizontal(x.abs(), y.abs()) * rel_tol, DEFAULT_ABS_TOL)
    close = x.is_finite() & y.is_finite() & ((x - y).abs() <= tol)
    return (
        pl.DataFrame({"a": a, "b": b})
        .select(~(x.eq_missing(y) | close.fill_null(False)).alias("bad"))
        .to_series()
    )


def _compare_values(
    lf: pl.DataFrame,
    rf: pl.DataFrame,
    prefix: str,
    names: tuple[str, str],
    rel_tol: float,
    *,
    sort_by: Sequence[str],
    floats: set[str],
) -> list[str]:
    """Cell by cell, both frames sorted by every column: first the exact (non-float)
    ``sort_by`` keys, then the other exact columns, then the float ones, so that rows
    align on their keys whatever order ties of float values took."""
    lname, rname = names
    keys = [c for c in sort_by if c in lf.columns and c not in floats]
    exact = [c for c in lf.columns if c not in floats and c not in keys]
    order = [*keys, *exact, *(c for c in lf.columns if c in floats)]
    ls = lf.sort(order, nulls_last=True)
    rs = rf.sort(order, nulls_last=True)
    problems = []
    for name in lf.columns:
        a, b = ls[name], rs[name]
        if a.dtype == pl.Float64 and b.dtype == pl.Float64:
            bad = _float_mismatch(a, b, rel_tol)
        elif a.dtype == b.dtype:
            bad = a.ne_missing(b)
        else:
            bad = a.cast(pl.String).ne_missing(b.cast(pl.String))
        count = int(bad.sum())
        if count:
            i = int(bad.arg_max())  # type: ignore[arg-type]
            problems.append(
                f"{prefix}: column {name!r}: {count} value(s) differ"
                f"{f' beyond {rel_tol:g}' if a.dtype == pl.Float64 else ''}; first at sorted "
                f"row {i}: {lname} {_fmt(a[i])} vs {rname} {_fmt(b[i])}"
            )
        if len(problems) >= _MAX_DETAILS:
            problems.append(f"{prefix}: further columns not compared")
            break
    return problems


# --------------------------------------------------------------------------------------
# The battery
# --------------------------------------------------------------------------------------
def check_battery_parity(
    path: str | Path,
    engines: Sequence[Engine] = ("polars", "dask"),
    *,
    queries: Iterable[str | BusinessQuery] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    segments: Iterable[str] | None = None,
    rel_tol: float = DEFAULT_REL_TOL,
    top_n: int = 10,
    config: EngineConfig | None = None,
) -> list[ParityResult]:
    """Run each query (default: the whole :data:`CATALOG`) on each engine over the admmat
    Parquet at ``path`` (scanning only the query's columns) and compare every engine's
    result to the first engine's. ``params`` maps query names to their parameters.
    Dask computes on ``config.dask_scheduler_address`` when set (the cluster the loads
    use), else locally.

    An engine that fails gives a not-ok result naming the exception.
    """
    if len(engines) < 2:
        raise ValueError("parity needs at least two engines")
    selected = [
        q if isinstance(q, BusinessQuery) else get_query(q)
        for q in (queries if queries is not None else CATALOG.values())
    ]
    allowed = set(segments) if segments is not None else None
    params = params or {}
    connection = None
    if "duckdb" in engines:
        import duckdb

        connection = duckdb.connect()
    results: list[ParityResult] = []
    try:
        for query in selected:
            outputs: dict[str, pl.DataFrame] = {}
            errors: dict[str, str] = {}
            seconds: dict[str, float] = {}
            for engine in engines:
                start = time.perf_counter()
                try:
                    with dask_scheduler(config if engine == "dask" else None):
                        source = scan_admmat(path, engine, query.columns, connection=connection)
                        result = run_query(query, source, params.get(query.name), segments=allowed)
                        outputs[engine] = to_polars(result)
                except Exception as exc:  # one engine failing is a parity finding
                    logger.exception("query %s failed on %s", query.name, engine)
                    errors[engine] = f"{type(exc).__name__}: {exc}"
                seconds[engine] = time.perf_counter() - start
            first = engines[0]
            for other in engines[1:]:
                pair = (first, other)
                failed = [e for e in pair if e in errors]
                if failed:
                    problems = [
                        f"{query.name} [{first} vs {other}]: {e} failed: {errors[e]}"
                        for e in failed
                    ]
                    rows = {e: outputs[e].height for e in pair if e in outputs}
                    res = ParityResult(query.name, pair, False, problems, rows)
                else:
                    res = compare_frames(
                        outputs[first],
                        outputs[other],
                        sort_by=query.sort_by,
                        rel_tol=rel_tol,
                        top_n=top_n,
                        names=pair,
                        query=query.name,
                    )
                res.seconds = {e: seconds[e] for e in pair}
                logger.log(logging.INFO if res.ok else logging.WARNING, res.summary())
                results.append(res)
    finally:
        if connection is not None:
            connection.close()
    return results
