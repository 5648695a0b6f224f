"""Property tests: no inbox line can crash the parser or the writers, and every line is
accounted for.

Lines are made of arbitrary JSON values and arbitrary byte strings per field (invalid
UTF-8, lone surrogates, NaN, huge numbers, deep nesting, wrong types, timestamps far out
of range, ...), arbitrary bytes per line, and copies of earlier lines (so the duplicate
and version rules run too). Accounting (see ParsedBatch and WriteOutcome):

    lines == accepted + rejected + duplicates                 (parse_inbox)
    lines == stored + rejected + merged duplicates            (parse_inbox + write)
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bi_platform.news import pg_schema
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.ingest import ParsedBatch, parse_inbox
from bi_platform.news.pg_reference import load_reference_data
from bi_platform.news.records import (
    RECORD_SCHEMA,
    content_hash,
    normalise_title,
    unique_id,
)
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.storage import StorageAdapter, WriteOutcome

LABEL = "inbox prop.jsonl"

#: Texts including lone surrogates (a JSON escape like "\ud800" produces them).
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3)
    ),
    max_leaves=6,
)
valid_timestamps = st.sampled_from(
    ["2026-11-01T10:30:00-03:00", "2026-11-01T12:00:00Z", "2026-11-02T08:00:00+00:00"]
)
timestamps = valid_timestamps | st.sampled_from(
    [
        "9999-12-31T23:59:59-03:00",
        "0001-01-01T00:00:00+03:00",
        "1899-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2026-11-01T10:30:00",
        "2026-13-45T25:61:00-03:00",
        "ontem",
        "",
    ]
)
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "agency": st.sampled_from(["mec", "mec", "saude", "ministerio-da-magia", " mec", ""]),
    "published_at": st.one_of(valid_timestamps, valid_timestamps, valid_timestamps, timestamps),
    "extracted_at": st.one_of(valid_timestamps, valid_timestamps, timestamps, st.none()),
    "updated_datetime": timestamps | st.none(),
    "title": st.sampled_from(
        ["MEC abre inscrições", "  MEC  abre\tinscrições ", "Outra", "Outra", "MEC abre", " "]
    ),
    "url": st.sampled_from(
        ["https://www.gov.br/mec/a", "https://www.gov.br/mec/a", "https://www.gov.br/mec/b ", None]
    ),
    "content": st.sampled_from(["Texto.", "Texto.", "Outro texto.", "Texto\x00nul", None]),
    "summary": st.sampled_from(["Resumo.", "Outro resumo.", None]),
    "category": st.sampled_from(["Notícias", None]),
    "tags": st.sampled_from([["a", "b"], [], None, ["x\x00"]]),
    "theme_1_level_1_code": st.sampled_from([None, "02", "99", "01.01", ""]),
    "unique_id": st.sampled_from([None, "", "d41d8cd98f00b204e9800998ecf8427e"]),
    "content_hash": st.sampled_from([None, "", "0" * 64]),
}
UNKNOWN = st.sampled_from(["author", "views", "extra", "nested"])


@st.composite
def field_bytes(draw: st.DrawFn, name: str, plausible: int) -> bytes:
    """The JSON text of one field's value: a plausible one (``plausible`` times in 10),
    any JSON value, or raw bytes."""
    kind = draw(st.sampled_from(range(10)))
    if kind < plausible and name in GOOD:
        value = draw(GOOD[name])
    elif kind < 9 or plausible > 8:
        value = draw(json_values)
    else:
        return draw(st.binary(max_size=12))
    return json.dumps(value, ensure_ascii=True).encode()  # escapes lone surrogates


@st.composite
def inbox_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(range(10)))
    if kind == 0:
        return draw(st.binary(max_size=40))  # anything, invalid UTF-8 included
    if kind == 1:
        return json.dumps(draw(json_values), ensure_ascii=True).encode()
    names = draw(st.lists(st.sampled_from(list(GOOD)), unique=True, max_size=6))
    if kind > 3:  # mostly lines with the required fields
        names = list(dict.fromkeys(["agency", "published_at", "title", "url", *names]))
    names += draw(st.lists(UNKNOWN, unique=True, max_size=2))
    required = ("agency", "published_at", "title", "url")
    parts = [
        json.dumps(n).encode() + b": " + draw(field_bytes(n, 9 if n in required else 8))
        for n in names
    ]
    return b"{" + b", ".join(parts) + b"}"


@st.composite
def inbox(draw: st.DrawFn) -> list[bytes]:
    lines = draw(st.lists(inbox_line(), min_size=1, max_size=10))
    copies = draw(st.lists(st.integers(0, len(lines) - 1), max_size=4))
    return lines + [lines[i] for i in copies] + draw(st.sampled_from([[], [b""], [b"  "]]))


def write_inbox(directory: Path, lines: list[bytes]) -> Path:
    path = directory / "prop.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def non_blank(lines: list[bytes]) -> int:
    return sum(1 for x in b"\n".join(lines).split(b"\n") if x.rstrip(b"\r").strip())


def check_batch(batch: ParsedBatch, lines: list[bytes]) -> None:
    assert batch.lines == non_blank(lines)
    assert batch.reconciles()
    assert batch.lines == batch.accepted + len(batch.rejected) + batch.duplicates
    assert batch.records.schema == RECORD_SCHEMA
    assert len(batch.record_sources) == batch.accepted
    for r in batch.rejected:
        number = int(r.source.rsplit(" ", 1)[1])
        assert r.source == f"{LABEL} line {number}"
        assert r.reason.startswith(f"line {number}: ") and len(r.reason) > len(f"line {number}: ")
    for row in batch.records.to_pylist():  # identity is the computed one
        assert row["title"] == normalise_title(row["title"])
        assert row["unique_id"] == unique_id(row["agency"], row["published_at"], row["title"])
        assert row["content_hash"] == content_hash(row["title"], row["content"])
        if row["extra"] is not None:
            assert isinstance(json.loads(row["extra"]), dict)


def check_accounting(batch: ParsedBatch, outcome: WriteOutcome) -> None:
    result = outcome.result
    assert result.rows_in == batch.accepted
    assert result.rows_in == result.inserted + result.updated + result.unchanged + result.rejected
    assert outcome.rejected_recorded == len(batch.rejected)
    assert batch.lines == (
        outcome.rows_stored + outcome.rows_rejected + batch.duplicates + outcome.rows_merged
    )


@settings(max_examples=200, deadline=None)
@given(inbox())
def test_parse_inbox_accounts_for_every_line(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        batch = parse_inbox(write_inbox(Path(directory), lines), {"mec", "saude"}, source=LABEL)
    check_batch(batch, lines)


@settings(max_examples=40, deadline=None)
@given(inbox())
def test_the_huggingface_backend_accounts_for_every_line(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        batch = parse_inbox(write_inbox(root, lines), {"mec", "saude"}, source=LABEL)
        check_batch(batch, lines)
        repo = LocalDatasetRepo(root / "repo")
        adapter = StorageAdapter(
            "huggingface", "huggingface", None, repo, dead_letter_path=root / "dead.jsonl"
        )
        outcome = adapter.write(
            batch.records, batch.rejected, source=LABEL, row_sources=batch.record_sources
        )
        check_accounting(batch, outcome)
        letters = (root / "dead.jsonl").read_text().splitlines() if outcome.rows_rejected else []
        assert len(letters) == outcome.rows_rejected
        assert repo.row_count() == outcome.result.inserted


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one database is fine
)
@given(lines=inbox())
def test_the_postgres_backend_accounts_for_every_line(pg_url: str, lines: list[bytes]) -> None:
    if pg_schema.migrate(pg_url):  # the first example: schema and reference data
        with psycopg.connect(pg_url) as conn:
            load_reference_data(conn, load_agencies(), load_themes())
    with psycopg.connect(pg_url) as conn:
        before = conn.execute("SELECT count(*) FROM news_rejected").fetchone()[0]
    with tempfile.TemporaryDirectory() as directory:
        batch = parse_inbox(write_inbox(Path(directory), lines), {"mec", "saude"}, source=LABEL)
    check_batch(batch, lines)
    outcome = StorageAdapter("postgres", "postgres", pg_url).write(
        batch.records, batch.rejected, source=LABEL, row_sources=batch.record_sources
    )
    check_accounting(batch, outcome)
    with psycopg.connect(pg_url) as conn:
        after = conn.execute("SELECT count(*) FROM news_rejected").fetchone()[0]
    assert after - before == outcome.rows_rejected


def store_rows(url: str, repo: LocalDatasetRepo) -> tuple[list[Any], list[Any]]:
    """Every record of PostgreSQL and of the repo, sorted by unique_id."""
    with psycopg.connect(url) as conn:
        months = [
            m
            for (m,) in conn.execute(
                "SELECT DISTINCT to_char(published_at AT TIME ZONE 'America/Sao_Paulo', "
                "'YYYY-MM') FROM news"
            )
        ]
    adapter = StorageAdapter("postgres", "postgres", url)
    in_pg = [r for m in months for r in adapter.read_month(m).to_pylist()]
    in_hf = [r for m in repo.list_shards() for r in repo.read_shard(m).to_pylist()]
    return sorted(in_pg, key=lambda r: r["unique_id"]), sorted(in_hf, key=lambda r: r["unique_id"])


def test_postgres_and_huggingface_stay_identical_batch_after_batch(
    pg_url: str, tmp_path: Path
) -> None:
    """Differential: every generated batch goes to both backends, one after the other on
    the same two stores; the decisions (accepted, merged, rejected and why), the counts
    and the stores' contents never differ (updated vs unchanged may, by ``extra`` only)."""
    pg_schema.migrate(pg_url)
    with psycopg.connect(pg_url) as conn:
        load_reference_data(conn, load_agencies(), load_themes())
    repo = LocalDatasetRepo(tmp_path / "repo")
    dead = tmp_path / "dead.jsonl"
    postgres = StorageAdapter("postgres", "postgres", pg_url)
    huggingface = StorageAdapter("huggingface", "huggingface", None, repo, dead_letter_path=dead)

    @settings(max_examples=15, deadline=None)
    @given(inbox())
    def apply(lines: list[bytes]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            batch = parse_inbox(write_inbox(Path(directory), lines), source=LABEL)
        outcomes = [
            adapter.write(
                batch.records, batch.rejected, source=LABEL, row_sources=batch.record_sources
            )
            for adapter in (postgres, huggingface)
        ]
        pg, hf = (o.result.as_dict() for o in outcomes)
        # a re-delivery whose only change is in its unknown fields updates PostgreSQL's
        # news.extra but leaves the HF row as it is: updated there, unchanged here
        for counts in (pg, hf):
            counts["kept"] = counts.pop("updated") + counts.pop("unchanged")
            counts.pop("seconds")
        assert pg == hf
        assert outcomes[0].result.updated >= outcomes[1].result.updated
        with psycopg.connect(pg_url) as conn:
            in_pg = Counter(conn.execute("SELECT source, reason FROM news_rejected").fetchall())
        letters = dead.read_text(encoding="utf-8").splitlines() if dead.exists() else []
        in_hf = Counter((x["source"], x["reason"]) for x in map(json.loads, letters))
        assert in_pg == in_hf
        rows_pg, rows_hf = store_rows(pg_url, repo)
        assert rows_pg == rows_hf

    apply()
