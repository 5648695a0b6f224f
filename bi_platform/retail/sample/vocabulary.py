"""Stores, segment hierarchy and naming vocabulary of the retail sample (data in
``vocabulary.json``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bi_platform.lib.package_data import frozen, read_json
from bi_platform.retail.sample.profiles import CD_UNE
from bi_platform.retail.schema import SEGMENTS

# --------------------------------------------------------------------------------------
# Vocabulary: stores, segment hierarchy, product names, manufacturers
# --------------------------------------------------------------------------------------
_DATA = read_json(__package__, "vocabulary.json")

# (UNE, name, city, UF, region). The last two are closed stores (lojas only).
_STORES: tuple[tuple[int, str, str, str, str], ...] = frozen(_DATA["stores"])
_CLOSED_STORES = 2
MAX_STORES = len(_STORES) - _CLOSED_STORES
_CD = (CD_UNE, "CD SÃO CRISTÓVÃO", "RIO DE JANEIRO", "RJ", "CENTRO")

_COLORS = tuple(_DATA["colors"])


@dataclass(frozen=True)
class _Segment:
    """Vocabulary and behaviour of one segment."""

    share: float  # share of admmat's rows
    price: float  # median unit price (R$)
    packs: tuple[str, ...]  # EMBALAGEM values ("MT" sells in half metres)
    categories: dict[str, tuple[str, ...]]  # category -> groups (product nouns)
    kinds: tuple[str, ...]  # subgroup qualifiers
    variants: tuple[str, ...]
    sizes: tuple[str, ...]
    season: tuple[float, ...]  # sales multiplier per calendar month, Jan..Dec


_VOCAB: dict[str, _Segment] = {
    name: _Segment(**frozen(spec)) for name, spec in _DATA["segments"].items()
}
assert tuple(_VOCAB) == SEGMENTS, "the vocabulary must follow schema.SEGMENTS"

_SEG_SHARE = np.array([_VOCAB[s].share for s in SEGMENTS])
_SEG_SHARE = _SEG_SHARE / _SEG_SHARE.sum()
_SEASON = np.array([_VOCAB[s].season for s in SEGMENTS])  # (16, 12)
_BASE_SEASON = (_SEASON * _SEG_SHARE[:, None]).sum(axis=0)

_BRAND_HEADS = tuple(_DATA["brand_heads"])
_BRAND_TAILS = tuple(_DATA["brand_tails"])
_COMPANY_SUFFIXES = tuple(_DATA["company_suffixes"])
_MANUFACTURER_UF = tuple(_DATA["manufacturer_uf"])
_MANUFACTURER_UF_P = tuple(_DATA["manufacturer_uf_p"])
