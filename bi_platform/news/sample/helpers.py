"""Helpers of the news sample generator: seeded RNGs, picking, timestamps, and the
reference data (agencies, themes) as arrays."""

from __future__ import annotations

import functools
import re
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl
import pyarrow as pa

from bi_platform.news.records import TIMEZONE
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.sample.profiles import (
    _BANK_PER_GROUP,
    _EPOCH_ORDINAL,
    _US_PER_DAY,
    _US_PER_SECOND,
)
from bi_platform.news.sample.vocabulary import (
    _AGENCY_BOOST,
    _ARTICLES,
    _FRAGMENTS,
    _GENERIC_TOPICS,
    _PLACEHOLDER,
    _TEMPLATES,
    _THEME_HINTS,
    _TYPE_W,
)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    """A generator derived from the seed and a stable name (crc32, not ``hash``)."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    entropy = [seed, *(zlib.crc32(p.encode()) if isinstance(p, str) else p for p in parts)]
    return np.random.default_rng(entropy)


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def _pick(values: Sequence[str | None], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(idx, dtype=np.int64))


def _choice(rng: np.random.Generator, p: Sequence[float], n: int) -> np.ndarray:
    probs = np.asarray(p, dtype=np.float64)
    return rng.choice(probs.size, size=n, p=probs / probs.sum())


def _masked(series: pl.Series, keep: np.ndarray) -> pl.Series:
    """``series`` with nulls where ``keep`` is False."""
    return series.scatter(np.flatnonzero(~keep), None) if not keep.all() else series


@functools.cache
def _accent_map() -> dict[str, str]:
    """Latin-1 and Latin Extended-A characters whose normalised form (NFKD, combining marks
    dropped, lower case) is not just their lower case: "Ç" -> "c", "ã" -> "a", ..."""
    chars = (chr(c) for c in range(0xA0, 0x180))
    return {ch: _plain(ch) for ch in chars if _plain(ch) != ch.lower()}


def normalised_text(col: str) -> pl.Expr:
    """:func:`bi_platform.news.records.normalise_text` of the generator's text, vectorised.

    Exact for text made of ASCII and Latin-1/Latin Extended-A characters, single spaces
    and ``"\\n\\n"`` paragraph breaks, with no leading or trailing whitespace: what this
    module writes (the tests compare every record with ``records.content_hash``).
    """
    return (
        pl.col(col)
        .fill_null("")
        .str.replace_many(_accent_map())
        .str.to_lowercase()
        .str.replace_all("\n\n", " ", literal=True)
    )


def _join_groups(values: pl.Series, counts: np.ndarray, sep: str) -> pl.Series:
    """Consecutive runs of ``values`` (lengths ``counts``) joined with ``sep``."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), values.to_arrow())
    return pl.Series(pl.from_arrow(lists)).list.join(sep)


def _published_strings(local_us: np.ndarray) -> pl.Series:
    """``str(datetime)`` of São Paulo timestamps (the form hashed into ``unique_id``)."""
    return _local_timestamps(local_us).dt.strftime("%Y-%m-%d %H:%M:%S%:z")


def _local_timestamps(local_us: np.ndarray) -> pl.Series:
    """Naive São Paulo wall-clock microseconds as tz-aware timestamps."""
    naive = pl.Series(np.asarray(local_us, dtype=np.int64)).cast(pl.Datetime("us"))
    return naive.dt.replace_time_zone(TIMEZONE, ambiguous="earliest")


def _day_of_month(epoch_days: np.ndarray) -> np.ndarray:
    d = np.asarray(epoch_days, dtype="datetime64[D]")
    return (d - d.astype("datetime64[M]")).astype(np.int64) + 1


def _local_us(day: date, seconds: int = 0) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY + seconds * _US_PER_SECOND


# --------------------------------------------------------------------------------------
# Reference data as arrays
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Reference:
    agency_key: list[str]
    agency_name: list[str]  # with its article ("O Ministério da Saúde")
    agency_plain_name: list[str]
    agency_url: list[str]
    agency_p: np.ndarray
    agency_hint: np.ndarray  # level-1 index, -1 without hint
    l1_code: list[str]
    l1_label: list[str]
    l2_code: list[str]
    l2_label: list[str]
    l2_start: np.ndarray  # per level-1 theme: first level-2 index and count
    l2_count: np.ndarray
    l3_code: list[str]
    l3_label: list[str]
    l3_start: np.ndarray  # per level-2 theme
    l3_count: np.ndarray

    def topics(self, l1: int) -> list[str]:
        """Labels of a level-1 theme's subtree (for the sentence bank)."""
        labels = [self.l1_label[l1]]
        for j in range(self.l2_start[l1], self.l2_start[l1] + self.l2_count[l1]):
            labels.append(self.l2_label[j])
            start, count = self.l3_start[j], self.l3_count[j]
            labels.extend(self.l3_label[start : start + count])
        return labels


