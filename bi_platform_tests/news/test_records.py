"""The news record's identity and schema."""

import hashlib
from datetime import datetime
from zoneinfo import ZoneInfo

import pyarrow as pa

from bi_platform.news.records import (
    HF_SCHEMA,
    REQUIRED_FIELDS,
    content_hash,
    normalise_text,
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
