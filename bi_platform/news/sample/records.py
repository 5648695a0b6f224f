"""Record generation: titles, bodies, themes, dates of news records."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from bi_platform.news.records import HF_SCHEMA
from bi_platform.news.sample.helpers import (
    _choice,
    _day_of_month,
    _join_groups,
    _local_timestamps,
    _local_us,
    _masked,
    _pick,
    _published_strings,
    _Reference,
    _reference,
    _rng,
    _sentence_bank,
    normalised_text,
)
from bi_platform.news.sample.profiles import (
    _BANK_PER_GROUP,
    _CHUNK_ROWS,
    _EPOCH_ORDINAL,
    _SLUG_CHARS,
    _US_PER_DAY,
    _US_PER_MINUTE,
    _US_PER_SECOND,
    DEFAULT_SEED,
    THEME_LEVEL_P,
    THEMED_SHARE,
    history_window,
)
from bi_platform.news.sample.vocabulary import (
    _CATEGORIES,
    _CATEGORY_P,
    _CONNECTORS,
    _GENERIC_TAGS,
    _GENERIC_TOPICS,
    _HINT_SHARE,
    _HOUR_W,
    _IMAGE_FILES,
    _NUMBERED,
    _OBJECTS,
    _REGIONS,
    _STATE_P,
    _STATE_TAGS,
    _STATES,
    _SUBJECT_P,
    _SUBJECTS,
    _SUBTITLES,
    _TAG_COUNT_P,
    _VERBS,
    _VIDEO_ID_CHARS,
    _WEEKDAY_W,
    _WHEN,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Record generation
# --------------------------------------------------------------------------------------
def _draw_local_us(rng: np.random.Generator, n: int, first: date, last: date) -> np.ndarray:
    """Naive São Paulo wall-clock microseconds (whole minutes) in [first, last], weighted by
    weekday, hour of day, a slow growth and the year-end lull."""
    ordinals = np.arange(first.toordinal(), last.toordinal() + 1)
    weekday = (ordinals - 1) % 7  # date.fromordinal(1) is a Monday
    trend = np.linspace(0.85, 1.15, ordinals.size) if ordinals.size > 1 else np.ones(1)
    lull = np.array(
        [0.45 if (d.month, d.day) >= (12, 24) or (d.month, d.day) == (1, 1) else 1.0
         for d in map(date.fromordinal, ordinals.tolist())]
    )  # fmt: skip
    w = _WEEKDAY_W[weekday] * trend * lull
    day = ordinals[rng.choice(ordinals.size, size=n, p=w / w.sum())] - _EPOCH_ORDINAL
    minute = rng.choice(24, size=n, p=_HOUR_W / _HOUR_W.sum()) * 60 + rng.integers(0, 60, n)
    return day.astype(np.int64) * _US_PER_DAY + minute.astype(np.int64) * _US_PER_MINUTE


def _unique_ids(agency: pl.Series, local_us: np.ndarray, title: pl.Series) -> list[str]:
    published = _published_strings(local_us)
    return [
        hashlib.md5(f"{a}_{p}_{t}".encode()).hexdigest()
        for a, p, t in zip(agency.to_list(), published.to_list(), title.to_list(), strict=True)
    ]


def _resolve_collisions(
    agency: pl.Series, local_us: np.ndarray, title: pl.Series, taken: set[str]
) -> tuple[np.ndarray, list[str]]:
    """Shift records whose ``unique_id`` repeats (same agency, minute and title) or is in
    ``taken`` by one minute until all ids are distinct."""
    local_us = local_us.copy()
    for _ in range(1000):
        ids = _unique_ids(agency, local_us, title)
        seen = set(taken)
        clash = []
        for i, uid in enumerate(ids):
            if uid in seen:
                clash.append(i)
            seen.add(uid)
        if not clash:
            return local_us, ids
        day_start = local_us[clash] - local_us[clash] % _US_PER_DAY
        local_us[clash] = day_start + (local_us[clash] - day_start + _US_PER_MINUTE) % _US_PER_DAY
    raise RuntimeError("could not make unique_id values distinct")


def _complements(rng: np.random.Generator, n: int) -> pl.Series:
    """ " em 120 municípios", " na Bahia", ... or "" (leading space included)."""
    kind = _choice(rng, (0.45, 0.2, 0.15, 0.2), n)  # numbered, state, region, none
    t = rng.integers(0, len(_NUMBERED), n)
    lo = np.array([c[2] for c in _NUMBERED])[t]
    hi = np.array([c[3] for c in _NUMBERED])[t]
    num = lo + (rng.random(n) * (hi - lo + 1)).astype(np.int64)
    frame = pl.DataFrame(
        {
            "kind": kind,
            "pre": _pick([c[0] for c in _NUMBERED], t),
            "suf": _pick([c[1] for c in _NUMBERED], t),
            "num": num,
            "state": _pick(_STATES, _choice(rng, _STATE_P, n)),
            "region": _pick(_REGIONS, rng.integers(0, len(_REGIONS), n)),
        }
    )
    return frame.select(
        pl.when(pl.col("kind") == 0)
        .then(pl.concat_str([pl.lit(" "), "pre", pl.col("num").cast(pl.String), "suf"]))
        .when(pl.col("kind") == 1)
        .then(pl.lit(" ") + pl.col("state"))
        .when(pl.col("kind") == 2)
        .then(pl.lit(" ") + pl.col("region"))
        .otherwise(pl.lit(""))
    ).to_series()


@dataclass(frozen=True)
class _Draws:
    """Per-record choices made before any text is built (sorted by publication time)."""

    local_us: np.ndarray
    agency: np.ndarray
    themed: np.ndarray
    level: np.ndarray  # 0 for unthemed records
    l1: np.ndarray
    l2: np.ndarray  # -1 when above the record's level
    l3: np.ndarray

    def take(self, order: np.ndarray) -> _Draws:
        """The draws in another record order."""
        return _Draws(*(getattr(self, f.name)[order] for f in fields(self)))


def _draw_themes(
    rng: np.random.Generator, ref: _Reference, agency: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = agency.size
    themed = rng.random(n) < THEMED_SHARE
    hint = ref.agency_hint[agency]
    use_hint = (hint >= 0) & (rng.random(n) < _HINT_SHARE)
    l1 = np.where(use_hint, hint, rng.integers(0, len(ref.l1_code), n))
    level = np.where(themed, 1 + _choice(rng, THEME_LEVEL_P, n), 0)
    l2 = ref.l2_start[l1] + (rng.random(n) * ref.l2_count[l1]).astype(np.int64)
    has_l2 = (level >= 2) & (ref.l2_count[l1] > 0)
    l2 = np.where(has_l2, l2, -1)
    safe_l2 = np.maximum(l2, 0)
    l3 = ref.l3_start[safe_l2] + (rng.random(n) * ref.l3_count[safe_l2]).astype(np.int64)
    has_l3 = has_l2 & (level >= 3) & (ref.l3_count[safe_l2] > 0)
    l3 = np.where(has_l3, l3, -1)
    level = np.where(themed, 1 + has_l2.astype(np.int64) + has_l3.astype(np.int64), 0)
    return themed, level, l1, l2, l3


def _titles(
    rng: np.random.Generator, ref: _Reference, d: _Draws, topic: pl.Series
) -> tuple[pl.Series, np.ndarray, np.ndarray, pl.Series]:
    """Headlines, plus the verb and object indices and the complement the lead reuses."""
    n = d.agency.size
    verb = rng.integers(0, len(_VERBS), n)
    obj = rng.integers(0, len(_OBJECTS), n)
    subject = _choice(rng, _SUBJECT_P, n)
    subject_idx = np.where(subject == 0, d.agency, len(ref.agency_key) + subject - 1)
    frame = pl.DataFrame(
        {
            "subject": _pick([*ref.agency_plain_name, *_SUBJECTS], subject_idx),
            "verb": _pick([v[0] for v in _VERBS], verb),
            "obj": _pick([o[0] for o in _OBJECTS], obj),
            "conn": _pick(_CONNECTORS, rng.integers(0, len(_CONNECTORS), n)),
            "topic": topic,
            "comp": _complements(rng, n),
        }
    )
    title = frame.select(
        pl.concat_str(["subject", "verb", "obj", "conn", "topic"], separator=" ") + pl.col("comp")
    ).to_series()
    return title, verb, obj, frame["comp"]


def _draw(n: int, seed: int, tag: str, first: date, last: date) -> _Draws:
    ref = _reference()
    rng = _rng(seed, tag, "draws")
    local_us = np.sort(_draw_local_us(rng, n, first, last))
    agency = _choice(rng, ref.agency_p, n)
    themed, level, l1, l2, l3 = _draw_themes(rng, ref, agency)
    return _Draws(local_us, agency, themed, level, l1, l2, l3)


def _theme_columns(ref: _Reference, d: _Draws) -> dict[str, pl.Series]:
    l1 = _masked(_pick(ref.l1_code, d.l1), d.themed), _masked(_pick(ref.l1_label, d.l1), d.themed)
    has2, has3 = d.l2 >= 0, d.l3 >= 0
    l2 = (
        _masked(_pick(ref.l2_code, np.maximum(d.l2, 0)), has2),
        _masked(_pick(ref.l2_label, np.maximum(d.l2, 0)), has2),
    )
    l3 = (
        _masked(_pick(ref.l3_code, np.maximum(d.l3, 0)), has3),
        _masked(_pick(ref.l3_label, np.maximum(d.l3, 0)), has3),
    )
    specific = pl.DataFrame({"c1": l1[0], "c2": l2[0], "c3": l3[0]}).select(
        code=pl.coalesce("c3", "c2", "c1")
    )
    specific_label = pl.DataFrame({"c1": l1[1], "c2": l2[1], "c3": l3[1]}).select(
        label=pl.coalesce("c3", "c2", "c1")
    )
    return {
        "theme_1_level_1_code": l1[0],
        "theme_1_level_1_label": l1[1],
        "theme_1_level_2_code": l2[0],
        "theme_1_level_2_label": l2[1],
        "theme_1_level_3_code": l3[0],
        "theme_1_level_3_label": l3[1],
        "most_specific_theme_code": specific.to_series(),
        "most_specific_theme_label": specific_label.to_series(),
    }


def _slugs(title: pl.Series) -> pl.Series:
    return (
        pl.DataFrame({"t": title})
        .select(normalised_text("t").str.replace_all(r"[^a-z0-9]+", "-").str.strip_chars("-"))
        .select(  # at most _SLUG_CHARS, cut at a word boundary
            pl.when(pl.col("t").str.len_chars() > _SLUG_CHARS)
            .then(pl.col("t").str.slice(0, _SLUG_CHARS + 1).str.replace(r"-[^-]*$", ""))
            .otherwise("t")
        )
        .to_series()
    )


def _text_chunk(
    rng: np.random.Generator,
    ref: _Reference,
    bank: pl.Series,
    frame: pl.DataFrame,
) -> pl.DataFrame:
    """subtitle, editorial_lead, content and summary of one chunk of records.

    ``frame`` has: agency (index), l1, l1_label, l2_label, themed, topic, verb, obj, comp
    (the headline's complement), weekday, day (of month).
    """
    n = frame.height
    themed = frame["themed"].to_numpy()
    group = np.where(themed, frame["l1"].to_numpy() + 1, 0)
    lead_frame = frame.select(
        name=_pick(ref.agency_name, frame["agency"].to_numpy()),
        verb=_pick([v[1] for v in _VERBS], frame["verb"].to_numpy()),
        when=_pick(_WHEN, frame["weekday"].to_numpy()),
        day=pl.col("day").cast(pl.String),
        obj=_pick([o[1] for o in _OBJECTS], frame["obj"].to_numpy()),
        topic=pl.col("topic"),
        comp=pl.col("comp"),
    )
    lead = lead_frame.select(
        pl.concat_str(
            [
                "name",
                pl.lit(" "),
                "verb",
                pl.lit(" "),
                "obj",
                pl.lit(" de "),
                "topic",
                "comp",
                pl.lit(" "),
                "when",
                pl.lit(" ("),
                "day",
                pl.lit(")."),
            ]
        )
    ).to_series()
    # Body: 13 + Poisson(4) sentences in paragraphs of 2 to 4 sentences.
    sentences = 13 + rng.poisson(4.0, n)
    per_para = rng.integers(2, 5, n)
    paragraphs = -(-sentences // per_para)
    para_rec = np.repeat(np.arange(n), paragraphs)
    para_pos = np.arange(para_rec.size) - np.repeat(np.cumsum(paragraphs) - paragraphs, paragraphs)
    para_size = np.minimum(per_para[para_rec], sentences[para_rec] - para_pos * per_para[para_rec])
    sent_rec = np.repeat(np.arange(n), sentences)
    generic = rng.random(sent_rec.size) < 0.15  # some generic sentences in every story
    sent_group = np.where(generic, 0, group[sent_rec])
    sent_idx = sent_group * _BANK_PER_GROUP + rng.integers(0, _BANK_PER_GROUP, sent_rec.size)
    paras = _join_groups(bank.gather(sent_idx), para_size, " ")
    body = _join_groups(paras, paragraphs, "\n\n")
    del paras
    first_sentence = bank.gather(group * _BANK_PER_GROUP + rng.integers(0, _BANK_PER_GROUP, n))
    sub_t = rng.integers(0, len(_SUBTITLES), n)
    texts = pl.DataFrame(
        {
            "lead": lead,
            "body": body,
            "extra": first_sentence,
            "sub_pre": _pick([s[0] for s in _SUBTITLES], sub_t),
            "sub_suf": _pick([s[1] for s in _SUBTITLES], sub_t),
            "topic": frame["topic"],
            "l1_label": frame["l1_label"],
            "l2_label": frame["l2_label"],
        }
    )
    out = texts.select(
        subtitle=pl.concat_str(["sub_pre", "topic", "sub_suf"]),
        editorial_lead=pl.coalesce("l2_label", "l1_label"),
        content=pl.concat_str(["lead", "body"], separator="\n\n"),
        summary=pl.concat_str(["lead", "extra"], separator=" "),
    )
    return out.with_columns(
        subtitle=pl.when(pl.Series(rng.random(n) < 0.72)).then("subtitle"),
        editorial_lead=pl.when(pl.Series(rng.random(n) < 0.45)).then("editorial_lead"),
        summary=pl.when(pl.Series(rng.random(n) < 0.9)).then("summary"),
    )


def _heads(rng: np.random.Generator, ref: _Reference, d: _Draws) -> pl.DataFrame:
    """Per record: agency key, topic (most specific theme label, or a generic topic),
    headline, and the verb and object indices and complement the lead reuses."""
    n = d.agency.size
    specific = (
        pl.DataFrame(
            {
                "c1": _pick(ref.l1_label, d.l1),
                "c2": _masked(_pick(ref.l2_label, np.maximum(d.l2, 0)), d.l2 >= 0),
                "c3": _masked(_pick(ref.l3_label, np.maximum(d.l3, 0)), d.l3 >= 0),
            }
        )
        .select(pl.coalesce("c3", "c2", "c1"))
        .to_series()
    )
    generic_topic = _pick(_GENERIC_TOPICS, rng.integers(0, len(_GENERIC_TOPICS), n))
    topic = _masked(specific, d.themed).fill_null(generic_topic)
    title, verb, obj, comp = _titles(rng, ref, d, topic)
    return pl.DataFrame(
        {
            "agency": _pick(ref.agency_key, d.agency),
            "topic": topic,
            "title": title,
            "verb": verb,
            "obj": obj,
            "comp": comp,
        }
    )


def _texts(
    seed: int, tag: str, ref: _Reference, d: _Draws, heads: pl.DataFrame, themes: pl.DataFrame
) -> tuple[dict[str, pa.ChunkedArray], list[str]]:
    """subtitle, editorial_lead, content and summary, chunk by chunk (bounded memory), and
    the content hashes computed on the way."""
    bank = _sentence_bank(seed)
    local_days = d.local_us // _US_PER_DAY
    chunks: dict[str, list[pa.Array]] = {
        k: [] for k in ("subtitle", "editorial_lead", "content", "summary")
    }
    hashes: list[str] = []
    for c, start in enumerate(range(0, d.agency.size, _CHUNK_ROWS)):
        sl = slice(start, start + _CHUNK_ROWS)
        days = local_days[sl]
        frame = pl.DataFrame(
            {
                "agency": d.agency[sl],
                "l1": d.l1[sl],
                "l1_label": themes["theme_1_level_1_label"][sl],
                "l2_label": themes["theme_1_level_2_label"][sl],
                "themed": d.themed[sl],
                "topic": heads["topic"][sl],
                "verb": heads["verb"][sl],
                "obj": heads["obj"][sl],
                "comp": heads["comp"][sl],
                "weekday": (days + 3) % 7,  # 1970-01-01 was a Thursday; 0 = Monday
                "day": _day_of_month(days),
            }
        )
        text = _text_chunk(_rng(seed, tag, "text", c), ref, bank, frame)
        norm = pl.DataFrame({"t": heads["title"][sl], "c": text["content"]}).select(
            normalised_text("t"), normalised_text("c")
        )
        hashes.extend(
            hashlib.sha256(f"{t}\n{c}".encode()).hexdigest()
            for t, c in zip(norm["t"].to_list(), norm["c"].to_list(), strict=True)
        )
        for k, values in chunks.items():
            values.append(text[k].to_arrow().cast(pa.string()))
    return {k: pa.chunked_array(v, pa.string()) for k, v in chunks.items()}, hashes


def _links(
    rng: np.random.Generator,
    ref: _Reference,
    d: _Draws,
    title: pl.Series,
    url_ids: Sequence[str],
) -> pl.DataFrame:
    """url (``{agency url}/{slug}-{id}``), image_url (82%) and video_url (5%)."""
    n = d.agency.size
    url = (
        pl.DataFrame(
            {
                "base": _pick(ref.agency_url, d.agency),
                "slug": _slugs(title),
                "id": pl.Series(list(url_ids), dtype=pl.String),
            }
        )
        .select(pl.concat_str([pl.col("base"), pl.lit("/"), "slug", pl.lit("-"), "id"]))
        .to_series()
    )
    image = (
        pl.DataFrame(
            {"url": url, "file": _pick(_IMAGE_FILES, rng.integers(0, len(_IMAGE_FILES), n))}
        )
        .select(pl.concat_str(["url", "file"], separator="/"))
        .to_series()
    )
    codes = _VIDEO_ID_CHARS[rng.integers(0, _VIDEO_ID_CHARS.size, (n, 11))]
    video = pl.Series(
        ["https://www.youtube.com/watch?v=" + row.tobytes().decode() for row in codes],
        dtype=pl.String,
    )
    return pl.DataFrame(
        {
            "url": url,
            "image_url": _masked(image, rng.random(n) < 0.82),
            "video_url": _masked(video, rng.random(n) < 0.05),
        }
    )


def _categories(rng: np.random.Generator, l1_label: pl.Series) -> pl.Series:
    """The site's category: a generic section, or the record's level-1 theme label."""
    n = l1_label.len()
    kind = _choice(rng, (*_CATEGORY_P, 1 - sum(_CATEGORY_P)), n)
    section = _pick([*_CATEGORIES, _CATEGORIES[0]], kind)
    return (
        pl.DataFrame({"section": section, "theme": l1_label, "use_theme": kind == len(_CATEGORIES)})
        .select(pl.when("use_theme").then(pl.coalesce("theme", "section")).otherwise("section"))
        .to_series()
    )


def _generate(
    n: int,
    *,
    seed: int,
    tag: str,
    first: date,
    last: date,
    url_ids: Sequence[str] | None = None,
    taken: set[str] | None = None,
) -> pa.Table:
    """``n`` records published between ``first`` and ``last`` (São Paulo days), ordered by
    (published_at, unique_id); ``unique_id`` avoids the ids in ``taken``."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    ref = _reference()
    d = _draw(n, seed, tag, first, last)
    rng = _rng(seed, tag, "titles")
    heads = _heads(rng, ref, d)
    local_us, ids = _resolve_collisions(heads["agency"], d.local_us, heads["title"], taken or set())
    order = np.lexsort((np.array(ids, dtype=str), local_us))  # as month_shards sorts
    d = replace(d, local_us=local_us).take(order)
    heads = heads[order]
    ids = [ids[i] for i in order]
    themes = pl.DataFrame(_theme_columns(ref, d))
    texts, hashes = _texts(seed, tag, ref, d, heads, themes)
    rng = _rng(seed, tag, "extras")
    links = _links(rng, ref, d, heads["title"], url_ids or [str(i) for i in range(n)])
    end_us = _local_us(last + timedelta(days=1)) - _US_PER_SECOND
    delay = rng.integers(10 * _US_PER_MINUTE, 3 * _US_PER_DAY, n)
    updated_us = np.minimum(d.local_us + delay, end_us) // _US_PER_SECOND * _US_PER_SECOND
    delay = rng.integers(5 * _US_PER_MINUTE, 6 * 60 * _US_PER_MINUTE, n)
    extracted_us = np.minimum(d.local_us + delay, end_us) // _US_PER_SECOND * _US_PER_SECOND
    columns: dict[str, Any] = {
        "unique_id": pa.array(ids, pa.string()),
        "agency": heads["agency"].to_arrow(),
        "published_at": _local_timestamps(d.local_us).to_arrow(),
        "updated_datetime": _masked(_local_timestamps(updated_us), rng.random(n) < 0.3).to_arrow(),
        "extracted_at": _local_timestamps(extracted_us).to_arrow(),
        "title": heads["title"].to_arrow(),
        **{k: links[k].to_arrow() for k in links.columns},
        "category": _categories(rng, themes["theme_1_level_1_label"]).to_arrow(),
        "tags": _tags(rng, themes).to_arrow(),
        **texts,
        **{k: themes[k].to_arrow() for k in themes.columns},
        "content_hash": pa.array(hashes, pa.string()),
    }
    return pa.table({name: columns[name] for name in HF_SCHEMA.names}).cast(HF_SCHEMA)


def _tags(rng: np.random.Generator, themes: pl.DataFrame) -> pl.Series:
    """0 to 6 distinct tags: theme labels, a state, generic tags."""
    n = themes.height
    generic = {
        f"t{i}": _pick(_GENERIC_TAGS, rng.integers(0, len(_GENERIC_TAGS), n)) for i in range(3, 7)
    }
    frame = pl.DataFrame(
        {
            "t0": themes["most_specific_theme_label"],
            "t1": themes["theme_1_level_1_label"],
            "t2": _masked(_pick(_STATE_TAGS, _choice(rng, _STATE_P, n)), rng.random(n) < 0.5),
            **generic,
            "k": _choice(rng, _TAG_COUNT_P, n),
        }
    )
    return frame.select(
        pl.concat_list([f"t{i}" for i in range(7)])
        .list.drop_nulls()
        .list.unique(maintain_order=True)
        .list.head(pl.col("k"))
    ).to_series()


def generate_news(n: int, *, seed: int = DEFAULT_SEED) -> pa.Table:
    """``n`` records over the 24 months ending at :data:`REFERENCE_DATE`, ordered by
    ``published_at``, with exactly :data:`~bi_platform.news.records.HF_SCHEMA`."""
    first, last = history_window()
    started = time.perf_counter()
    table = _generate(n, seed=seed, tag="initial", first=first, last=last)
    logger.info("generated %d news records in %.1fs", n, time.perf_counter() - started)
    return table
