"""What the HF sync publishes, and what users of the dataset read.

* The sync checks the staged shards before the commit (no duplicate unique_id across the
  months written and the rest of the dataset, per-month row counts equal to PG's) and
  refuses to publish otherwise: nothing committed, nothing marked, sync_log ``failed``.
* The gates read what users read: the working copy of the local repo (the files the
  card's ``data_files`` select), and compare it with HEAD.
* Killed at each step (a subprocess SIGKILLed at the crash points of
  :data:`~bi_platform.news.dataset_repo.CRASH_STEPS`), the sync leaves a state the gates
  either accept or reject naming the remedy; the next sync heals it, and then every gate
  passes, PG count == HF count and the ``datasets`` library reads PG's rows from the
  repo directory.
* The repair (a full re-sync) from the CLI (``bi-platform news resync``) and from Dagster
  (``hf_news_sync`` config ``full: true``); ``bi-platform news checkout`` of an old
  revision read back with ``datasets``, offline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bi_platform.cli import main
from bi_platform.news import hf_sync, pg_reference, pg_schema, pg_write
from bi_platform.news.assets import hf_news_sync
from bi_platform.news.checks import HF_GATES, evaluate_hf_gates, news_checks
from bi_platform.news.dataset_repo import (
    CRASH_AT_ENV,
    CRASH_STEPS,
    DatasetRepo,
    month_of,
    validate_table,
)
from bi_platform.news.dataset_repo_hub import HubDatasetRepo
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.records import content_hash
from bi_platform.news.reference_data import load_agencies, load_themes
from bi_platform.news.resources import NewsDatasetRepoResource
from bi_platform.news.sample import generate_news
from bi_platform.resources import PostgresResource
from bi_platform_tests.news import hub_test_server as _hub

# The local Hub imitation's fixture (assigned, not imported, so it registers here).
hub_test_server = _hub.hub_test_server

N_BASE = 1_200
EVERY = 40  # one generated story in EVERY is held back, inserted later (30, many months)
SEED = 23


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated() -> tuple[pa.Table, pa.Table]:
    """(stories loaded first, stories inserted later), generated together."""
    table = generate_news(N_BASE + N_BASE // (EVERY - 1) + 1, seed=SEED)
    held = pa.array([i % EVERY == 0 for i in range(table.num_rows)])
    return table.filter(pc.invert(held)), table.filter(held)


@pytest.fixture
def db(pg_url: str, generated: tuple[pa.Table, pa.Table]) -> str:
    """A migrated database with the reference data and the first stories."""
    pg_schema.migrate(pg_url)
    with psycopg.connect(pg_url) as conn:
        pg_reference.load_reference_data(conn, load_agencies(), load_themes())
        result = pg_write.write_records(conn, generated[0], source="test")
    assert result.inserted == generated[0].num_rows, result
    return pg_url


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """BI_PLATFORM_HOME for the CLI and the Dagster resources (repo: <home>/hf/govbrnews)."""
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def repo(home: Path) -> LocalDatasetRepo:
    return LocalDatasetRepo(home / "hf" / "govbrnews")


# -- helpers ------------------------------------------------------------------------------------
def scalar(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def gates(url: str, repo: DatasetRepo) -> dict[str, dg.AssetCheckResult]:
    with psycopg.connect(url) as conn:
        return evaluate_hf_gates(conn, repo)


def meta(result: dg.AssetCheckResult) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}


def failed(results: dict[str, dg.AssetCheckResult]) -> set[str]:
    return {name for name, r in results.items() if not r.passed}


def assert_failures_name_the_remedy(results: dict[str, dg.AssetCheckResult]) -> None:
    for name in failed(results):
        metadata = meta(results[name])
        assert "bi-platform news resync" in metadata["remedy"], (name, metadata)
        assert metadata["remedy_command"] == "bi-platform news resync"
        assert metadata["remedy_run_config"] == {
            "ops": {"news__hf_news_sync": {"config": {"full": True}}}
        }


def pg_rows(url: str) -> pa.Table:
    """Every row of PG as the export shapes it (HF_SCHEMA), sorted by unique_id."""
    with psycopg.connect(url) as conn:
        months = hf_sync.all_months(conn)
        table = pa.concat_tables([hf_sync.export_month(conn, m) for m in sorted(months)])
    return table.sort_by("unique_id")


def pending(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return hf_sync.pending_months(conn)


def log_rows(url: str) -> list[tuple[int, str, str | None]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, status, error FROM sync_log WHERE operation = 'hf_sync' ORDER BY id"
        ).fetchall()


def insert(url: str, table: pa.Table) -> None:
    with psycopg.connect(url) as conn:
        result = pg_write.write_records(conn, table, source="later batch")
    assert result.inserted == table.num_rows, result


def edit(url: str, unique_id: str, content: str) -> None:
    with psycopg.connect(url) as conn:
        title = conn.execute(
            "SELECT title FROM news WHERE unique_id = %s", (unique_id,)
        ).fetchone()[0]
        conn.execute(
            "UPDATE news SET content = %s, content_hash = %s WHERE unique_id = %s",
            (content, content_hash(title, content), unique_id),
        )


def wait_until_alone(url: str, timeout: float = 30.0) -> None:
    """Wait until no other session is connected to the database (a killed client's
    backend ends once it notices the closed socket, a little after the kill)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            others = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if not others:
                return
            assert time.monotonic() < deadline, f"{others} session(s) still connected"
            time.sleep(0.05)


