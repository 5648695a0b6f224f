"""Ranking questions: top products of a store or segment, segments, manufacturers,
categories and stores ranked, products with the highest growth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import narwhals as nw

from bi_platform.retail.queries.definition import (
    PRODUCT_COLUMNS,
    SEGMENT_OR_ALL_PARAM,
    SEGMENT_PARAM,
    BusinessQuery,
    Param,
    limit_param,
    sort_spec,
    store_param,
)
from bi_platform.retail.queries.frames import as_int, in_segment, top_n, with_share
from bi_platform.retail.rules import (
    GROWTH_MINIMUM,
    IN_STORE_STOCK,
    QUARTER,
    QUARTER_SALES,
    STOCK_VALUE,
    flag_expr,
    growth_expr,
)

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
    return top_n(frame, p["limite"], _TOP_UNE_SORT)


_TOP_SEGMENT_SORT = (("VENDA_30DD", True), ("PRODUTO", False))


def _top_products_by_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .group_by("NOMESEGMENTO", "PRODUTO", "NOME")
        .agg(
            nw.col("VENDA_30DD").sum(),
            nw.col("MES_01").sum(),
            nw.col("ESTOQUE_UNE").sum(),
            nw.len().alias("UNES"),  # admmat's key is UNE x PRODUTO: one row per store
        )
        .with_columns(as_int("UNES"))
    )
    return top_n(frame, p["limite"], _TOP_SEGMENT_SORT)


def _segment_ranking_quarter(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        lf.with_columns(QUARTER_SALES.expr)
        .group_by("NOMESEGMENTO")
        .agg(
            nw.col("VENDA_TRIMESTRE").sum(),
            *(nw.col(m).sum() for m in QUARTER),
            nw.len().alias("ITENS"),
        )
        .with_columns(as_int("ITENS"))
    )
    return with_share(frame, "VENDA_TRIMESTRE")


_MANUFACTURER_SORT = (("VENDA_30DD", True), ("NOMEFABRICANTE", False))


def _manufacturer_ranking(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    # Distinct products in two group-bys: narwhals' grouped n_unique on Dask sums the
    # per-partition counts (wrong across partitions).
    per_product = (
        in_segment(lf, p["segmento"])
        .with_columns(STOCK_VALUE.expr)
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
        .with_columns(as_int("PRODUTOS", "ITENS"))
    )
    return top_n(frame, p["limite"], _MANUFACTURER_SORT)


_GROWTH_SORT = (("CRESCIMENTO", True), ("PRODUTO", False))


def _growth_products(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .group_by("NOMESEGMENTO", "PRODUTO", "NOME")
        .agg(nw.col("MES_01").sum(), nw.col("MES_02").sum())
        .filter(nw.col("MES_02") > 0)
        .with_columns(growth_expr("MES_01", "MES_02").alias("CRESCIMENTO"))
        .filter(nw.col("CRESCIMENTO") > p["crescimento_minimo"])
    )
    return top_n(frame, p["limite"], _GROWTH_SORT)


_CATEGORY_SORT = (("VENDA_30DD", True), ("NOMECATEGORIA", False))


def _category_ranking_in_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    keys = ("NOMESEGMENTO", "NOMECATEGORIA")
    per_product = (
        in_segment(lf, p["segmento"])
        .with_columns(QUARTER_SALES.expr)
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
        .with_columns(as_int("PRODUTOS"))
    )
    return top_n(with_share(frame, "VENDA_30DD"), p["limite"], _CATEGORY_SORT)


_STORE_VALUE_SORT = (("VALOR_ESTOQUE", True), ("UNE", False))


def _store_stock_value_ranking(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .with_columns(STOCK_VALUE.expr, flag_expr(IN_STORE_STOCK.expr, "ITENS_COM_ESTOQUE"))
        .group_by("UNE", "UNE_NOME")
        .agg(
            nw.col("VALOR_ESTOQUE").sum(),
            nw.col("ESTOQUE_UNE").sum(),
            nw.col("ITENS_COM_ESTOQUE").sum(),
            nw.col("VENDA_30DD").sum(),
        )
        .with_columns(as_int("ITENS_COM_ESTOQUE"))
    )
    return top_n(frame, p["limite"], _STORE_VALUE_SORT)


#: The rankings questions of the catalog.
QUERIES: tuple[BusinessQuery, ...] = (
    BusinessQuery(
        name="top_products_by_une",
        question="Quais os 10 produtos mais vendidos na UNE 261 nos últimos 30 dias?",
        description="Top-N products of one store by sales of the last 30 days.",
        cache_class="top_products",
        params=(store_param(), limit_param(10)),
        columns=(*PRODUCT_COLUMNS, "VENDA_30DD", "MES_01", "ESTOQUE_UNE"),
        build=_top_products_by_une,
        **sort_spec(_TOP_UNE_SORT),
    ),
    BusinessQuery(
        name="top_products_by_segment",
        question="Quais os 10 produtos mais vendidos do segmento TECIDOS?",
        description="Top-N products of one segment by sales of the last 30 days, all stores.",
        cache_class="top_products",
        params=(SEGMENT_PARAM, limit_param(10)),
        columns=("UNE", "PRODUTO", "NOME", "NOMESEGMENTO", "VENDA_30DD", "MES_01", "ESTOQUE_UNE"),
        build=_top_products_by_segment,
        **sort_spec(_TOP_SEGMENT_SORT),
    ),
    BusinessQuery(
        name="segment_ranking_quarter",
        question="Qual o ranking dos segmentos por vendas no último trimestre?",
        description="Segments ranked by sales of the last three closed months, with shares.",
        cache_class="dashboard",
        params=(),
        columns=("NOMESEGMENTO", *QUARTER),
        build=_segment_ranking_quarter,
        **sort_spec((("VENDA_TRIMESTRE", True), ("NOMESEGMENTO", False))),
    ),
    BusinessQuery(
        name="manufacturer_ranking",
        question="Quais os 10 fabricantes com maior volume de vendas nos últimos 30 dias?",
        description="Top-N manufacturers by sales of the last 30 days, with stock value.",
        cache_class="suppliers",
        params=(SEGMENT_OR_ALL_PARAM, limit_param(10)),
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
        **sort_spec(_MANUFACTURER_SORT),
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
                GROWTH_MINIMUM,
                "Minimum growth (0.2 = 20%).",
                minimum=-1,
                maximum=100,
            ),
            SEGMENT_OR_ALL_PARAM,
            limit_param(50),
        ),
        columns=("PRODUTO", "NOME", "NOMESEGMENTO", "MES_01", "MES_02"),
        build=_growth_products,
        **sort_spec(_GROWTH_SORT),
    ),
    BusinessQuery(
        name="category_ranking_in_segment",
        question="Quais as categorias mais vendidas do segmento TECIDOS?",
        description="Categories of one segment ranked by sales of the last 30 days, with "
        "their share of the segment.",
        cache_class="top_products",
        params=(SEGMENT_PARAM, limit_param(20)),
        columns=("PRODUTO", "NOMESEGMENTO", "NOMECATEGORIA", "VENDA_30DD", *QUARTER),
        build=_category_ranking_in_segment,
        **sort_spec(_CATEGORY_SORT),
    ),
    BusinessQuery(
        name="store_stock_value_ranking",
        question="Quais UNEs têm o maior valor em estoque?",
        description="Stores ranked by stock value (ESTOQUE_UNE x LIQUIDO_38).",
        cache_class="dashboard",
        params=(SEGMENT_OR_ALL_PARAM, limit_param(10)),
        columns=("UNE", "UNE_NOME", "NOMESEGMENTO", "ESTOQUE_UNE", "LIQUIDO_38", "VENDA_30DD"),
        build=_store_stock_value_ranking,
        **sort_spec(_STORE_VALUE_SORT),
    ),
)
