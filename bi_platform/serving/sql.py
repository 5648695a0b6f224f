"""The retail query battery as DuckDB SQL over the warehouse's serving pre-aggregates.

Every query of :data:`bi_platform.retail.queries.CATALOG` has a SQL twin here that
reads the ``srv_*`` tables :func:`~bi_platform.serving.warehouse.build_warehouse`
builds (:data:`~bi_platform.serving.warehouse.SERVING_AGGREGATES`): per-segment,
per segment x store x ABC class, per segment x product, ... pre-aggregates, and narrow,
pre-filtered, sorted row tables for the row-level questions. Each answers in a few
milliseconds where the narwhals version scans the 1.1M-row ``admmat`` (70-190 ms).

The results equal the narwhals implementation's (same columns, types, rows and order;
floating sums up to summation order), which stays the reference
(:func:`bi_platform.serving.queries.execute_reference`) and is compared with these for
every query over a range of parameters and segment restrictions in the tests. The
business rules (ratios, growth, daily demand, lead-time buckets, the month and week
calendar) come from :mod:`bi_platform.retail.rules`, which also gives the narwhals
battery its versions of them.

Security: the SQL text is fixed per query; parameter values and segments are bound as
``?`` parameters of a prepared statement, never formatted into the text (only the
*number* of ``?`` placeholders of a segment ``IN`` list depends on the input). Row-level
security: every statement filters its source table by ``NOMESEGMENTO`` (kept in the grain
of every pre-aggregate) before aggregating, exactly like
:func:`~bi_platform.retail.queries.restrict_segments` filters the rows.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from bi_platform.retail.queries import ALL_SEGMENTS, CATALOG, BusinessQuery
from bi_platform.retail.rules import (
    MONTH_ROWS,
    MONTHS,
    WEEKS,
    daily_demand_sql,
    growth_sql,
    growth_value,
    leadtime_bucket_sql,
    ratio_sql,
    ratio_value,
    seasonal_index_value,
    sql_ident,
)

#: Relative slack of the pre-filters on stored ratios (a superset of the exact filter,
#: which follows them; see :func:`_near_reorder_point`).
_SLACK = 1e-9

Statement = tuple[str, list[Any]]
Builder = Callable[[Mapping[str, Any], "list[str] | None"], Statement]


#: A double-quoted identifier (names come from this module, never from clients).
q = sql_ident


def effective_segments(
    query: BusinessQuery, params: Mapping[str, Any], segments: Sequence[str] | None
) -> list[str] | None:
    """The segments a query reads: the row-level-security ``segments`` (``None``: all)
    narrowed to the ``segmento`` parameter unless it is :data:`ALL_SEGMENTS`.

    Args:
        query: The catalog query.
        params: Its validated parameters.
        segments: Row-level security restriction (``None``: none).

    Returns:
        The segments to filter by (``None``: all; empty: none).
    """
    allowed = None if segments is None else sorted(set(segments))
    chosen = params.get("segmento") if any(p.name == "segmento" for p in query.params) else None
    if chosen is None or chosen == ALL_SEGMENTS:
        return allowed
    if allowed is None:
        return [chosen]
    return [chosen] if chosen in allowed else []


def _where_segments(segments: list[str] | None) -> Statement:
    if segments is None:
        return "TRUE", []
    if not segments:
        return "FALSE", []
    return f'"NOMESEGMENTO" IN ({", ".join("?" * len(segments))})', list(segments)


def _order(query: BusinessQuery) -> str:
    if not query.sort_by:
        return ""
    keys = ", ".join(
        f"{q(c)} {'DESC' if d else 'ASC'} NULLS LAST"
        for c, d in zip(query.sort_by, query.sort_descending, strict=True)
    )
    return f" ORDER BY {keys}"


def _csum(column: str, alias: str | None = None) -> str:
    """narwhals' ``sum`` on DuckDB: ``coalesce(sum(x), 0)``."""
    return f"coalesce(sum({q(column)}), 0) AS {q(alias or column)}"


# --------------------------------------------------------------------------------------
# The statements (params are validated and typed by resolve(); seg = effective segments)
# --------------------------------------------------------------------------------------
_PRODUCT = '"UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO"'


