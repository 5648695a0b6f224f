"""sync_log against a real PostgreSQL: the helpers, and runs abandoned by killed processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bi_platform.news import hf_sync, sync_log
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.pg_write import write_records
from bi_platform.news.sync_log import (
    ABANDONED_ERROR,
    close_abandoned_logs,
    finish_log,
    start_log,
    succeeded_scopes,
)
from bi_platform_tests.news.pg_support import sample, scalar


def test_sync_log_helpers(conn: psycopg.Connection[Any]) -> None:
    a = start_log(conn, "migration", "rev:2025-01", {"month": "2025-01"})
    b = start_log(conn, "migration", "rev:2025-02")
    c = start_log(conn, "ingest", "inbox x")
    finish_log(conn, a, "success", 10, 9, 1, details={"extra": 1}, revision="rev")
    finish_log(conn, b, "failed", error="boom")
    finish_log(conn, c, "success", 1, 1, 0)
    assert succeeded_scopes(conn, "migration") == {"rev:2025-01"}
    assert succeeded_scopes(conn, "migration", prefix="other:") == set()
    row = conn.execute(
        "SELECT status, rows_in, rows_written, rows_rejected, details, revision, "
        "finished_at >= started_at FROM sync_log WHERE id = %s",
        (a,),
    ).fetchone()
    backend = row[4].pop(sync_log.BACKEND_KEY)  # recorded by start_log
    assert backend["pid"] == conn.info.backend_pid and backend["backend_start"]
    assert row == ("success", 10, 9, 1, {"month": "2025-01", "extra": 1}, "rev", True)
    with pytest.raises(ValueError):
        finish_log(conn, a, "running")
    with pytest.raises(LookupError):
        finish_log(conn, 10**9, "success")


def backend_gone(url: str, pid: int, timeout: float = 10.0) -> bool:
    """Wait until backend ``pid`` has left pg_stat_activity."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if not scalar(
                conn, "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,)
            ):
                return True
            time.sleep(0.05)
    return False


def terminate(url: str, pid: int) -> None:
    """Kill backend ``pid`` (as a crash would) and wait for it to be gone."""
    with psycopg.connect(url, autocommit=True) as other:
        assert scalar(other, "SELECT pg_terminate_backend(%s, 10000)", (pid,)) is True
    assert backend_gone(url, pid)


