"""The connection pool under real concurrency: bounded, wait measured, swaps, read-only."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from bi_platform.serving.pool import ConnectionPool, PoolClosedError, PoolTimeoutError
from bi_platform.serving.warehouse import build_warehouse, read_meta
from bi_platform_tests.serving import SmallLake


@pytest.fixture
def warehouse(lake: SmallLake, tmp_path: Path) -> Path:
    target = tmp_path / "bi_warehouse.duckdb"
    build_warehouse(lake.lake_dir, target, "v1")
    return target


def _admmat_rows(con: duckdb.DuckDBPyConnection) -> int:
    ((rows,),) = con.execute("SELECT count(*) FROM admmat").fetchall()
    return int(rows)


def test_pool_never_lends_more_than_its_size_and_measures_waits(warehouse: Path) -> None:
    pool = ConnectionPool(warehouse, size=2, threads=2)
    active = 0
    peak = 0
    lock = threading.Lock()
    waits: list[float] = []

    def work(_: int) -> int:
        nonlocal active, peak
        with pool.acquire(timeout=10) as lease:
            with lock:
                active += 1
                peak = max(peak, active)
                waits.append(lease.wait_seconds)
            rows = _admmat_rows(lease.connection)
            time.sleep(0.15)
            with lock:
                active -= 1
        return rows

    with ThreadPoolExecutor(max_workers=6) as executor:
        rows = list(executor.map(work, range(6)))
    pool.close()
    assert peak == 2
    assert len(set(rows)) == 1 and rows[0] > 0
    # 6 leases of 0.15 s on 2 slots: the last two waited about two rounds
    assert sorted(waits)[-1] >= 0.2
    assert sorted(waits)[0] < 0.05
    stats = pool.stats()
    assert stats.acquired == 6 and stats.timeouts == 0
    assert stats.wait_seconds_max == pytest.approx(max(waits))
    assert stats.wait_seconds_total == pytest.approx(sum(waits))


def test_acquire_times_out_naming_the_pool(warehouse: Path) -> None:
    pool = ConnectionPool(warehouse, size=1)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with pool.acquire():
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(5)
        started = time.perf_counter()
        with (
            pytest.raises(PoolTimeoutError, match=r"pool of 1 for .*bi_warehouse\.duckdb"),
            pool.acquire(timeout=0.2),
        ):
            pass
        assert 0.15 <= time.perf_counter() - started < 2
    finally:
        release.set()
        thread.join()
    assert pool.stats().timeouts == 1
    with pool.acquire(timeout=1) as lease:  # the slot came back
        assert _admmat_rows(lease.connection) > 0
    pool.close()


def test_concurrent_queries_share_the_slots(warehouse: Path) -> None:
    pool = ConnectionPool(warehouse, size=3, threads=2)

    def work(i: int) -> tuple[int, str]:
        with pool.acquire() as lease:
            ((total,),) = lease.connection.execute(
                "SELECT count(*) FROM admmat WHERE UNE = ?", [[261, 2][i % 2]]
            ).fetchall()
            return int(total), lease.data_version

    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(work, range(80)))
    stats = pool.stats()
    pool.close()
    assert {v for _, v in results} == {"v1"}
    assert len({r for r, _ in results[::2]}) == 1 and len({r for r, _ in results[1::2]}) == 1
    assert stats.acquired == 80 and stats.leased == 0 and 1 <= stats.idle <= 3


def test_swap_is_picked_up_while_old_leases_finish_on_the_old_file(
    lake: SmallLake, warehouse: Path
) -> None:
    pool = ConnectionPool(warehouse, size=4)
    assert pool.data_version() == "v1"
    inside = threading.Event()
    swapped = threading.Event()
    seen_by_old: list[str] = []

    def old_reader() -> None:
        with pool.acquire() as lease:
            inside.set()
            assert swapped.wait(10)
            seen_by_old.append(read_meta(lease.connection)[0])
            seen_by_old.append(lease.data_version)

    thread = threading.Thread(target=old_reader)
    thread.start()
    assert inside.wait(10)
    build_warehouse(lake.lake_dir, warehouse, "v2")
    with pool.acquire() as lease:
        assert lease.data_version == "v2"
        assert read_meta(lease.connection)[0] == "v2"
        assert lease.generation == 2
    swapped.set()
    thread.join()
    assert seen_by_old == ["v1", "v1"]
    stats = pool.stats()
    assert stats.generation == 2 and stats.data_version == "v2" and stats.leased == 0
    # once more, with no lease open across the swap
    build_warehouse(lake.lake_dir, warehouse, "v3")
    with pool.acquire() as lease:
        assert (lease.data_version, read_meta(lease.connection)[0]) == ("v3", "v3")
    pool.close()


def test_pooled_connections_are_read_only(warehouse: Path) -> None:
    pool = ConnectionPool(warehouse, size=2)
    with pool.acquire() as lease:
        before = _admmat_rows(lease.connection)
        with pytest.raises(duckdb.Error, match="read-only"):
            lease.connection.execute("DELETE FROM admmat")
        with pytest.raises(duckdb.Error, match="read-only"):
            lease.connection.execute("DROP TABLE warehouse_meta")
        with pytest.raises(duckdb.Error, match="read-only"):
            lease.connection.execute("INSERT INTO admmat SELECT * FROM admmat")
    with pool.acquire() as lease:  # the same slot still works, data intact
        assert _admmat_rows(lease.connection) == before
        assert read_meta(lease.connection)[0] == "v1"
    pool.close()


def test_an_unfetched_result_does_not_poison_the_next_lease(warehouse: Path) -> None:
    pool = ConnectionPool(warehouse, size=1)
    with pool.acquire() as lease:
        lease.connection.execute("SELECT * FROM admmat")  # never fetched
        first = lease.connection
    with pool.acquire() as lease:
        assert lease.connection is first  # the same slot, reset
        assert _admmat_rows(lease.connection) > 0
    pool.close()


def test_missing_file_closed_pool_and_bad_config(tmp_path: Path, warehouse: Path) -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        ConnectionPool(warehouse, size=0)
    missing = ConnectionPool(tmp_path / "absent.duckdb", size=1)
    with pytest.raises(FileNotFoundError, match=r"absent\.duckdb"), missing.acquire(timeout=1):
        pass
    assert missing.stats().leased == 0
    pool = ConnectionPool(warehouse, size=1)
    with pool.acquire() as lease:
        assert _admmat_rows(lease.connection) > 0
    pool.close()
    with pytest.raises(PoolClosedError, match="closed"), pool.acquire(timeout=1):
        pass


def test_current_data_version_is_lock_free_and_never_stale(
    lake: SmallLake, warehouse: Path
) -> None:
    with ConnectionPool(warehouse, size=2) as pool:
        assert pool.current_data_version() is None  # nothing open yet: ask data_version()
        assert pool.data_version() == "v1"
        with pool._lock:  # answered without the pool's lock (the event loop calls it)
            assert pool.current_data_version() == "v1"
        build_warehouse(lake.lake_dir, warehouse, "v2")
        assert pool.current_data_version() is None  # swapped: not "v1" any more
        assert pool.data_version() == "v2"
        assert pool.current_data_version() == "v2"
        with pool.acquire() as lease:
            assert lease.data_version == "v2" and "admmat" in lease.tables
    assert pool.current_data_version() is None  # closed
