"""The BI team's marts over the typed ``admmat`` table, written once with narwhals.

Each function takes and returns a narwhals LazyFrame, so the same code runs on Polars
or Dask, whichever engine the IO manager chose for the table's size. Only operations
every backend supports are used (filter, select, group_by/agg, join, sort); Dask's
group_by only takes plain column aggregations, so derived values are computed first.
"""

from __future__ import annotations

import narwhals as nw

from bi_platform.lib.warning_filters import silence_narwhals_dask_warning

silence_narwhals_dask_warning()

#: The team's definition of a critical rupture: no stock at the DC, the store below its
#: sales-floor target, and the product selling.
CRITICAL_RUPTURE = (
    (nw.col("ESTOQUE_CD") == 0)
    & (nw.col("ESTOQUE_UNE") < nw.col("ESTOQUE_LV"))
    & (nw.col("VENDA_30DD") > 0)
)


def ruptura_critica(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """Products in critical rupture per store, with the quantity missing to the target."""
    return (
        admmat.filter(CRITICAL_RUPTURE)
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
            (nw.col("ESTOQUE_LV") - nw.col("ESTOQUE_UNE")).alias("NECESSIDADE"),
        )
        .sort(["VENDA_30DD", "UNE", "PRODUTO"], descending=[True, False, False])
    )


def vendas_segmento_une_fabricante(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """Sales of the last 30 days and last month, and stock value, per segment x store x
    manufacturer."""
    return (
        admmat.with_columns((nw.col("ESTOQUE_UNE") * nw.col("LIQUIDO_38")).alias("VALOR_ESTOQUE"))
        .group_by("NOMESEGMENTO", "UNE", "UNE_NOME", "NOMEFABRICANTE")
        .agg(
            nw.len().alias("PRODUTOS"),
            nw.col("VENDA_30DD").sum().alias("VENDA_30DD"),
            nw.col("MES_01").sum().alias("VENDA_MES_01"),
            nw.col("VALOR_ESTOQUE").sum(),
        )
        .sort(["NOMESEGMENTO", "UNE", "NOMEFABRICANTE"])
    )


def crescimento_mensal(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """Month-over-month growth ``(MES_01 - MES_02) / MES_02`` per segment x store.

    Groups with no sales in MES_02 have no defined growth and are left out.
    """
    return (
        admmat.group_by("NOMESEGMENTO", "UNE", "UNE_NOME")
        .agg(
            nw.col("MES_01").sum().alias("MES_01"),
            nw.col("MES_02").sum().alias("MES_02"),
        )
        .filter(nw.col("MES_02") > 0)
        .with_columns(
            ((nw.col("MES_01") - nw.col("MES_02")) / nw.col("MES_02")).alias("CRESCIMENTO")
        )
        .sort(["NOMESEGMENTO", "UNE"])
    )


def concentracao_abc(admmat: nw.LazyFrame) -> nw.LazyFrame:
    """Per store and ABC class (last 30 days): products, sales and share of the store's
    sales — how concentrated each store's sales are in its 'A' products."""
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


MARTS = {
    "ruptura_critica": ruptura_critica,
    "vendas_segmento_une_fabricante": vendas_segmento_une_fabricante,
    "crescimento_mensal": crescimento_mensal,
    "concentracao_abc": concentracao_abc,
}
