"""The news DatasetRepo: one contract, run against the local backend and the Hub backend.

The Hub backend talks HTTP to a local test server (``hub_test_server.py``, a fixture) through
the real ``huggingface_hub`` client; no request leaves 127.0.0.1.
"""

from __future__ import annotations

import logging
import traceback
import uuid
import weakref
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

from bi_platform.news import dataset_repo as dr
from bi_platform.news.dataset_repo import (
    ConflictError,
    DatasetRepo,
    HubError,
    RevisionNotFoundError,
    SchemaError,
    ShardNotFoundError,
    dataset_card,
    month_of,
    open_dataset_repo,
    validate_table,
)
from bi_platform.news.dataset_repo_hub import HubDatasetRepo
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.records import HF_COLUMNS, HF_SCHEMA, TIMEZONE, unique_id
from bi_platform.settings import Settings
from bi_platform_tests.news import hub_test_server as _hub

# Fixtures from the test server module (assigned, not imported, so they register here).
hub_test_server = _hub.hub_test_server
hub_server = _hub.hub_server

# huggingface_hub's LFS upload passes a file object as `data=` to its HTTP client.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

SP = ZoneInfo(TIMEZONE)
TOKEN = _hub.TEST_TOKEN


# -- data -----------------------------------------------------------------------------------
def record(published_at: datetime, n: int, **overrides: object) -> dict[str, object]:
    title = f"Notícia número {n}"
    row: dict[str, object] = dict.fromkeys(HF_COLUMNS)
    row.update(
        unique_id=unique_id("mec", published_at, title),
        agency="mec",
        published_at=published_at,
        updated_datetime=published_at + timedelta(hours=2),
        extracted_at=published_at + timedelta(days=1),
        title=title,
        url=f"https://www.gov.br/mec/pt-br/assuntos/noticias/{n}",
        tags=["educação", f"tag-{n % 3}"] if n % 4 else [],
        content=f"Conteúdo da notícia {n}.",
        content_hash=f"{n:064x}",
    )
    row.update(overrides)
    return row


def month_table(month: str, n: int, start: int = 0) -> pa.Table:
    """``n`` stories of ``month``, deliberately out of order (commits must sort)."""
    year, mon = (int(p) for p in month.split("-"))
    rows = [
        record(datetime(year, mon, 1 + i % 27, 8 + i % 12, tzinfo=SP), start + i) for i in range(n)
    ]
    return pa.Table.from_pylist(rows[::-1], schema=HF_SCHEMA)


def sorted_rows(table: pa.Table) -> list[dict[str, object]]:
    return table.sort_by([("published_at", "ascending"), ("unique_id", "ascending")]).to_pylist()


