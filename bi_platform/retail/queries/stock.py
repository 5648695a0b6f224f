"""Stock and rupture questions: low stock against demand, reorder point, critical
rupture, products without sales, coverage, discontinued stock and overstock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import narwhals as nw

from bi_platform.retail.queries.definition import (
    PRODUCT_COLUMNS,
    SEGMENT_OR_ALL_PARAM,
    BusinessQuery,
    Param,
    limit_param,
    sort_spec,
)
from bi_platform.retail.queries.frames import as_int, in_segment, top_n
from bi_platform.retail.rules import (
    CRITICAL_RUPTURE,
    DAILY_DEMAND,
    DISCONTINUED_IN_STOCK,
    HAS_DEMAND,
    HAS_REORDER_POINT,
    LOW_STOCK_DAYS,
    NO_SALES_90D,
    OVERSTOCK_DAYS,
    QUARTER,
    QUARTER_SALES,
    REORDER_MARGIN,
    SHORTFALL,
    STOCK_VALUE,
    daily_demand_expr,
    flag_expr,
    ratio_expr,
)

_LOW_STOCK_SORT = (("DEMANDA_DIARIA", True), ("UNE", False), ("PRODUTO", False))


def _low_stock_high_demand(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .with_columns(DAILY_DEMAND.expr)
        .filter(
            HAS_DEMAND.expr,
            nw.col("ESTOQUE_UNE") < nw.col("DEMANDA_DIARIA") * float(p["dias"]),
        )
        .with_columns(ratio_expr("ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS"))
        .select(
            *PRODUCT_COLUMNS,
            "ESTOQUE_UNE",
            "DEMANDA_DIARIA",
            "COBERTURA_DIAS",
            "VENDA_30DD",
        )
    )
    return top_n(frame, p["limite"], _LOW_STOCK_SORT)


_REORDER_SORT = (("RAZAO_PONTO_PEDIDO", False), ("UNE", False), ("PRODUTO", False))


def _near_reorder_point(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    threshold = 1.0 + p["margem"]
    frame = (
        in_segment(lf, p["segmento"])
        .filter(
            HAS_REORDER_POINT.expr,
            nw.col("ESTOQUE_UNE") <= nw.col("PONTO_PEDIDO_LV") * threshold,
        )
        .with_columns(ratio_expr("ESTOQUE_UNE", "PONTO_PEDIDO_LV", "RAZAO_PONTO_PEDIDO"))
        .select(
            *PRODUCT_COLUMNS,
            "ESTOQUE_UNE",
            "PONTO_PEDIDO_LV",
            "RAZAO_PONTO_PEDIDO",
            "LEADTIME_LV",
            "VENDA_30DD",
        )
    )
    return top_n(frame, p["limite"], _REORDER_SORT)


_RUPTURE_SORT = (("VENDA_30DD", True), ("UNE", False), ("PRODUTO", False))


def _critical_rupture(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .filter(CRITICAL_RUPTURE.expr)
        .with_columns(SHORTFALL.expr)
        .select(
            *PRODUCT_COLUMNS,
            "ESTOQUE_CD",
            "ESTOQUE_UNE",
            "ESTOQUE_LV",
            "NECESSIDADE",
            "VENDA_30DD",
            "LEADTIME_LV",
        )
    )
    return top_n(frame, p["limite"], _RUPTURE_SORT)


def _rupture_risk_by_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        lf.with_columns(
            flag_expr(CRITICAL_RUPTURE.expr, "ITENS_RUPTURA"),
            nw.when(CRITICAL_RUPTURE.expr)
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
            as_int("ITENS", "ITENS_RUPTURA"),
            ratio_expr("ITENS_RUPTURA", "ITENS", "PCT_RUPTURA"),
        )
    )


_STOCK_VALUE_ROW_SORT = (("VALOR_ESTOQUE", True), ("UNE", False), ("PRODUTO", False))


def _products_without_sales_90d(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .filter(*NO_SALES_90D.exprs)
        .with_columns(STOCK_VALUE.expr)
        .select(
            *PRODUCT_COLUMNS,
            "ESTOQUE_UNE",
            "VALOR_ESTOQUE",
            "ULTIMA_VENDA_DATA_UNE",
        )
    )
    return top_n(frame, p["limite"], _STOCK_VALUE_ROW_SORT)


def _stock_coverage_by_segment(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        lf.with_columns(QUARTER_SALES.expr)
        .group_by("NOMESEGMENTO")
        .agg(nw.col("ESTOQUE_UNE").sum(), nw.col("VENDA_TRIMESTRE").sum())
        .with_columns(daily_demand_expr(nw.col("VENDA_TRIMESTRE")).alias("DEMANDA_DIARIA"))
        .with_columns(ratio_expr("ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS"))
    )


def _discontinued_in_stock(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .filter(*DISCONTINUED_IN_STOCK.exprs)
        .with_columns(STOCK_VALUE.expr)
        .select(
            *PRODUCT_COLUMNS,
            "NOMEFABRICANTE",
            "ESTOQUE_UNE",
            "ESTOQUE_CD",
            "VENDA_30DD",
            "VALOR_ESTOQUE",
        )
    )
    return top_n(frame, p["limite"], _STOCK_VALUE_ROW_SORT)


_OVERSTOCK_SORT = (("EXCESSO", True), ("UNE", False), ("PRODUTO", False))


def _overstock_products(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = (
        in_segment(lf, p["segmento"])
        .with_columns(DAILY_DEMAND.expr)
        .filter(
            HAS_DEMAND.expr,
            nw.col("ESTOQUE_UNE") > nw.col("DEMANDA_DIARIA") * float(p["dias"]),
        )
        .with_columns(
            ratio_expr("ESTOQUE_UNE", "DEMANDA_DIARIA", "COBERTURA_DIAS"),
            (nw.col("ESTOQUE_UNE") - nw.col("DEMANDA_DIARIA") * float(p["dias"])).alias("EXCESSO"),
        )
        .select(
            *PRODUCT_COLUMNS,
            "ESTOQUE_UNE",
            "DEMANDA_DIARIA",
            "COBERTURA_DIAS",
            "EXCESSO",
        )
    )
    return top_n(frame, p["limite"], _OVERSTOCK_SORT)


#: The stock questions of the catalog.
QUERIES: tuple[BusinessQuery, ...] = (
    BusinessQuery(
        name="low_stock_high_demand",
        question="Quais produtos têm estoque na UNE abaixo de 7 dias da demanda média?",
        description="Store x product rows whose store stock covers less than k days of the "
        "average daily demand of the last quarter, highest demand first.",
        cache_class="forecast",
        params=(
            Param(
                "dias",
                int,
                LOW_STOCK_DAYS,
                "Days of demand the stock must cover.",
                minimum=1,
                maximum=365,
            ),
            SEGMENT_OR_ALL_PARAM,
            limit_param(50),
        ),
        columns=(*PRODUCT_COLUMNS, "ESTOQUE_UNE", "VENDA_30DD", *QUARTER),
        build=_low_stock_high_demand,
        **sort_spec(_LOW_STOCK_SORT),
    ),
    BusinessQuery(
        name="near_reorder_point",
        question="Quais produtos estão próximos do ponto de pedido (até 10% acima dele)?",
        description="Store x product rows whose store stock is at most (1 + margin) times "
        "the reorder point, lowest stock/reorder-point ratio first.",
        cache_class="forecast",
        params=(
            Param(
                "margem",
                float,
                REORDER_MARGIN,
                "Margin above the reorder point.",
                minimum=0,
                maximum=1,
            ),
            SEGMENT_OR_ALL_PARAM,
            limit_param(100),
        ),
        columns=(*PRODUCT_COLUMNS, "ESTOQUE_UNE", "PONTO_PEDIDO_LV", "LEADTIME_LV", "VENDA_30DD"),
        build=_near_reorder_point,
        **sort_spec(_REORDER_SORT),
    ),
    BusinessQuery(
        name="critical_rupture",
        question="Quais produtos estão em ruptura crítica (sem estoque no CD e abaixo do "
        "estoque da LV, com vendas)?",
        description="Store x product rows with ESTOQUE_CD = 0, ESTOQUE_UNE < ESTOQUE_LV and "
        "VENDA_30DD > 0, best sellers first.",
        cache_class="forecast",
        params=(SEGMENT_OR_ALL_PARAM, limit_param(100)),
        columns=(
            *PRODUCT_COLUMNS,
            "ESTOQUE_CD",
            "ESTOQUE_UNE",
            "ESTOQUE_LV",
            "VENDA_30DD",
            "LEADTIME_LV",
        ),
        build=_critical_rupture,
        **sort_spec(_RUPTURE_SORT),
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
        **sort_spec((("ITENS_RUPTURA", True), ("NOMESEGMENTO", False))),
    ),
    BusinessQuery(
        name="products_without_sales_90d",
        question="Quais produtos estão há 90 dias sem vendas e ainda têm estoque na UNE?",
        description="Store x product rows with no sales in the last three closed months nor "
        "the last 30 days but stock in the store, largest stock value first.",
        cache_class="forecast",
        params=(SEGMENT_OR_ALL_PARAM, limit_param(100)),
        columns=(
            *PRODUCT_COLUMNS,
            "VENDA_30DD",
            *QUARTER,
            "ESTOQUE_UNE",
            "LIQUIDO_38",
            "ULTIMA_VENDA_DATA_UNE",
        ),
        build=_products_without_sales_90d,
        **sort_spec(_STOCK_VALUE_ROW_SORT),
    ),
    BusinessQuery(
        name="stock_coverage_by_segment",
        question="Qual a cobertura de estoque, em dias, de cada segmento?",
        description="Per segment, store stock over the average daily demand of the last quarter.",
        cache_class="forecast",
        params=(),
        columns=("NOMESEGMENTO", "ESTOQUE_UNE", *QUARTER),
        build=_stock_coverage_by_segment,
        **sort_spec((("COBERTURA_DIAS", True), ("NOMESEGMENTO", False))),
    ),
    BusinessQuery(
        name="discontinued_in_stock",
        question="Quais produtos fora de linha ainda têm estoque nas lojas?",
        description="Discontinued (FORALINHA = 'S') store x product rows with store stock, "
        "largest stock value first.",
        cache_class="suppliers",
        params=(SEGMENT_OR_ALL_PARAM, limit_param(100)),
        columns=(
            *PRODUCT_COLUMNS,
            "NOMEFABRICANTE",
            "FORALINHA",
            "ESTOQUE_UNE",
            "ESTOQUE_CD",
            "VENDA_30DD",
            "LIQUIDO_38",
        ),
        build=_discontinued_in_stock,
        **sort_spec(_STOCK_VALUE_ROW_SORT),
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
                OVERSTOCK_DAYS,
                "Days of demand beyond which stock is excess.",
                minimum=1,
                maximum=3650,
            ),
            SEGMENT_OR_ALL_PARAM,
            limit_param(100),
        ),
        columns=(*PRODUCT_COLUMNS, "ESTOQUE_UNE", *QUARTER),
        build=_overstock_products,
        **sort_spec(_OVERSTOCK_SORT),
    ),
)
