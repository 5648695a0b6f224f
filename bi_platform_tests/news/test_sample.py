"""The news sample-data generator: schema, identity, themes, month shards and the inbox.

Only small sizes are generated here (a few thousand records); the ``default`` profile is
checked through its declared numbers.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bi_platform.news import records
from bi_platform.news import sample as news
from bi_platform.news.records import HF_SCHEMA, TIMEZONE
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.sample import (
    DUPLICATE_IN_BATCH,
    DUPLICATE_OF_EXISTING,
    EDIT,
    INBOX_FIELDS,
    MALFORMED_KINDS,
    MANIFEST_NAME,
    NEW,
    PROFILES,
    REFERENCE_DATE,
    generate_news,
    history_window,
    inbox_batch,
    inbox_counts,
    month_shards,
    write_inbox,
    write_initial_dataset,
    write_news_sources,
)

SP = ZoneInfo(TIMEZONE)
N = 3_000
DAY = REFERENCE_DATE + timedelta(days=1)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return generate_news(N, seed=2)


@pytest.fixture(scope="module")
def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


@pytest.fixture(scope="module")
def batch(table: pa.Table) -> news.InboxBatch:
    return inbox_batch(DAY, existing=table, seed=2)


def month_of(value: datetime) -> str:
    return value.astimezone(SP).strftime("%Y-%m")


# --------------------------------------------------------------------------------------
# Profiles and records
# --------------------------------------------------------------------------------------
def test_profiles() -> None:
    assert PROFILES["small"].records == 5_000
    assert PROFILES["default"].records == 300_000
    assert all(p.months == 24 and p.inbox_days >= 1 for p in PROFILES.values())
    assert history_window() == (date(2024, 11, 1), date(2026, 10, 31))
    assert date(2026, 10, 31) == REFERENCE_DATE


def test_schema_is_exactly_hf_schema(table: pa.Table) -> None:
    assert table.schema.equals(HF_SCHEMA)
    assert table.num_rows == N
    assert generate_news(0).schema.equals(HF_SCHEMA)


def test_determinism() -> None:
    a = generate_news(400, seed=7)
    assert a.equals(generate_news(400, seed=7))
    b = generate_news(400, seed=8)
    assert a.column("unique_id").to_pylist() != b.column("unique_id").to_pylist()


def test_ids_and_hashes_match_records_module(rows: list[dict]) -> None:
    for row in rows:
        assert row["unique_id"] == records.unique_id(
            row["agency"], row["published_at"], row["title"]
        )
        assert row["content_hash"] == records.content_hash(row["title"], row["content"])
    assert len({r["unique_id"] for r in rows}) == len(rows)
    assert len({r["url"] for r in rows}) == len(rows)


def test_vectorised_normalisation_matches_records() -> None:
    chars = [chr(c) for c in range(0x20, 0x7F)] + [chr(c) for c in range(0xA0, 0x180)]
    texts = [f"a{ch}b Ação" for ch in chars] + ["Título\n\nParágrafo dois. FIM"]
    got = pl.DataFrame({"t": texts}).select(news.normalised_text("t")).to_series().to_list()
    assert got == [records.normalise_text(t) for t in texts]


def test_agencies_are_known_and_varied(table: pa.Table, rows: list[dict]) -> None:
    agencies = load_agencies()
    used = set(table.column("agency").to_pylist())
    assert used <= set(agencies)
    assert len(used) >= 80
    for row in rows[:500]:
        assert row["url"].startswith(agencies[row["agency"]].url + "/")


def test_themes_cover_and_are_consistent(rows: list[dict]) -> None:
    themes = load_themes()
    themed = [r for r in rows if r["theme_1_level_1_code"] is not None]
    assert 0.95 <= len(themed) / len(rows) < 1.0
    levels = {1: 0, 2: 0, 3: 0}
    for r in rows:
        codes = [r[f"theme_1_level_{i}_code"] for i in (1, 2, 3)]
        labels = [r[f"theme_1_level_{i}_label"] for i in (1, 2, 3)]
        if codes[0] is None:
            assert codes == [None] * 3 and labels == [None] * 3
            assert r["most_specific_theme_code"] is None
            assert r["most_specific_theme_label"] is None
            continue
        depth = sum(c is not None for c in codes)
        assert codes[depth:] == [None] * (3 - depth)  # no level 3 without level 2
        levels[depth] += 1
        for level, (code, label) in enumerate(
            zip(codes[:depth], labels[:depth], strict=True), start=1
        ):
            assert themes[code].level == level
            assert themes[code].label == label
            if level > 1:
                assert themes[code].parent_code == codes[level - 2]
        assert r["most_specific_theme_code"] == codes[depth - 1]
        assert r["most_specific_theme_label"] == labels[depth - 1]
    assert min(levels.values()) > 0 and levels[3] > levels[1]


def test_times_and_window(table: pa.Table, rows: list[dict]) -> None:
    assert table.schema.field("published_at").type.tz == TIMEZONE
    first, last = history_window()
    months = {month_of(r["published_at"]) for r in rows}
    assert len(months) == 24
    for r in rows:
        local = r["published_at"].astimezone(SP)
        assert first <= local.date() <= last
        assert r["extracted_at"] >= r["published_at"]
        assert r["updated_datetime"] is None or r["updated_datetime"] >= r["published_at"]
    published = table.column("published_at")
    assert pc.all(pc.greater_equal(published[1:], published[:-1])).as_py()  # time order
    # weekends are quieter than weekdays
    weekday = [r["published_at"].astimezone(SP).weekday() for r in rows]
    assert sum(w >= 5 for w in weekday) / len(weekday) < 0.15


def test_text_columns(table: pa.Table, rows: list[dict]) -> None:
    content_bytes = pc.binary_length(table.column("content").cast(pa.binary()))
    assert 1_600 <= pc.mean(content_bytes).as_py() <= 2_600
    for name in ("subtitle", "image_url", "video_url", "editorial_lead", "summary"):
        nulls = table.column(name).null_count
        assert 0 < nulls < N, name
    assert table.column("title").null_count == 0 and table.column("content").null_count == 0
    assert table.column("video_url").null_count > N * 0.8
    for r in rows[:200]:
        assert "\n\n" in r["content"] and r["content"] == r["content"].strip()
        assert "  " not in r["content"] and "{" not in r["content"]
        assert isinstance(r["tags"], list) and all(isinstance(t, str) for t in r["tags"])
        assert len(r["tags"]) == len(set(r["tags"])) <= 7
    assert sum(bool(r["tags"]) for r in rows) > 0.8 * N


# --------------------------------------------------------------------------------------
# Month shards
# --------------------------------------------------------------------------------------
def test_month_shards_of_generated_table(table: pa.Table) -> None:
    shards = month_shards(table)
    assert list(shards) == sorted(shards) and len(shards) == 24
    assert sum(s.num_rows for s in shards.values()) == N
    for month, shard in shards.items():
        assert shard.schema.equals(HF_SCHEMA)
        assert {month_of(v) for v in shard.column("published_at").to_pylist()} == {month}
        published = shard.column("published_at")
        assert pc.all(pc.greater_equal(published[1:], published[:-1])).as_py()


def boundary_table(tz: str) -> pa.Table:
    """Records around the January/February boundary, stored in time zone ``tz``."""
    utc = ZoneInfo("UTC")
    instants = [
        datetime(2025, 2, 1, 2, 30, tzinfo=utc),  # 2025-01-31 23:30 in São Paulo
        datetime(2025, 2, 1, 3, 0, tzinfo=utc),  # 2025-02-01 00:00 in São Paulo
        datetime(2025, 1, 31, 23, 59, tzinfo=utc),  # 20:59 in São Paulo
        datetime(2025, 2, 1, 2, 59, 59, tzinfo=utc),  # 23:59:59 in São Paulo
        datetime(2025, 3, 1, 0, 30, tzinfo=utc),  # 2025-02-28 21:30 in São Paulo
    ]
    sample = generate_news(len(instants), seed=3)
    stamps = pa.array(instants, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz=tz))
    return sample.set_column(
        sample.schema.get_field_index("published_at"),
        pa.field("published_at", stamps.type, nullable=False),
        stamps,
    )


@pytest.mark.parametrize("tz", [TIMEZONE, "UTC"])
def test_month_shards_use_sao_paulo_months_at_midnight_utc(tz: str) -> None:
    shards = month_shards(boundary_table(tz))
    assert {m: s.num_rows for m, s in shards.items()} == {"2025-01": 3, "2025-02": 2}
    jan = shards["2025-01"].column("published_at").to_pylist()
    assert [v.astimezone(SP).strftime("%d %H:%M") for v in jan] == [
        "31 20:59",
        "31 23:30",
        "31 23:59",
    ]


def test_month_shards_edge_cases(table: pa.Table) -> None:
    assert month_shards(table.slice(0, 0)) == {}
    naive = table.slice(0, 3).set_column(
        2, "published_at", table.column("published_at").slice(0, 3).cast(pa.timestamp("us"))
    )
    with pytest.raises(ValueError, match="tz-aware"):
        month_shards(naive)
    shuffled = table.take(pa.array(list(range(N - 1, -1, -1))))
    shards = month_shards(shuffled)
    assert all(s.equals(month_shards(table)[m]) for m, s in shards.items())


# --------------------------------------------------------------------------------------
# Initial dataset files
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    repo = tmp_path_factory.mktemp("news_repo")
    return repo, write_initial_dataset(repo, "small")


def test_initial_dataset_layout(small_repo: tuple[Path, dict]) -> None:
    repo, manifest = small_repo
    files = sorted(p.name for p in (repo / "data").iterdir())
    assert len(files) == 24 and files[0] == "2024-11.parquet" and files[-1] == "2026-10.parquet"
    assert not list(repo.rglob("*.tmp"))
    assert json.loads((repo / MANIFEST_NAME).read_text()) == manifest
    assert manifest["profile"] == "small" and manifest["seed"] == 2
    assert manifest["records"] == 5_000
    total = 0
    for month, entry in manifest["shards"].items():
        path = repo / entry["file"]
        assert path.name == f"{month}.parquet" and path.stat().st_size == entry["bytes"]
        shard = pq.ParquetFile(path).read()
        assert shard.schema.equals(HF_SCHEMA)
        assert shard.num_rows == entry["rows"]
        assert {month_of(v) for v in shard.column("published_at").to_pylist()} == {month}
        total += shard.num_rows
    assert total == 5_000
    assert news.read_initial_dataset(repo).equals(generate_news(5_000, seed=2))


def test_initial_dataset_is_idempotent(tmp_path: Path) -> None:
    first = write_initial_dataset(tmp_path, "small")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()}
    again = write_initial_dataset(tmp_path, "small")
    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data").iterdir()} == stamps
    # a shard with a wrong size, or force, or another seed: everything is rewritten
    (tmp_path / "data" / "2025-05.parquet").write_bytes(b"corrupt")
    (tmp_path / "data" / "1999-01.parquet").write_bytes(b"stale")
    (tmp_path / "data" / "notes.txt").write_text("kept")
    assert write_initial_dataset(tmp_path, "small") == first
    assert pq.ParquetFile(tmp_path / "data" / "2025-05.parquet").read().num_rows > 0
    assert not (tmp_path / "data" / "1999-01.parquet").exists()
    assert (tmp_path / "data" / "notes.txt").exists()
    other = write_initial_dataset(tmp_path, "small", seed=5)
    assert other["seed"] == 5 and other["shards"] != first["shards"]
    forced = write_initial_dataset(tmp_path, "small", seed=5, force=True)
    assert forced["shards"] == other["shards"]
    with pytest.raises(ValueError, match="unknown profile"):
        write_initial_dataset(tmp_path, "huge")


def test_shard_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_initial_dataset(tmp_path, "small")
    target = tmp_path / "data" / "2024-11.parquet"
    before = target.read_bytes()

    def failing_write(table: pa.Table, where: Path, **kwargs: object) -> None:
        Path(where).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_initial_dataset(tmp_path, "small", force=True)
    assert target.read_bytes() == before
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / MANIFEST_NAME).exists()  # the next run regenerates


# --------------------------------------------------------------------------------------
# Inbox
# --------------------------------------------------------------------------------------
def test_inbox_rates() -> None:
    counts = inbox_counts(300_000)
    assert counts[NEW] == 300
    assert counts[EDIT] == 30
    assert counts[DUPLICATE_IN_BATCH] == 9
    assert counts[DUPLICATE_OF_EXISTING] == 15
    total = sum(counts.values())
    malformed = sum(counts[k] for k in MALFORMED_KINDS)
    assert 0.015 <= malformed / total <= 0.03
    assert all(counts[k] >= 1 for k in MALFORMED_KINDS)
    assert inbox_counts(5_000)[NEW] == news.INBOX_MIN_NEW
    assert inbox_counts(0)[EDIT] == 0 and inbox_counts(0)[DUPLICATE_OF_EXISTING] == 0


def parse(line: str) -> dict:
    return json.loads(line)


def scraper_form(row: dict) -> dict:
    return {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in row.items()
        if k in INBOX_FIELDS
    }


def computed_id(obj: dict) -> str:
    return records.unique_id(
        obj["agency"], datetime.fromisoformat(obj["published_at"]), obj["title"]
    )


def test_inbox_batch_counts(batch: news.InboxBatch, table: pa.Table) -> None:
    assert batch.counts() == {k: v for k, v in inbox_counts(N).items() if v}
    assert len(batch.lines) == len(batch.kinds)
    assert batch.new_records.schema.equals(HF_SCHEMA)
    assert batch.new_records.num_rows == batch.counts()[NEW]
    assert len(batch.edited_ids) == batch.counts()[EDIT]
    assert all("\n" not in line for line in batch.lines)
    malformed_at = [i for i, kind in enumerate(batch.kinds) if kind in MALFORMED_KINDS]
    assert malformed_at != list(range(len(batch.kinds) - len(malformed_at), len(batch.kinds)))


def test_inbox_valid_lines(batch: news.InboxBatch, table: pa.Table, rows: list[dict]) -> None:
    agencies = load_agencies()
    existing = {r["unique_id"]: r for r in rows}
    new_lines = {line for line, kind in zip(batch.lines, batch.kinds, strict=True) if kind == NEW}
    new_ids = set()
    for line, kind in zip(batch.lines, batch.kinds, strict=True):
        if kind in MALFORMED_KINDS:
            continue
        obj = parse(line)
        assert tuple(obj) == INBOX_FIELDS  # no unique_id / content_hash
        assert obj["agency"] in agencies and obj["title"] and obj["url"]
        assert isinstance(obj["tags"], list)
        published = datetime.fromisoformat(obj["published_at"])
        assert published.utcoffset() is not None
        uid = computed_id(obj)
        if kind == NEW:
            assert published.astimezone(SP).date() == DAY
            assert uid not in existing
            new_ids.add(uid)
        elif kind == DUPLICATE_IN_BATCH:
            assert line in new_lines
        elif kind == DUPLICATE_OF_EXISTING:
            assert obj == scraper_form(existing[uid])
        elif kind == EDIT:
            old = existing[uid]  # same agency, published_at and title -> same id
            assert uid in batch.edited_ids
            assert (obj["content"], obj["summary"]) != (old["content"], old["summary"])
            assert datetime.fromisoformat(obj["updated_datetime"]).date() == DAY
            same = {k: v for k, v in obj.items() if k not in ("content", "summary")}
            assert (
                same.items()
                >= {
                    k: v
                    for k, v in scraper_form(old).items()
                    if k not in ("content", "summary", "updated_datetime", "extracted_at")
                }.items()
            )
    assert new_ids == set(batch.new_records.column("unique_id").to_pylist())


def test_inbox_malformed_lines(batch: news.InboxBatch) -> None:
    agencies = load_agencies()
    seen = set()
    for line, kind in zip(batch.lines, batch.kinds, strict=True):
        if kind not in MALFORMED_KINDS:
            continue
        seen.add(kind)
        if kind == "broken_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        obj = json.loads(line)
        if kind == "missing_title":
            assert not obj.get("title")
        elif kind == "bad_published_at":
            with pytest.raises((ValueError, TypeError)):
                datetime.fromisoformat(obj["published_at"])
        elif kind == "unknown_agency":
            assert obj["agency"] not in agencies
        elif kind == "bad_tags_type":
            assert not isinstance(obj["tags"], list)
    assert seen == set(MALFORMED_KINDS)


def test_inbox_on_empty_dataset() -> None:
    empty = HF_SCHEMA.empty_table()
    b = inbox_batch(DAY, existing=empty, seed=2)
    assert EDIT not in b.counts() and DUPLICATE_OF_EXISTING not in b.counts()
    assert b.counts()[NEW] == news.INBOX_MIN_NEW


def test_write_inbox_file(tmp_path: Path, table: pa.Table, batch: news.InboxBatch) -> None:
    path = write_inbox(tmp_path / "inbox", DAY, existing=table, seed=2)
    assert path == tmp_path / "inbox" / f"{DAY.isoformat()}.jsonl"
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and tuple(text.splitlines()) == batch.lines
    again = write_inbox(tmp_path / "inbox", DAY, existing=table, seed=2)
    assert again.read_text(encoding="utf-8") == text
    assert not list(tmp_path.rglob("*.tmp"))


# --------------------------------------------------------------------------------------
# Everything for a profile
# --------------------------------------------------------------------------------------
def test_write_news_sources(tmp_path: Path) -> None:
    result = write_news_sources(tmp_path, "small", days=2)
    initial = tmp_path / "raw" / "news" / "initial"
    inbox = tmp_path / "news" / "inbox"
    assert len(list((initial / "data").glob("*.parquet"))) == 24
    assert (initial / MANIFEST_NAME).is_file()
    names = sorted(p.name for p in inbox.glob("*.jsonl"))
    assert names == ["2026-11-01.jsonl", "2026-11-02.jsonl"]
    assert set(result["inbox"]["batches"]) == {"2026-11-01", "2026-11-02"}
    assert result["initial"]["records"] == 5_000

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert write_news_sources(tmp_path, "small", days=2) == result
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps

    # a consumed batch is not re-created; a further day is added
    (inbox / names[0]).rename(tmp_path / "consumed.jsonl")
    more = write_news_sources(tmp_path, "small", days=3)
    assert sorted(p.name for p in inbox.glob("*.jsonl")) == ["2026-11-02.jsonl", "2026-11-03.jsonl"]
    assert set(more["inbox"]["batches"]) == {"2026-11-01", "2026-11-02", "2026-11-03"}
    assert (inbox / names[1]).stat().st_mtime_ns == stamps[inbox / names[1]]
    # the same days from scratch give the same files
    fresh = tmp_path / "fresh"
    write_news_sources(fresh, "small", days=3)
    for name in ("2026-11-02.jsonl", "2026-11-03.jsonl"):
        assert (fresh / "news" / "inbox" / name).read_bytes() == (inbox / name).read_bytes()
    assert (fresh / "news" / "inbox" / "2026-11-01.jsonl").read_bytes() == (
        tmp_path / "consumed.jsonl"
    ).read_bytes()
    # force rewrites everything, including the consumed day
    write_news_sources(tmp_path, "small", days=3, force=True)
    assert (inbox / "2026-11-01.jsonl").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_inbox_days_chain(tmp_path: Path) -> None:
    """Edits of day 2 may target day 1's new records: existing grows day by day."""
    existing = generate_news(500, seed=2)
    day1 = inbox_batch(DAY, existing=existing, seed=2)
    grown = pa.concat_tables([existing, day1.new_records])
    day2 = inbox_batch(DAY + timedelta(days=1), existing=grown, seed=2)
    ids = set(grown.column("unique_id").to_pylist())
    assert set(day2.edited_ids) <= ids
    assert not set(day2.new_records.column("unique_id").to_pylist()) & ids


def test_default_profile_generation(tmp_path: Path) -> None:
    manifest = write_initial_dataset(tmp_path, "default")
    assert manifest["records"] == 300_000
