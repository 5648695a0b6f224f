"""The write path against a real PostgreSQL: write_records, rejections, identity and
versions (the rules shared by every backend)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bi_platform.news import pg_write, validation
from bi_platform.news.pg_write import write_records
from bi_platform.news.records import (
    CONTENT_HASH_MISMATCH,
    DUPLICATE_URL,
    HF_SCHEMA,
    OLDER_THAN_STORED,
    OUT_OF_RANGE,
    UNIQUE_ID_MISMATCH,
    content_hash,
    unique_id,
)
from bi_platform.news.reference_data import load_agencies
from bi_platform.news.validation import (
    MISSING_FIELD,
    NUL_CHARACTER,
    UNKNOWN_AGENCY,
    UNKNOWN_THEME,
    WRONG_THEME_LEVEL,
)
from bi_platform_tests.news.pg_support import (
    edit,
    reconciles,
    rehash,
    replace_column,
    sample,
    scalar,
)


def test_insert_then_identical_rerun_writes_nothing(conn: psycopg.Connection[Any]) -> None:
    table = sample(300)
    first = write_records(conn, table, source="t")
    conn.commit()
    assert (first.inserted, first.updated, first.unchanged, first.rejected) == (300, 0, 0, 0)
    assert scalar(conn, "SELECT count(*) FROM news") == 300
    before = conn.execute("SELECT unique_id, updated_at, xmin::text FROM news").fetchall()

    again = write_records(conn, table, source="t")
    conn.commit()
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, 300, 0)
    after = conn.execute("SELECT unique_id, updated_at, xmin::text FROM news").fetchall()
    assert sorted(after) == sorted(before)  # not even a new row version
    assert scalar(conn, "SELECT count(*) FROM news_rejected") == 0


def test_stored_values_round_trip(conn: psycopg.Connection[Any]) -> None:
    table = sample(120)
    write_records(conn, table, source="t")
    rows = conn.execute(
        "SELECT unique_id, agency, published_at, extracted_at, title, tags, content, "
        "theme_1_level_2_code, theme_1_level_2_label, content_hash, agency_name FROM news_hf"
    ).fetchall()
    stored = {r[0]: r for r in rows}
    agencies = load_agencies()
    for rec in table.to_pylist():
        got = stored[rec["unique_id"]]
        assert got[1:10] == (
            rec["agency"],
            rec["published_at"],
            rec["extracted_at"],
            rec["title"],
            rec["tags"],
            rec["content"],
            rec["theme_1_level_2_code"],
            rec["theme_1_level_2_label"],
            rec["content_hash"],
        )
        assert got[10] == agencies[rec["agency"]].name


AWKWARD_TAGS = [
    ["a,b", 'quote "q"', "back\\slash", "{braces}", "NULL", "", " spaced "],
    [],
    None,
    ["line\nbreak", "semi;colon", "ção"],
]


def test_awkward_values_survive_the_csv_copy(conn: psycopg.Connection[Any]) -> None:
    """Quotes, commas, braces, backslashes and newlines in texts and tags, empty strings
    vs nulls, empty vs null tag lists: stored exactly as given."""
    table = sample(4, seed=5)
    table = replace_column(table, "tags", AWKWARD_TAGS)
    table = edit(table, 0, title='Título com "aspas", vírgulas e \\ barra', summary="")
    table = edit(table, 1, content='linha 1\nlinha 2\r\n"fim"', subtitle=None)
    table = edit(table, 2, category=",", editorial_lead="\\N")
    table = rehash(table)  # title and content changed: so do the computed ids
    assert write_records(conn, table, source="t").inserted == 4
    rows = conn.execute(
        "SELECT unique_id, title, summary, content, subtitle, category, editorial_lead, tags "
        "FROM news_hf"
    ).fetchall()
    stored = {r[0]: r[1:] for r in rows}
    for rec in table.to_pylist():
        assert stored[rec["unique_id"]] == (
            rec["title"],
            rec["summary"],
            rec["content"],
            rec["subtitle"],
            rec["category"],
            rec["editorial_lead"],
            rec["tags"],
        )
    # the array literal of a null element is NULL, not the string "NULL"
    assert pg_write._pg_text_array(pa.array([["x", None]], pa.list_(pa.string()))).to_pylist() == [
        '{"x",NULL}'
    ]


def test_assume_new_falls_back_to_the_merge_on_collisions(conn: psycopg.Connection[Any]) -> None:
    table = sample(200)
    fresh = write_records(conn, table.slice(0, 100), source="t", assume_new=True)
    assert (fresh.inserted, fresh.unchanged, fresh.rejected) == (100, 0, 0)
    # half of these are stored already, and one steals a stored row's URL (extracted at
    # the same time: not a correction, see test_validation_backends)
    batch = edit(table.slice(50, 100), 99, url=table.column("url")[0].as_py())
    batch = edit(batch, 99, agency=table.column("agency")[0].as_py(), unique_id=None)
    batch = edit(batch, 99, extracted_at=table.column("extracted_at")[0].as_py())
    mixed = write_records(conn, batch, source="t", assume_new=True)
    assert (mixed.inserted, mixed.unchanged, mixed.rejected) == (49, 50, 1)
    assert mixed.rejected_by_reason == {DUPLICATE_URL: 1}
    assert scalar(conn, "SELECT count(*) FROM news") == 149


def test_edit_updates_and_bumps_updated_at(conn: psycopg.Connection[Any]) -> None:
    table = sample(200)
    write_records(conn, table, source="t")
    conn.commit()
    before = dict(conn.execute("SELECT unique_id, updated_at FROM news").fetchall())
    edited = edit(table, 5, content="Texto corrigido.", content_hash=None)
    edited = edit(edited, 9, summary="Resumo novo.")
    result = write_records(conn, edited, source="t")
    conn.commit()
    assert (result.inserted, result.updated, result.unchanged) == (0, 2, 198)
    after = dict(conn.execute("SELECT unique_id, updated_at FROM news").fetchall())
    changed = {u for u in after if after[u] != before[u]}
    ids = table.column("unique_id").to_pylist()
    assert changed == {ids[5], ids[9]}
    assert all(after[u] > before[u] for u in changed)
    row = conn.execute(
        "SELECT content, content_hash FROM news WHERE unique_id = %s", (ids[5],)
    ).fetchone()
    assert row == ("Texto corrigido.", content_hash(table["title"][5].as_py(), "Texto corrigido."))


def test_missing_ids_are_computed(conn: psycopg.Connection[Any]) -> None:
    table = sample(20)
    blank = replace_column(table, "unique_id", [None] * 10 + [""] * 10)
    blank = replace_column(blank, "content_hash", [None] * 20)
    result = write_records(conn, blank.drop_columns(["theme_1_level_1_label"]), source="t")
    assert result.inserted == 20
    stored = conn.execute("SELECT unique_id, content_hash FROM news").fetchall()
    assert sorted(stored) == sorted(
        zip(table["unique_id"].to_pylist(), table["content_hash"].to_pylist(), strict=True)
    )


def test_each_invalid_row_is_rejected_with_source_and_reason(
    conn: psycopg.Connection[Any],
) -> None:
    table = sample(40)
    bad = edit(table, 1, title="   ")
    bad = edit(bad, 2, url=None)
    bad = edit(bad, 3, agency="ministerio-da-magia", unique_id=None)
    bad = edit(bad, 4, theme_1_level_1_code="99")
    bad = edit(bad, 5, most_specific_theme_code="77.77.77")
    bad = edit(bad, 6, theme_1_level_1_code="01.01")
    bad = edit(bad, 7, content="nul \x00 char")
    bad = edit(bad, 8, tags=["ok", "bad\x00tag"])
    result = write_records(conn, bad, source="shard 2025-03", log_id=None)
    assert reconciles(result)
    assert (result.inserted, result.rejected) == (32, 8)
    assert result.rejected_by_reason == {
        MISSING_FIELD: 2,
        UNKNOWN_AGENCY: 1,
        UNKNOWN_THEME: 2,
        WRONG_THEME_LEVEL: 1,
        f"{NUL_CHARACTER} in content": 1,
        f"{NUL_CHARACTER} in tags": 1,
    }
    rows = conn.execute(
        "SELECT source, reason, raw ->> 'title', raw_text, unique_id FROM news_rejected ORDER BY id"
    ).fetchall()
    by_source = {r[0]: r for r in rows}
    assert set(by_source) == {f"shard 2025-03 row {i}" for i in range(1, 9)}
    assert by_source["shard 2025-03 row 1"][1] == f"{MISSING_FIELD}: 'title'"
    assert by_source["shard 2025-03 row 2"][1] == f"{MISSING_FIELD}: 'url'"
    assert by_source["shard 2025-03 row 3"][1] == f"{UNKNOWN_AGENCY}: 'ministerio-da-magia'"
    assert by_source["shard 2025-03 row 3"][4] is None  # no id given, none computed
    assert by_source["shard 2025-03 row 4"][1] == (f"{UNKNOWN_THEME}: '99' in theme_1_level_1_code")
    assert by_source["shard 2025-03 row 5"][1] == (
        f"{UNKNOWN_THEME}: '77.77.77' in most_specific_theme_code"
    )
    assert by_source["shard 2025-03 row 6"][1].startswith(
        f"{WRONG_THEME_LEVEL}: '01.01' in theme_1_level_1_code is a level-2 theme"
    )
    assert by_source["shard 2025-03 row 2"][2] == table["title"][2].as_py()  # raw kept
    assert by_source["shard 2025-03 row 4"][4] == table["unique_id"][4].as_py()
    assert scalar(conn, "SELECT count(*) FROM news") == 32


def test_row_sources_name_the_rejections(conn: psycopg.Connection[Any]) -> None:
    table = edit(sample(3), 0, agency="agencia-x")
    sources = [f"inbox 2026-11-01.jsonl line {n}" for n in (4, 7, 9)]
    write_records(conn, table, source="inbox 2026-11-01.jsonl", row_sources=sources)
    assert conn.execute("SELECT source FROM news_rejected").fetchall() == [(sources[0],)]


def test_url_conflicts_are_rejected_without_aborting(conn: psycopg.Connection[Any]) -> None:
    table = sample(50)
    write_records(conn, table.slice(0, 40), source="t")
    conn.commit()
    stored_id = table["unique_id"][3].as_py()
    # a different story (other title -> other unique_id) with the URL of a stored one,
    # extracted at the same time (a later extraction would be a headline correction)
    clash = edit(table.slice(3, 1), 0, title="Outro título", unique_id=None, content_hash=None)
    # two new stories sharing one URL, extracted at the same time: the first one wins
    pair = edit(
        table.slice(45, 2),
        1,
        url=table["url"][45].as_py(),
        agency=table["agency"][45].as_py(),
        extracted_at=table["extracted_at"][45].as_py(),
        unique_id=None,
    )
    batch = pa.concat_tables([table.slice(40, 5), clash, pair, table.slice(0, 2)])
    result = write_records(conn, batch, source="b")
    conn.commit()
    assert reconciles(result)
    assert (result.inserted, result.unchanged, result.rejected) == (6, 2, 2)
    assert result.rejected_by_reason == {DUPLICATE_URL: 2}
    reasons = dict(conn.execute("SELECT source, reason FROM news_rejected").fetchall())
    assert reasons == {
        "b row 5": f"{DUPLICATE_URL}: stored as unique_id {stored_id}",
        "b row 7": f"{DUPLICATE_URL}: earlier in the batch as unique_id "
        f"{table['unique_id'][45].as_py()}",
    }
    assert scalar(conn, "SELECT count(*) FROM news") == 46


def test_duplicate_ids_in_a_batch_keep_the_last(conn: psycopg.Connection[Any]) -> None:
    table = sample(10)
    later = edit(table.slice(2, 1), 0, summary="Versão final.")
    batch = pa.concat_tables([table, table.slice(2, 1), later])
    result = write_records(conn, batch, source="t")
    assert reconciles(result)
    assert (result.rows_in, result.inserted, result.unchanged, result.duplicates) == (12, 10, 2, 2)
    summary = scalar(
        conn, "SELECT summary FROM news WHERE unique_id = %s", (table["unique_id"][2].as_py(),)
    )
    assert summary == "Versão final."


def test_a_failing_batch_leaves_nothing(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.title = 'boom' THEN RAISE EXCEPTION 'refused by test trigger'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON news FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    conn.commit()
    boom = edit(sample(30), 4, title="boom", unique_id=None, content_hash=None)
    batch = edit(boom, 7, agency="agencia-x")
    with pytest.raises(psycopg.errors.RaiseException):
        write_records(conn, batch, source="t")
    conn.rollback()
    assert scalar(conn, "SELECT count(*) FROM news") == 0
    assert scalar(conn, "SELECT count(*) FROM news_rejected") == 0


def test_empty_and_all_rejected_batches(conn: psycopg.Connection[Any]) -> None:
    empty = write_records(conn, HF_SCHEMA.empty_table(), source="t")
    assert (empty.rows_in, empty.inserted, empty.rejected) == (0, 0, 0)
    bad = replace_column(sample(5), "agency", ["agencia-x"] * 5)
    result = write_records(conn, bad, source="t")
    assert (result.rows_in, result.inserted, result.unchanged, result.rejected) == (5, 0, 0, 5)
    assert scalar(conn, "SELECT count(*) FROM news_rejected") == 5


def test_autocommit_connection_gets_its_own_transaction(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as conn:
        result = write_records(conn, sample(30), source="t")
        assert result.inserted == 30
    with psycopg.connect(news_db) as other:
        assert scalar(other, "SELECT count(*) FROM news") == 30


def test_conform_refuses_string_timestamps() -> None:
    table = sample(3)
    strings = table.set_column(
        table.schema.get_field_index("published_at"),
        "published_at",
        pc.cast(pc.strftime(table["published_at"]), pa.string()),
    )
    with pytest.raises(ValueError, match="published_at"):
        validation.conform(strings)
    with pytest.raises(ValueError, match="unknown"):
        validation.conform(table.append_column("surprise", pa.array([1, 2, 3])))
    with pytest.raises(ValueError, match="extra: expected the text of a JSON object"):
        validation.conform(table.append_column("extra", pa.array([1, 2, 3])))


def stamps(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return dict(conn.execute("SELECT unique_id, updated_at FROM news").fetchall())


def test_a_forged_unique_id_never_overwrites_another_story(conn: psycopg.Connection[Any]) -> None:
    table = sample(20)
    write_records(conn, table, source="t")
    conn.commit()
    before = stamps(conn)
    victim = table["unique_id"][0].as_py()
    forged = edit(table.slice(1, 1), 0, unique_id=victim, summary="Sequestrada.")
    result = write_records(conn, forged, source="t")
    conn.commit()
    assert (result.rejected, result.written) == (1, 0)
    assert result.rejected_by_reason == {UNIQUE_ID_MISMATCH: 1}
    assert stamps(conn) == before
    reason = scalar(conn, "SELECT reason FROM news_rejected")
    computed = table["unique_id"][1].as_py()
    assert reason == f"{UNIQUE_ID_MISMATCH}: {victim!r} != {computed!r}"
    # an agreeing id and hash are accepted
    assert write_records(conn, table.slice(1, 1), source="t").unchanged == 1


def test_a_supplied_content_hash_must_agree(conn: psycopg.Connection[Any]) -> None:
    table = edit(sample(3), 0, content_hash="0" * 64)
    result = write_records(conn, table, source="t")
    assert (result.inserted, result.rejected_by_reason) == (2, {CONTENT_HASH_MISMATCH: 1})


def test_a_headline_correction_updates_the_story(conn: psycopg.Connection[Any]) -> None:
    table = sample(20)
    write_records(conn, table, source="t")
    conn.execute("UPDATE news SET synced_to_hf_at = clock_timestamp(), hf_revision = 'r0'")
    conn.commit()
    old = table.slice(3, 1).to_pylist()[0]
    row_id, created = conn.execute(
        "SELECT id, created_at FROM news WHERE unique_id = %s", (old["unique_id"],)
    ).fetchone()
    title = old["title"] + " (corrigido)"
    later = old["extracted_at"] + timedelta(hours=1)
    fix = edit(table.slice(3, 1), 0, title=title, extracted_at=later, unique_id=None)
    result = write_records(conn, edit(fix, 0, content_hash=None), source="t")
    conn.commit()
    assert (result.inserted, result.updated, result.corrected, result.rejected) == (0, 1, 1, 0)
    new_id = unique_id(old["agency"], old["published_at"], title)
    month = old["published_at"].strftime("%Y-%m")
    assert result.replaced == {new_id: (old["unique_id"], month)}
    stored = conn.execute(
        "SELECT id, created_at, unique_id, title, url, extracted_at, content_hash, "
        "updated_at > synced_to_hf_at FROM news WHERE id = %s",
        (row_id,),
    ).fetchone()
    assert stored == (
        row_id,  # the same story, edited in place
        created,
        new_id,
        title,
        old["url"],
        later,
        content_hash(title, old["content"]),
        True,  # pending for the HF sync
    )
    assert scalar(conn, "SELECT count(*) FROM news") == 20
    # the old headline re-sent afterwards is older than the stored version
    again = write_records(conn, table.slice(3, 1), source="t")
    assert again.rejected_by_reason == {OLDER_THAN_STORED: 1}


def test_an_older_extraction_is_rejected_and_an_equal_one_updates(
    conn: psycopg.Connection[Any],
) -> None:
    table = sample(10)
    write_records(conn, table, source="t")
    conn.commit()
    when = table["extracted_at"][2].as_py()
    older = edit(table.slice(2, 1), 0, summary="Antigo.", extracted_at=when - timedelta(hours=1))
    result = write_records(conn, older, source="t")
    assert (result.updated, result.rejected_by_reason) == (0, {OLDER_THAN_STORED: 1})
    reason = scalar(conn, "SELECT reason FROM news_rejected")
    assert reason.startswith(f"{OLDER_THAN_STORED}: extracted_at ")
    assert reason.endswith(f"of unique_id {table['unique_id'][2].as_py()}")
    same_time = edit(table.slice(2, 1), 0, summary="Revisto.")
    assert write_records(conn, same_time, source="t").updated == 1


def test_timestamps_out_of_range_are_rejected_not_raised(conn: psycopg.Connection[Any]) -> None:
    table = sample(4)
    micros = pa.array([0, 0, 4_102_444_800_000_000, 253_402_300_800_000_000], pa.int64())
    far = pc.cast(micros, pa.timestamp("us", tz="UTC"))  # 1970, 1970, 2100, year 10000
    table = table.set_column(
        table.schema.get_field_index("updated_datetime"), "updated_datetime", far
    )
    result = write_records(conn, table.slice(2, 2), source="t")
    assert result.rejected_by_reason == {OUT_OF_RANGE: 2}
    reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM news_rejected"))
    assert reasons[0].startswith(f"{OUT_OF_RANGE}: updated_datetime 2099-12-31T21:00:00-03:00")
    assert reasons[1] == (
        f"{OUT_OF_RANGE}: updated_datetime 253402300800000000 microseconds from 1970-01-01 UTC "
        "is outside the supported range 1900-01-01 to 2099-12-31 (UTC)"
    )


def test_write_result_accounting(conn: psycopg.Connection[Any]) -> None:
    table = sample(10)
    write_records(conn, table.slice(0, 5), source="t")
    batch = pa.concat_tables([table, table.slice(7, 1), edit(table.slice(0, 1), 0, agency="x")])
    r = write_records(conn, batch, source="t")
    assert (r.rows_in, r.inserted, r.unchanged, r.duplicates, r.rejected) == (12, 5, 6, 1, 1)
    assert (r.identical, r.stored) == (5, 10)
    assert r.rows_in == r.stored + r.rejected + r.duplicates
    assert "unique_ids" not in r.as_dict() and r.as_dict()["corrected"] == 0
