"""The BI team's marts over the typed ``admmat`` table, written once with narwhals.

Each function takes and returns a narwhals LazyFrame, so the same code runs on Polars
or Dask, whichever engine the IO manager chose for the table's size. Only operations
every backend supports are used (filter, select, group_by/agg, join, sort); Dask's
group_by only takes plain column aggregations, so derived values are computed first.
The business rules (critical rupture, shortfall, stock value, growth) come from
:mod:`bi_platform.retail.rules`. :data:`MARTS` maps each lake table name (Portuguese, as
users see it) to its function.
"""

from __future__ import annotations

import narwhals as nw

from bi_platform.lib.warning_filters import silence_narwhals_dask_warning
from bi_platform.retail.rules import CRITICAL_RUPTURE, SHORTFALL, STOCK_VALUE, growth_expr

silence_narwhals_dask_warning()


def critical_rupture(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """Products in critical rupture per store (table ``ruptura_critica``).

    Args:
        admmat: The typed ``admmat`` table.

    Returns:
        One row per store x product in :data:`~bi_platform.retail.rules.CRITICAL_RUPTURE`,
        with ``NECESSIDADE`` (units missing to the sales-floor target), best sellers first.
    """
    return (
        admmat.filter(CRITICAL_RUPTURE.expr)
        .select(
            "UNE",
            "UNE_NOME",
            "PRODUTO",
            "NOME",
            "NOMESEGMENTO",
            "NOMEFABRICANTE",
            "ESTOQUE_UNE",
            "ESTOQUE_LV",
            "VENDA_30DD",
            "LEADTIME_LV",
            SHORTFALL.expr,
        )
        .sort(["VENDA_30DD", "UNE", "PRODUTO"], descending=[True, False, False])
    )


def sales_by_segment_store_manufacturer(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """Sales and stock value per segment x store x manufacturer (table
    ``vendas_segmento_une_fabricante``).

    Args:
        admmat: The typed ``admmat`` table.

    Returns:
        Per group: products, sales of the last 30 days and of the last closed month,
        and stock value.
    """
    return (
        admmat.with_columns(STOCK_VALUE.expr)
        .group_by("NOMESEGMENTO", "UNE", "UNE_NOME", "NOMEFABRICANTE")
        .agg(
            nw.len().alias("PRODUTOS"),
            nw.col("VENDA_30DD").sum().alias("VENDA_30DD"),
            nw.col("MES_01").sum().alias("VENDA_MES_01"),
            nw.col("VALOR_ESTOQUE").sum(),
        )
        .sort(["NOMESEGMENTO", "UNE", "NOMEFABRICANTE"])
    )


def monthly_growth(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """Month-over-month growth ``(MES_01 - MES_02) / MES_02`` per segment x store (table
    ``crescimento_mensal``).

    Args:
        admmat: The typed ``admmat`` table.

    Returns:
        Per segment x store: both months' sales and ``CRESCIMENTO``. Groups with no
        sales in MES_02 have no defined growth and are left out.
    """
    return (
        admmat.group_by("NOMESEGMENTO", "UNE", "UNE_NOME")
        .agg(
            nw.col("MES_01").sum().alias("MES_01"),
            nw.col("MES_02").sum().alias("MES_02"),
        )
        .filter(nw.col("MES_02") > 0)
        .with_columns(growth_expr("MES_01", "MES_02").alias("CRESCIMENTO"))
        .sort(["NOMESEGMENTO", "UNE"])
    )


def abc_concentration(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """How concentrated each store's sales are in its ABC classes (table
    ``concentracao_abc``).

    Args:
        admmat: The typed ``admmat`` table.

    Returns:
        Per store and ABC class of the last 30 days: products, sales and
        ``PARTICIPACAO`` (share of the store's sales; 0 for a store without sales).
    """
    by_class = admmat.group_by("UNE", "UNE_NOME", "ABC_UNE_30DD").agg(
        nw.len().alias("PRODUTOS"),
        nw.col("VENDA_30DD").sum().alias("VENDA_30DD"),
    )
    totals = admmat.group_by("UNE").agg(nw.col("VENDA_30DD").sum().alias("VENDA_30DD_UNE"))
    return (
        by_class.join(totals, on="UNE", how="inner")
        .with_columns(
            nw.when(nw.col("VENDA_30DD_UNE") > 0)
            .then(nw.col("VENDA_30DD") / nw.col("VENDA_30DD_UNE"))
            .otherwise(0.0)
            .alias("PARTICIPACAO")
        )
        .sort(["UNE", "ABC_UNE_30DD"])
    )


#: Lake table name -> mart function.
MARTS = {
    "ruptura_critica": critical_rupture,
    "vendas_segmento_une_fabricante": sales_by_segment_store_manufacturer,
    "crescimento_mensal": monthly_growth,
    "concentracao_abc": abc_concentration,
}
