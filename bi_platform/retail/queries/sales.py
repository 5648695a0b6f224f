"""Sales questions: monthly and weekly evolution, seasonality, store comparisons,
ABC concentration and distribution, lead-time buckets, promotions and headline totals.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import narwhals as nw

from bi_platform.retail.queries.definition import (
    DEFAULT_UNES,
    SEGMENT_OR_ALL_PARAM,
    SEGMENT_PARAM,
    BusinessQuery,
    Param,
    sort_spec,
    store_param,
)
from bi_platform.retail.queries.frames import as_int, in_segment, long_from_wide
from bi_platform.retail.rules import (
    CRITICAL_RUPTURE,
    MONTH_ROWS,
    MONTHS,
    STOCK_VALUE,
    WEEKS,
    flag_expr,
    growth_expr,
    leadtime_bucket_exprs,
    ratio_expr,
    row_sum_expr,
    seasonal_index_expr,
)
from bi_platform.retail.schema import ABC_CLASSES


def _segment_sales_evolution(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    wide = in_segment(lf, p["segmento"]).select(*(nw.col(m).sum() for m in MONTHS))
    # Month-over-month change, computed on the one-row frame (no window function).
    wide = wide.with_columns(
        nw.lit(None, dtype=nw.Float64).alias(f"VAR_{MONTHS[-1]}"),
        *(growth_expr(cur, prev).alias(f"VAR_{cur}") for cur, prev in itertools.pairwise(MONTHS)),
    )
    return long_from_wide(
        wide,
        MONTH_ROWS,
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


def _abc_concentration(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    in_class = nw.col("ABC_UNE_30DD") == p["classe"]
    return (
        lf.with_columns(
            nw.when(in_class).then(nw.col("VENDA_30DD")).otherwise(0.0).alias("VENDA_CLASSE"),
            flag_expr(in_class, "ITENS_CLASSE"),
        )
        .group_by("UNE", "UNE_NOME")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("ITENS_CLASSE").sum(),
            nw.col("VENDA_CLASSE").sum(),
            nw.col("VENDA_30DD").sum(),
        )
        .with_columns(
            as_int("ITENS", "ITENS_CLASSE"),
            nw.lit(p["classe"], dtype=nw.String).alias("CLASSE"),
            ratio_expr("VENDA_CLASSE", "VENDA_30DD", "CONCENTRACAO"),
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
        in_segment(lf, p["segmento"])
        .select(*(nw.col(m).sum() for m in MONTHS))
        .with_columns(row_sum_expr(MONTHS).alias("TOTAL"))
    )
    wide = wide.with_columns(
        *(ratio_expr(m, "TOTAL", f"PART_{m}") for m in MONTHS),
        *(seasonal_index_expr(m, "TOTAL", f"IDX_{m}") for m in MONTHS),
    )
    return long_from_wide(
        wide,
        MONTH_ROWS,
        "MES",
        "MESES_ATRAS",
        {
            "VENDAS": lambda m: m,
            "PARTICIPACAO": lambda m: f"PART_{m}",
            "INDICE_SAZONAL": lambda m: f"IDX_{m}",
        },
    )


def _leadtime_vs_sales(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    order, label = leadtime_bucket_exprs()
    return (
        in_segment(lf, p["segmento"])
        .with_columns(order, label, nw.col("LEADTIME_LV").cast(nw.Float64))
        .group_by("FAIXA_ORDEM", "FAIXA_LEADTIME")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("LEADTIME_LV").mean().alias("LEADTIME_MEDIO"),
            nw.col("VENDA_30DD").mean().alias("VENDA_MEDIA_30DD"),
            nw.col("VENDA_30DD").sum(),
            nw.col("ESTOQUE_UNE").mean().alias("ESTOQUE_MEDIO"),
        )
        .with_columns(as_int("ITENS"))
    )


def _sales_by_une(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        in_segment(lf, p["segmento"])
        .group_by("UNE", "UNE_NOME")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("VENDA_30DD").sum(),
            nw.col("MES_01").sum(),
            nw.col("MES_PARCIAL").sum(),
        )
        .with_columns(as_int("ITENS"))
    )


def _dashboard_totals(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        lf.with_columns(STOCK_VALUE.expr, flag_expr(CRITICAL_RUPTURE.expr, "ITENS_RUPTURA"))
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
        .with_columns(as_int("ITENS", "PRODUTOS", "UNES", "SEGMENTOS", "ITENS_RUPTURA"))
    )


def _promotional_performance(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        in_segment(lf, p["segmento"])
        .group_by("PROMOCIONAL")
        .agg(
            nw.len().alias("ITENS"),
            nw.col("VENDA_30DD").sum(),
            nw.col("VENDA_30DD").mean().alias("VENDA_MEDIA_30DD"),
            nw.col("MES_01").sum(),
        )
        .with_columns(
            as_int("ITENS"),
            growth_expr("VENDA_30DD", "MES_01").alias("VARIACAO"),
        )
    )


def _weekly_trend(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    frame = in_segment(lf, p["segmento"]).with_columns(
        *(nw.col(f"FREQ_{w}").cast(nw.Float64) for w, _ in WEEKS)
    )
    wide = frame.select(
        *(nw.col(f"QTDE_{w}").sum() for w, _ in WEEKS),
        *(nw.col(f"FREQ_{w}").sum() for w, _ in WEEKS),
    )
    previous = {w: prev for (prev, _), (w, _) in itertools.pairwise(WEEKS)}
    wide = wide.with_columns(
        as_int(*(f"FREQ_{w}" for w, _ in WEEKS)),
        nw.lit(None, dtype=nw.Float64).alias(f"VAR_{WEEKS[0][0]}"),
        *(
            growth_expr(f"QTDE_{w}", f"QTDE_{prev}").alias(f"VAR_{w}")
            for w, prev in previous.items()
        ),
    )
    return long_from_wide(
        wide,
        WEEKS,
        "SEMANA",
        "SEMANAS_ATRAS",
        {
            "QTDE": lambda w: f"QTDE_{w}",
            "FREQUENCIA": lambda w: f"FREQ_{w}",
            "VARIACAO": lambda w: f"VAR_{w}",
        },
    )


def _abc_distribution(lf: nw.LazyFrame, p: Mapping[str, Any]) -> nw.LazyFrame:
    return (
        in_segment(lf, p["segmento"])
        .group_by("UNE", "UNE_NOME", "ABC_UNE_30DD")
        .agg(nw.len().alias("ITENS"), nw.col("VENDA_30DD").sum(), nw.col("ESTOQUE_UNE").sum())
        .with_columns(as_int("ITENS"))
    )


#: The sales questions of the catalog.
QUERIES: tuple[BusinessQuery, ...] = (
    BusinessQuery(
        name="segment_sales_evolution",
        question="Como evoluíram as vendas do segmento TECIDOS nos últimos 12 meses?",
        description="Monthly sales of a segment, one row per month (MES_12 .. MES_01), "
        "with the month-over-month change.",
        cache_class="forecast",
        params=(SEGMENT_PARAM,),
        columns=("NOMESEGMENTO", *MONTHS),
        build=_segment_sales_evolution,
        **sort_spec((("MESES_ATRAS", True),)),
    ),
    BusinessQuery(
        name="compare_unes",
        question="Compare as vendas por segmento entre a UNE 261 e a UNE 2.",
        description="Sales of the last 30 days per segment for two stores, side by side.",
        cache_class="dashboard",
        params=(
            store_param("une_a", DEFAULT_UNES[0], "First store (UNE) id."),
            store_param("une_b", DEFAULT_UNES[1], "Second store (UNE) id."),
        ),
        columns=("UNE", "NOMESEGMENTO", "VENDA_30DD"),
        build=_compare_unes,
        **sort_spec((("NOMESEGMENTO", False),)),
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
        **sort_spec((("UNE", False),)),
    ),
    BusinessQuery(
        name="seasonality",
        question="Qual a sazonalidade das vendas ao longo dos últimos 12 meses?",
        description="Monthly sales totals with each month's share of the year and "
        "seasonal index (month / average month).",
        cache_class="forecast",
        params=(SEGMENT_OR_ALL_PARAM,),
        columns=("NOMESEGMENTO", *MONTHS),
        build=_seasonality,
        **sort_spec((("MESES_ATRAS", True),)),
    ),
    BusinessQuery(
        name="leadtime_vs_sales",
        question="Qual a relação entre o lead time e as vendas dos últimos 30 dias?",
        description="Lead-time buckets with item count and average sales and stock.",
        cache_class="suppliers",
        params=(SEGMENT_OR_ALL_PARAM,),
        columns=("NOMESEGMENTO", "LEADTIME_LV", "VENDA_30DD", "ESTOQUE_UNE"),
        build=_leadtime_vs_sales,
        **sort_spec((("FAIXA_ORDEM", False),)),
    ),
    BusinessQuery(
        name="sales_by_une",
        question="Qual o total de vendas de cada UNE nos últimos 30 dias?",
        description="Sales of the last 30 days, last month and current month per store.",
        cache_class="dashboard",
        params=(SEGMENT_OR_ALL_PARAM,),
        columns=("UNE", "UNE_NOME", "NOMESEGMENTO", "VENDA_30DD", "MES_01", "MES_PARCIAL"),
        build=_sales_by_une,
        **sort_spec((("VENDA_30DD", True), ("UNE", False))),
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
        name="promotional_performance",
        question="Como está o desempenho dos produtos promocionais em relação aos demais?",
        description="Promotional vs regular items: count, sales, average sales and change "
        "against the last closed month.",
        cache_class="dashboard",
        params=(SEGMENT_OR_ALL_PARAM,),
        columns=("NOMESEGMENTO", "PROMOCIONAL", "VENDA_30DD", "MES_01"),
        build=_promotional_performance,
        **sort_spec((("PROMOCIONAL", False),)),
    ),
    BusinessQuery(
        name="weekly_trend",
        question="Qual a tendência de vendas nas últimas 5 semanas?",
        description="Weekly quantity and sale frequency, one row per week (oldest first), "
        "with the week-over-week change.",
        cache_class="forecast",
        params=(SEGMENT_OR_ALL_PARAM,),
        columns=(
            "NOMESEGMENTO",
            *(f"QTDE_{w}" for w, _ in WEEKS),
            *(f"FREQ_{w}" for w, _ in WEEKS),
        ),
        build=_weekly_trend,
        **sort_spec((("SEMANAS_ATRAS", True),)),
    ),
    BusinessQuery(
        name="abc_distribution",
        question="Quantos produtos há em cada classe ABC por UNE?",
        description="Per store and ABC class (ABC_UNE_30DD): items, sales and stock.",
        cache_class="dashboard",
        params=(SEGMENT_OR_ALL_PARAM,),
        columns=("UNE", "UNE_NOME", "NOMESEGMENTO", "ABC_UNE_30DD", "VENDA_30DD", "ESTOQUE_UNE"),
        build=_abc_distribution,
        **sort_spec((("UNE", False), ("ABC_UNE_30DD", False))),
    ),
)
