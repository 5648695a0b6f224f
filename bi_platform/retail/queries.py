"""The retail query battery: named business queries over the typed ``admmat`` table.

Each :class:`BusinessQuery` is written ONCE with narwhals and runs unchanged on Polars,
Dask and DuckDB (see :func:`scan_admmat`). The questions follow the BI team's suite of
80 questions in Portuguese ("Quais os 10 produtos mais vendidos do segmento TECIDOS?").

Rules that keep the three engines identical (checked by :mod:`bi_platform.retail.parity`):

* only operations every backend supports: filter, with_columns, select, elementary
  group-by aggregations (sum/mean/len/min/max of a plain column; derived values are
  computed with ``with_columns`` first, as Dask requires), when/then/otherwise, is_in,
  cast, concat, cross join, sort + head;
* no grouped ``n_unique``: narwhals' Dask version sums per-partition counts, wrong when
  a group spans partitions; distinct counts are two group-bys (global ``n_unique`` is
  fine);
* no window functions, no string operations beyond equality, no ``top_k``/``unpivot``
  (narwhals runs those through DuckDB's *default* connection, which cannot see a
  relation of another connection), no literals in ``select`` after a global aggregate
  (Dask), only ``with_columns``;
* every ratio is computed in float and guarded against a zero denominator;
* every result has a total order: :attr:`BusinessQuery.sort_by` ends with key columns
  (UNE, PRODUTO, names), so top-N rows and their order agree across engines.

:func:`run_query` validates the parameters, applies the row-level security restriction
(``NOMESEGMENTO`` in the user's segments) *before* the query, projects the source to the
query's declared columns, builds, sorts and collects.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import narwhals as nw
import polars as pl

from bi_platform.lib.warning_filters import narwhals_dask_quiet, silence_narwhals_dask_warning
from bi_platform.retail.marts import CRITICAL_RUPTURE
from bi_platform.retail.schema import ABC_CLASSES, ADMMAT_SCHEMA, SEGMENTS

if TYPE_CHECKING:
    import duckdb

silence_narwhals_dask_warning()

logger = logging.getLogger(__name__)

Engine = Literal["polars", "dask", "duckdb"]
ENGINES: tuple[Engine, ...] = ("polars", "dask", "duckdb")
CACHE_CLASSES: tuple[str, ...] = ("top_products", "dashboard", "forecast", "suppliers")

#: Default stores of the UNE parameters: 261 (CAMPO GRANDE) and 2 (MADUREIRA), the first
#: stores of the export (UNE 1 is the distribution centre, not in admmat).
DEFAULT_UNES: tuple[int, int] = (261, 2)

#: Value of the ``segmento`` parameter that means "every segment the user may see".
ALL_SEGMENTS = "TODOS"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_MONTHS: tuple[str, ...] = tuple(f"MES_{m:02d}" for m in range(1, 13))
_QUARTER: tuple[str, ...] = _MONTHS[:3]
#: Weekly columns, oldest first: (label, weeks ago).
_WEEKS: tuple[tuple[str, int], ...] = (
    *((f"SEMANA_ANTERIOR_{k}", k - 1) for k in range(5, 1, -1)),
    ("SEMANA_ATUAL", 0),
)


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------
class QueryParameterError(ValueError):
    """A query parameter is unknown, of the wrong type, not a choice or out of range."""

    def __init__(self, query: str, param: str, value: Any, reason: str) -> None:
        self.query = query
        self.param = param
        self.value = value
        self.reason = reason
        super().__init__(f"query {query!r}: parameter {param!r} = {value!r}: {reason}")


@dataclass(frozen=True)
class Param:
    """One parameter of a business query: type, default, allowed choices or range."""

    name: str
    type: type
    default: Any
    description: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in (int, float, str):
            raise TypeError(f"parameter {self.name!r}: type must be int, float or str")

    def coerce(self, query: str, value: Any) -> Any:
        """Convert ``value`` (possibly a string from a URL) to the parameter's type and
        check it against the choices and range; raise :class:`QueryParameterError`."""
        converted = self._convert(query, value)
        if self.choices is not None:
            converted = self._match_choice(query, value, converted)
        if self.minimum is not None and converted < self.minimum:
            raise QueryParameterError(
                query, self.name, value, f"must be >= {self.minimum} (got {converted})"
            )
        if self.maximum is not None and converted > self.maximum:
            raise QueryParameterError(
                query, self.name, value, f"must be <= {self.maximum} (got {converted})"
            )
        return converted

    def _convert(self, query: str, value: Any) -> Any:
        expected = self.type.__name__
        if isinstance(value, bool):
            raise QueryParameterError(query, self.name, value, f"expected {expected}, got bool")
        if self.type is str:
            if not isinstance(value, str):
                raise QueryParameterError(
                    query, self.name, value, f"expected str, got {type(value).__name__}"
                )
            return value.strip()
        if isinstance(value, str):
            text = value.strip()
            try:
                number: float = int(text) if self.type is int else float(text)
            except ValueError:
                raise QueryParameterError(
                    query, self.name, value, f"expected {expected}, not a number"
                ) from None
        elif isinstance(value, int | float):
            number = value
        else:
            raise QueryParameterError(
                query, self.name, value, f"expected {expected}, got {type(value).__name__}"
            )
        if not math.isfinite(number):
            raise QueryParameterError(query, self.name, value, "must be a finite number")
        if self.type is int:
            if number != int(number):
                raise QueryParameterError(query, self.name, value, "expected an integer")
            return int(number)
        return float(number)

    def _match_choice(self, query: str, raw: Any, value: Any) -> Any:
        assert self.choices is not None
        if isinstance(value, str):
            folded = value.casefold()
            for choice in self.choices:
                if isinstance(choice, str) and choice.casefold() == folded:
                    return choice
        elif value in self.choices:
            return value
        shown = ", ".join(repr(c) for c in self.choices)
        raise QueryParameterError(query, self.name, raw, f"must be one of {shown}")


def _limit(default: int, maximum: int = 1000) -> Param:
    return Param("limite", int, default, "Number of rows to return.", minimum=1, maximum=maximum)


def _une(
    name: str = "une", default: int = DEFAULT_UNES[0], description: str = "Store (UNE) id."
) -> Param:
    return Param(name, int, default, description, minimum=0)


_SEGMENT = Param("segmento", str, "TECIDOS", "Product segment.", choices=SEGMENTS)
_SEGMENT_OR_ALL = Param(
    "segmento",
    str,
    ALL_SEGMENTS,
    f"Product segment, or {ALL_SEGMENTS!r} for every segment.",
    choices=(ALL_SEGMENTS, *SEGMENTS),
)


# --------------------------------------------------------------------------------------
# The query definition
# --------------------------------------------------------------------------------------
Builder = Callable[[nw.LazyFrame, Mapping[str, Any]], nw.LazyFrame]


@dataclass(frozen=True)
class BusinessQuery:
    """A named business question over ``admmat``, written once with narwhals."""

    name: str
    question: str
    description: str
    cache_class: str
    params: tuple[Param, ...]
    columns: tuple[str, ...]
    sort_by: tuple[str, ...]
    build: Builder = field(repr=False)
    #: One flag per ``sort_by`` column (empty: all ascending). Nulls always sort last.
    descending: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"query name {self.name!r} is not snake_case")
        if self.cache_class not in CACHE_CLASSES:
            raise ValueError(f"query {self.name!r}: unknown cache class {self.cache_class!r}")
        unknown = [c for c in self.columns if c not in ADMMAT_SCHEMA]
        if unknown:
            raise ValueError(f"query {self.name!r}: columns not in admmat: {unknown}")
        if "NOMESEGMENTO" not in self.columns:
            raise ValueError(f"query {self.name!r}: must read NOMESEGMENTO (row-level security)")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"query {self.name!r}: duplicate parameter names {names}")
        if self.descending and len(self.descending) != len(self.sort_by):
            raise ValueError(f"query {self.name!r}: one descending flag per sort_by column")

    @property
    def sort_descending(self) -> list[bool]:
        """The descending flag of each ``sort_by`` column."""
        return list(self.descending) if self.descending else [False] * len(self.sort_by)

    @property
    def defaults(self) -> dict[str, Any]:
        """The default value of each parameter."""
        return {p.name: p.default for p in self.params}


def validate_params(query: BusinessQuery, raw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Coerce ``raw`` parameters (strings allowed: ``"10"`` -> ``10``), apply defaults and
    check choices and ranges. Unknown parameters are rejected; ``None`` means default."""
    raw = dict(raw or {})
    known = {p.name: p for p in query.params}
    for name in raw:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise QueryParameterError(
                query.name, name, raw[name], f"unknown parameter (allowed: {allowed})"
            )
    values: dict[str, Any] = {}
    for param in query.params:
        value = raw.get(param.name)
        values[param.name] = param.default if value is None else param.coerce(query.name, value)
    return values