def _article(name: str) -> str:
    return _ARTICLES.get(re.split(r"[ -]", name, maxsplit=1)[0], "O")


@functools.cache
def _reference() -> _Reference:
    agencies = load_agencies()
    themes = load_themes()
    l1 = [t for t in themes.values() if t.level == 1]
    l2 = sorted((t for t in themes.values() if t.level == 2), key=lambda t: t.code)
    l3 = sorted((t for t in themes.values() if t.level == 3), key=lambda t: t.code)
    l1 = sorted(l1, key=lambda t: t.code)
    l1_index = {t.code: i for i, t in enumerate(l1)}
    l2_index = {t.code: i for i, t in enumerate(l2)}
    l2_parent = np.array([l1_index[str(t.parent_code)] for t in l2], dtype=np.int64)
    l3_parent = np.array([l2_index[str(t.parent_code)] for t in l3], dtype=np.int64)
    by_label = {_plain(t.label): i for i, t in enumerate(l1)}
    keys = list(agencies)
    hints = []
    for key in keys:
        plain = _plain(agencies[key].name)
        hint = next((lab for word, lab in _THEME_HINTS if word in plain), None)
        hints.append(by_label.get(_plain(hint), -1) if hint else -1)
    noise = _rng(0, "agency-weights").lognormal(0.0, 0.45, len(keys))
    weights = np.array(
        [_TYPE_W.get(agencies[k].type, 1.0) * _AGENCY_BOOST.get(k, 1.0) for k in keys]
    )
    weights = weights * noise
    return _Reference(
        agency_key=keys,
        agency_name=[f"{_article(agencies[k].name)} {agencies[k].name}" for k in keys],
        agency_plain_name=[agencies[k].name for k in keys],
        agency_url=[agencies[k].url.rstrip("/") for k in keys],
        agency_p=weights / weights.sum(),
        agency_hint=np.array(hints, dtype=np.int64),
        l1_code=[t.code for t in l1],
        l1_label=[t.label for t in l1],
        l2_code=[t.code for t in l2],
        l2_label=[t.label for t in l2],
        l2_start=np.searchsorted(l2_parent, np.arange(len(l1))),
        l2_count=np.bincount(l2_parent, minlength=len(l1)),
        l3_code=[t.code for t in l3],
        l3_label=[t.label for t in l3],
        l3_start=np.searchsorted(l3_parent, np.arange(len(l2))),
        l3_count=np.bincount(l3_parent, minlength=len(l2)),
    )


def _fill(template: str, rng: np.random.Generator, topics: Sequence[str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "topic":
            return topics[int(rng.integers(len(topics)))]
        if name == "n":
            return str(int(rng.integers(2, 30) if rng.random() < 0.6 else rng.integers(30, 900)))
        if name == "d":
            return f"{int(rng.integers(0, 10))}"
        if name == "dd":
            return f"{int(rng.integers(2, 29))}"
        if name == "pct":
            return f"{rng.uniform(0.5, 38.0):.1f}".replace(".", ",")
        values = _FRAGMENTS[name]
        return values[int(rng.integers(len(values)))]

    text = template
    while "{" in text:
        text = _PLACEHOLDER.sub(repl, text)
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


@functools.cache
def _sentence_bank(seed: int) -> pl.Series:
    """``_BANK_PER_GROUP`` sentences per group: group 0 generic, group g the level-1 theme
    g - 1 (sentences about labels of its subtree)."""
    ref = _reference()
    rng = _rng(seed, "sentence-bank")
    groups = [list(_GENERIC_TOPICS)] + [ref.topics(i) for i in range(len(ref.l1_code))]
    sentences = [
        _fill(_TEMPLATES[int(rng.integers(len(_TEMPLATES)))], rng, topics)
        for topics in groups
        for _ in range(_BANK_PER_GROUP)
    ]
    return pl.Series("sentence", sentences, dtype=pl.String)
