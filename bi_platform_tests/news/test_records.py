"""The news record's identity and schema."""

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from bi_platform.news.records import (
    CONFLICT_IN_BATCH,
    DUPLICATE_URL,
    EARLIEST,
    HF_SCHEMA,
    LATEST,
    OLDER_THAN_BATCH,
    OLDER_THAN_STORED,
    OUT_OF_RANGE,
    RECORD_SCHEMA,
    REQUIRED_FIELDS,
    Version,
    content_hash,
    jsonb_problem,
    normalise_text,
    normalise_title,
    resolve_versions,
    timestamp_problem,
    unique_id,
)


def test_unique_id_is_the_original_scrapers_md5() -> None:
    published = datetime(2025, 3, 4, 10, 30, tzinfo=ZoneInfo("America/Sao_Paulo"))
    expected = hashlib.md5(f"mec_{published}_Nova política".encode()).hexdigest()
    assert unique_id("mec", published, "Nova política") == expected
    assert unique_id("mec", published, "Nova política!") != expected


def test_content_hash_ignores_case_accents_and_spacing() -> None:
    a = content_hash("Governo anuncia  Ação", "Texto da\nnotícia.")
    b = content_hash("governo anuncia acao", "texto da noticia.")
    assert a == b
    assert content_hash("Governo anuncia ação", "Outro texto.") != a
    assert normalise_text(None) == ""


def test_hf_schema_has_real_timestamps_and_list_tags() -> None:
    assert HF_SCHEMA.field("published_at").type == pa.timestamp("us", tz="America/Sao_Paulo")
    assert not HF_SCHEMA.field("published_at").nullable
    assert HF_SCHEMA.field("tags").type == pa.list_(pa.string())
    assert set(REQUIRED_FIELDS) <= set(HF_SCHEMA.names)
    assert RECORD_SCHEMA.names == [*HF_SCHEMA.names, "extra"]