def with_column(table: pa.Table, name: str, column: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


# -- backends -------------------------------------------------------------------------------
@pytest.fixture(params=["local", "hub"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> DatasetRepo:
    """An empty repo of each backend."""
    if request.param == "local":
        return LocalDatasetRepo(tmp_path / "govbrnews")
    endpoint = request.getfixturevalue("hub_server")
    return HubDatasetRepo(
        f"test-org/govbrnews-{uuid.uuid4().hex[:8]}",
        token=TOKEN,
        endpoint=endpoint,
        cache_dir=tmp_path / "hf-cache",
    )


@pytest.fixture
def hub_repo(hub_test_server: _hub.HubTestServer, tmp_path: Path) -> HubDatasetRepo:
    return HubDatasetRepo(
        f"test-org/govbrnews-{uuid.uuid4().hex[:8]}",
        token=TOKEN,
        endpoint=hub_test_server.url,
        cache_dir=tmp_path / "hf-cache",
    )


@pytest.fixture
def local_repo(tmp_path: Path) -> LocalDatasetRepo:
    return LocalDatasetRepo(tmp_path / "govbrnews")


def read_card(repo: DatasetRepo) -> str:
    head = repo.head()
    assert head is not None
    if isinstance(repo, LocalDatasetRepo):
        return (repo.root / "README.md").read_text()
    assert isinstance(repo, HubDatasetRepo)
    path = hf_hub_download(
        repo.repo_id,
        "README.md",
        repo_type="dataset",
        revision=head,
        endpoint=repo.endpoint,
        cache_dir=repo.cache_dir,
    )
    return Path(path).read_text()


def front_matter(card: str) -> dict[str, object]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---", 2)[1])


# -- the contract, both backends ------------------------------------------------------------
def test_empty_repo(repo: DatasetRepo) -> None:
    assert repo.head() is None
    assert repo.list_shards() == []
    assert repo.log() == []
    assert repo.row_count() == 0
    empty = repo.read_shard("2024-11")
    assert empty.num_rows == 0
    assert empty.schema.equals(HF_SCHEMA, check_metadata=True)
    with pytest.raises(ShardNotFoundError):
        repo.download_shard("2024-11")


def test_commit_several_months_and_read_back(repo: DatasetRepo) -> None:
    # 2024-12-01 01:30 UTC is still November in São Paulo: it belongs to the 2024-11 shard.
    boundary = record(datetime(2024, 12, 1, 1, 30, tzinfo=UTC), 999)
    november = pa.concat_tables(
        [month_table("2024-11", 5), pa.Table.from_pylist([boundary], schema=HF_SCHEMA)]
    )
    tables = {"2024-11": november, "2024-12": month_table("2024-12", 7, 100)}
    tables["2025-01"] = month_table("2025-01", 3, 200)

    info = repo.commit(tables, message="Add three months")

    assert info.added == ("2024-11", "2024-12", "2025-01")
    assert info.deleted == ()
    assert info.message == "Add three months"
    assert repo.head() == info.revision
    assert len(info.revision) == 40
    assert repo.list_shards() == ["2024-11", "2024-12", "2025-01"]
    assert repo.row_count() == 16
    for month, table in tables.items():
        back = repo.read_shard(month)
        assert back.schema.equals(HF_SCHEMA, check_metadata=True)
        assert back.schema.field("published_at").type == pa.timestamp("us", tz=TIMEZONE)
        assert back.schema.field("tags").type == pa.list_(pa.string())
        assert back.to_pylist() == sorted_rows(table)  # sorted by published_at, unique_id
    nov = repo.read_shard("2024-11").to_pylist()
    assert nov[-1]["unique_id"] == boundary["unique_id"]
    assert nov[-1]["published_at"] == datetime(2024, 11, 30, 22, 30, tzinfo=SP)
    assert nov[-1]["published_at"].tzinfo is not None
    # download_shard gives a real Parquet file for streaming readers
    path = repo.download_shard("2024-12")
    parquet = pq.ParquetFile(path)
    assert parquet.metadata.num_rows == 7
    assert parquet.schema_arrow.field("published_at").type == pa.timestamp("us", tz=TIMEZONE)
    assert pl.scan_parquet(path).select(pl.len()).collect().item() == 7


def test_replace_delete_history_and_old_revisions(repo: DatasetRepo) -> None:
    first = repo.commit(
        {m: month_table(m, 4, i * 10) for i, m in enumerate(["2024-10", "2024-11", "2024-12"])},
        message="Initial load",
    )
    new_december = month_table("2024-12", 6, 500)
    second = repo.commit(
        {"2024-12": new_december},
        delete=["2024-11", "2023-01"],  # 2023-01 is absent: ignored
        message="Rewrite December, drop November",
    )

    assert second.added == ("2024-12",)
    assert second.deleted == ("2024-11",)
    assert repo.head() == second.revision
    assert repo.list_shards() == ["2024-10", "2024-12"]
    assert repo.read_shard("2024-11").num_rows == 0
    assert repo.read_shard("2024-12").to_pylist() == sorted_rows(new_december)
    assert repo.row_count() == 10

    # the old revision is intact
    assert repo.list_shards(first.revision) == ["2024-10", "2024-11", "2024-12"]
    assert repo.read_shard("2024-11", revision=first.revision).num_rows == 4
    assert repo.read_shard("2024-12", revision=first.revision).to_pylist() == sorted_rows(
        month_table("2024-12", 4, 20)
    )
    assert repo.row_count(first.revision) == 12
    assert pq.ParquetFile(repo.download_shard("2024-11", first.revision)).metadata.num_rows == 4

    log = repo.log()
    assert [c.revision for c in log[:2]] == [second.revision, first.revision]
    assert [c.message for c in log[:2]] == [second.message, first.message]
    assert log[0].added == ("2024-12",) and log[0].deleted == ("2024-11",)
    assert log[1].added == ("2024-10", "2024-11", "2024-12")
    assert all(c.at.tzinfo is not None for c in log)
    with pytest.raises(RevisionNotFoundError):
        repo.list_shards("f" * 40)


def test_row_count_reads_only_parquet_footers(
    repo: DatasetRepo, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    repo.commit(
        {"2024-11": month_table("2024-11", 9), "2024-12": month_table("2024-12", 2)}, message="x"
    )

    def no_data_reads(*args: object, **kwargs: object) -> None:
        raise AssertionError("row_count must not read shard data")

    monkeypatch.setattr(dr, "_read_parquet", no_data_reads)
    if isinstance(repo, HubDatasetRepo):
        server: _hub.HubTestServer = request.getfixturevalue("hub_test_server")
        seen = len(server.requests)
        assert repo.row_count() == 11
        reads = [r for r in server.requests[seen:] if r.kind == "resolve"]
        assert reads and all(r.method == "GET" and r.range for r in reads)
    else:
        assert repo.row_count() == 11


class LazyMonths(Mapping[str, pa.Table]):
    """Builds each month's table on access and records which built tables are still alive."""

    def __init__(self, months: dict[str, int]) -> None:
        self.months = months
        self.built: list[weakref.ref[pa.Table]] = []
        self.alive_at_access: list[int] = []

    def __getitem__(self, month: str) -> pa.Table:
        self.alive_at_access.append(sum(ref() is not None for ref in self.built))
        table = month_table(month, self.months[month])
        self.built.append(weakref.ref(table))
        return table

    def __iter__(self) -> Iterator[str]:
        return iter(self.months)

    def __len__(self) -> int:
        return len(self.months)


def test_commit_holds_one_month_in_memory_at_a_time(repo: DatasetRepo) -> None:
    lazy = LazyMonths({"2024-10": 3, "2024-11": 4, "2024-12": 5})
    repo.commit(lazy, message="streamed")
    assert lazy.alive_at_access == [0, 0, 0]  # the previous month was released first
    assert repo.row_count() == 12


def test_parent_revision_conflict(repo: DatasetRepo) -> None:
    with pytest.raises(ConflictError):
        repo.commit({"2024-11": month_table("2024-11", 1)}, message="x", parent_revision="0" * 40)
    assert repo.head() is None

    first = repo.commit({"2024-11": month_table("2024-11", 2)}, message="first")
    second = repo.commit(
        {"2024-12": month_table("2024-12", 2)}, message="second", parent_revision=first.revision
    )
    with pytest.raises(ConflictError):
        repo.commit(
            {"2025-01": month_table("2025-01", 2)}, message="stale", parent_revision=first.revision
        )
    assert repo.head() == second.revision
    assert repo.list_shards() == ["2024-11", "2024-12"]


def _iso_strings(table: pa.Table) -> pa.Table:
    iso = pc.strftime(table["published_at"], format="%Y-%m-%dT%H:%M:%S%z")
    return with_column(table, "published_at", iso)


def _naive(table: pa.Table) -> pa.Table:
    return with_column(table, "published_at", table["published_at"].cast(pa.timestamp("us")))


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (_iso_strings, "ISO-string timestamps"),
        (lambda t: t.drop_columns(["title"]), r"missing columns \['title'\]"),
        (_naive, "timezone-naive"),
        (lambda t: t.append_column("extra", pa.array(["x"] * t.num_rows)), "unexpected columns"),
    ],
    ids=["iso-strings", "missing-column", "naive-timestamps", "extra-column"],
)
def test_invalid_table_refused_and_nothing_committed(
    repo: DatasetRepo, corrupt: object, match: str
) -> None:
    first = repo.commit({"2024-11": month_table("2024-11", 3)}, message="good")
    bad = corrupt(month_table("2024-12", 3))  # type: ignore[operator]
    with pytest.raises(SchemaError, match=match):
        repo.commit(
            {"2024-10": month_table("2024-10", 2), "2024-12": bad},
            message="bad",
            delete=["2024-11"],
        )
    assert repo.head() == first.revision
    assert repo.list_shards() == ["2024-11"]
    assert repo.read_shard("2024-10").num_rows == 0
    assert repo.log()[0].revision == first.revision


def test_rows_outside_their_month_are_refused(repo: DatasetRepo) -> None:
    with pytest.raises(SchemaError, match=r"other months \['2024-12'\]"):
        repo.commit({"2024-11": month_table("2024-12", 2)}, message="misfiled")
    assert repo.head() is None


def test_dataset_card_declares_files_and_no_split_sizes(repo: DatasetRepo) -> None:
    repo.commit(
        {"2024-11": month_table("2024-11", 2), "2024-12": month_table("2024-12", 2)}, message="x"
    )
    card = read_card(repo)
    meta = front_matter(card)
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
    ]
    assert meta["language"] == ["pt"]
    assert meta["license"]
    assert meta["task_categories"]
    assert "dataset_info" not in meta
    for stale in ("num_examples", "num_bytes", "dataset_size", "download_size", "splits:"):
        assert stale not in card
    for field in HF_SCHEMA:
        assert f"`{field.name}`" in card
    assert f"timestamp[us, tz={TIMEZONE}]" in card
    assert "`list<string>`" in card
    assert "2024-11 to 2024-12" in card

    repo.commit({}, delete=["2024-11"], message="drop November")
    assert "1 monthly shard(s), 2024-12 to 2024-12" in read_card(repo)


def test_unchanged_commit_makes_no_revision(repo: DatasetRepo) -> None:
    table = month_table("2024-11", 4)
    first = repo.commit({"2024-11": table}, message="first")
    again = repo.commit({"2024-11": table.select(list(reversed(HF_COLUMNS)))}, message="again")
    assert again.revision == first.revision
    assert repo.head() == first.revision
    assert repo.log()[0].message == "first"


def test_commit_arguments_are_checked(repo: DatasetRepo) -> None:
    with pytest.raises(ValueError, match="both written and deleted"):
        repo.commit({"2024-11": month_table("2024-11", 1)}, message="x", delete=["2024-11"])
    with pytest.raises(ValueError, match="not a month"):
        repo.commit({"2024-13": month_table("2024-11", 1)}, message="x")
    with pytest.raises(ValueError, match="message"):
        repo.commit({"2024-11": month_table("2024-11", 1)}, message="  ")
    assert repo.head() is None


# -- pure helpers ---------------------------------------------------------------------------
def test_validate_table_applies_safe_casts() -> None:
    table = month_table("2024-11", 5)
    loose = pa.table(
        {
            # reordered, other string/timestamp/list flavours, an all-null column
            "title": table["title"].cast(pa.large_string()),
            **{n: table[n] for n in HF_COLUMNS if n not in {"title", "published_at", "tags"}},
            "published_at": table["published_at"].cast(pa.timestamp("ns", tz="UTC")),
            "tags": table["tags"].cast(pa.large_list(pa.large_string())),
        }
    )
    loose = with_column(loose, "agency", loose["agency"].dictionary_encode())
    loose = with_column(loose, "summary", pa.nulls(loose.num_rows))
    out = validate_table(loose.replace_schema_metadata({"pandas": "{}"}))
    assert out.schema.equals(HF_SCHEMA, check_metadata=True)
    assert out.to_pylist() == table.to_pylist()


@pytest.mark.parametrize(
    ("column", "values", "match"),
    [
        ("published_at", pa.array([1, 2, 3]), "expected timestamp"),
        ("updated_datetime", pa.array(["2024-11-01T10:00:00-03:00"] * 3), "ISO-string"),
        ("title", pa.array(["a", None, "c"]), "null value"),
        ("unique_id", pa.array(["same"] * 3), "duplicate unique_id"),
        ("tags", pa.array(["a", "b", "c"]), "expected list<item: string>"),
    ],
)
def test_validate_table_refusals(column: str, values: pa.Array, match: str) -> None:
    table = with_column(month_table("2024-11", 3), column, values)
    with pytest.raises(SchemaError, match=match):
        validate_table(table)


def test_month_of_uses_sao_paulo_time() -> None:
    assert month_of(datetime(2024, 12, 1, 2, 59, tzinfo=UTC)) == "2024-11"
    assert month_of(datetime(2024, 12, 1, 3, 0, tzinfo=UTC)) == "2024-12"
    assert month_of(date(2025, 1, 31)) == "2025-01"
    assert (
        month_of(pa.scalar(datetime(2025, 2, 1, tzinfo=SP), pa.timestamp("us", tz=TIMEZONE)))
        == "2025-02"
    )
    with pytest.raises(ValueError, match="naive"):
        month_of(datetime(2024, 12, 1))


def test_dataset_card_front_matter_is_valid_yaml() -> None:
    meta = front_matter(dataset_card())
    assert meta["pretty_name"]
    assert "configs" in meta


def test_open_dataset_repo_picks_the_backend(tmp_path: Path) -> None:
    local = open_dataset_repo(Settings(bi_platform_home=tmp_path))
    assert isinstance(local, LocalDatasetRepo)
    assert local.root == tmp_path.absolute() / "hf" / "govbrnews"
    hub = open_dataset_repo(
        Settings(
            bi_platform_home=tmp_path,
            hf_repo_id="org/govbrnews",
            hf_token="hf_secret_value",
            hf_endpoint="http://127.0.0.1:9",
        )
    )
    assert isinstance(hub, HubDatasetRepo)
    assert (hub.repo_id, hub.endpoint) == ("org/govbrnews", "http://127.0.0.1:9")
    assert hub.cache_dir == tmp_path.absolute() / "hf" / "cache"
    assert "hf_secret_value" not in repr(hub) and "hf_secret_value" not in str(vars(hub))


# -- local backend --------------------------------------------------------------------------
def test_local_layout_working_copy_and_store(local_repo: LocalDatasetRepo) -> None:
    first = local_repo.commit(
        {"2024-11": month_table("2024-11", 3), "2024-12": month_table("2024-12", 2)}, message="a"
    )
    root = local_repo.root
    assert sorted(p.name for p in (root / "data").iterdir()) == [
        "2024-11.parquet",
        "2024-12.parquet",
    ]
    assert (root / ".repo" / "HEAD").read_text().strip() == first.revision
    assert (root / ".repo" / "commits" / f"{first.revision}.json").is_file()
    obj = local_repo.download_shard("2024-11")
    assert obj.is_relative_to(root / ".repo" / "objects")
    assert (root / "data" / "2024-11.parquet").samefile(obj)
    assert not obj.stat().st_mode & 0o222  # objects are read-only

    second = local_repo.commit({}, delete=["2024-11"], message="b")
    assert not (root / "data" / "2024-11.parquet").exists()
    assert (root / ".repo" / "WORKTREE").read_text().strip() == second.revision
    # a streaming reader over the working copy sees the head, with real tz-aware timestamps
    frame = pl.scan_parquet(root / "data" / "*.parquet").collect()
    assert frame.height == 2
    assert frame.schema["published_at"] == pl.Datetime("us", TIMEZONE)
    # the old revision stays readable from the store
    assert local_repo.read_shard("2024-11", revision=first.revision).num_rows == 3


def test_local_crash_before_head_swap_leaves_head_intact(
    local_repo: LocalDatasetRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = local_repo.commit({"2024-11": month_table("2024-11", 3)}, message="good")
    shown = (local_repo.root / "data" / "2024-11.parquet").read_bytes()

    def crash(revision: str) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(local_repo, "_before_head_swap", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        local_repo.commit(
            {"2024-11": month_table("2024-11", 5, 50), "2024-12": month_table("2024-12", 1)},
            message="lost",
        )
    monkeypatch.undo()

    reopened = LocalDatasetRepo(local_repo.root)
    assert reopened.head() == first.revision
    assert reopened.list_shards() == ["2024-11"]
    assert reopened.read_shard("2024-11").num_rows == 3
    assert reopened.row_count() == 3
    assert [c.revision for c in reopened.log()] == [first.revision]
    assert (local_repo.root / "data" / "2024-11.parquet").read_bytes() == shown
    assert not (local_repo.root / "data" / "2024-12.parquet").exists()
    assert not (local_repo.root / ".repo" / "tmp").exists() or not any(
        (local_repo.root / ".repo" / "tmp").iterdir()
    )

    # the repo keeps working; gc removes what the crashed commit left in the store
    second = reopened.commit({"2024-12": month_table("2024-12", 1)}, message="next")
    assert reopened.log()[1].revision == first.revision
    assert reopened.gc() >= 2  # the orphan manifest and the orphan November object
    assert reopened.read_shard("2024-11", revision=first.revision).num_rows == 3
    assert reopened.head() == second.revision


def test_local_crash_after_head_swap_is_repaired(
    local_repo: LocalDatasetRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = local_repo.commit({"2024-11": month_table("2024-11", 3)}, message="a")
    assert local_repo.published_differences() == []
    original = local_repo._sync_worktree

    def crash(revision: str) -> list[str]:
        if revision == first.revision:  # the heal before the commit: nothing to do
            return original(revision)
        raise RuntimeError("crash while updating the working copy")

    monkeypatch.setattr(local_repo, "_sync_worktree", crash)
    with pytest.raises(RuntimeError):
        local_repo.commit({"2024-12": month_table("2024-12", 2)}, message="b")
    monkeypatch.undo()

    reopened = LocalDatasetRepo(local_repo.root)
    assert reopened.list_shards() == ["2024-11", "2024-12"]  # the commit point was passed
    assert not (local_repo.root / "data" / "2024-12.parquet").exists()  # stale working copy
    # what users read is not HEAD: said file by file (the card too: its coverage changed)
    diffs = {d.path: d.problem for d in reopened.published_differences()}
    assert set(diffs) == {"README.md", "data/2024-12.parquet"}
    assert "missing from the working copy" in diffs["data/2024-12.parquet"]
    assert reopened.published().data_files == ("data/2024-11.parquet",)

    assert sorted(reopened.sync_working_copy()) == ["README.md", "data/2024-12.parquet"]
    assert reopened.published_differences() == []
    assert reopened.sync_working_copy() == []  # idempotent
    reopened.commit({"2025-01": month_table("2025-01", 1)}, message="c")
    names = sorted(p.name for p in (local_repo.root / "data").iterdir())
    assert names == ["2024-11.parquet", "2024-12.parquet", "2025-01.parquet"]


def test_local_commit_heals_a_tampered_working_copy(local_repo: LocalDatasetRepo) -> None:
    local_repo.commit(
        {"2024-11": month_table("2024-11", 3), "2024-12": month_table("2024-12", 2)}, message="a"
    )
    root = local_repo.root
    (root / "data" / "2024-11.parquet").unlink()
    pq.write_table(month_table("2024-12", 1, 90), root / "data" / "2024-12.parquet.new")
    (root / "data" / "2024-12.parquet").unlink()
    (root / "data" / "2024-12.parquet.new").rename(root / "data" / "2024-12.parquet")
    pq.write_table(month_table("2025-01", 1), root / "data" / "stray.parquet")

    diffs = {d.path: d.problem for d in local_repo.published_differences()}
    assert set(diffs) == {"data/2024-11.parquet", "data/2024-12.parquet", "data/stray.parquet"}
    assert "content differs" in diffs["data/2024-12.parquet"]
    assert "not in HEAD" in diffs["data/stray.parquet"]
    assert [d.month for d in local_repo.published_differences()] == ["2024-11", "2024-12", None]

    local_repo.commit({"2025-02": month_table("2025-02", 1)}, message="b")  # heals first
    assert local_repo.published_differences() == []
    assert local_repo.published().data_files == (
        "data/2024-11.parquet",
        "data/2024-12.parquet",
        "data/2025-02.parquet",
    )


def test_local_gc_keeps_recent_revisions(local_repo: LocalDatasetRepo) -> None:
    first = local_repo.commit({"2024-11": month_table("2024-11", 3)}, message="a")
    local_repo.commit({"2024-11": month_table("2024-11", 4, 10)}, message="b")
    assert local_repo.gc(keep=1) >= 1
    assert local_repo.read_shard("2024-11").num_rows == 4
    assert [c.message for c in local_repo.log()] == ["b", "a"]
    with pytest.raises(RevisionNotFoundError, match="pruned"):
        local_repo.read_shard("2024-11", revision=first.revision)


# -- Hub backend ----------------------------------------------------------------------------
def _error_texts(exc: BaseException) -> str:
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen), *traceback.format_exception(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def test_hub_failed_commit_raises_and_leaves_head(
    hub_repo: HubDatasetRepo, hub_test_server: _hub.HubTestServer
) -> None:
    first = hub_repo.commit({"2024-11": month_table("2024-11", 3)}, message="good")
    hub_test_server.fail_next("commit", status=500)
    with pytest.raises(HubError) as failure:
        hub_repo.commit({"2024-12": month_table("2024-12", 2)}, message="fails")
    assert failure.value.status_code == 500
    assert TOKEN not in _error_texts(failure.value)
    assert hub_repo.head() == first.revision
    assert hub_test_server.head_of(hub_repo.repo_id) == first.revision
    assert hub_repo.list_shards() == ["2024-11"]
    # the same commit goes through once the server is back
    retry = hub_repo.commit({"2024-12": month_table("2024-12", 2)}, message="retry")
    assert hub_repo.list_shards() == ["2024-11", "2024-12"]
    assert retry.revision == hub_test_server.head_of(hub_repo.repo_id)


def test_hub_token_is_a_bearer_header_and_never_leaks(
    hub_repo: HubDatasetRepo,
    hub_test_server: _hub.HubTestServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = len(hub_test_server.requests)
    hub_repo.commit({"2024-11": month_table("2024-11", 3)}, message="auth")
    requests = hub_test_server.requests[seen:]
    writes = [r for r in requests if r.kind in {"create", "preupload", "lfs-batch", "commit"}]
    assert {r.kind for r in writes} == {"create", "preupload", "lfs-batch", "commit"}
    assert all(r.authorization == f"Bearer {TOKEN}" for r in writes)
    # LFS content goes to the (presigned) storage URL without the token
    assert all(r.authorization is None for r in requests if r.kind == "lfs-upload")
    assert TOKEN not in repr(hub_repo)
    assert TOKEN not in caplog.text

    intruder_token = "hf_WRONG_TOKEN_abcdefghijklmnopqrstuvwxyz012345"
    intruder = HubDatasetRepo(
        hub_repo.repo_id,
        token=intruder_token,
        endpoint=hub_test_server.url,
        cache_dir=tmp_path / "other",
    )
    with pytest.raises(HubError) as refused:
        intruder.commit({"2024-12": month_table("2024-12", 1)}, message="no")
    assert refused.value.status_code == 401
    assert intruder_token not in _error_texts(refused.value)
    assert intruder_token not in caplog.text
    assert hub_repo.list_shards() == ["2024-11"]


def test_hub_shards_are_lfs_files_and_the_card_is_regular(
    hub_repo: HubDatasetRepo, hub_test_server: _hub.HubTestServer
) -> None:
    info = hub_repo.commit({"2024-11": month_table("2024-11", 3)}, message="lfs")
    repo = hub_test_server.repos[("dataset", hub_repo.repo_id)]
    files = repo.commits[info.revision].files
    assert files["data/2024-11.parquet"].lfs_sha256 is not None
    assert files["README.md"].content is not None
    assert set(hub_test_server.client_hosts) == {"127.0.0.1"}


def test_hub_conflict_detected_by_the_server(
    hub_repo: HubDatasetRepo, hub_test_server: _hub.HubTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = hub_repo.commit({"2024-11": month_table("2024-11", 2)}, message="first")
    other = HubDatasetRepo(hub_repo.repo_id, token=TOKEN, endpoint=hub_test_server.url)
    second = other.commit({"2024-12": month_table("2024-12", 2)}, message="other writer")
    # our writer read the head just before the other one committed
    monkeypatch.setattr(hub_repo, "head", lambda: first.revision)
    with pytest.raises(ConflictError):
        hub_repo.commit({"2025-01": month_table("2025-01", 2)}, message="late")
    assert hub_test_server.head_of(hub_repo.repo_id) == second.revision


def test_hub_refuses_to_read_a_legacy_iso_string_shard(
    hub_repo: HubDatasetRepo, hub_test_server: _hub.HubTestServer, tmp_path: Path
) -> None:
    hub_repo.commit({"2024-11": month_table("2024-11", 2)}, message="good")
    legacy = tmp_path / "legacy.parquet"
    pq.write_table(_iso_strings(month_table("2024-12", 2)), legacy)
    api = HfApi(endpoint=hub_test_server.url, token=TOKEN)
    api.create_commit(
        hub_repo.repo_id,
        [CommitOperationAdd("data/2024-12.parquet", str(legacy))],
        commit_message="legacy upload",
        repo_type="dataset",
    )
    assert hub_repo.list_shards() == ["2024-11", "2024-12"]
    with pytest.raises(SchemaError, match="ISO-string"):
        hub_repo.read_shard("2024-12")


# -- what users read, verify before the commit, checkout (both backends) ------------------------
def test_commit_verify_sees_the_staged_files_and_can_refuse(repo: DatasetRepo) -> None:
    first = repo.commit({"2024-11": month_table("2024-11", 3)}, message="first")
    seen: dict[str, int] = {}

    def refuse(staged: Mapping[str, Path]) -> None:
        seen.update({m: pq.read_metadata(p).num_rows for m, p in staged.items()})
        raise RuntimeError("not this one")

    with pytest.raises(RuntimeError, match="not this one"):
        repo.commit(
            {"2024-11": month_table("2024-11", 4, 10), "2024-12": month_table("2024-12", 2)},
            message="refused",
            verify=refuse,
        )
    assert seen == {"2024-11": 4, "2024-12": 2}  # the exact files about to be committed
    assert repo.head() == first.revision and repo.list_shards() == ["2024-11"]
    assert repo.log()[0].revision == first.revision
    assert repo.published_differences() == []

    accepted = repo.commit(
        {"2024-12": month_table("2024-12", 2)}, message="ok", verify=lambda staged: None
    )
    assert repo.head() == accepted.revision and repo.list_shards() == ["2024-11", "2024-12"]


def test_published_files_resolve_the_card_and_checkout_writes_any_revision(
    repo: DatasetRepo, tmp_path: Path
) -> None:
    assert repo.published().data_files == () and repo.published_differences() == []
    with pytest.raises(RevisionNotFoundError):
        repo.resolve_revision()
    first = repo.commit(
        {"2024-11": month_table("2024-11", 3), "2024-12": month_table("2024-12", 2)},
        message="a",
    )
    second = repo.commit(
        {"2024-12": month_table("2024-12", 4, 20)}, delete=["2024-11"], message="b"
    )

    published = repo.published()
    assert published.revision == second.revision
    assert published.patterns == ("data/*.parquet",) and published.problems == ()
    assert published.data_files == ("data/2024-12.parquet",)
    assert published.by_key() == {"2024-12": "data/2024-12.parquet"}
    assert pq.read_metadata(published.path("data/2024-12.parquet")).num_rows == 4
    assert published.card is not None and published.card.startswith("---\n")
    assert repo.published_differences() == []

    assert repo.resolve_revision() == repo.resolve_revision("main") == second.revision
    assert repo.resolve_revision(first.revision) == first.revision
    assert {"README.md", "data/2024-11.parquet", "data/2024-12.parquet"} <= set(
        repo.list_files(first.revision)
    )
    with pytest.raises(dr.RepoFileNotFoundError):
        repo.download_file("data/2024-11.parquet", second.revision)

    out = repo.checkout(tmp_path / "old", first.revision)
    assert out.revision == first.revision and out.directory == tmp_path / "old"
    names = sorted(
        p.relative_to(out.directory).as_posix() for p in out.directory.rglob("*") if p.is_file()
    )
    assert [n for n in names if not n.startswith(".")] == [
        "README.md",
        "data/2024-11.parquet",
        "data/2024-12.parquet",
    ]
    assert list(out.files) == sorted(names)
    old = pq.ParquetFile(out.directory / "data" / "2024-12.parquet").read()
    assert sorted_rows(old) == sorted_rows(month_table("2024-12", 2))
    assert not list(tmp_path.glob(".*.checkout"))  # staging renamed into place
    with pytest.raises(FileExistsError, match="not an empty directory"):
        repo.checkout(out.directory)
    (tmp_path / "empty").mkdir()
    assert repo.checkout(tmp_path / "empty").revision == second.revision


def test_card_data_files_and_their_matching() -> None:
    card = dataset_card(["2024-11"])
    assert dr.card_data_files(card) == (["data/*.parquet"], [])
    assert dr.card_data_files(None)[1] == ["no README.md (dataset card)"]
    assert "no YAML front matter" in dr.card_data_files("# just a title\n")[1][0]
    assert "declares no configs" in dr.card_data_files("---\nlicense: other\n---\n")[1][0]
    assert "invalid YAML" in dr.card_data_files("---\nconfigs: [\n---\n")[1][0]
    escaping = "---\nconfigs:\n- config_name: x\n  data_files: [../../etc/*, data/*.parquet]\n---\n"
    assert dr.card_data_files(escaping) == (
        ["data/*.parquet"],
        ["README.md: data_files outside the repo: ['../../etc/*']"],
    )
    listed = (
        "---\nconfigs:\n- config_name: a\n  data_files: data/2024-*.parquet\n- config_name: b\n"
    )
    listed += "  data_files:\n  - split: train\n    path: [./x/*.parquet, 'y/**']\n---\n"
    assert dr.card_data_files(listed) == (["data/2024-*.parquet", "x/*.parquet", "y/**"], [])
    paths = [
        "data/2024-11.parquet",
        "data/.2024-12.parquet.abc.tmp",
        "data/sub/2024-10.parquet",
        "data/stray.parquet",
        "README.md",
    ]
    assert dr.match_data_files(["data/*.parquet"], paths) == [
        "data/2024-11.parquet",
        "data/stray.parquet",
    ]
    assert dr.match_data_files(["data/**"], paths) == [
        "data/2024-11.parquet",
        "data/stray.parquet",
        "data/sub/2024-10.parquet",
    ]
    assert dr.data_file_key("data/2024-11.parquet") == "2024-11"
    assert dr.data_file_key("data/stray.parquet") == "data/stray.parquet"


def test_local_working_copy_card_problems_are_differences(local_repo: LocalDatasetRepo) -> None:
    local_repo.commit({"2024-11": month_table("2024-11", 3)}, message="a")
    card = local_repo.root / "README.md"
    card.unlink()  # a hard link to the object: replace it, do not write through it
    card.write_text("# GovBR News\n")
    diffs = {str(d) for d in local_repo.published_differences()}
    assert "README.md: README.md has no YAML front matter" in diffs
    assert any(d.startswith("README.md: content differs from HEAD") for d in diffs)
    assert local_repo.published().data_files == ("data/2024-11.parquet",)  # the fallback
    assert local_repo.sync_working_copy() == ["README.md"]
    assert local_repo.published_differences() == []


def test_local_revision_prefixes(local_repo: LocalDatasetRepo) -> None:
    first = local_repo.commit({"2024-11": month_table("2024-11", 3)}, message="a")
    assert local_repo.resolve_revision(first.revision[:8]) == first.revision
    assert local_repo.resolve_revision(first.revision.upper()) == first.revision
    with pytest.raises(RevisionNotFoundError):
        local_repo.resolve_revision("f" * 40)
    with pytest.raises(RevisionNotFoundError):
        local_repo.resolve_revision("not-a-revision")


def test_hub_published_is_what_the_hub_serves_at_head(
    hub_repo: HubDatasetRepo, hub_test_server: _hub.HubTestServer
) -> None:
    info = hub_repo.commit({"2024-11": month_table("2024-11", 3)}, message="a")
    published = hub_repo.published()
    assert published.revision == info.revision and hub_repo.repo_id in published.where
    assert published.data_files == ("data/2024-11.parquet",)
    assert hub_repo.published_differences() == []
    # someone replaces the card on the Hub with one that declares no data files
    HfApi(endpoint=hub_test_server.url, token=TOKEN).create_commit(
        hub_repo.repo_id,
        [CommitOperationAdd("README.md", b"---\nlicense: other\n---\n# GovBR News\n")],
        commit_message="hand-edited card",
        repo_type="dataset",
    )
    diffs = [str(d) for d in hub_repo.published_differences()]
    assert diffs == ["README.md: README.md declares no configs[].data_files"]
    # the next commit regenerates the card
    hub_repo.commit({"2024-12": month_table("2024-12", 1)}, message="b")
    assert hub_repo.published_differences() == []
    assert hub_repo.published().data_files == ("data/2024-11.parquet", "data/2024-12.parquet")
