"""The retail business rules and calendar, each defined once.

Every rule the marts (:mod:`bi_platform.retail.marts`), the query battery
(:mod:`bi_platform.retail.queries`), the serving SQL (:mod:`bi_platform.serving.sql`)
and the warehouse pre-aggregates (:mod:`bi_platform.serving.warehouse`) apply is written
here, as constants and as small builders that emit the narwhals expression and the
DuckDB SQL fragment from the same parameters, side by side:

* calendar: :data:`MONTHS` (``MES_01`` = last closed month .. ``MES_12``),
  :data:`QUARTER`, :data:`MONTH_ROWS` and :data:`WEEKS` (oldest first);
* row conditions (:class:`Condition`): :data:`CRITICAL_RUPTURE`, :data:`IN_STORE_STOCK`,
  :data:`HAS_REORDER_POINT`, :data:`HAS_DEMAND`, :data:`NO_SALES_90D`,
  :data:`DISCONTINUED_IN_STOCK`;
* derived values (:class:`Measure`): :data:`STOCK_VALUE`, :data:`SHORTFALL`,
  :data:`QUARTER_SALES`, :data:`DAILY_DEMAND`;
* arithmetic conventions: a ratio is computed in float and null unless the denominator
  is positive (:func:`ratio_expr` / :func:`ratio_sql`); growth is
  ``(current - previous) / previous``, null unless ``previous > 0`` (:func:`growth_expr`
  / :func:`growth_sql` / :func:`growth_value`); a counted condition is a 1.0/0.0 flag
  summed (:func:`flag_expr` / :func:`flag_sql`);
* classification cut-offs: :data:`LEADTIME_BUCKETS` (:func:`leadtime_bucket_exprs` /
  :func:`leadtime_bucket_sql`) and the default thresholds of the parametrised questions.

Column names are the export's (Portuguese) names; the SQL quotes them as identifiers.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import narwhals as nw

# --------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------
#: Monthly sales columns, newest first: ``MES_01`` is the last closed month.
MONTHS: tuple[str, ...] = tuple(f"MES_{m:02d}" for m in range(1, 13))
#: The last three closed months.
QUARTER: tuple[str, ...] = MONTHS[:3]
#: Days the average daily demand spreads :data:`QUARTER` sales over.
DAYS_IN_QUARTER = 90.0
#: Monthly rows, oldest first: (column, months ago), ``("MES_12", 12)`` .. ``("MES_01", 1)``.
MONTH_ROWS: tuple[tuple[str, int], ...] = tuple((m, int(m[-2:])) for m in reversed(MONTHS))
#: Weekly columns (``QTDE_<label>``, ``FREQ_<label>``), oldest first: (label, weeks ago).
WEEKS: tuple[tuple[str, int], ...] = (
    *((f"SEMANA_ANTERIOR_{k}", k - 1) for k in range(5, 1, -1)),
    ("SEMANA_ATUAL", 0),
)
#: The week labels of :data:`WEEKS`, oldest first.
WEEK_LABELS: tuple[str, ...] = tuple(label for label, _ in WEEKS)

# --------------------------------------------------------------------------------------
# Default thresholds of the parametrised questions
# --------------------------------------------------------------------------------------
#: Stock below this many days of average daily demand is low (``low_stock_high_demand``).
LOW_STOCK_DAYS = 7
#: Stock beyond this many days of average daily demand is excess (``overstock_products``).
OVERSTOCK_DAYS = 180
#: Stock at most (1 + this) times the reorder point is near it (``near_reorder_point``).
REORDER_MARGIN = 0.1
#: Month-over-month growth above this is growth (``growth_products``; 0.2 = 20%).
GROWTH_MINIMUM = 0.2
#: Lead-time buckets (upper bound in days, label); a last open bucket catches the rest.
LEADTIME_BUCKETS: tuple[tuple[int, str], ...] = (
    (7, "0-7 DIAS"),
    (15, "8-15 DIAS"),
    (30, "16-30 DIAS"),
    (60, "31-60 DIAS"),
)
#: Label of rows without a lead time.
NO_LEADTIME = "SEM LEADTIME"


# --------------------------------------------------------------------------------------
# SQL literals
# --------------------------------------------------------------------------------------
def sql_ident(name: str) -> str:
    """A double-quoted DuckDB identifier (names come from code, never from clients).

    Args:
        name: A column or table name.

    Returns:
        The quoted identifier.
    """
    return '"' + name.replace('"', '""') + '"'


def _sql_literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


# --------------------------------------------------------------------------------------
# Row conditions
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """A column on the right-hand side of a :class:`Condition` term."""

    name: str


#: Comparison operators: Python spelling -> (SQL spelling, narwhals operator).
_OPERATORS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "==": ("=", operator.eq),
    "<": ("<", operator.lt),
    "<=": ("<=", operator.le),
    ">": (">", operator.gt),
    ">=": (">=", operator.ge),
}


@dataclass(frozen=True)
class Condition:
    """A row condition: every term ``(column, operator, literal or Column)`` holds.

    The same terms give the narwhals predicates (:attr:`exprs`, :attr:`expr`) and the
    SQL boolean (:attr:`sql`).
    """

    terms: tuple[tuple[str, str, Any], ...]

    def __post_init__(self) -> None:
        unknown = [op for _, op, _ in self.terms if op not in _OPERATORS]
        if unknown or not self.terms:
            raise ValueError(f"condition needs terms with operators in {list(_OPERATORS)}")

    @property
    def exprs(self) -> tuple[nw.Expr, ...]:
        """One narwhals predicate per term (for ``filter(*exprs)``)."""
        return tuple(
            _OPERATORS[op][1](nw.col(column), nw.col(rhs.name) if isinstance(rhs, Column) else rhs)
            for column, op, rhs in self.terms
        )

    @property
    def expr(self) -> nw.Expr:
        """The terms AND-ed into one narwhals predicate."""
        return functools.reduce(operator.and_, self.exprs)

    @property
    def sql(self) -> str:
        """The terms AND-ed into one parenthesised SQL boolean."""
        parts = (
            f"{sql_ident(column)} {_OPERATORS[op][0]} "
            + (sql_ident(rhs.name) if isinstance(rhs, Column) else _sql_literal(rhs))
            for column, op, rhs in self.terms
        )
        return "(" + " AND ".join(parts) + ")"


#: Critical rupture: no stock at the distribution centre, the store below its
#: sales-floor target (``ESTOQUE_LV``) and the product selling.
CRITICAL_RUPTURE = Condition(
    (
        ("ESTOQUE_CD", "==", 0),
        ("ESTOQUE_UNE", "<", Column("ESTOQUE_LV")),
        ("VENDA_30DD", ">", 0),
    )
)
#: The store holds stock of the product.
IN_STORE_STOCK = Condition((("ESTOQUE_UNE", ">", 0),))
#: The product has a reorder point at the store (the stock/reorder-point ratio is defined).
HAS_REORDER_POINT = Condition((("PONTO_PEDIDO_LV", ">", 0),))
#: No sales in the last 30 days nor in the last three closed months, but stock in the store.
NO_SALES_90D = Condition(
    (
        ("VENDA_30DD", "==", 0),
        *((month, "==", 0) for month in QUARTER),
        ("ESTOQUE_UNE", ">", 0),
    )
)
#: The product sells: positive average daily demand (:data:`DAILY_DEMAND`).
HAS_DEMAND = Condition((("DEMANDA_DIARIA", ">", 0),))
#: Discontinued (``FORALINHA = 'S'``) with stock in the store.
DISCONTINUED_IN_STOCK = Condition((("FORALINHA", "==", "S"), ("ESTOQUE_UNE", ">", 0)))


# --------------------------------------------------------------------------------------
# Derived values
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measure:
    """A derived value: output column ``name``, its narwhals expression (aliased to
    ``name``) and its SQL expression (not aliased)."""

    name: str
    expr: nw.Expr
    sql: str


def row_sum_expr(columns: Sequence[str]) -> nw.Expr:
    """Row-wise sum of ``columns`` with nulls as 0, like ``sum_horizontal`` (which on
    Dask concatenates the columns and warns about unknown divisions after a filter).

    Args:
        columns: Column names.

    Returns:
        The narwhals expression (not aliased).
    """
    return functools.reduce(operator.add, (nw.col(c).fill_null(0.0) for c in columns))


def row_sum_sql(columns: Sequence[str]) -> str:
    """The SQL twin of :func:`row_sum_expr`.

    Args:
        columns: Column names.

    Returns:
        ``coalesce("A", 0.0) + coalesce("B", 0.0) + ...``.
    """
    return " + ".join(f"coalesce({sql_ident(c)}, 0.0)" for c in columns)


#: Stock value at the store: stock units x net price.
STOCK_VALUE = Measure(
    "VALOR_ESTOQUE",
    (nw.col("ESTOQUE_UNE") * nw.col("LIQUIDO_38")).alias("VALOR_ESTOQUE"),
    '"ESTOQUE_UNE" * "LIQUIDO_38"',
)
#: Units missing for the store to reach its sales-floor target.
SHORTFALL = Measure(
    "NECESSIDADE",
    (nw.col("ESTOQUE_LV") - nw.col("ESTOQUE_UNE")).alias("NECESSIDADE"),
    '"ESTOQUE_LV" - "ESTOQUE_UNE"',
)
#: Sales of the last three closed months (missing months count as 0).
QUARTER_SALES = Measure(
    "VENDA_TRIMESTRE",
    row_sum_expr(QUARTER).alias("VENDA_TRIMESTRE"),
    row_sum_sql(QUARTER),
)


def daily_demand_expr(quarter_sales: nw.Expr) -> nw.Expr:
    """Average daily demand from a quarter's sales: ``quarter_sales / 90``.

    Args:
        quarter_sales: Sales of the last three closed months (per row or summed).

    Returns:
        The narwhals expression (not aliased).
    """
    return quarter_sales / DAYS_IN_QUARTER


def daily_demand_sql(quarter_sales: str) -> str:
    """The SQL twin of :func:`daily_demand_expr`.

    Args:
        quarter_sales: SQL expression of the quarter's sales.

    Returns:
        The SQL expression (not aliased).
    """
    return f"({quarter_sales}) / {DAYS_IN_QUARTER}"


#: Average daily demand of the last three closed months, per row.
DAILY_DEMAND = Measure(
    "DEMANDA_DIARIA",
    daily_demand_expr(row_sum_expr(QUARTER)).alias("DEMANDA_DIARIA"),
    daily_demand_sql(row_sum_sql(QUARTER)),
)


# --------------------------------------------------------------------------------------
# Arithmetic conventions
# --------------------------------------------------------------------------------------
def ratio_expr(numerator: str, denominator: str, name: str) -> nw.Expr:
    """``numerator / denominator`` in float, null where the denominator is not positive.

    Args:
        numerator: Column name of the numerator.
        denominator: Column name of the denominator.
        name: Output column name.

    Returns:
        The aliased narwhals expression.
    """
    return (
        nw.when(nw.col(denominator) > 0)
        .then(nw.col(numerator).cast(nw.Float64) / nw.col(denominator).cast(nw.Float64))
        .alias(name)
    )


def ratio_sql(numerator: str, denominator: str) -> str:
    """The SQL twin of :func:`ratio_expr`.

    Args:
        numerator: SQL expression of the numerator (e.g. a quoted column).
        denominator: SQL expression of the denominator.

    Returns:
        ``CASE WHEN den > 0 THEN CAST(num AS DOUBLE) / CAST(den AS DOUBLE) END``.
    """
    return (
        f"CASE WHEN {denominator} > 0 "
        f"THEN CAST({numerator} AS DOUBLE) / CAST({denominator} AS DOUBLE) END"
    )


def growth_expr(current: str, previous: str) -> nw.Expr:
    """Growth ``(current - previous) / previous``, null unless ``previous > 0``.

    Args:
        current: Column name of the current period.
        previous: Column name of the previous period.

    Returns:
        The narwhals expression (not aliased).
    """
    cur, prev = nw.col(current), nw.col(previous)
    return nw.when(prev > 0).then((cur - prev) / prev)


def growth_sql(current: str, previous: str) -> str:
    """The SQL twin of :func:`growth_expr`.

    Args:
        current: SQL expression of the current period.
        previous: SQL expression of the previous period.

    Returns:
        ``CASE WHEN prev > 0 THEN (cur - prev) / prev END``.
    """
    return f"CASE WHEN {previous} > 0 THEN ({current} - {previous}) / {previous} END"


def ratio_value(numerator: float, denominator: float) -> float | None:
    """The Python twin of :func:`ratio_expr`, for rows reshaped in Python.

    Args:
        numerator: The numerator.
        denominator: The denominator.

    Returns:
        ``numerator / denominator``, or ``None`` unless ``denominator > 0``.
    """
    return numerator / denominator if denominator > 0 else None


#: A month's seasonal index: its sales over the average month of :data:`MONTHS`.
_MONTHS_PER_YEAR = float(len(MONTHS))


def seasonal_index_expr(month: str, total: str, name: str) -> nw.Expr:
    """``month / (total / 12)``, null where ``total`` is not positive.

    Args:
        month: Column name of the month's sales.
        total: Column name of the year's sales (the sum of :data:`MONTHS`).
        name: Output column name.

    Returns:
        The aliased narwhals expression.
    """
    return (
        nw.when(nw.col(total) > 0)
        .then(nw.col(month) / (nw.col(total) / _MONTHS_PER_YEAR))
        .alias(name)
    )


def seasonal_index_value(month: float, total: float) -> float | None:
    """The Python twin of :func:`seasonal_index_expr`.

    Args:
        month: The month's sales.
        total: The year's sales.

    Returns:
        The index, or ``None`` unless ``total > 0``.
    """
    return month / (total / _MONTHS_PER_YEAR) if total > 0 else None


def growth_value(current: float, previous: float | None) -> float | None:
    """The Python twin of :func:`growth_expr`, for rows reshaped in Python.

    Args:
        current: Value of the current period.
        previous: Value of the previous period (``None``: there is none).

    Returns:
        The growth, or ``None`` unless ``previous > 0``.
    """
    if previous is None or not previous > 0:
        return None
    return (current - previous) / previous


def flag_expr(condition: nw.Expr, name: str) -> nw.Expr:
    """1.0 where ``condition`` holds, else 0.0 (summed, then cast to Int64, to count).

    Args:
        condition: A narwhals predicate.
        name: Output column name.

    Returns:
        The aliased narwhals expression.
    """
    return nw.when(condition).then(nw.lit(1.0)).otherwise(nw.lit(0.0)).alias(name)


def flag_sql(condition: str) -> str:
    """The SQL twin of :func:`flag_expr`.

    Args:
        condition: A SQL boolean.

    Returns:
        ``CASE WHEN condition THEN 1.0 ELSE 0.0 END``.
    """
    return f"CASE WHEN {condition} THEN 1.0 ELSE 0.0 END"


# --------------------------------------------------------------------------------------
# Lead-time buckets
# --------------------------------------------------------------------------------------
#: Label of the last, open bucket.
LEADTIME_OVER = f"> {LEADTIME_BUCKETS[-1][0]} DIAS"
#: ``FAIXA_ORDEM`` of the buckets: 0 without lead time, 1.. per bucket, then the open one.
_LEADTIME_ORDERS = (0, *range(1, len(LEADTIME_BUCKETS) + 1), len(LEADTIME_BUCKETS) + 1)


def leadtime_bucket_exprs() -> tuple[nw.Expr, nw.Expr]:
    """The lead-time bucket of each row as narwhals expressions.

    Returns:
        ``(order, label)``: ``FAIXA_ORDEM`` (Int64: 0 without lead time, 1.. per bucket
        of :data:`LEADTIME_BUCKETS`, last the open bucket) and ``FAIXA_LEADTIME``.
    """
    lead = nw.col("LEADTIME_LV")
    order = nw.when(lead.is_null()).then(nw.lit(_LEADTIME_ORDERS[0], dtype=nw.Int64))
    label = nw.when(lead.is_null()).then(nw.lit(NO_LEADTIME, dtype=nw.String))
    for ordinal, (upper, name) in enumerate(LEADTIME_BUCKETS, start=1):
        order = order.when(lead <= upper).then(nw.lit(ordinal, dtype=nw.Int64))
        label = label.when(lead <= upper).then(nw.lit(name, dtype=nw.String))
    return (
        order.otherwise(nw.lit(_LEADTIME_ORDERS[-1], dtype=nw.Int64)).alias("FAIXA_ORDEM"),
        label.otherwise(nw.lit(LEADTIME_OVER, dtype=nw.String)).alias("FAIXA_LEADTIME"),
    )


def leadtime_bucket_sql() -> tuple[str, str]:
    """The SQL twin of :func:`leadtime_bucket_exprs`.

    Returns:
        ``(order, label)``: two SQL ``CASE`` expressions (BIGINT and VARCHAR), not aliased.
    """
    lead = '"LEADTIME_LV"'

    def case(values: Sequence[str]) -> str:
        null, *buckets, last = values
        whens = " ".join(
            f"WHEN {lead} <= {upper} THEN {value}"
            for (upper, _), value in zip(LEADTIME_BUCKETS, buckets, strict=True)
        )
        return f"CASE WHEN {lead} IS NULL THEN {null} {whens} ELSE {last} END"

    labels = (NO_LEADTIME, *(name for _, name in LEADTIME_BUCKETS), LEADTIME_OVER)
    return (
        case([f"CAST({i} AS BIGINT)" for i in _LEADTIME_ORDERS]),
        case([f"CAST({_sql_literal(s)} AS VARCHAR)" for s in labels]),
    )
