"""Names, streets, e-mail domains and cities of the cadastral sample (data in
``vocabulary.json``), with their weights as arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from bi_platform.cadastral.reference import (
    ASSET_TYPES,
    CIVIL_STATUS,
    OCCUPATIONS,
    SEGMENTS,
    STATES,
)
from bi_platform.lib.package_data import frozen, read_json

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------
_DATA = read_json(__package__, "vocabulary.json")


_MALE = pa.array(_DATA["male"])
_FEMALE = pa.array(_DATA["female"])
_SURNAMES = pa.array(_DATA["surnames"])
_FANTASY = pa.array(_DATA["fantasy"])
_ACTIVITIES = pa.array(_DATA["activities"])
_COMPANY_SUFFIXES = pa.array(_DATA["company_suffixes"])
_COMPANY_SUFFIX_P = (0.60, 0.20, 0.12, 0.08)
_STREET_TYPES = pa.array(_DATA["street_types"])
_STREET_TYPE_P = (0.70, 0.16, 0.05, 0.05, 0.04)
_STREETS = pa.array(_DATA["streets"])
_EMAIL_DOMAINS = pa.array(_DATA["email_domains"])
_EMAIL_DOMAIN_P = (0.45, 0.20, 0.08, 0.10, 0.05, 0.04, 0.03, 0.05)
_COMPANY_MAILBOXES = pa.array(_DATA["company_mailboxes"])

#: Cities per state code (``28`` = abroad).
_CITIES: dict[str, tuple[str, ...]] = frozen(_DATA["cities"])
_STATE_CODES = tuple(STATES)
#: Rough population shares of the states of birth (``28`` = abroad).
_STATE_WEIGHTS = np.array(
    [
        *(0.4, 1.6, 0.4, 2.0, 7.0, 4.3, 1.5, 2.0, 3.3, 3.3, 1.7, 1.3, 10.0, 4.0),
        *(2.0, 5.5, 4.5, 1.6, 8.0, 1.7, 5.5, 0.8, 0.3, 3.5, 22.0, 1.1, 0.8, 1.0),
    ]
)
_STATE_P = _STATE_WEIGHTS / _STATE_WEIGHTS.sum()
_ADDRESS_STATE_P = np.append(_STATE_WEIGHTS[:-1], 0.0) / _STATE_WEIGHTS[:-1].sum()
_CITY_NAMES = pa.array([c for code in _STATE_CODES for c in _CITIES[code]])
_CITY_UF = pa.array([STATES[code][0] for code in _STATE_CODES for _ in _CITIES[code]])
_CITY_COUNT = np.array([len(_CITIES[code]) for code in _STATE_CODES])
_CITY_OFFSET = np.concatenate([[0], np.cumsum(_CITY_COUNT)[:-1]])

_CIVIL_CODES = pa.array(list(CIVIL_STATUS))
_CIVIL_W = np.array([40, 20, 7, 4, 2, 3, 0.5, 12, 5, 2, 0.5, 2, 1, 0.5, 0.5])
_CIVIL_P = _CIVIL_W / _CIVIL_W.sum()
_OCCUPATION_CODES = pa.array(list(OCCUPATIONS))
_OCC_F_W = np.array([30, 10, 4, 6, 10, 12, 3, 8, 5, 2, 3, 2, 1, 1, 1, 1, 1])
_OCC_F_P = _OCC_F_W / _OCC_F_W.sum()
_OCC_J_W = np.array([0, 0, 50, 5, 0, 0, 0, 0, 0, 0, 10, 0, 0, 10, 15, 0, 10])
_OCC_J_P = _OCC_J_W / _OCC_J_W.sum()
_SEGMENTS = pa.array(list(SEGMENTS))
_SEGMENT_F_P = (0.86, 0.10, 0.01, 0.03)
_SEGMENT_J_P = (0.40, 0.0, 0.25, 0.35)
_ASSET_TYPES = pa.array(list(ASSET_TYPES))
_ASSET_W = np.array([20, 5, 6, 3, 25, 8, 1, 0.2, 18, 5, 6, 2.8])
_ASSET_P = _ASSET_W / _ASSET_W.sum()
#: Median value (R$) per asset type; values are log-normal around it.
_ASSET_MEDIAN = np.array(
    [350e3, 600e3, 150e3, 800e3, 60e3, 12e3, 120e3, 2.5e6, 40e3, 200e3, 80e3, 10e3]
)
_CONTACT_TYPES = pa.array(["E", "R", "C"])
_CONTACT_F_CDF = np.cumsum([0.42, 0.40, 0.18])
_CONTACT_J_CDF = np.cumsum([0.35, 0.10, 0.55])
#: Last users: ``U`` + 6 digits drawn from this range (conflicts use 900000+).
_USER_RANGE = (100_000, 100_000 + 2_500)