# --------------------------------------------------------------------------------------
# Expression helpers
# --------------------------------------------------------------------------------------
def _ratio(numerator: str, denominator: str, name: str) -> nw.Expr:
    """``numerator / denominator`` in float, null where the denominator is not positive."""
    return (
        nw.when(nw.col(denominator) > 0)
        .then(nw.col(numerator).cast(nw.Float64) / nw.col(denominator).cast(nw.Float64))
        .alias(name)
    )


def _flag(condition: nw.Expr, name: str) -> nw.Expr:
    """1.0 where ``condition`` holds, else 0.0 (summed, then cast to Int64)."""
    return nw.when(condition).then(nw.lit(1.0)).otherwise(nw.lit(0.0)).alias(name)


def _row_sum(*names: str) -> nw.Expr:
    """Row-wise sum with nulls as 0, like ``sum_horizontal`` (which on Dask concatenates
    the columns and warns about unknown divisions after a filter)."""
    return functools.reduce(operator.add, (nw.col(n).fill_null(0.0) for n in names))


def _stock_value() -> nw.Expr:
    return (nw.col("ESTOQUE_UNE") * nw.col("LIQUIDO_38")).alias("VALOR_ESTOQUE")


def _quarter_sales() -> nw.Expr:
    return _row_sum(*_QUARTER).alias("VENDA_TRIMESTRE")


def _daily_demand() -> nw.Expr:
    """Average daily demand of the last three closed months."""
    return (_row_sum(*_QUARTER) / 90.0).alias("DEMANDA_DIARIA")


def _in_segment(frame: nw.LazyFrame, segment: str) -> nw.LazyFrame:
    """Restrict to one segment unless it is :data:`ALL_SEGMENTS`."""
    if segment == ALL_SEGMENTS:
        return frame
    return frame.filter(nw.col("NOMESEGMENTO") == segment)


def _top(
    frame: nw.LazyFrame, n: int, by: Sequence[str], descending: Sequence[bool]
) -> nw.LazyFrame:
    """The first ``n`` rows in the given order (sort + head: every engine, any connection)."""
    return frame.sort(list(by), descending=list(descending), nulls_last=True).head(n)


def _as_int(*names: str) -> nw.Expr:
    return nw.col(*names).cast(nw.Int64)


def _long_from_wide(
    wide: nw.LazyFrame,
    rows: Sequence[tuple[str, int]],
    label: str,
    order: str,
    values: Mapping[str, Callable[[str], str]],
) -> nw.LazyFrame:
    """Turn a one-row frame of per-period columns into one row per period.

    ``rows`` are (period label, ordinal); ``values`` maps each output column to a function
    giving the wide column that holds it for a period label. narwhals' ``unpivot`` on
    DuckDB needs the default connection, and a concat of per-period selects of ``wide``
    makes DuckDB aggregate once per period; so a small frame of period labels (derived from
    ``wide``'s row, which the optimisers reduce to nearly nothing) is cross-joined with
    ``wide`` once and each value picked with when/then.
    """
    seed = wide.select(nw.col(wide.columns[0]).alias("__SEED"))
    periods = nw.concat(
        [
            seed.with_columns(
                nw.lit(period, dtype=nw.String).alias(label),
                nw.lit(ordinal, dtype=nw.Int64).alias(order),
            ).select(label, order)
            for period, ordinal in rows
        ],
        how="vertical",
    )

    def pick(src: Callable[[str], str]) -> nw.Expr:
        (first, first_ord), *rest = rows
        expr = nw.when(nw.col(order) == first_ord).then(nw.col(src(first)))
        for period, ordinal in rest:
            expr = expr.when(nw.col(order) == ordinal).then(nw.col(src(period)))
        return expr

    return periods.join(wide, how="cross").select(
        label, order, *(pick(src).alias(out) for out, src in values.items())
    )


# --------------------------------------------------------------------------------------
# The builders (one per query)
# --------------------------------------------------------------------------------------
_TOP_UNE_SORT = (("VENDA_30DD", True), ("PRODUTO", False))


