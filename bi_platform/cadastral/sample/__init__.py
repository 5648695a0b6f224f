"""Deterministic generator of the raw exports of the person registry ("dados cadastrais").

Writes the four source tables ``pedt001`` (persons), ``pedt002`` (naturalidade and
parents), ``pedt003`` (contacts) and ``pedt205`` (assets) as Hive-style partitions
``<raw_root>/<table>/dat_ref_carga=YYYY-MM-DD/part-00000.parquet``. Every load date is a
full snapshot; the partition column is not stored inside the files.

The data is synthetic but shaped like the real export: Brazilian names (the child carries
the mother's and the father's surname), CPFs/CNPJs with valid check digits, cities of the
state of birth, raw case and stray spaces in free-text columns, and a controlled share of
dirty data (malformed document numbers, invalid codes, null dates, exact and conflicting
duplicates). :func:`generate_change_set` derives the next snapshot from an existing one
(updates, inserts, deletes) keeping the same dirty-data character.

Everything is vectorised with numpy/pyarrow and derives from ``numpy.random.default_rng``
seeded by the seed and the load date(s): the same call always gives identical files.
Partitions are written into a hidden temporary directory and renamed into place.
"""

from __future__ import annotations

from bi_platform.cadastral.sample.layout import (
    CadastralChangeSummary,
    CadastralSourceSummary,
    load_dates,
    partition_dir,
    read_snapshot,
)
from bi_platform.cadastral.sample.profiles import (
    ASSETS_P,
    CADASTRAL_PROFILES,
    CONFLICTING_DUPLICATE_RATE,
    CONTACTS_P,
    EXACT_DUPLICATE_RATE,
    FATHER_NULL_RATE,
    INVALID_CODE_RATES,
    INVALID_CODE_VALUES,
    LEGAL_PERSON_SHARE,
    MALFORMED_PENUMPER_RATE,
    NATURALIDADE_SHARE,
    NULL_BIRTH_DATE_RATE,
    PART_FILE,
    PENUMPER_PATTERN,
    ROW_GROUP_SIZE,
    SCHEMAS,
)
from bi_platform.cadastral.sample.writer import generate_cadastral_sources, generate_change_set

__all__ = [
    "ASSETS_P",
    "CADASTRAL_PROFILES",
    "CONFLICTING_DUPLICATE_RATE",
    "CONTACTS_P",
    "EXACT_DUPLICATE_RATE",
    "FATHER_NULL_RATE",
    "INVALID_CODE_RATES",
    "INVALID_CODE_VALUES",
    "LEGAL_PERSON_SHARE",
    "MALFORMED_PENUMPER_RATE",
    "NATURALIDADE_SHARE",
    "NULL_BIRTH_DATE_RATE",
    "PART_FILE",
    "PENUMPER_PATTERN",
    "ROW_GROUP_SIZE",
    "SCHEMAS",
    "CadastralChangeSummary",
    "CadastralSourceSummary",
    "generate_cadastral_sources",
    "generate_change_set",
    "load_dates",
    "partition_dir",
    "read_snapshot",
]