def offline_env(tmp: Path) -> dict[str, str]:
    """The environment of a `datasets` reader that cannot reach huggingface.co."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf-home"),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # were anything to try, it fails at once
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


_LOAD_WITH_DATASETS = """
import sys

import datasets
import pyarrow.parquet as pq

assert datasets.config.HF_HUB_OFFLINE and datasets.config.HF_DATASETS_OFFLINE
ds = datasets.load_dataset(sys.argv[1], split="train", cache_dir=sys.argv[2])
pq.write_table(ds.data.table, sys.argv[3])
"""


def load_with_datasets(directory: Path, tmp: Path) -> pa.Table:
    """``datasets.load_dataset(directory, split="train")`` in a fresh, offline process
    (the card's data_files decide what is read), as HF_SCHEMA sorted by unique_id."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / "loaded.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_WITH_DATASETS, str(directory), str(tmp / "cache"), str(out)],
        env=offline_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return validate_table(pq.ParquetFile(out).read()).sort_by("unique_id")


def story_moved_to_another_month(url: str) -> tuple[str, str, str]:
    """Move one story's publication time back by 40 days in PG (unique_id kept, as an
    upstream correction would); (unique_id, old month, new month)."""
    with psycopg.connect(url) as conn:
        uid, published = conn.execute(
            "SELECT unique_id, published_at FROM news ORDER BY published_at DESC, unique_id LIMIT 1"
        ).fetchone()
        moved = published - timedelta(days=40)
        conn.execute("UPDATE news SET published_at = %s WHERE unique_id = %s", (moved, uid))
    return uid, month_of(published), month_of(moved)


# -- publish only what passed -------------------------------------------------------------------
def test_a_duplicate_across_months_is_refused_before_publishing(
    db: str, repo: LocalDatasetRepo
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    uid, old_month, new_month = story_moved_to_another_month(db)
    before = pending(db)
    assert before == {new_month: 1}
    shown = {p.name: p.read_bytes() for p in (repo.root / "data").iterdir()}

    with pytest.raises(hf_sync.PublicationRefusedError) as refused:
        hf_sync.sync_to_hf(db, repo)

    assert refused.value.duplicates == {uid: sorted([old_month, new_month])}
    assert refused.value.months == sorted([old_month, new_month])
    message = str(refused.value)
    assert uid in message and old_month in message and new_month in message
    assert "bi-platform news resync" in message and "full: true" in message
    assert repo.head() == first.revision and [c.revision for c in repo.log()] == [first.revision]
    assert {p.name: p.read_bytes() for p in (repo.root / "data").iterdir()} == shown
    assert pending(db) == before  # nothing marked
    (_, status, error) = log_rows(db)[-1]
    assert status == "failed" and "PublicationRefusedError" in error and uid in error
    assert not (repo.root / ".repo" / "tmp").exists() or not any(
        (repo.root / ".repo" / "tmp").iterdir()
    )
    # HF as it was: PG's moved story is not in its new month's shard yet
    assert failed(gates(db, repo)) - {"sample_identical_in_pg_and_hf"} == {
        "pg_count_equals_hf_count"
    }

    # the remedy: a full re-sync rebuilds every month from PG
    repaired = hf_sync.sync_to_hf(db, repo, full=True)
    assert repaired.committed and set(repo.log()[0].added) == {old_month, new_month}
    assert failed(gates(db, repo)) == set()
    assert pending(db) == {}
    assert repo.row_count() == scalar(db, "SELECT count(*) FROM news")


def test_a_shard_short_of_pg_rows_is_refused(
    db: str, repo: LocalDatasetRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    month = first.months[2]
    with psycopg.connect(db) as conn:
        uid = hf_sync.export_month(conn, month)["unique_id"][0].as_py()
    edit(db, uid, "nova redação")
    original = hf_sync._export

    def loses_a_row(conn: psycopg.Connection[Any], m: str) -> tuple[pa.Table, Any]:
        table, keys = original(conn, m)  # e.g. a view whose join drops a row
        return table.slice(1), keys

    monkeypatch.setattr(hf_sync, "_export", loses_a_row)
    with pytest.raises(hf_sync.PublicationRefusedError, match=rf"{month}: pg=(\d+) hf=") as err:
        hf_sync.sync_to_hf(db, repo)
    pg, hf = err.value.count_mismatches[month]
    assert hf == pg - 1 and err.value.duplicates == {}
    assert repo.head() == first.revision and pending(db) == {month: 1}
    assert log_rows(db)[-1][1] == "failed"

    monkeypatch.undo()
    assert hf_sync.sync_to_hf(db, repo).rows_marked == 1
    assert failed(gates(db, repo)) == set()


# -- the gates read what users read -------------------------------------------------------------
def test_gates_read_the_working_copy_and_the_next_sync_heals_it(
    db: str, repo: LocalDatasetRepo, tmp_path: Path
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    assert failed(gates(db, repo)) == set()
    old = tmp_path / "old.parquet"
    month = first.months[1]
    old.write_bytes((repo.root / "data" / f"{month}.parquet").read_bytes())
    second_month = first.months[3]
    with psycopg.connect(db) as conn:
        uid = hf_sync.export_month(conn, month)["unique_id"][0].as_py()
    edit(db, uid, "texto revisto")
    hf_sync.sync_to_hf(db, repo)
    # The working copy goes stale while the object store (HEAD) is right: an older file
    # under one month, another month's file gone. Readers of the store would not notice.
    target = repo.root / "data" / f"{month}.parquet"
    target.unlink()
    target.write_bytes(old.read_bytes())
    (repo.root / "data" / f"{second_month}.parquet").unlink()
    assert repo.read_shard(second_month).num_rows > 0  # HEAD is intact

    results = gates(db, repo)
    assert failed(results) >= {
        "pg_count_equals_hf_count",
        "working_copy_matches_head",
    }
    assert "no_duplicate_unique_id_in_hf" not in failed(results)
    assert_failures_name_the_remedy(results)
    counts = meta(results["pg_count_equals_hf_count"])
    assert counts["months_differing"] == [
        f"{second_month}: pg={repo.read_shard(second_month).num_rows} hf=0"
    ]
    held = set(repo.read_shard(second_month)["unique_id"].to_pylist())
    assert counts["ids_missing_in_hf"] and set(counts["ids_missing_in_hf"]) <= held
    copy = meta(results["working_copy_matches_head"])
    assert copy["months"] == sorted([month, second_month])
    assert any("content differs" in d for d in copy["differences"])
    assert any("missing from the working copy" in d for d in copy["differences"])
    assert str(repo.root) in copy["read_from"]

    report = hf_sync.sync_to_hf(db, repo)  # nothing pending: it only heals
    assert sorted(report.repaired) == sorted(
        [f"data/{month}.parquet", f"data/{second_month}.parquet"]
    )
    assert not report.committed
    assert failed(gates(db, repo)) == set()


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
def test_gates_read_what_the_hub_serves_at_head(
    db: str, hub_test_server: _hub.HubTestServer, tmp_path: Path
) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    hub = HubDatasetRepo(
        "test-org/govbrnews-gates",
        token=_hub.TEST_TOKEN,
        endpoint=hub_test_server.url,
        cache_dir=tmp_path / "hf-cache",
    )
    report = hf_sync.sync_to_hf(db, hub)
    results = gates(db, hub)
    assert failed(results) == set()
    assert "test-org/govbrnews-gates" in meta(results["pg_count_equals_hf_count"])["read_from"]

    # Someone edits the Hub repo by hand: a month removed and the card's data_files gone.
    month = report.months[4]
    HfApi(endpoint=hub_test_server.url, token=_hub.TEST_TOKEN).create_commit(
        hub.repo_id,
        [
            CommitOperationDelete(f"data/{month}.parquet"),
            CommitOperationAdd("README.md", b"---\nlicense: other\n---\n# hand-edited\n"),
        ],
        commit_message="hand edit",
        repo_type="dataset",
    )
    results = gates(db, hub)
    assert {"pg_count_equals_hf_count", "working_copy_matches_head"} <= failed(results)
    assert_failures_name_the_remedy(results)
    assert meta(results["pg_count_equals_hf_count"])["months_differing"][0].startswith(month)
    assert meta(results["working_copy_matches_head"])["differences"] == [
        "README.md: README.md declares no configs[].data_files"
    ]

    repaired = hf_sync.sync_to_hf(db, hub, full=True)  # the remedy
    assert repaired.committed and month in hub.log()[0].added
    assert failed(gates(db, hub)) == set()


# -- killed at each step ------------------------------------------------------------------------
_SYNC_IN_CHILD = """
import logging
import sys

from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.hf_sync import sync_to_hf

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
sync_to_hf(sys.argv[1], LocalDatasetRepo(sys.argv[2]))
"""

#: Gates failing right after a kill at each step, when the killed sync was adding rows:
#: before the commit point HF lacks them; between the commit point and the end of the
#: working copy update, what users read lags HEAD; after it, everything is consistent.
FAILING_AFTER_KILL = {
    "sync:exported": {"pg_count_equals_hf_count"},
    "repo:objects_written": {"pg_count_equals_hf_count"},
    "repo:head_moved": {"pg_count_equals_hf_count", "working_copy_matches_head"},
    "repo:worktree_partial": {"pg_count_equals_hf_count", "working_copy_matches_head"},
    "repo:worktree_updated": set(),
    "sync:committed": set(),
}


def test_every_crash_step_is_covered() -> None:
    assert set(FAILING_AFTER_KILL) == set(CRASH_STEPS)


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_sync_killed_at_each_step_heals_on_the_next_run(
    step: str,
    db: str,
    repo: LocalDatasetRepo,
    generated: tuple[pa.Table, pa.Table],
    tmp_path: Path,
) -> None:
    first = hf_sync.sync_to_hf(db, repo)
    later = generated[1]
    insert(db, later)  # new stories over many months
    edit(db, generated[0]["unique_id"][5].as_py(), "corrigido depois da publicação")
    months = pending(db)
    assert len(months) >= 3

    proc = subprocess.run(
        [sys.executable, "-c", _SYNC_IN_CHILD, db, str(repo.root)],
        env={**os.environ, CRASH_AT_ENV: step},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert f"crash point {step}" in proc.stderr

    # the state the kill left: either consistent, or failing gates naming the remedy
    head_moved = CRASH_STEPS.index(step) >= CRASH_STEPS.index("repo:head_moved")
    assert (repo.head() != first.revision) == head_moved
    assert pending(db) == months  # the killed run marked nothing
    assert log_rows(db)[-1][1] == "running"  # its log row: closed by the next run
    results = gates(db, repo)
    expected = FAILING_AFTER_KILL[step]
    # the random sample fails too when it happens to pick a row HF lacks
    maybe = {"sample_identical_in_pg_and_hf"} if expected else set()
    assert expected <= failed(results) <= expected | maybe, {
        n: meta(r) for n, r in results.items() if not r.passed
    }
    assert_failures_name_the_remedy(results)
    wait_until_alone(db)  # the killed process's backend (holding the sync lock) is gone

    # the next run heals it
    report = hf_sync.sync_to_hf(db, repo)
    assert bool(report.repaired) == (step in ("repo:head_moved", "repo:worktree_partial"))
    assert report.committed == (not head_moved)  # after the commit point: same shards
    assert report.rows_marked == later.num_rows + 1
    assert pending(db) == {}
    assert failed(gates(db, repo)) == set()
    assert repo.published_differences() == []
    count = scalar(db, "SELECT count(*) FROM news")
    assert count == repo.row_count() == N_BASE + later.num_rows
    assert sum(pq.read_metadata(repo.root / p).num_rows for p in repo.published().data_files) == (
        count
    )
    killed = [row for row in log_rows(db) if row[1] != "success"]
    assert len(killed) == 1 and killed[0][1] == "failed" and "abandoned" in killed[0][2]
    # what users of the repo directory read is PostgreSQL
    assert load_with_datasets(repo.root, tmp_path / "datasets").equals(pg_rows(db))


# -- the repair, first class --------------------------------------------------------------------
def test_resync_from_the_cli_repairs_and_reports_the_gates(
    db: str, repo: LocalDatasetRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    hf_sync.sync_to_hf(db, repo)
    uid, _, new_month = story_moved_to_another_month(db)
    with pytest.raises(hf_sync.PublicationRefusedError):
        hf_sync.sync_to_hf(db, repo)

    verify = CliRunner().invoke(main, ["news", "verify"])
    assert verify.exit_code == 1, verify.output  # PG has a row HF lacks in its new month

    result = CliRunner().invoke(main, ["news", "resync", "--no-dagster"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["sync"]["full"] is True
    assert sorted(summary["sync"]["timings"]) == ["check", "commit", "export", "mark"]
    assert set(summary["gates"]) == set(HF_GATES)
    assert all(g["passed"] for g in summary["gates"].values())
    holding = [m for m in repo.list_shards() if uid in repo.read_shard(m)["unique_id"].to_pylist()]
    assert holding == [new_month]
    assert CliRunner().invoke(main, ["news", "verify"]).exit_code == 0


def test_resync_runs_hf_news_sync_with_full_on_the_dagster_instance(
    db: str, repo: LocalDatasetRepo, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", db)
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    hf_sync.sync_to_hf(db, repo)
    story_moved_to_another_month(db)

    result = CliRunner().invoke(main, ["news", "resync"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["success"] and summary["sync"]["full"] is True
    assert {name for name, g in summary["gates"].items() if g["blocking"]} == set(HF_GATES)
    assert all(g["passed"] for g in summary["gates"].values())
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        (record,) = instance.get_run_records()
        assert record.dagster_run.tags["bi_platform/launched_by"] == "bi-platform news resync"
        config = record.dagster_run.run_config["ops"]["news__hf_news_sync"]["config"]
        assert config == {"full": True}
    assert pending(db) == {} and repo.row_count() == scalar(db, "SELECT count(*) FROM news")


def test_hf_news_sync_config_full_and_a_refusal_in_dagster(db: str, repo: LocalDatasetRepo) -> None:
    resources = {
        "postgres": PostgresResource(database_url=db),
        "news_repo": NewsDatasetRepoResource(),
    }
    hf_checks = [c for c in news_checks if hf_news_sync.key in {k.asset_key for k in c.check_keys}]
    first = dg.materialize([hf_news_sync, *hf_checks], resources=resources)
    assert first.success
    uid, old_month, new_month = story_moved_to_another_month(db)

    refused = dg.materialize([hf_news_sync, *hf_checks], resources=resources, raise_on_error=False)
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.is_step_failure]
    error = failure.step_failure_data.user_failure_data
    assert uid in error.description and "bi-platform news resync" in error.description
    failure_meta = {k: v.value for k, v in error.metadata.items()}
    assert failure_meta["duplicated_ids"] == [uid]
    assert failure_meta["months"] == sorted([old_month, new_month])
    assert failure_meta["remedy_run_config"] == {
        "ops": {"news__hf_news_sync": {"config": {"full": True}}}
    }

    repaired = dg.materialize(
        [hf_news_sync, *hf_checks],
        resources=resources,
        run_config={"ops": {"news__hf_news_sync": {"config": {"full": True}}}},
    )
    assert repaired.success
    assert all(e.passed for e in repaired.get_asset_check_evaluations())
    metadata = repaired.asset_materializations_for_node("news__hf_news_sync")[0].metadata
    assert metadata["full"].value is True
    assert "full" in hf_news_sync.op.config_schema.config_type.fields  # in the launchpad


# -- checkout of any revision -------------------------------------------------------------------
def test_checkout_of_an_old_revision_reads_back_with_datasets_offline(
    db: str, repo: LocalDatasetRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    first = hf_sync.sync_to_hf(db, repo)
    with psycopg.connect(db) as conn:
        uid = hf_sync.export_month(conn, first.months[0])["unique_id"][0].as_py()
    edit(db, uid, "versão nova")
    second = hf_sync.sync_to_hf(db, repo)
    assert second.committed

    target = tmp_path / "clone"
    result = CliRunner().invoke(
        main, ["news", "checkout", "--revision", first.revision[:10], str(target)]
    )
    assert result.exit_code == 0, result.output
    assert first.revision in result.output
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == ["README.md", *(f"data/{m}.parquet" for m in first.months)]
    assert all(os.access(target / f, os.W_OK) for f in files)  # a plain, writable copy
    again = CliRunner().invoke(main, ["news", "checkout", str(target)])
    assert again.exit_code == 1 and "not an empty directory" in again.stderr

    loaded = load_with_datasets(target, tmp_path / "datasets")
    expected = pa.concat_tables(
        [repo.read_shard(m, first.revision) for m in repo.list_shards(first.revision)]
    ).sort_by("unique_id")
    assert loaded.equals(expected)
    row = loaded.filter(pc.equal(loaded["unique_id"], uid))
    assert row["content"].to_pylist() != ["versão nova"]  # the old revision, not the head

    head = repo.checkout(tmp_path / "head")
    assert head.revision == second.revision
    assert load_with_datasets(head.directory, tmp_path / "datasets-head").equals(pg_rows(db))