def _top_products_by_une(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = lf.filter(nw.col("UNE") == p["une"]).select(
        "UNE",
        "UNE_NOME",
        "PRODUTO",
        "NOME",
        "NOMESEGMENTO",
        "VENDA_30DD",
        "MES_01",
        "ESTOQUE_UNE",
    )
    return _top(frame, p["limite"], *zip(*_TOP_UNE_SORT, strict=True))


_TOP_SEGMENT_SORT = (("VENDA_30DD", True), ("PRODUTO", False))


def _top_products_by_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .group_by("NOMESEGMENTO", "PRODUTO", "NOME")
        .agg(
            nw.col("VENDA_30DD").sum(),
            nw.col("MES_01").sum(),
            nw.col("ESTOQUE_UNE").sum(),
            nw.len().alias("UNES"),  # admmat's key is UNE x PRODUTO: one row per store
        )
        .with_columns(_as_int("UNES"))
    )
    return _top(frame, p["limite"], *zip(*_TOP_SEGMENT_SORT, strict=True))


def _month_rows() -> list[tuple[str, int]]:
    return [(month, int(month[-2:])) for month in reversed(_MONTHS)]


def _segment_sales_evolution(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    months = _month_rows()  # MES_12 (oldest) .. MES_01
    wide = _in_segment(lf, p["segmento"]).select(*(nw.col(m).sum() for m in _MONTHS))
    # Month-over-month change, computed on the one-row frame (no window function).
    wide = wide.with_columns(
        nw.lit(None, dtype=nw.Float64).alias("VAR_MES_12"),
        *(
            nw.when(nw.col(f"MES_{m + 1:02d}") > 0)
            .then(
                (nw.col(f"MES_{m:02d}") - nw.col(f"MES_{m + 1:02d}")) / nw.col(f"MES_{m + 1:02d}")
            )
            .alias(f"VAR_MES_{m:02d}")
            for m in range(1, 12)
        ),
    )
    return _long_from_wide(
        wide,
        months,
        "MES",
        "MESES_ATRAS",
        {"VENDAS": lambda m: m, "VARIACAO": lambda m: f"VAR_{m}"},
    )


def _compare_unes(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    a, b = p["une_a"], p["une_b"]
    return (
        lf.filter(nw.col("UNE").is_in([a, b]))
        .with_columns(
            nw.when(nw.col("UNE") == a).then(nw.col("VENDA_30DD")).otherwise(0.0).alias("VA"),
            nw.when(nw.col("UNE") == b).then(nw.col("VENDA_30DD")).otherwise(0.0).alias("VB"),
        )
        .group_by("NOMESEGMENTO")
        .agg(nw.col("VA").sum().alias("VENDA_UNE_A"), nw.col("VB").sum().alias("VENDA_UNE_B"))
        .with_columns(
            nw.lit(a, dtype=nw.Int64).alias("UNE_A"),
            nw.lit(b, dtype=nw.Int64).alias("UNE_B"),
            (nw.col("VENDA_UNE_A") - nw.col("VENDA_UNE_B")).alias("DIFERENCA"),
        )
        .select("NOMESEGMENTO", "UNE_A", "UNE_B", "VENDA_UNE_A", "VENDA_UNE_B", "DIFERENCA")
    )


def _with_share(frame: nw.LazyFrame, value: str, name: str = "PARTICIPACAO") -> nw.LazyFrame:
    """Add each row's share of the column total (cross join with the one-row total)."""
    total = frame.select(nw.col(value).sum().alias("__TOTAL"))
    return (
        frame.join(total, how="cross").with_columns(_ratio(value, "__TOTAL", name)).drop("__TOTAL")
    )


def _segment_ranking_quarter(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        lf.with_columns(_quarter_sales())
        .group_by("NOMESEGMENTO")
        .agg(
            nw.col("VENDA_TRIMESTRE").sum(),
            *(nw.col(m).sum() for m in _QUARTER),
            nw.len().alias("ITENS"),
        )
        .with_columns(_as_int("ITENS"))
    )
    return _with_share(frame, "VENDA_TRIMESTRE")


def _abc_concentration(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    in_class = nw.col("ABC_UNE_30DD") == p["classe"]
    return (
        lf.with_columns(
            nw.when(in_class).then(nw.col("VENDA_30DD")).otherwise(0.0).alias("VENDA_CLASSE"),
            _flag(in_class, "ITENS_CLASSE"),
        )
        .group_by("UNE", "UNE_NOME")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("ITENS_CLASSE").sum(),
            nw.col("VENDA_CLASSE").sum(),
            nw.col("VENDA_30DD").sum(),
        )
        .with_columns(
            _as_int("ITENS", "ITENS_CLASSE"),
            nw.lit(p["classe"], dtype=nw.String).alias("CLASSE"),
            _ratio("VENDA_CLASSE", "VENDA_30DD", "CONCENTRACAO"),
        )
        .select(
            "UNE",
            "UNE_NOME",
            "CLASSE",
            "ITENS",
            "ITENS_CLASSE",
            "VENDA_CLASSE",
            "VENDA_30DD",
            "CONCENTRACAO",
        )
    )


def _seasonality(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    wide = (
        _in_segment(lf, p["segmento"])
        .select(*(nw.col(m).sum() for m in _MONTHS))
        .with_columns(_row_sum(*_MONTHS).alias("TOTAL"))
    )
    wide = wide.with_columns(
        *(_ratio(m, "TOTAL", f"PART_{m}") for m in _MONTHS),
        *(
            nw.when(nw.col("TOTAL") > 0)
            .then(nw.col(m) / (nw.col("TOTAL") / 12.0))
            .alias(f"IDX_{m}")
            for m in _MONTHS
        ),
    )
    return _long_from_wide(
        wide,
        _month_rows(),
        "MES",
        "MESES_ATRAS",
        {
            "VENDAS": lambda m: m,
            "PARTICIPACAO": lambda m: f"PART_{m}",
            "INDICE_SAZONAL": lambda m: f"IDX_{m}",
        },
    )


_LOW_STOCK_SORT = (("DEMANDA_DIARIA", True), ("UNE", False), ("PRODUTO", False))


def _low_stock_high_demand(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .with_columns(_daily_demand())
        .filter(
            nw.col("DEMANDA_DIARIA") > 0,
            nw.col("ESTOQUE_UNE") < nw.col("DEMANDA_DIARIA") * float(p["dias"]),
        )
        .with_columns(_ratio("ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS"))
        .select(
            "UNE",
            "UNE_NOME",
            "PRODUTO",
            "NOME",
            "NOMESEGMENTO",
            "ESTOQUE_UNE",
            "DEMANDA_DIARIA",
            "COBERTURA_DIAS",
            "VENDA_30DD",
        )
    )
    return _top(frame, p["limite"], *zip(*_LOW_STOCK_SORT, strict=True))


_REORDER_SORT = (("RAZAO_PONTO_PEDIDO", False), ("UNE", False), ("PRODUTO", False))


def _near_reorder_point(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    threshold = 1.0 + p["margem"]
    frame = (
        _in_segment(lf, p["segmento"])
        .filter(
            nw.col("PONTO_PEDIDO_LV") > 0,
            nw.col("ESTOQUE_UNE") <= nw.col("PONTO_PEDIDO_LV") * threshold,
        )
        .with_columns(_ratio("ESTOQUE_UNE", "PONTO_PEDIDO_LV", "RAZAO_PONTO_PEDIDO"))
        .select(
            "UNE",
            "UNE_NOME",
            "PRODUTO",
            "NOME",
            "NOMESEGMENTO",
            "ESTOQUE_UNE",
            "PONTO_PEDIDO_LV",
            "RAZAO_PONTO_PEDIDO",
            "LEADTIME_LV",
            "VENDA_30DD",
        )
    )
    return _top(frame, p["limite"], *zip(*_REORDER_SORT, strict=True))


#: Lead-time buckets (upper bound in days, label); a last open bucket catches the rest.
LEADTIME_BUCKETS: tuple[tuple[int, str], ...] = (
    (7, "0-7 DIAS"),
    (15, "8-15 DIAS"),
    (30, "16-30 DIAS"),
    (60, "31-60 DIAS"),
)


def _leadtime_vs_sales(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    lead = nw.col("LEADTIME_LV")
    order = nw.when(lead.is_null()).then(nw.lit(0, dtype=nw.Int64))
    label = nw.when(lead.is_null()).then(nw.lit("SEM LEADTIME", dtype=nw.String))
    for i, (upper, name) in enumerate(LEADTIME_BUCKETS, start=1):
        order = order.when(lead <= upper).then(nw.lit(i, dtype=nw.Int64))
        label = label.when(lead <= upper).then(nw.lit(name, dtype=nw.String))
    last = len(LEADTIME_BUCKETS) + 1
    order = order.otherwise(nw.lit(last, dtype=nw.Int64)).alias("FAIXA_ORDEM")
    label = label.otherwise(nw.lit(f"> {LEADTIME_BUCKETS[-1][0]} DIAS", dtype=nw.String)).alias(
        "FAIXA_LEADTIME"
    )
    return (
        _in_segment(lf, p["segmento"])
        .with_columns(order, label, nw.col("LEADTIME_LV").cast(nw.Float64))
        .group_by("FAIXA_ORDEM", "FAIXA_LEADTIME")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("LEADTIME_LV").mean().alias("LEADTIME_MEDIO"),
            nw.col("VENDA_30DD").mean().alias("VENDA_MEDIA_30DD"),
            nw.col("VENDA_30DD").sum(),
            nw.col("ESTOQUE_UNE").mean().alias("ESTOQUE_MEDIO"),
        )
        .with_columns(_as_int("ITENS"))
    )


_MANUFACTURER_SORT = (("VENDA_30DD", True), ("NOMEFABRICANTE", False))


def _manufacturer_ranking(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    # Distinct products in two group-bys: narwhals' grouped n_unique on Dask sums the
    # per-partition counts (wrong across partitions).
    per_product = (
        _in_segment(lf, p["segmento"])
        .with_columns(_stock_value())
        .group_by("NOMEFABRICANTE", "PRODUTO")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("VENDA_30DD").sum(),
            nw.col("MES_01").sum(),
            nw.col("VALOR_ESTOQUE").sum(),
        )
    )
    frame = (
        per_product.group_by("NOMEFABRICANTE")
        .agg(
            nw.len().alias("PRODUTOS"),
            nw.col("ITENS").sum(),
            nw.col("VENDA_30DD").sum(),
            nw.col("MES_01").sum(),
            nw.col("VALOR_ESTOQUE").sum(),
        )
        .with_columns(_as_int("PRODUTOS", "ITENS"))
    )
    return _top(frame, p["limite"], *zip(*_MANUFACTURER_SORT, strict=True))


_RUPTURE_SORT = (("VENDA_30DD", True), ("UNE", False), ("PRODUTO", False))


def _critical_rupture(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .filter(CRITICAL_RUPTURE)
        .with_columns((nw.col("ESTOQUE_LV") - nw.col("ESTOQUE_UNE")).alias("NECESSIDADE"))
        .select(
            "UNE",
            "UNE_NOME",
            "PRODUTO",
            "NOME",
            "NOMESEGMENTO",
            "ESTOQUE_CD",
            "ESTOQUE_UNE",
            "ESTOQUE_LV",
            "NECESSIDADE",
            "VENDA_30DD",
            "LEADTIME_LV",
        )
    )
    return _top(frame, p["limite"], *zip(*_RUPTURE_SORT, strict=True))


def _rupture_risk_by_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        lf.with_columns(
            _flag(CRITICAL_RUPTURE, "ITENS_RUPTURA"),
            nw.when(CRITICAL_RUPTURE)
            .then(nw.col("VENDA_30DD"))
            .otherwise(0.0)
            .alias("VENDA_EM_RISCO"),
        )
        .group_by("NOMESEGMENTO")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("ITENS_RUPTURA").sum(),
            nw.col("VENDA_EM_RISCO").sum(),
            nw.col("VENDA_30DD").sum(),
        )
        .with_columns(
            _as_int("ITENS", "ITENS_RUPTURA"),
            _ratio("ITENS_RUPTURA", "ITENS", "PCT_RUPTURA"),
        )
    )


_GROWTH_SORT = (("CRESCIMENTO", True), ("PRODUTO", False))


def _growth_products(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .group_by("NOMESEGMENTO", "PRODUTO", "NOME")
        .agg(nw.col("MES_01").sum(), nw.col("MES_02").sum())
        .filter(nw.col("MES_02") > 0)
        .with_columns(
            ((nw.col("MES_01") - nw.col("MES_02")) / nw.col("MES_02")).alias("CRESCIMENTO")
        )
        .filter(nw.col("CRESCIMENTO") > p["crescimento_minimo"])
    )
    return _top(frame, p["limite"], *zip(*_GROWTH_SORT, strict=True))


def _sales_by_une(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        _in_segment(lf, p["segmento"])
        .group_by("UNE", "UNE_NOME")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("VENDA_30DD").sum(),
            nw.col("MES_01").sum(),
            nw.col("MES_PARCIAL").sum(),
        )
        .with_columns(_as_int("ITENS"))
    )


def _dashboard_totals(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        lf.with_columns(_stock_value(), _flag(CRITICAL_RUPTURE, "ITENS_RUPTURA"))
        .select(
            nw.len().alias("ITENS"),
            nw.col("PRODUTO").n_unique().alias("PRODUTOS"),
            nw.col("UNE").n_unique().alias("UNES"),
            nw.col("NOMESEGMENTO").n_unique().alias("SEGMENTOS"),
            nw.col("VENDA_30DD").sum(),
            nw.col("MES_01").sum(),
            nw.col("ESTOQUE_UNE").sum(),
            nw.col("VALOR_ESTOQUE").sum(),
            nw.col("ITENS_RUPTURA").sum(),
        )
        .with_columns(_as_int("ITENS", "PRODUTOS", "UNES", "SEGMENTOS", "ITENS_RUPTURA"))
    )


_STOCK_VALUE_ROW_SORT = (("VALOR_ESTOQUE", True), ("UNE", False), ("PRODUTO", False))


def _products_without_sales_90d(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .filter(
            nw.col("VENDA_30DD") == 0,
            *(nw.col(m) == 0 for m in _QUARTER),
            nw.col("ESTOQUE_UNE") > 0,
        )
        .with_columns(_stock_value())
        .select(
            "UNE",
            "UNE_NOME",
            "PRODUTO",
            "NOME",
            "NOMESEGMENTO",
            "ESTOQUE_UNE",
            "VALOR_ESTOQUE",
            "ULTIMA_VENDA_DATA_UNE",
        )
    )
    return _top(frame, p["limite"], *zip(*_STOCK_VALUE_ROW_SORT, strict=True))


def _stock_coverage_by_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        lf.with_columns(_quarter_sales())
        .group_by("NOMESEGMENTO")
        .agg(nw.col("ESTOQUE_UNE").sum(), nw.col("VENDA_TRIMESTRE").sum())
        .with_columns((nw.col("VENDA_TRIMESTRE") / 90.0).alias("DEMANDA_DIARIA"))
        .with_columns(_ratio("ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS"))
    )


