"""Deterministic generator of the raw retail ERP exports (one Parquet file per table).

Every table of :data:`bi_platform.retail.schema.TABLES` (plus, in the ``large`` profile,
:data:`~bi_platform.retail.schema.LARGE_FACT_TABLE`) is generated with exactly its
``raw_schema``. The data is synthetic but shaped like the real export: ~38 stores (UNE), a
product universe built from each segment's vocabulary, TECIDOS ~12.6% of ``admmat``, 12
months of seasonal sales with many zeros, weekly quantities consistent with their averages,
stock levels that make the critical-rupture filter select a few percent of rows, and the
stock/price columns of ``admmat`` exported as strings written the Brazilian way
(``"1.534,00"``, ``"1534"``, ``"12,5"``, ``"R$ 12,90"``) with a small share of junk.

Everything derives from ``numpy.random.default_rng`` seeded by ``(seed, table)``, and all
dates are relative to :data:`REFERENCE_DATE` (never today's date): the same profile and
seed always give identical files.
"""

from __future__ import annotations

from bi_platform.retail.sample.profiles import (
    CD_UNE,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    JUNK_SHARE,
    JUNK_VALUES,
    MANIFEST_NAME,
    PROFILES,
    RAW_NULL_SHARE,
    REFERENCE_DATE,
    RetailProfile,
)
from bi_platform.retail.sample.vocabulary import MAX_STORES
from bi_platform.retail.sample.writer import (
    generate_admmat,
    generate_table,
    schema_hash,
    write_large_fact,
    write_retail_exports,
)

__all__ = [
    "CD_UNE",
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "JUNK_SHARE",
    "JUNK_VALUES",
    "MANIFEST_NAME",
    "MAX_STORES",
    "PROFILES",
    "RAW_NULL_SHARE",
    "REFERENCE_DATE",
    "RetailProfile",
    "generate_admmat",
    "generate_table",
    "schema_hash",
    "write_large_fact",
    "write_retail_exports",
]