# --------------------------------------------------------------------------------------
# identity helpers
# --------------------------------------------------------------------------------------
def _reference_normalise_text(text: str | None) -> str:
    """normalise_text as first written (character by character): the definition."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"\s+", " ", plain).strip().lower()


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.characters(),
            st.sampled_from(
                ["\u0301", "\u0327", "\u20dd", "\u00a0", "\u2028", "\x85", "\t", "\n", " ", "ﬁ"]
            ),
            st.sampled_from(["ç", "ã", "É", "İ", "ß", "Ω", "—", "€", "º", "½"]),
        ),
        max_size=40,
    )
)
def test_normalise_text_is_the_character_by_character_definition(text: str) -> None:
    assert normalise_text(text) == _reference_normalise_text(text)


def test_normalise_title_collapses_whitespace_only() -> None:
    assert normalise_title("  MEC  abre\tinscrições\u00a0 hoje \n") == "MEC abre inscrições hoje"
    assert normalise_title("Já normalizado") == "Já normalizado"
    assert normalise_title("Caixa ALTA") == "Caixa ALTA"  # case and accents stay


def test_unique_id_formats_published_at_in_sao_paulo_time() -> None:
    published = datetime(2025, 3, 4, 10, 30, tzinfo=ZoneInfo("America/Sao_Paulo"))
    in_utc = published.astimezone(UTC)
    assert unique_id("mec", in_utc, "T") == unique_id("mec", published, "T")
    assert (
        unique_id("mec", published, "T")
        == hashlib.md5(b"mec_2025-03-04 10:30:00-03:00_T").hexdigest()
    )


def test_the_supported_timestamp_range() -> None:
    assert timestamp_problem("published_at", EARLIEST) is None
    assert timestamp_problem("published_at", LATEST - timedelta(microseconds=1)) is None
    late = timestamp_problem("published_at", LATEST)
    assert late is not None and late.startswith(f"{OUT_OF_RANGE}: published_at 2100-01-01")
    year_one = datetime.fromisoformat("0001-01-01T00:00:00+03:00")  # before UTC year 1
    assert timestamp_problem("extracted_at", year_one) is not None


def test_jsonb_problem() -> None:
    assert jsonb_problem({"a": [1, 2.5, None, True, {"b": "ç"}]}) is None
    assert jsonb_problem({"a": "x\x00"}) == "holds a NUL character"
    assert jsonb_problem({"\ud800": 1}).startswith("is not valid Unicode")
    assert jsonb_problem([float("nan")]) == "holds a non-finite number (nan)"
    deep: list = []
    for _ in range(5000):  # deeper than the recursion limit: checked iteratively
        deep = [deep]
    assert jsonb_problem(deep) is None


# --------------------------------------------------------------------------------------
# resolve_versions
# --------------------------------------------------------------------------------------
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def v(uid: str, url: str | None = "u1", hours: float | None = 0, agency: str = "mec") -> Version:
    when = None if hours is None else T0 + timedelta(hours=hours)
    return Version(uid, agency, url, when, T0)


def resolve(
    batch: list[Version], stored: Sequence[Version] = (), same: frozenset | set = frozenset()
) -> Any:
    return resolve_versions(batch, identical=lambda i, j: (i, j) in same, stored=stored)


def test_in_the_batch_the_newest_version_of_a_story_wins() -> None:
    r = resolve(
        [v("a"), v("a", hours=1), v("a", hours=-1), v("b", "u2"), v("b", "u2")], (), {(3, 4)}
    )
    assert r.winners == [1, 3]
    assert r.merged == {0: 1, 4: 3}  # the older version, and the exact copy (earlier kept)
    assert r.superseded == 1
    assert r.rejected[2].startswith(f"{OLDER_THAN_BATCH}: extracted_at ")
    assert len(r.winners) + len(r.merged) + len(r.rejected) == 5


def test_in_the_batch_a_later_headline_on_the_same_url_is_a_correction() -> None:
    r = resolve([v("a"), v("b", hours=2), v("c", hours=2), v("d", hours=1)])
    assert r.winners == [1]
    assert r.merged == {0: 1}
    assert r.rejected[2] == f"{DUPLICATE_URL}: earlier in the batch as unique_id b"
    assert r.rejected[3].startswith(f"{OLDER_THAN_BATCH}: ")
    # without a url a story is found by its id only
    assert resolve([v("a", None), v("b", None)]).winners == [0, 1]


def test_against_the_store() -> None:
    stored = [v("s1", "u1"), v("s2", "u2", hours=None), v("s3", "u3")]
    batch = [
        v("s1", "u1", hours=1),  # 0 an update of s1
        v("n2", "u2", hours=0),  # 1 a correction of s2 (a time beats none)
        v("s3", "u3", hours=-1),  # 2 older than the stored s3
        v("s2", "u9", hours=5),  # 3 s2 is already replaced by row 1
        v("n4", "u4"),  # 4 new
        v("s3b", "u1", hours=0, agency="saude"),  # 5 another agency's url: new
    ]
    r = resolve(batch, stored)
    assert r.winners == [0, 1, 4, 5]
    assert r.replaces == {1: stored[1]}
    assert r.rejected[2] == (
        f"{OLDER_THAN_STORED}: extracted_at 2026-11-01T08:00:00-03:00 is before "
        "2026-11-01T09:00:00-03:00 of unique_id s3"
    )
    assert r.rejected[3].startswith(f"{CONFLICT_IN_BATCH}: the stored story unique_id s2")
    # another headline on a stored url, extracted at the same time: not a correction
    same_time = resolve([v("n3", "u3", hours=0)], stored)
    assert same_time.rejected == {0: f"{DUPLICATE_URL}: stored as unique_id s3"}
    # an undated version is older than any dated one
    undated = resolve([v("s1", "u1", hours=None)], [v("s1", "u1")])
    assert undated.rejected[0].startswith(f"{OLDER_THAN_STORED}: extracted_at none")
    # a story moving to a url another stored story holds
    moving = resolve([v("s1", "u3", hours=3)], stored)
    assert moving.rejected[0] == f"{DUPLICATE_URL}: stored as unique_id s3"