def _promotional_performance(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        _in_segment(lf, p["segmento"])
        .group_by("PROMOCIONAL")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("VENDA_30DD").sum(),
            nw.col("VENDA_30DD").mean().alias("VENDA_MEDIA_30DD"),
            nw.col("MES_01").sum(),
        )
        .with_columns(
            _as_int("ITENS"),
            nw.when(nw.col("MES_01") > 0)
            .then((nw.col("VENDA_30DD") - nw.col("MES_01")) / nw.col("MES_01"))
            .alias("VARIACAO"),
        )
    )


def _discontinued_in_stock(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .filter(nw.col("FORALINHA") == "S", nw.col("ESTOQUE_UNE") > 0)
        .with_columns(_stock_value())
        .select(
            "UNE",
            "UNE_NOME",
            "PRODUTO",
            "NOME",
            "NOMESEGMENTO",
            "NOMEFABRICANTE",
            "ESTOQUE_UNE",
            "ESTOQUE_CD",
            "VENDA_30DD",
            "VALOR_ESTOQUE",
        )
    )
    return _top(frame, p["limite"], *zip(*_STOCK_VALUE_ROW_SORT, strict=True))


def _weekly_trend(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = _in_segment(lf, p["segmento"]).with_columns(
        *(nw.col(f"FREQ_{w}").cast(nw.Float64) for w, _ in _WEEKS)
    )
    wide = frame.select(
        *(nw.col(f"QTDE_{w}").sum() for w, _ in _WEEKS),
        *(nw.col(f"FREQ_{w}").sum() for w, _ in _WEEKS),
    )
    previous = {w: prev for (prev, _), (w, _) in itertools.pairwise(_WEEKS)}
    wide = wide.with_columns(
        _as_int(*(f"FREQ_{w}" for w, _ in _WEEKS)),
        nw.lit(None, dtype=nw.Float64).alias(f"VAR_{_WEEKS[0][0]}"),
        *(
            nw.when(nw.col(f"QTDE_{prev}") > 0)
            .then((nw.col(f"QTDE_{w}") - nw.col(f"QTDE_{prev}")) / nw.col(f"QTDE_{prev}"))
            .alias(f"VAR_{w}")
            for w, prev in previous.items()
        ),
    )
    return _long_from_wide(
        wide,
        _WEEKS,
        "SEMANA",
        "SEMANAS_ATRAS",
        {
            "QTDE": lambda w: f"QTDE_{w}",
            "FREQUENCIA": lambda w: f"FREQ_{w}",
            "VARIACAO": lambda w: f"VAR_{w}",
        },
    )


_CATEGORY_SORT = (("VENDA_30DD", True), ("NOMECATEGORIA", False))


def _category_ranking_in_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    keys = ("NOMESEGMENTO", "NOMECATEGORIA")
    per_product = (
        _in_segment(lf, p["segmento"])
        .with_columns(_quarter_sales())
        .group_by(*keys, "PRODUTO")
        .agg(nw.col("VENDA_30DD").sum(), nw.col("VENDA_TRIMESTRE").sum())
    )
    frame = (
        per_product.group_by(*keys)
        .agg(
            nw.col("VENDA_30DD").sum(),
            nw.col("VENDA_TRIMESTRE").sum(),
            nw.len().alias("PRODUTOS"),  # distinct products (see _manufacturer_ranking)
        )
        .with_columns(_as_int("PRODUTOS"))
    )
    return _top(_with_share(frame, "VENDA_30DD"), p["limite"], *zip(*_CATEGORY_SORT, strict=True))


_STORE_VALUE_SORT = (("VALOR_ESTOQUE", True), ("UNE", False))


def _store_stock_value_ranking(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .with_columns(_stock_value(), _flag(nw.col("ESTOQUE_UNE") > 0, "ITENS_COM_ESTOQUE"))
        .group_by("UNE", "UNE_NOME")
        .agg(
            nw.col("VALOR_ESTOQUE").sum(),
            nw.col("ESTOQUE_UNE").sum(),
            nw.col("ITENS_COM_ESTOQUE").sum(),
            nw.col("VENDA_30DD").sum(),
        )
        .with_columns(_as_int("ITENS_COM_ESTOQUE"))
    )
    return _top(frame, p["limite"], *zip(*_STORE_VALUE_SORT, strict=True))


def _abc_distribution(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        _in_segment(lf, p["segmento"])
        .group_by("UNE", "UNE_NOME", "ABC_UNE_30DD")
        .agg(nw.len().alias("ITENS"), nw.col("VENDA_30DD").sum(), nw.col("ESTOQUE_UNE").sum())
        .with_columns(_as_int("ITENS"))
    )


_OVERSTOCK_SORT = (("EXCESSO", True), ("UNE", False), ("PRODUTO", False))


def _overstock_products(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        _in_segment(lf, p["segmento"])
        .with_columns(_daily_demand())
        .filter(
            nw.col("DEMANDA_DIARIA") > 0,
            nw.col("ESTOQUE_UNE") > nw.col("DEMANDA_DIARIA") * float(p["dias"]),
        )
        .with_columns(
            _ratio("ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS"),
            (nw.col("ESTOQUE_UNE") - nw.col("DEMANDA_DIARIA") * float(p["dias"])).alias("EXCESSO"),
        )
        .select(
            "UNE",
            "UNE_NOME",
            "PRODUTO",
            "NOME",
            "NOMESEGMENTO",
            "ESTOQUE_UNE",
            "DEMANDA_DIARIA",
            "COBERTURA_DIAS",
            "EXCESSO",
        )
    )
    return _top(frame, p["limite"], *zip(*_OVERSTOCK_SORT, strict=True))


# --------------------------------------------------------------------------------------
# The catalog
# --------------------------------------------------------------------------------------
def _sorted(spec: Sequence[tuple[str, bool]]) -> dict[str, tuple[Any, ...]]:
    return {
        "sort_by": tuple(name for name, _ in spec),
        "descending": tuple(desc for _, desc in spec),
    }


_PRODUCT = ("UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO")

_QUERIES: tuple[BusinessQuery, ...] = (
    BusinessQuery(
        name="top_products_by_une",
        question="Quais os 10 produtos mais vendidos na UNE 261 nos últimos 30 dias?",
        description="Top-N products of one store by sales of the last 30 days.",
        cache_class="top_products",
        params=(_une(), _limit(10)),
        columns=(*_PRODUCT, "VENDA_30DD", "MES_01", "ESTOQUE_UNE"),
        build=_top_products_by_une,
        **_sorted(_TOP_UNE_SORT),
    ),
    BusinessQuery(
        name="top_products_by_segment",
        question="Quais os 10 produtos mais vendidos do segmento TECIDOS?",
        description="Top-N products of one segment by sales of the last 30 days, all stores.",
        cache_class="top_products",
        params=(_SEGMENT, _limit(10)),
        columns=("UNE", "PRODUTO", "NOME", "NOMESEGMENTO", "VENDA_30DD", "MES_01", "ESTOQUE_UNE"),
        build=_top_products_by_segment,
        **_sorted(_TOP_SEGMENT_SORT),
    ),
    BusinessQuery(
        name="segment_sales_evolution",
        question="Como evoluíram as vendas do segmento TECIDOS nos últimos 12 meses?",
        description="Monthly sales of a segment, one row per month (MES_12 .. MES_01), "
        "with the month-over-month change.",
        cache_class="forecast",
        params=(_SEGMENT,),
        columns=("NOMESEGMENTO", *_MONTHS),
        build=_segment_sales_evolution,
        **_sorted((("MESES_ATRAS", True),)),
    ),
    BusinessQuery(
        name="compare_unes",
        question="Compare as vendas por segmento entre a UNE 261 e a UNE 2.",
        description="Sales of the last 30 days per segment for two stores, side by side.",
        cache_class="dashboard",
        params=(
            _une("une_a", DEFAULT_UNES[0], "First store (UNE) id."),
            _une("une_b", DEFAULT_UNES[1], "Second store (UNE) id."),
        ),
        columns=("UNE", "NOMESEGMENTO", "VENDA_30DD"),
        build=_compare_unes,
        **_sorted((("NOMESEGMENTO", False),)),
    ),
    BusinessQuery(
        name="segment_ranking_quarter",
        question="Qual o ranking dos segmentos por vendas no último trimestre?",
        description="Segments ranked by sales of the last three closed months, with shares.",
        cache_class="dashboard",
        params=(),
        columns=("NOMESEGMENTO", *_QUARTER),
        build=_segment_ranking_quarter,
        **_sorted((("VENDA_TRIMESTRE", True), ("NOMESEGMENTO", False))),
    ),
    BusinessQuery(
        name="abc_concentration",
        question="Qual a concentração das vendas nos produtos curva A em cada UNE?",
        description="Per store, the share of the last 30 days' sales from products of one "
        "ABC class (ABC_UNE_30DD).",
        cache_class="dashboard",
        params=(Param("classe", str, "A", "ABC class.", choices=ABC_CLASSES),),
        columns=("UNE", "UNE_NOME", "NOMESEGMENTO", "ABC_UNE_30DD", "VENDA_30DD"),
        build=_abc_concentration,
        **_sorted((("UNE", False),)),
    ),
    BusinessQuery(
        name="seasonality",
        question="Qual a sazonalidade das vendas ao longo dos últimos 12 meses?",
        description="Monthly sales totals with each month's share of the year and "
        "seasonal index (month / average month).",
        cache_class="forecast",
        params=(_SEGMENT_OR_ALL,),
        columns=("NOMESEGMENTO", *_MONTHS),
        build=_seasonality,
        **_sorted((("MESES_ATRAS", True),)),
    ),
    BusinessQuery(
        name="low_stock_high_demand",
        question="Quais produtos têm estoque na UNE abaixo de 7 dias da demanda média?",
        description="Store x product rows whose store stock covers less than k days of the "
        "average daily demand of the last quarter, highest demand first.",
        cache_class="forecast",
        params=(
            Param("dias", int, 7, "Days of demand the stock must cover.", minimum=1, maximum=365),
            _SEGMENT_OR_ALL,
            _limit(50),
        ),
        columns=(*_PRODUCT, "ESTOQUE_UNE", "VENDA_30DD", *_QUARTER),
        build=_low_stock_high_demand,
        **_sorted(_LOW_STOCK_SORT),
    ),
    BusinessQuery(
        name="near_reorder_point",
        question="Quais produtos estão próximos do ponto de pedido (até 10% acima dele)?",
        description="Store x product rows whose store stock is at most (1 + margin) times "
        "the reorder point, lowest stock/reorder-point ratio first.",
        cache_class="forecast",
        params=(
            Param("margem", float, 0.1, "Margin above the reorder point.", minimum=0, maximum=1),
            _SEGMENT_OR_ALL,
            _limit(100),
        ),
        columns=(*_PRODUCT, "ESTOQUE_UNE", "PONTO_PEDIDO_LV", "LEADTIME_LV", "VENDA_30DD"),
        build=_near_reorder_point,
        **_sorted(_REORDER_SORT),
    ),
    BusinessQuery(
        name="leadtime_vs_sales",
        question="Qual a relação entre o lead time e as vendas dos últimos 30 dias?",
        description="Lead-time buckets with item count and average sales and stock.",
        cache_class="suppliers",
        params=(_SEGMENT_OR_ALL,),
        columns=("NOMESEGMENTO", "LEADTIME_LV", "VENDA_30DD", "ESTOQUE_UNE"),
        build=_leadtime_vs_sales,
        **_sorted((("FAIXA_ORDEM", False),)),
    ),
    BusinessQuery(
        name="manufacturer_ranking",
        question="Quais os 10 fabricantes com maior volume de vendas nos últimos 30 dias?",
        description="Top-N manufacturers by sales of the last 30 days, with stock value.",
        cache_class="suppliers",
        params=(_SEGMENT_OR_ALL, _limit(10)),
        columns=(
            "PRODUTO",
            "NOMESEGMENTO",
            "NOMEFABRICANTE",
            "VENDA_30DD",
            "MES_01",
            "ESTOQUE_UNE",
            "LIQUIDO_38",
        ),
        build=_manufacturer_ranking,
        **_sorted(_MANUFACTURER_SORT),
    ),
    BusinessQuery(
        name="critical_rupture",
        question="Quais produtos estão em ruptura crítica (sem estoque no CD e abaixo do "
        "estoque da LV, com vendas)?",
        description="Store x product rows with ESTOQUE_CD = 0, ESTOQUE_UNE < ESTOQUE_LV and "
        "VENDA_30DD > 0, best sellers first.",
        cache_class="forecast",
        params=(_SEGMENT_OR_ALL, _limit(100)),
        columns=(
            *_PRODUCT,
            "ESTOQUE_CD",
            "ESTOQUE_UNE",
            "ESTOQUE_LV",
            "VENDA_30DD",
            "LEADTIME_LV",
        ),
        build=_critical_rupture,
        **_sorted(_RUPTURE_SORT),
    ),
    BusinessQuery(
        name="rupture_risk_by_segment",
        question="Quantos produtos estão em risco de ruptura em cada segmento?",
        description="Per segment, the items in critical rupture, their share and the sales "
        "at risk.",
        cache_class="dashboard",
        params=(),
        columns=("NOMESEGMENTO", "ESTOQUE_CD", "ESTOQUE_UNE", "ESTOQUE_LV", "VENDA_30DD"),
        build=_rupture_risk_by_segment,
        **_sorted((("ITENS_RUPTURA", True), ("NOMESEGMENTO", False))),
    ),
    BusinessQuery(
        name="growth_products",
        question="Quais produtos tiveram crescimento de vendas acima de 20% no último mês?",
        description="Products whose sales grew more than the threshold from MES_02 to "
        "MES_01 (all stores; only where MES_02 > 0).",
        cache_class="forecast",
        params=(
            Param(
                "crescimento_minimo",
                float,
                0.2,
                "Minimum growth (0.2 = 20%).",
                minimum=-1,
                maximum=100,
            ),
            _SEGMENT_OR_ALL,
            _limit(50),
        ),
        columns=("PRODUTO", "NOME", "NOMESEGMENTO", "MES_01", "MES_02"),
        build=_growth_products,
        **_sorted(_GROWTH_SORT),
    ),
    BusinessQuery(
        name="sales_by_une",
        question="Qual o total de vendas de cada UNE nos últimos 30 dias?",
        description="Sales of the last 30 days, last month and current month per store.",
        cache_class="dashboard",
        params=(_SEGMENT_OR_ALL,),
        columns=("UNE", "UNE_NOME", "NOMESEGMENTO", "VENDA_30DD", "MES_01", "MES_PARCIAL"),
        build=_sales_by_une,
        **_sorted((("VENDA_30DD", True), ("UNE", False))),
    ),
    BusinessQuery(
        name="dashboard_totals",
        question="Quais os números gerais: itens, produtos, lojas, vendas e valor do estoque?",
        description="One row of headline totals: items, products, stores, segments, sales, "
        "stock value and items in critical rupture.",
        cache_class="dashboard",
        params=(),
        columns=(
            "UNE",
            "PRODUTO",
            "NOMESEGMENTO",
            "VENDA_30DD",
            "MES_01",
            "ESTOQUE_CD",
            "ESTOQUE_UNE",
            "ESTOQUE_LV",
            "LIQUIDO_38",
        ),
        build=_dashboard_totals,
        sort_by=(),
    ),
    BusinessQuery(
        name="products_without_sales_90d",
        question="Quais produtos estão há 90 dias sem vendas e ainda têm estoque na UNE?",
        description="Store x product rows with no sales in the last three closed months nor "
        "the last 30 days but stock in the store, largest stock value first.",
        cache_class="forecast",
        params=(_SEGMENT_OR_ALL, _limit(100)),
        columns=(
            *_PRODUCT,
            "VENDA_30DD",
            *_QUARTER,
            "ESTOQUE_UNE",
            "LIQUIDO_38",
            "ULTIMA_VENDA_DATA_UNE",
        ),
        build=_products_without_sales_90d,
        **_sorted(_STOCK_VALUE_ROW_SORT),
    ),
    BusinessQuery(
        name="stock_coverage_by_segment",
        question="Qual a cobertura de estoque, em dias, de cada segmento?",
        description="Per segment, store stock over the average daily demand of the last quarter.",
        cache_class="forecast",
        params=(),
        columns=("NOMESEGMENTO", "ESTOQUE_UNE", *_QUARTER),
        build=_stock_coverage_by_segment,
        **_sorted((("COBERTURA_DIAS", True), ("NOMESEGMENTO", False))),
    ),
    BusinessQuery(
        name="promotional_performance",
        question="Como está o desempenho dos produtos promocionais em relação aos demais?",
        description="Promotional vs regular items: count, sales, average sales and change "
        "against the last closed month.",
        cache_class="dashboard",
        params=(_SEGMENT_OR_ALL,),
        columns=("NOMESEGMENTO", "PROMOCIONAL", "VENDA_30DD", "MES_01"),
        build=_promotional_performance,
        **_sorted((("PROMOCIONAL", False),)),
    ),
    BusinessQuery(
        name="discontinued_in_stock",
        question="Quais produtos fora de linha ainda têm estoque nas lojas?",
        description="Discontinued (FORALINHA = 'S') store x product rows with store stock, "
        "largest stock value first.",
        cache_class="suppliers",
        params=(_SEGMENT_OR_ALL, _limit(100)),
        columns=(
            *_PRODUCT,
            "NOMEFABRICANTE",
            "FORALINHA",
            "ESTOQUE_UNE",
            "ESTOQUE_CD",
            "VENDA_30DD",
            "LIQUIDO_38",
        ),
        build=_discontinued_in_stock,
        **_sorted(_STOCK_VALUE_ROW_SORT),
    ),
    BusinessQuery(
        name="weekly_trend",
        question="Qual a tendência de vendas nas últimas 5 semanas?",
        description="Weekly quantity and sale frequency, one row per week (oldest first), "
        "with the week-over-week change.",
        cache_class="forecast",
        params=(_SEGMENT_OR_ALL,),
        columns=(
            "NOMESEGMENTO",
            *(f"QTDE_{w}" for w, _ in _WEEKS),
            *(f"FREQ_{w}" for w, _ in _WEEKS),
        ),
        build=_weekly_trend,
        **_sorted((("SEMANAS_ATRAS", True),)),
    ),
    BusinessQuery(
        name="category_ranking_in_segment",
        question="Quais as categorias mais vendidas do segmento TECIDOS?",
        description="Categories of one segment ranked by sales of the last 30 days, with "
        "their share of the segment.",
        cache_class="top_products",
        params=(_SEGMENT, _limit(20)),
        columns=("PRODUTO", "NOMESEGMENTO", "NOMECATEGORIA", "VENDA_30DD", *_QUARTER),
        build=_category_ranking_in_segment,
        **_sorted(_CATEGORY_SORT),
    ),
    BusinessQuery(
        name="store_stock_value_ranking",
        question="Quais UNEs têm o maior valor em estoque?",
        description="Stores ranked by stock value (ESTOQUE_UNE x LIQUIDO_38).",
        cache_class="dashboard",
        params=(_SEGMENT_OR_ALL, _limit(10)),
        columns=("UNE", "UNE_NOME", "NOMESEGMENTO", "ESTOQUE_UNE", "LIQUIDO_38", "VENDA_30DD"),
        build=_store_stock_value_ranking,
        **_sorted(_STORE_VALUE_SORT),
    ),
    BusinessQuery(
        name="abc_distribution",
        question="Quantos produtos há em cada classe ABC por UNE?",
        description="Per store and ABC class (ABC_UNE_30DD): items, sales and stock.",
        cache_class="dashboard",
        params=(_SEGMENT_OR_ALL,),
        columns=("UNE", "UNE_NOME", "NOMESEGMENTO", "ABC_UNE_30DD", "VENDA_30DD", "ESTOQUE_UNE"),
        build=_abc_distribution,
        **_sorted((("UNE", False), ("ABC_UNE_30DD", False))),
    ),
    BusinessQuery(
        name="overstock_products",
        question="Quais produtos têm estoque para mais de 180 dias de venda?",
        description="Store x product rows whose stock exceeds k days of average daily "
        "demand, largest excess first.",
        cache_class="forecast",
        params=(
            Param(
                "dias",
                int,
                180,
                "Days of demand beyond which stock is excess.",
                minimum=1,
                maximum=3650,
            ),
            _SEGMENT_OR_ALL,
            _limit(100),
        ),
        columns=(*_PRODUCT, "ESTOQUE_UNE", *_QUARTER),
        build=_overstock_products,
        **_sorted(_OVERSTOCK_SORT),
    ),
)

#: Every business query by name.
CATALOG: dict[str, BusinessQuery] = {q.name: q for q in _QUERIES}
if len(CATALOG) != len(_QUERIES):  # pragma: no cover - guarded by the tests too
    raise RuntimeError("duplicate query names in the retail query battery")


def get_query(name: str) -> BusinessQuery:
    """The query called ``name``; ``KeyError`` lists the known names."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown query {name!r}; known: {', '.join(sorted(CATALOG))}") from None


# --------------------------------------------------------------------------------------
# Scanning and running
# --------------------------------------------------------------------------------------
def scan_admmat(
    path: str | Path,
    engine: Engine = "polars",
    columns: Sequence[str] | None = None,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> nw.LazyFrame:
    """Lazily scan the typed admmat Parquet (a file or a directory of files) with one engine.

    Only ``columns`` are read when given. DuckDB uses ``connection`` or a fresh in-memory
    one (kept alive by the relation).
    """
    source = Path(path)
    cols = list(columns) if columns is not None else None
    if engine == "polars":
        lf = pl.scan_parquet(source)
        return nw.from_native(lf.select(cols) if cols is not None else lf)
    if engine == "dask":
        import dask.dataframe as dd

        with narwhals_dask_quiet():  # pytest resets the module-level filter
            return nw.from_native(dd.read_parquet(str(source), columns=cols))
    if engine == "duckdb":
        import duckdb

        con = connection if connection is not None else duckdb.connect()
        pattern = str(source / "**" / "*.parquet") if source.is_dir() else str(source)
        rel = con.read_parquet(pattern)
        if cols is not None:
            rel = rel.select(*(duckdb.ColumnExpression(c) for c in cols))
        return nw.from_native(rel)
    raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")


def restrict_segments(source: nw.LazyFrame, segments: Collection[str] | None) -> nw.LazyFrame:
    """Row-level security: keep only rows whose NOMESEGMENTO is in ``segments``
    (``None``: no restriction; empty: no rows)."""
    if segments is None:
        return source
    allowed = sorted(set(segments))
    unknown = [s for s in allowed if s not in SEGMENTS]
    if unknown:
        logger.warning("row-level security: segments not in the catalog: %s", unknown)
    return source.filter(nw.col("NOMESEGMENTO").is_in(allowed))


def prepare(
    query: BusinessQuery,
    source: nw.LazyFrame,
    params: Mapping[str, Any] | None = None,
    *,
    segments: Collection[str] | None = None,
) -> nw.LazyFrame:
    """The lazy, sorted result of ``query`` (see :func:`run_query`), not yet collected."""
    values = validate_params(query, params)
    missing = [c for c in query.columns if c not in source.columns]
    if missing:
        raise ValueError(f"query {query.name!r}: source lacks columns {missing}")
    frame = restrict_segments(source.select(list(query.columns)), segments)
    result = query.build(frame, values)
    if query.sort_by:
        result = result.sort(list(query.sort_by), descending=query.sort_descending, nulls_last=True)
    return result


def run_query(
    query: BusinessQuery | str,
    source: nw.LazyFrame,
    params: Mapping[str, Any] | None = None,
    *,
    segments: Collection[str] | None = None,
    backend: str | None = None,
) -> nw.DataFrame[Any]:
    """Validate ``params``, restrict to ``segments`` (row-level security) before the query,
    build, sort by ``query.sort_by`` and collect (into ``backend`` if given, e.g.
    ``"polars"``; else the engine's native eager frame)."""
    if isinstance(query, str):
        query = get_query(query)
    start = time.perf_counter()
    lazy = prepare(query, source, params, segments=segments)
    result = lazy.collect(backend=backend) if backend is not None else lazy.collect()
    logger.debug(
        "query %s on %s: %d rows in %.3f s",
        query.name,
        source.implementation,
        len(result),
        time.perf_counter() - start,
    )
    return result
