"""Constants and size profiles of the retail sample exports."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from bi_platform.retail.schema import LARGE_FACT_TABLE, TABLES

#: The snapshot date of the generated exports; every date is relative to it.
REFERENCE_DATE = date(2026, 10, 31)
#: Bumped whenever the generated data changes, so that old exports are rewritten.
GENERATOR_VERSION = 2
DEFAULT_SEED = 38
MANIFEST_NAME = "manifest.json"
#: Unparsable values of the raw string columns, as found in the real export.
JUNK_VALUES: tuple[str, ...] = ("N/D", "-", "", "1.234.5", "12,5,0", "#REF!", " ", "abc")
#: Share of junk values and of nulls per raw string column of ``admmat``.
JUNK_SHARE = 0.004
RAW_NULL_SHARE = 0.001
#: UNE of the distribution centre (origin of most transfers; not in ``admmat``).
CD_UNE = 1

_REF_DAY = (REFERENCE_DATE - date(1970, 1, 1)).days
_US_PER_DAY = 86_400_000_000
_HISTORY_DAYS = 730


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetailProfile:
    """Sizes of one generated data set (rows per table, universes)."""

    name: str
    admmat_rows: int
    stores: int
    products: int
    manufacturers: int
    vendas_diarias_rows: int
    pedidos_compra_rows: int
    transferencias_rows: int
    inventarios_rows: int
    precos_rows: int
    promocoes_rows: int
    devolucoes_rows: int
    include_large_fact: bool = False
    vendas_itens_rows: int = 0

    @property
    def tables(self) -> tuple[str, ...]:
        """Names of the tables this profile writes."""
        names = tuple(TABLES)
        return (*names, LARGE_FACT_TABLE.name) if self.include_large_fact else names


_DEFAULT = RetailProfile(
    name="default",
    admmat_rows=1_113_822,
    stores=38,
    products=58_000,
    manufacturers=1_800,
    vendas_diarias_rows=3_000_000,
    pedidos_compra_rows=250_000,
    transferencias_rows=400_000,
    inventarios_rows=300_000,
    precos_rows=600_000,
    promocoes_rows=40_000,
    devolucoes_rows=80_000,
)

PROFILES: dict[str, RetailProfile] = {
    "small": RetailProfile(
        name="small",
        admmat_rows=5_000,
        stores=8,
        products=1_000,
        manufacturers=60,
        vendas_diarias_rows=20_000,
        pedidos_compra_rows=2_000,
        transferencias_rows=2_000,
        inventarios_rows=2_000,
        precos_rows=3_000,
        promocoes_rows=500,
        devolucoes_rows=500,
    ),
    "default": _DEFAULT,
    # vendas_itens takes ~11 bytes per row on disk (zstd): 64M rows give ~720 MB.
    "large": replace(_DEFAULT, name="large", include_large_fact=True, vendas_itens_rows=64_000_000),
}