def log_row(url: str, log_id: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM sync_log WHERE id = %s", (log_id,)).fetchone()
    assert row is not None
    return row


def start_and_die(url: str, operation: str, *, how: str = "terminate") -> tuple[int, int]:
    """A run whose process dies after committing its ``running`` row: (row id, pid)."""
    victim = psycopg.connect(url, autocommit=True)
    log_id = start_log(victim, operation, "scope x", {"month": "2025-01"})
    pid = victim.info.backend_pid
    if how == "terminate":
        terminate(url, pid)
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
    else:  # the client goes away without a word
        victim.close()
        assert backend_gone(url, pid)
    return log_id, pid


@pytest.mark.parametrize("how", ["terminate", "close"])
def test_a_run_whose_process_died_is_closed_when_the_next_run_starts(
    news_db: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    dead, pid = start_and_die(news_db, "hf_sync", how=how)
    before = log_row(news_db, dead)
    assert before["status"] == "running"
    assert before["details"][sync_log.BACKEND_KEY]["pid"] == pid
    assert before["details"][sync_log.BACKEND_KEY]["backend_start"] is not None

    with (
        caplog.at_level(logging.WARNING, logger="bi_platform.news.sync_log"),
        psycopg.connect(news_db) as conn,  # in a transaction, as ingest and migration
    ):
        new = start_log(conn, "ingest", "inbox y", {"backend": "postgres"})
    after = log_row(news_db, dead)
    assert after["status"] == "failed"
    assert after["finished_at"] >= after["started_at"]
    assert after["error"].startswith(ABANDONED_ERROR)
    assert f"pid {pid} started" in after["error"]
    assert after["error"].endswith(f"closed when sync_log row {new} started")
    assert after["details"]["month"] == "2025-01"
    assert after["details"]["abandoned"]["closed_by_row"] == new
    assert "closed 1 abandoned run(s)" in caplog.text and f"{dead} (hf_sync scope x)" in caplog.text

    fresh = log_row(news_db, new)  # the new row is running, with its own backend
    assert fresh["status"] == "running" and fresh["details"]["backend"] == "postgres"
    assert fresh["details"][sync_log.BACKEND_KEY]["pid"] != pid


def test_a_run_whose_backend_lives_is_left_running(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as alive:
        live = start_log(alive, "hf_sync", "2025-01")  # committed: visible to everyone
        with psycopg.connect(news_db) as conn:
            start_log(conn, "ingest", "inbox y")
            assert close_abandoned_logs(conn) == 0
            conn.commit()
        assert log_row(news_db, live)["status"] == "running"
        finish_log(alive, live, "success", 1, 1, 0)  # its owner finishes it normally
    row = log_row(news_db, live)
    assert (row["status"], row["error"]) == ("success", None)


def test_a_backend_started_after_the_transaction_looked_is_alive(news_db: str) -> None:
    """pg_stat_activity is cached per transaction; the closer reads it afresh."""
    with psycopg.connect(news_db) as conn:
        scalar(conn, "SELECT count(*) FROM pg_stat_activity")  # snapshot taken here
        with psycopg.connect(news_db, autocommit=True) as late:
            live = start_log(late, "hf_sync", "2025-02")
            assert close_abandoned_logs(conn) == 0
            start_log(conn, "ingest", "inbox y")
            assert scalar(conn, "SELECT status FROM sync_log WHERE id = %s", (live,)) == "running"


def test_a_live_backend_of_another_role_counts_as_alive(news_db: str) -> None:
    """A role without pg_read_all_stats sees other roles' backend_start as NULL."""
    with psycopg.connect(news_db, autocommit=True) as admin:
        role = f"sync_log_closer_{admin.info.dbname}"
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("GRANT SELECT, UPDATE ON sync_log TO {}").format(sql.Identifier(role))
        )
        try:
            live = start_log(admin, "hf_sync", "2025-04")  # the superuser's session
            with psycopg.connect(news_db, autocommit=True) as other:
                other.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                assert scalar(
                    other,
                    "SELECT backend_start IS NULL FROM pg_stat_activity WHERE pid = %s",
                    (admin.info.backend_pid,),
                )
                assert close_abandoned_logs(other) == 0
            assert log_row(news_db, live)["status"] == "running"
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_reused_pid_does_not_keep_a_dead_run_alive(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as conn:
        log_id = start_log(conn, "hf_sync", "2025-03")
        # as if an earlier backend with this pid had started it
        conn.execute(
            "UPDATE sync_log SET details = jsonb_set(details, '{pg_backend,backend_start}', "
            "to_jsonb(now() - interval '1 day')) WHERE id = %s",
            (log_id,),
        )
        assert close_abandoned_logs(conn) == 1
        assert scalar(conn, "SELECT status FROM sync_log WHERE id = %s", (log_id,)) == "failed"


def test_rows_without_a_recorded_backend_count_as_abandoned(news_db: str) -> None:
    with psycopg.connect(news_db, autocommit=True) as conn:
        old = scalar(
            conn,
            "INSERT INTO sync_log (operation, scope) VALUES ('hf_sync', 'old') RETURNING id",
        )
        assert close_abandoned_logs(conn) == 1
        assert close_abandoned_logs(conn) == 0  # idempotent
        row = log_row(news_db, old)
    assert row["status"] == "failed"
    assert row["error"] == (
        f"{ABANDONED_ERROR} (no PostgreSQL backend recorded); closed by close_abandoned_logs"
    )


def test_deferred_index_rows_are_never_closed(news_db: str) -> None:
    marker, _ = start_and_die(news_db, sync_log.INDEX_OPERATION)
    with psycopg.connect(news_db, autocommit=True) as conn:
        legacy = scalar(
            conn,
            "INSERT INTO sync_log (operation, scope) VALUES (%s, 'news') RETURNING id",
            (sync_log.INDEX_OPERATION,),
        )
        start_log(conn, "ingest", "inbox y")
        assert close_abandoned_logs(conn) == 0
    for log_id in (marker, legacy):
        assert log_row(news_db, log_id)["status"] == "running"


def test_a_failing_cleanup_does_not_fail_the_new_run(
    news_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(news_db) as conn:
        conn.execute(
            "INSERT INTO sync_log (operation, details) "
            'VALUES (\'hf_sync\', \'{"pg_backend": {"pid": "not a pid"}}\')'
        )
        with caplog.at_level(logging.WARNING, logger="bi_platform.news.sync_log"):
            log_id = start_log(conn, "ingest", "inbox y")  # the closer fails on that row
        assert "could not close abandoned runs" in caplog.text
        finish_log(conn, log_id, "success", 1, 1, 0)  # the transaction is still usable
        conn.commit()
    assert log_row(news_db, log_id)["status"] == "success"


def _sync_and_die(url: str, repo_root: str) -> None:
    """In a child process: an HF sync whose process dies (no cleanup) mid-commit."""

    def die(month: str, rows: int) -> None:
        os._exit(3)

    hf_sync.sync_to_hf(url, LocalDatasetRepo(Path(repo_root)), on_month_exported=die)


def test_a_killed_hf_sync_is_closed_by_the_next_sync(news_db: str, tmp_path: Path) -> None:
    with psycopg.connect(news_db) as conn:
        assert write_records(conn, sample(300), source="test").inserted == 300
    root = tmp_path / "dataset"
    child = multiprocessing.get_context("spawn").Process(
        target=_sync_and_die, args=(news_db, str(root))
    )
    child.start()
    child.join(120)
    assert child.exitcode == 3
    with psycopg.connect(news_db) as conn:
        dead, details = conn.execute(
            "SELECT id, details FROM sync_log WHERE operation = %s AND status = 'running'",
            (hf_sync.SYNC_OPERATION,),
        ).fetchone()
    assert backend_gone(news_db, details[sync_log.BACKEND_KEY]["pid"])

    report = hf_sync.sync_to_hf(news_db, LocalDatasetRepo(root))
    assert report.rows_exported == report.rows_marked == 300
    old, new = log_row(news_db, dead), log_row(news_db, report.log_id)
    assert old["status"] == "failed" and old["error"].startswith(ABANDONED_ERROR)
    assert old["error"].endswith(f"closed when sync_log row {report.log_id} started")
    assert new["status"] == "success"
    with psycopg.connect(news_db) as conn:
        assert scalar(conn, "SELECT count(*) FROM sync_log WHERE status = 'running'") == 0