def _top_products_by_une(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    # stored by UNE and then in the query's order: the first rows of the UNE are the top
    where, args = _where_segments(seg)
    return (
        f'SELECT {_PRODUCT}, "VENDA_30DD", "MES_01", "ESTOQUE_UNE" FROM srv_rows_by_une '
        f'WHERE "UNE" = ? AND {where} LIMIT ?',
        [p["une"], *args, int(p["limite"])],
    )


def _top_products_by_segment(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    # __POS: rank within the segment in the query's order (the top n have __POS <= n)
    where, args = _where_segments(seg)
    return (
        'SELECT "NOMESEGMENTO", "PRODUTO", "NOME", "VENDA_30DD", "MES_01", "ESTOQUE_UNE", '
        'CAST("ITENS" AS BIGINT) AS "UNES" FROM srv_segment_product '
        f'WHERE "__POS" <= ? AND {where}',
        [int(p["limite"]), *args],
    )


def _segment_sales_evolution(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    sums = ", ".join(_csum(m) for m in MONTHS)
    return f"SELECT {sums} FROM srv_segment WHERE {where}", args


def _evolution_rows(wide: dict[str, float]) -> pa.Table:
    labels, ordinals, sales, changes = [], [], [], []
    for month, ordinal in MONTH_ROWS:
        prev = f"MES_{ordinal + 1:02d}"
        labels.append(month)
        ordinals.append(ordinal)
        sales.append(wide[month])
        changes.append(growth_value(wide[month], wide[prev] if ordinal < len(MONTHS) else None))
    return pa.table(
        {
            "MES": pa.array(labels, pa.string()),
            "MESES_ATRAS": pa.array(ordinals, pa.int64()),
            "VENDAS": pa.array(sales, pa.float64()),
            "VARIACAO": pa.array(changes, pa.float64()),
        }
    )


def _compare_unes(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    a, b = p["une_a"], p["une_b"]
    return (
        'SELECT "NOMESEGMENTO", CAST(? AS BIGINT) AS "UNE_A", CAST(? AS BIGINT) AS "UNE_B", '
        '"VENDA_UNE_A", "VENDA_UNE_B", "VENDA_UNE_A" - "VENDA_UNE_B" AS "DIFERENCA" FROM ('
        'SELECT "NOMESEGMENTO", '
        'coalesce(sum(CASE WHEN "UNE" = ? THEN "VENDA_30DD" ELSE 0.0 END), 0) AS "VENDA_UNE_A", '
        'coalesce(sum(CASE WHEN "UNE" = ? THEN "VENDA_30DD" ELSE 0.0 END), 0) AS "VENDA_UNE_B" '
        f'FROM srv_segment_une_abc WHERE "UNE" IN (?, ?) AND {where} GROUP BY "NOMESEGMENTO")',
        [a, b, a, b, a, b, *args],
    )


def _segment_ranking_quarter(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        'WITH f AS (SELECT "NOMESEGMENTO", '
        + ", ".join(_csum(c) for c in ("VENDA_TRIMESTRE", "MES_01", "MES_02", "MES_03"))
        + ', CAST(coalesce(sum("ITENS"), 0) AS BIGINT) AS "ITENS" '
        f'FROM srv_segment WHERE {where} GROUP BY "NOMESEGMENTO"), '
        't AS (SELECT coalesce(sum("VENDA_TRIMESTRE"), 0) AS "__TOTAL" FROM f) '
        "SELECT f.*, " + ratio_sql('"VENDA_TRIMESTRE"', '"__TOTAL"') + ' AS "PARTICIPACAO" '
        "FROM f CROSS JOIN t",
        args,
    )


def _abc_concentration(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    c = p["classe"]
    return (
        'SELECT "UNE", "UNE_NOME", CAST(? AS VARCHAR) AS "CLASSE", "ITENS", "ITENS_CLASSE", '
        '"VENDA_CLASSE", "VENDA_30DD", '
        + ratio_sql('"VENDA_CLASSE"', '"VENDA_30DD"')
        + ' AS "CONCENTRACAO" FROM ('
        'SELECT "UNE", "UNE_NOME", CAST(coalesce(sum("ITENS"), 0) AS BIGINT) AS "ITENS", '
        'CAST(coalesce(sum(CASE WHEN "ABC_UNE_30DD" = ? THEN "ITENS" ELSE 0 END), 0) '
        'AS BIGINT) AS "ITENS_CLASSE", '
        'coalesce(sum(CASE WHEN "ABC_UNE_30DD" = ? THEN "VENDA_30DD" ELSE 0.0 END), 0) '
        'AS "VENDA_CLASSE", '
        + _csum("VENDA_30DD")
        + f' FROM srv_segment_une_abc WHERE {where} GROUP BY "UNE", "UNE_NOME")',
        [c, c, c, *args],
    )


def _seasonality(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    return _segment_sales_evolution(p, seg)


def _seasonality_rows(wide: dict[str, float]) -> pa.Table:
    total = functools.reduce(operator.add, (wide[m] for m in MONTHS))  # in order, as SQL
    labels, ordinals, sales, shares, indices = [], [], [], [], []
    for month, ordinal in MONTH_ROWS:
        labels.append(month)
        ordinals.append(ordinal)
        sales.append(wide[month])
        shares.append(ratio_value(wide[month], total))
        indices.append(seasonal_index_value(wide[month], total))
    return pa.table(
        {
            "MES": pa.array(labels, pa.string()),
            "MESES_ATRAS": pa.array(ordinals, pa.int64()),
            "VENDAS": pa.array(sales, pa.float64()),
            "PARTICIPACAO": pa.array(shares, pa.float64()),
            "INDICE_SAZONAL": pa.array(indices, pa.float64()),
        }
    )


def _low_stock_high_demand(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    # stored in the query's order: the first qualifying rows are the top (early stop)
    where, args = _where_segments(seg)
    return (
        f'SELECT {_PRODUCT}, "ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS", "VENDA_30DD" '
        'FROM srv_rows_demand WHERE "ESTOQUE_UNE" < "DEMANDA_DIARIA" * ? '
        f"AND {where} LIMIT ?",
        [float(p["dias"]), *args, int(p["limite"])],
    )


def _near_reorder_point(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    # stored in the query's order (RAZAO_PONTO_PEDIDO, UNE, PRODUTO): the first
    # qualifying rows are the top; the stored ratio pre-filters with a relative slack far
    # above rounding error (a superset of the exact condition, which follows)
    where, args = _where_segments(seg)
    threshold = 1.0 + p["margem"]
    return (
        f'SELECT {_PRODUCT}, "ESTOQUE_UNE", "PONTO_PEDIDO_LV", "RAZAO_PONTO_PEDIDO", '
        '"LEADTIME_LV", "VENDA_30DD" FROM srv_rows_reorder WHERE "RAZAO_PONTO_PEDIDO" <= ? '
        f'AND "ESTOQUE_UNE" <= "PONTO_PEDIDO_LV" * ? AND {where} LIMIT ?',
        [threshold * (1 + _SLACK), threshold, *args, int(p["limite"])],
    )


def _leadtime_vs_sales(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    order, label = leadtime_bucket_sql()
    return (
        f'SELECT {order} AS "FAIXA_ORDEM", {label} AS "FAIXA_LEADTIME", '
        'CAST(sum("ITENS") AS BIGINT) AS "ITENS", '
        'sum(CAST("LEADTIME_LV" AS DOUBLE) * "ITENS") '
        '/ sum(CASE WHEN "LEADTIME_LV" IS NOT NULL THEN "ITENS" END) AS "LEADTIME_MEDIO", '
        'sum("VENDA_30DD") / nullif(sum("N_VENDA_30DD"), 0) AS "VENDA_MEDIA_30DD", '
        + _csum("VENDA_30DD")
        + ', sum("ESTOQUE_UNE") / nullif(sum("N_ESTOQUE_UNE"), 0) AS "ESTOQUE_MEDIO" '
        f"FROM srv_segment_promo_leadtime WHERE {where} GROUP BY 1, 2",
        args,
    )


_MANUFACTURER_COLUMNS = (
    '"NOMEFABRICANTE", CAST("PRODUTOS" AS BIGINT) AS "PRODUTOS", '
    'CAST("ITENS" AS BIGINT) AS "ITENS", "VENDA_30DD", "MES_01", "VALOR_ESTOQUE"'
)


def _manufacturer_ranking(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    # distinct products per manufacturer: pre-aggregated for all segments and for each
    # one; a set of several segments counts them from the segment x product grain
    if seg is None:
        return f"SELECT {_MANUFACTURER_COLUMNS} FROM srv_manufacturer", []
    if len(seg) == 1:
        return (
            f"SELECT {_MANUFACTURER_COLUMNS} FROM srv_segment_manufacturer "
            'WHERE "NOMESEGMENTO" = ?',
            list(seg),
        )
    where, args = _where_segments(seg)
    return (
        'WITH pp AS (SELECT "NOMEFABRICANTE", "PRODUTO", sum("ITENS") AS "ITENS", '
        + ", ".join(_csum(c) for c in ("VENDA_30DD", "MES_01", "VALOR_ESTOQUE"))
        + f" FROM srv_segment_manufacturer_product WHERE {where} "
        'GROUP BY "NOMEFABRICANTE", "PRODUTO") '
        'SELECT "NOMEFABRICANTE", CAST(count(*) AS BIGINT) AS "PRODUTOS", '
        'CAST(coalesce(sum("ITENS"), 0) AS BIGINT) AS "ITENS", '
        + ", ".join(_csum(c) for c in ("VENDA_30DD", "MES_01", "VALOR_ESTOQUE"))
        + ' FROM pp GROUP BY "NOMEFABRICANTE"',
        args,
    )


def _critical_rupture(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        f'SELECT {_PRODUCT}, "ESTOQUE_CD", "ESTOQUE_UNE", "ESTOQUE_LV", "NECESSIDADE", '
        f'"VENDA_30DD", "LEADTIME_LV" FROM srv_rows_critical WHERE "__POS" <= ? AND {where}',
        [int(p["limite"]), *args],
    )


def _rupture_risk_by_segment(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        'SELECT "NOMESEGMENTO", CAST("ITENS" AS BIGINT) AS "ITENS", '
        'CAST("ITENS_RUPTURA" AS BIGINT) AS "ITENS_RUPTURA", "VENDA_EM_RISCO", "VENDA_30DD", '
        + ratio_sql('"ITENS_RUPTURA"', '"ITENS"')
        + ' AS "PCT_RUPTURA" FROM (SELECT "NOMESEGMENTO", coalesce(sum("ITENS"), 0) AS "ITENS", '
        + ", ".join(_csum(c) for c in ("ITENS_RUPTURA", "VENDA_EM_RISCO", "VENDA_30DD"))
        + f' FROM srv_segment WHERE {where} GROUP BY "NOMESEGMENTO")',
        args,
    )


def _growth_products(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    # CRESCIMENTO > t keeps a prefix of each segment's order: the top n have __POS <= n
    where, args = _where_segments(seg)
    return (
        'SELECT "NOMESEGMENTO", "PRODUTO", "NOME", "MES_01", "MES_02", "CRESCIMENTO" '
        f'FROM srv_segment_growth WHERE "__POS" <= ? AND "CRESCIMENTO" > ? AND {where}',
        [int(p["limite"]), float(p["crescimento_minimo"]), *args],
    )


def _sales_by_une(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        'SELECT "UNE", "UNE_NOME", CAST(coalesce(sum("ITENS"), 0) AS BIGINT) AS "ITENS", '
        + ", ".join(_csum(c) for c in ("VENDA_30DD", "MES_01", "MES_PARCIAL"))
        + f' FROM srv_segment_une_abc WHERE {where} GROUP BY "UNE", "UNE_NOME"',
        args,
    )


def _n_unique(column: str) -> str:
    """narwhals' ``n_unique`` on DuckDB (nulls count as one value)."""
    c = q(column)
    return f"count(DISTINCT {c}) + max(CASE WHEN {c} IS NULL THEN 1 ELSE 0 END)"


def _dashboard_totals(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    if seg is None:  # every row: pre-computed
        return (
            'SELECT CAST("ITENS" AS BIGINT) AS "ITENS", CAST("PRODUTOS" AS BIGINT) AS "PRODUTOS", '
            'CAST("UNES" AS BIGINT) AS "UNES", CAST("SEGMENTOS" AS BIGINT) AS "SEGMENTOS", '
            '"VENDA_30DD", "MES_01", "ESTOQUE_UNE", "VALOR_ESTOQUE", '
            'CAST("ITENS_RUPTURA" AS BIGINT) AS "ITENS_RUPTURA" FROM srv_totals',
            [],
        )
    where, args = _where_segments(seg)
    return (
        'SELECT CAST(s."ITENS" AS BIGINT) AS "ITENS", CAST(pr.n AS BIGINT) AS "PRODUTOS", '
        'CAST(u.n AS BIGINT) AS "UNES", CAST(s.segs AS BIGINT) AS "SEGMENTOS", '
        's."VENDA_30DD", s."MES_01", s."ESTOQUE_UNE", s."VALOR_ESTOQUE", '
        'CAST(s."ITENS_RUPTURA" AS BIGINT) AS "ITENS_RUPTURA" FROM '
        '(SELECT coalesce(sum("ITENS"), 0) AS "ITENS", '
        + _n_unique("NOMESEGMENTO")
        + " AS segs, "
        + ", ".join(
            _csum(c)
            for c in ("VENDA_30DD", "MES_01", "ESTOQUE_UNE", "VALOR_ESTOQUE", "ITENS_RUPTURA")
        )
        + f" FROM srv_segment WHERE {where}) s, "
        f"(SELECT {_n_unique('PRODUTO')} AS n FROM srv_segment_product WHERE {where}) pr, "
        f"(SELECT {_n_unique('UNE')} AS n FROM srv_segment_une_abc WHERE {where}) u",
        [*args, *args, *args],
    )


def _products_without_sales_90d(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        f'SELECT {_PRODUCT}, "ESTOQUE_UNE", "VALOR_ESTOQUE", "ULTIMA_VENDA_DATA_UNE" '
        f'FROM srv_rows_no_sales_90d WHERE "__POS" <= ? AND {where}',
        [int(p["limite"]), *args],
    )


def _stock_coverage_by_segment(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    demand = daily_demand_sql('"VENDA_TRIMESTRE"')
    return (
        "SELECT *, "
        + ratio_sql('"ESTOQUE_UNE"', '"DEMANDA_DIARIA"')
        + ' AS "COBERTURA_DIAS" FROM '
        + f'(SELECT *, {demand} AS "DEMANDA_DIARIA" FROM '
        '(SELECT "NOMESEGMENTO", '
        + ", ".join(_csum(c) for c in ("ESTOQUE_UNE", "VENDA_TRIMESTRE"))
        + f' FROM srv_segment WHERE {where} GROUP BY "NOMESEGMENTO"))',
        args,
    )


def _promotional_performance(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    change = growth_sql('"VENDA_30DD"', '"MES_01"')
    return (
        f'SELECT *, {change} AS "VARIACAO" '
        'FROM (SELECT "PROMOCIONAL", CAST(sum("ITENS") AS BIGINT) AS "ITENS", '
        + _csum("VENDA_30DD")
        + ', sum("VENDA_30DD") / nullif(sum("N_VENDA_30DD"), 0) AS "VENDA_MEDIA_30DD", '
        + _csum("MES_01")
        + f' FROM srv_segment_promo_leadtime WHERE {where} GROUP BY "PROMOCIONAL")',
        args,
    )


def _discontinued_in_stock(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        f'SELECT {_PRODUCT}, "NOMEFABRICANTE", "ESTOQUE_UNE", "ESTOQUE_CD", "VENDA_30DD", '
        f'"VALOR_ESTOQUE" FROM srv_rows_discontinued WHERE "__POS" <= ? AND {where}',
        [int(p["limite"]), *args],
    )


def _weekly_trend(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    sums = ", ".join(
        [*(_csum(f"QTDE_{w}") for w, _ in WEEKS), *(_csum(f"FREQ_{w}") for w, _ in WEEKS)]
    )
    return f"SELECT {sums} FROM srv_segment WHERE {where}", args


def _weekly_rows(wide: dict[str, float]) -> pa.Table:
    labels, ordinals, quantities, frequencies, changes = [], [], [], [], []
    previous: str | None = None
    for week, ordinal in WEEKS:
        qty = wide[f"QTDE_{week}"]
        labels.append(week)
        ordinals.append(ordinal)
        quantities.append(qty)
        frequencies.append(round(wide[f"FREQ_{week}"]))
        changes.append(growth_value(qty, None if previous is None else wide[f"QTDE_{previous}"]))
        previous = week
    return pa.table(
        {
            "SEMANA": pa.array(labels, pa.string()),
            "SEMANAS_ATRAS": pa.array(ordinals, pa.int64()),
            "QTDE": pa.array(quantities, pa.float64()),
            "FREQUENCIA": pa.array(frequencies, pa.int64()),
            "VARIACAO": pa.array(changes, pa.float64()),
        }
    )


def _category_ranking_in_segment(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        'WITH f AS (SELECT "NOMESEGMENTO", "NOMECATEGORIA", "VENDA_30DD", "VENDA_TRIMESTRE", '
        'CAST("PRODUTOS" AS BIGINT) AS "PRODUTOS" '
        f"FROM srv_segment_category WHERE {where}), "
        't AS (SELECT coalesce(sum("VENDA_30DD"), 0) AS "__TOTAL" FROM f) '
        "SELECT f.*, " + ratio_sql('"VENDA_30DD"', '"__TOTAL"') + ' AS "PARTICIPACAO" '
        "FROM f CROSS JOIN t"
    ), args


def _store_stock_value_ranking(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        'SELECT "UNE", "UNE_NOME", '
        + ", ".join(_csum(c) for c in ("VALOR_ESTOQUE", "ESTOQUE_UNE"))
        + ', CAST(coalesce(sum("ITENS_COM_ESTOQUE"), 0) AS BIGINT) AS "ITENS_COM_ESTOQUE", '
        + _csum("VENDA_30DD")
        + f' FROM srv_segment_une_abc WHERE {where} GROUP BY "UNE", "UNE_NOME"',
        args,
    )


def _abc_distribution(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    where, args = _where_segments(seg)
    return (
        'SELECT "UNE", "UNE_NOME", "ABC_UNE_30DD", CAST(sum("ITENS") AS BIGINT) AS "ITENS", '
        + ", ".join(_csum(c) for c in ("VENDA_30DD", "ESTOQUE_UNE"))
        + f' FROM srv_segment_une_abc WHERE {where} GROUP BY "UNE", "UNE_NOME", "ABC_UNE_30DD"',
        args,
    )


def _overstock_filter(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    # all segments: the table in ESTOQUE_UNE order (the bound prunes it); some: the one
    # sorted by segment first (zone maps keep the segments' row groups only)
    where, args = _where_segments(seg)
    k = float(p["dias"])
    table = "srv_rows_stock" if seg is None else "srv_rows_stock_by_segment"
    return (
        f'FROM {table} WHERE "COBERTURA_DIAS" > ? AND "ESTOQUE_UNE" > "DEMANDA_DIARIA" * ? '
        f"AND {where}",
        [k * (1 - _SLACK), k, *args],
    )


def _overstock_bound(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    """The smallest EXCESSO of the first ``limite`` qualifying rows (in ESTOQUE_UNE
    order) and their count: when ``limite`` rows qualify, the top ``limite`` by EXCESSO
    have EXCESSO >= it, so ESTOQUE_UNE >= it (EXCESSO = ESTOQUE_UNE - a non-negative
    demand), a prefix of the table that zone maps prune to."""
    rest, args = _overstock_filter(p, seg)
    return (
        'SELECT min("EXCESSO"), count(*) FROM ('
        f'SELECT "ESTOQUE_UNE" - "DEMANDA_DIARIA" * ? AS "EXCESSO" {rest} LIMIT ?)',
        [float(p["dias"]), *args, int(p["limite"])],
    )


def _overstock_products(p: Mapping[str, Any], seg: list[str] | None) -> Statement:
    rest, args = _overstock_filter(p, seg)
    bound = p.get("__bound")
    k = float(p["dias"])
    return (
        f'SELECT {_PRODUCT}, "ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS", '
        f'"ESTOQUE_UNE" - "DEMANDA_DIARIA" * ? AS "EXCESSO" {rest} AND "ESTOQUE_UNE" >= ?',
        [k, *args, float("-inf") if bound is None else bound],
    )


STATEMENTS: dict[str, Builder] = {
    "top_products_by_une": _top_products_by_une,
    "top_products_by_segment": _top_products_by_segment,
    "segment_sales_evolution": _segment_sales_evolution,
    "compare_unes": _compare_unes,
    "segment_ranking_quarter": _segment_ranking_quarter,
    "abc_concentration": _abc_concentration,
    "seasonality": _seasonality,
    "low_stock_high_demand": _low_stock_high_demand,
    "near_reorder_point": _near_reorder_point,
    "leadtime_vs_sales": _leadtime_vs_sales,
    "manufacturer_ranking": _manufacturer_ranking,
    "critical_rupture": _critical_rupture,
    "rupture_risk_by_segment": _rupture_risk_by_segment,
    "growth_products": _growth_products,
    "sales_by_une": _sales_by_une,
    "dashboard_totals": _dashboard_totals,
    "products_without_sales_90d": _products_without_sales_90d,
    "stock_coverage_by_segment": _stock_coverage_by_segment,
    "promotional_performance": _promotional_performance,
    "discontinued_in_stock": _discontinued_in_stock,
    "weekly_trend": _weekly_trend,
    "category_ranking_in_segment": _category_ranking_in_segment,
    "store_stock_value_ranking": _store_stock_value_ranking,
    "abc_distribution": _abc_distribution,
    "overstock_products": _overstock_products,
}
if set(STATEMENTS) != set(CATALOG):  # pragma: no cover - guarded by the tests too
    raise RuntimeError("serving SQL: every catalog query needs a statement")

#: Queries whose one-row SQL result (the sums) is reshaped to one row per period here,
#: with the battery's arithmetic on the sums (the rows come out in the sort order).
RESHAPE: dict[str, Callable[[dict[str, float]], pa.Table]] = {
    "segment_sales_evolution": _evolution_rows,
    "seasonality": _seasonality_rows,
    "weekly_trend": _weekly_rows,
}

#: Queries that first ask for a bound (``(value, rows)``; used when ``rows`` reached
#: ``limite``) which their statement then reads as ``params["__bound"]``.
BOUNDS: dict[str, Builder] = {"overstock_products": _overstock_bound}

_ARROW_TYPES: dict[str, pa.DataType] = {
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "SMALLINT": pa.int16(),
    "TINYINT": pa.int8(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "VARCHAR": pa.string(),
    "DATE": pa.date32(),
    "BOOLEAN": pa.bool_(),
}


def statement(
    query: BusinessQuery, params: Mapping[str, Any], segments: Sequence[str] | None
) -> Statement:
    """``(sql, args)`` of catalog ``query`` with validated ``params``, restricted to
    ``segments`` (``None``: unrestricted): the sorted (and, for top-N queries, limited)
    result in the battery's column order (for :data:`RESHAPE` queries: the sums).

    Args:
        query: The catalog query.
        params: Its validated parameters.
        segments: Row-level security restriction (``None``: none).

    Returns:
        The SQL text and its ``?`` arguments.
    """
    sql, args = STATEMENTS[query.name](params, effective_segments(query, params, segments))
    if query.name in RESHAPE:
        return sql, args
    sql = f"SELECT * FROM ({sql}){_order(query)}"
    if "limite" in params:
        sql += " LIMIT ?"
        args = [*args, int(params["limite"])]
    return sql, args


def run(
    connection: duckdb.DuckDBPyConnection,
    query: BusinessQuery,
    params: Mapping[str, Any],
    segments: Sequence[str] | None,
) -> pa.Table:
    """Run ``query`` as its prepared statement on ``connection``; the result as Arrow
    (fetched as rows -- one round trip to DuckDB -- and typed from the result's
    description, exactly as DuckDB's Arrow export types them).

    Args:
        connection: A connection to the warehouse (see ``open_read_only``).
        query: The catalog query.
        params: Its validated parameters.
        segments: Row-level security restriction (``None``: none).

    Returns:
        The result, equal to the narwhals battery's.
    """
    if query.name in BOUNDS:
        sql, args = BOUNDS[query.name](params, effective_segments(query, params, segments))
        row = connection.execute(sql, args).fetchone()
        assert row is not None
        value, rows = row
        params = {**params, "__bound": value if rows >= int(params["limite"]) else None}
    sql, args = statement(query, params, segments)
    cursor = connection.execute(sql, args)
    description = cursor.description
    rows = cursor.fetchall()
    names = [d[0] for d in description]
    if query.name in RESHAPE:  # a global aggregate: exactly one row
        return RESHAPE[query.name](dict(zip(names, rows[0], strict=True)))
    types = [_ARROW_TYPES.get(str(d[1])) for d in description]
    if any(t is None for t in types):  # pragma: no cover - no such column in the battery
        return connection.sql(sql, params=args).to_arrow_table()
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pa.table(
        [pa.array(c, t) for c, t in zip(columns, types, strict=True)],
        names=names,
    )
