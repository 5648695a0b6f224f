"""The catalog of business queries, by name, in a fixed order."""

from __future__ import annotations

from bi_platform.retail.queries import rankings, sales, stock
from bi_platform.retail.queries.definition import BusinessQuery

#: The catalog's order (the API lists the queries in it).
_ORDER: tuple[str, ...] = (
    "top_products_by_une",
    "top_products_by_segment",
    "segment_sales_evolution",
    "compare_unes",
    "segment_ranking_quarter",
    "abc_concentration",
    "seasonality",
    "low_stock_high_demand",
    "near_reorder_point",
    "leadtime_vs_sales",
    "manufacturer_ranking",
    "critical_rupture",
    "rupture_risk_by_segment",
    "growth_products",
    "sales_by_une",
    "dashboard_totals",
    "products_without_sales_90d",
    "stock_coverage_by_segment",
    "promotional_performance",
    "discontinued_in_stock",
    "weekly_trend",
    "category_ranking_in_segment",
    "store_stock_value_ranking",
    "abc_distribution",
    "overstock_products",
)
_BY_NAME = {q.name: q for q in (*rankings.QUERIES, *sales.QUERIES, *stock.QUERIES)}
if sorted(_BY_NAME) != sorted(_ORDER):  # pragma: no cover - guarded by the tests too
    raise RuntimeError("the retail query battery lists other queries than its families")
_QUERIES: tuple[BusinessQuery, ...] = tuple(_BY_NAME[name] for name in _ORDER)

#: Every business query by name.
CATALOG: dict[str, BusinessQuery] = {q.name: q for q in _QUERIES}
if len(CATALOG) != len(_QUERIES):  # pragma: no cover - guarded by the tests too
    raise RuntimeError("duplicate query names in the retail query battery")


def get_query(name: str) -> BusinessQuery:
    """The query called ``name``; ``KeyError`` lists the known names.

    Args:
        name: A query name of :data:`CATALOG`.

    Returns:
        The query.

    Raises:
        KeyError: No query has that name (the message lists the known names).
    """
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown query {name!r}; known: {', '.join(sorted(CATALOG))}") from None
