"""Profiles, file layout constants, schemas and dirty-data rates of the cadastral sample."""

from __future__ import annotations

import re
from datetime import date

import pyarrow as pa

from bi_platform.cadastral.reference import (
    CIVIL_STATUS,
    LOAD_DATE_COLUMN,
    SEXES,
)

#: Number of persons of each sample profile.
CADASTRAL_PROFILES: dict[str, int] = {"small": 5_000, "medium": 100_000, "default": 1_000_000}

PART_FILE = "part-00000.parquet"
#: Low-cardinality columns written dictionary-encoded (the others are plain).
_DICTIONARY_COLUMNS: dict[str, tuple[str, ...]] = {
    "pedt001": (
        "petipper",
        "penomper",
        "pepriape",
        "pesegape",
        "peestciv",
        "pesexper",
        "petipocu",
        "penacper",
        "pesegmen",
        "peusualt",
    ),
    "pedt002": ("penomnat",),
    "pedt003": ("petipcon", "pecidade", "peuf"),
    "pedt205": ("petipbem",),
}
ROW_GROUP_SIZE = 128 * 1024
_EPOCH = date(1970, 1, 1)
_PARTITION_RE = re.compile(rf"^{LOAD_DATE_COLUMN}=(\d{{4}}-\d{{2}}-\d{{2}})$")
#: A well-formed document number: CPF (11 digits) or CNPJ (14 digits).
PENUMPER_PATTERN = r"^(\d{11}|\d{14})$"

# --------------------------------------------------------------------------------------
# Dirty-data rates (shares of rows; code rates of the rows the code applies to)
# --------------------------------------------------------------------------------------
LEGAL_PERSON_SHARE = 0.08
MALFORMED_PENUMPER_RATE = 0.0005
NULL_BIRTH_DATE_RATE = 0.005
EXACT_DUPLICATE_RATE = 0.003
CONFLICTING_DUPLICATE_RATE = 0.0005
NATURALIDADE_SHARE = 0.97
#: Natural persons without a father's name (legal persons never have parents).
FATHER_NULL_RATE = 0.022
#: Share of invalid codes per pedt001 code column.
INVALID_CODE_RATES: dict[str, float] = {
    "peestciv": 0.005,
    "pesexper": 0.002,
    "petipocu": 0.005,
    "penacper": 0.005,
    "pesegmen": 0.003,
}
#: The invalid values injected per code column (``None`` = null).
INVALID_CODE_VALUES: dict[str, tuple[str | None, ...]] = {
    "peestciv": ("2", "9", "Z", "", None),
    "pesexper": ("X", "I", "0", "", None),
    "petipocu": ("00", "18", "99", "1", "", None),
    "penacper": ("00", "29", "99", "", None),
    "pesegmen": ("ATACADO", "PREMIUM", "VAREJO PJ", "", "  ", None),
}
#: Columns whose invalid values only count on natural persons (legal persons carry null).
_NATURAL_ONLY = {"peestciv": tuple(CIVIL_STATUS), "pesexper": tuple(SEXES)}
#: Probability of 0..6 contacts and 0..8 assets per person (means ~2.55 and ~1.5).
CONTACTS_P = (0.10, 0.17, 0.25, 0.21, 0.14, 0.09, 0.04)
ASSETS_P = (0.35, 0.25, 0.17, 0.10, 0.06, 0.035, 0.02, 0.01, 0.005)

SCHEMAS: dict[str, pa.Schema] = {
    "pedt001": pa.schema(
        [
            ("penumper", pa.string()),
            ("petipper", pa.string()),
            ("penomper", pa.string()),
            ("pepriape", pa.string()),
            ("pesegape", pa.string()),
            ("pefecnac", pa.date32()),
            ("peestciv", pa.string()),
            ("pesexper", pa.string()),
            ("petipocu", pa.string()),
            ("penacper", pa.string()),
            ("pesegmen", pa.string()),
            ("peusualt", pa.string()),
        ]
    ),
    "pedt002": pa.schema(
        [
            ("penumper", pa.string()),
            ("penomnat", pa.string()),
            ("penommae", pa.string()),
            ("penompai", pa.string()),
        ]
    ),
    "pedt003": pa.schema(
        [
            ("penumper", pa.string()),
            ("pesequen", pa.int32()),
            ("petipcon", pa.string()),
            ("peemail", pa.string()),
            ("pelograd", pa.string()),
            ("pecidade", pa.string()),
            ("peuf", pa.string()),
            ("pecep", pa.string()),
            ("pedatalt", pa.date32()),
        ]
    ),
    "pedt205": pa.schema(
        [
            ("penumper", pa.string()),
            ("pecodbem", pa.string()),
            ("petipbem", pa.string()),
            ("pevalbem", pa.decimal128(18, 2)),
            ("pedatalt", pa.date32()),
        ]
    ),
}
