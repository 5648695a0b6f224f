"""Words the news sample writes with: title parts, places, themes' hints, body
templates and fragments (data in ``vocabulary.json``); weights stay in code."""

from __future__ import annotations

import re

import numpy as np

from bi_platform.lib.package_data import frozen, read_json

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------
_DATA = read_json(__package__, "vocabulary.json")

# (title form, lead form with article) of the thing announced.
_OBJECTS: tuple[tuple[str, str], ...] = frozen(_DATA["objects"])
# (headline verb, past tense for the lead)
_VERBS: tuple[tuple[str, str], ...] = frozen(_DATA["verbs"])
_CONNECTORS = tuple(_DATA["connectors"])
_SUBJECTS = tuple(_DATA["subjects"])
_SUBJECT_P = (0.62, 0.26, 0.12)  # agency name, then _SUBJECTS
_STATES = tuple(_DATA["states"])
_STATE_TAGS = tuple(s.split(" ", 1)[1] for s in _STATES)
_STATE_P = np.array(
    [1, 2, 1, 2, 5, 4, 4, 2, 3, 3, 2, 2, 9, 4, 2, 5, 4, 2, 8, 2, 5, 1, 1, 3, 12, 1, 1], dtype=float
)
_REGIONS = tuple(_DATA["regions"])
# (prefix, suffix, low, high): a complement with a number drawn in [low, high].
_NUMBERED: tuple[tuple[str, str, int, int], ...] = frozen(_DATA["numbered"])
_WHEN = tuple(_DATA["when"])
_MONTHS_PT = tuple(_DATA["months_pt"])
_CATEGORIES = tuple(_DATA["categories"])
_CATEGORY_P = (0.42, 0.16, 0.06, 0.04)  # the rest (0.32): the record's level-1 theme label
_GENERIC_TOPICS = tuple(_DATA["generic_topics"])
_GENERIC_TAGS = tuple(_DATA["generic_tags"])
_TAG_COUNT_P = (0.06, 0.12, 0.2, 0.26, 0.18, 0.11, 0.07)  # 0..6 tags
_IMAGE_FILES = tuple(_DATA["image_files"])
_VIDEO_ID_CHARS = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8
)
_WEEKDAY_W = np.array([1.0, 1.05, 1.05, 1.0, 0.95, 0.33, 0.22])  # Monday..Sunday
_HOUR_W = np.array(
    [0.35, 0.15, 0.08, 0.05, 0.05, 0.12, 0.5, 1.3, 2.6, 4.2, 5.4, 5.6,
     4.8, 5.0, 5.8, 6.0, 5.6, 5.0, 3.9, 2.8, 2.0, 1.5, 1.0, 0.7]
)  # fmt: skip
_TYPE_W = {
    "ministerio": 6.0,
    "orgao_presidencia": 4.0,
    "agencia_reguladora": 2.6,
    "autarquia": 2.0,
    "orgao": 1.6,
    "secretaria": 1.6,
    "fundacao": 1.5,
    "forca_armada": 1.8,
    "unidade_pesquisa": 0.6,
    "empresa_publica": 0.9,
    "sociedade_economia_mista": 0.9,
    "universidade": 0.45,
    "instituto_federal": 0.3,
}
_AGENCY_BOOST = {"planalto": 3.0, "saude": 1.8, "mec": 1.6, "fazenda": 1.4, "ibge": 2.0}

# Preferred level-1 theme of an agency: first keyword (accent-free, lower case) found in
# its name. Agencies without a hint draw themes at random.
_THEME_HINTS: tuple[tuple[str, str], ...] = frozen(_DATA["theme_hints"])
_HINT_SHARE = 0.7

# Body sentences: {name} placeholders are filled from _FRAGMENTS (recursively), {n}, {d} and
# {dd} with numbers, {pct} with a percentage and {topic} with a label of the record's theme
# subtree.
_TEMPLATES: tuple[str, ...] = tuple(_DATA["templates"])
# "place" is null in the JSON: the states and regions above
_FRAGMENTS: dict[str, tuple[str, ...]] = {
    key: (*_STATES, *_REGIONS) if words is None else frozen(words)
    for key, words in _DATA["fragments"].items()
}
_SUBTITLES: tuple[tuple[str, str], ...] = frozen(_DATA["subtitles"])
_UPDATE_PREFIX = "Atualização em {day}: "
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_ARTICLES = frozen(_DATA["articles"])
