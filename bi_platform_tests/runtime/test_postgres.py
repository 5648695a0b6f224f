"""The embedded PostgreSQL cluster, against real server binaries."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from bi_platform.runtime.postgres import (
    LocalPostgres,
    PostgresBinariesNotFoundError,
    PostgresRuntimeError,
    apply_build_settings,
    find_pg_binaries,
    local_url,
)
from bi_platform_tests.conftest import bi_platform_cli


def _postmasters(data_dir: Path) -> list[int]:
    """PIDs of postmaster processes serving ``data_dir`` (from /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and str(data_dir).encode() in argv:
            pids.append(int(proc.name))
    return pids


def _expected_owner() -> int:
    return pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()


def test_find_binaries_on_this_machine() -> None:
    binaries = find_pg_binaries()
    for program in ("initdb", "pg_ctl", "postgres"):
        assert os.access(binaries.program(program), os.X_OK)
    assert binaries.version.split(".")[0].isdigit()


def test_missing_binaries_error_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(PostgresBinariesNotFoundError) as excinfo:
        find_pg_binaries(path_env=str(tmp_path), search_roots=[tmp_path])
    message = str(excinfo.value)
    assert "initdb" in message
    assert "apt-get install -y postgresql" in message


def test_explicit_bin_dir_without_binaries_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(PostgresBinariesNotFoundError, match=str(tmp_path)):
        find_pg_binaries(tmp_path)


def test_binaries_found_under_versioned_search_root(tmp_path: Path) -> None:
    real = find_pg_binaries().bin_dir
    for version in ("13", "15"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for program in ("initdb", "pg_ctl", "postgres"):
            (bin_dir / program).symlink_to(real / program)
    found = find_pg_binaries(path_env="", search_roots=[tmp_path])
    assert found.bin_dir == tmp_path / "15" / "bin"


def test_up_status_down_cycle(bi_home: Path) -> None:
    cluster = LocalPostgres(bi_home / "postgres")
    assert cluster.status().initialized is False

    status, started = cluster.up()
    assert started is True
    assert status.running and status.port
    with psycopg.connect(local_url(status.port, "bi_platform")) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert {"bi_platform", "dagster"} <= names
    assert (bi_home / "postgres" / "data").stat().st_uid == _expected_owner()

    assert cluster.down() is True
    stopped = cluster.status()
    assert stopped.initialized and not stopped.running
    assert stopped.port == status.port  # remembered for the next start
    assert _postmasters(cluster.data_dir) == []
    assert cluster.down() is False


def test_second_up_is_a_no_op(bi_home: Path) -> None:
    cluster = LocalPostgres(bi_home / "postgres")
    first, started_first = cluster.up()
    second, started_second = cluster.up()
    assert (started_first, started_second) == (True, False)
    assert second.pid == first.pid and second.port == first.port


def _setting_becomes(url: str, name: str, value: str, timeout: float = 10.0) -> bool:
    """Whether new sessions see ``name = value`` within ``timeout`` (a reload is async)."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as conn:
            current = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,))
            if current.fetchone() == (value,):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_up_applies_the_settings_the_build_offers(bi_home: Path) -> None:
    cluster = LocalPostgres(bi_home / "postgres")
    status, _ = cluster.up()
    url = local_url(status.port, "postgres")
    with psycopg.connect(url, autocommit=True) as conn:
        offered = conn.execute(
            "SELECT enumvals FROM pg_settings WHERE name = 'wal_compression'"
        ).fetchone()
        assert offered is not None and "lz4" in offered[0]  # Debian's server has lz4
    assert _setting_becomes(url, "wal_compression", "lz4")

    # a cluster that lost the setting (or predates it) gets it back at the next up
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM RESET wal_compression")
        conn.execute("SELECT pg_reload_conf()")
    assert _setting_becomes(url, "wal_compression", "pglz")  # postgresql.conf's "on"
    again, started = cluster.up()
    assert not started and again.pid == status.pid
    assert _setting_becomes(url, "wal_compression", "lz4")
    assert apply_build_settings(url) == []  # idempotent


def test_restart_keeps_data(bi_home: Path) -> None:
    cluster = LocalPostgres(bi_home / "postgres")
    status, _ = cluster.up()
    with psycopg.connect(local_url(status.port, "bi_platform")) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    cluster.down()
    status, started = cluster.up()
    assert started
    with psycopg.connect(local_url(status.port, "bi_platform")) as conn:
        assert conn.execute("SELECT id FROM kept").fetchone() == (42,)


def test_concurrent_up_from_two_processes_starts_one_server(bi_home: Path) -> None:
    env = {**os.environ, "BI_PLATFORM_HOME": str(bi_home)}
    procs = [
        subprocess.Popen(
            [bi_platform_cli(), "up", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=180) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    urls = {json.loads(out)["postgres"]["url"] for out, _ in outputs}
    assert len(urls) == 1
    data_dir = bi_home / "postgres" / "data"
    assert len(_postmasters(data_dir)) == 1
    log = (bi_home / "postgres" / "server.log").read_text()
    assert log.count("database system is ready to accept connections") == 1


def _in_child_as(uid: int, gid: int, action: Callable[[], object]) -> object:
    """Run ``action`` in a forked child with ``uid``/``gid`` and return its JSON result.

    Forking (rather than exec-ing the CLI as that user) keeps the already-loaded
    interpreter: a pyenv Python under /root cannot be executed by another user.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            if os.geteuid() != uid:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            payload = json.dumps({"ok": action()})
        except BaseException as exc:
            payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}), 1
        os.write(write_fd, payload.encode())
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        payload = json.loads(pipe.read() or '{"error": "no output"}')
    os.waitpid(pid, 0)
    assert "error" not in payload, payload["error"]
    return payload["ok"]


def test_runs_as_an_unprivileged_user(bi_home: Path) -> None:
    """No runuser for a normal user; as root, this test becomes the `postgres` user."""
    entry = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    os.chown(bi_home, entry.pw_uid, entry.pw_gid)
    cluster = LocalPostgres(bi_home / "postgres")

    def up() -> object:
        assert not LocalPostgres.runs_as_root()
        assert cluster.owner_command(["initdb"]) == ["initdb"]
        status, started = cluster.up()
        return [status.port, started]

    port, started = _in_child_as(entry.pw_uid, entry.pw_gid, up)
    assert started is True
    with psycopg.connect(local_url(port, "bi_platform")) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("bi_platform",)
    assert cluster.data_dir.stat().st_uid == entry.pw_uid
    assert _in_child_as(entry.pw_uid, entry.pw_gid, cluster.down) is True
    assert _postmasters(cluster.data_dir) == []


def test_root_wraps_commands_in_runuser(monkeypatch: pytest.MonkeyPatch, bi_home: Path) -> None:
    cluster = LocalPostgres(bi_home / "postgres", os_user="postgres")
    monkeypatch.setattr(LocalPostgres, "runs_as_root", staticmethod(lambda: True))
    assert cluster.owner_command(["pg_ctl", "status"]) == [
        "runuser",
        "-u",
        "postgres",
        "--",
        "pg_ctl",
        "status",
    ]
    monkeypatch.setattr(LocalPostgres, "runs_as_root", staticmethod(lambda: False))
    assert cluster.owner_command(["pg_ctl", "status"]) == ["pg_ctl", "status"]


def test_root_without_the_os_user_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, bi_home: Path
) -> None:
    monkeypatch.setattr(LocalPostgres, "runs_as_root", staticmethod(lambda: True))
    cluster = LocalPostgres(bi_home / "postgres", os_user="no_such_user_bi_platform")
    with pytest.raises(PostgresRuntimeError, match="no_such_user_bi_platform"):
        cluster.up()
    assert not cluster.initialized


def test_root_refuses_to_open_parents_outside_home(
    monkeypatch: pytest.MonkeyPatch, bi_home: Path
) -> None:
    """A private directory above BI_PLATFORM_HOME is named, never chmod-ed."""
    monkeypatch.setattr(LocalPostgres, "runs_as_root", staticmethod(lambda: True))
    bi_home.chmod(0o711)
    private = bi_home / "private"
    private.mkdir(mode=0o700)
    home = private / "home"
    home.mkdir()
    cluster = LocalPostgres(home / "postgres", os_user="nobody")
    with pytest.raises(PostgresRuntimeError, match=f"cannot enter {private}"):
        cluster.up()
    assert private.stat().st_mode & 0o777 == 0o700


def test_interrupted_initdb_leaves_no_half_cluster(bi_home: Path) -> None:
    """A data dir without PG_VERSION (initdb died) is replaced by a complete one."""
    cluster = LocalPostgres(bi_home / "postgres")
    cluster.data_dir.mkdir(parents=True)
    (cluster.data_dir / "junk").write_text("left by a crash")
    status, started = cluster.up()
    assert started and status.running
    assert not (cluster.data_dir / "junk").exists()
    assert not list(cluster.root.glob("data.init-*"))


def test_cli_reports_missing_binaries(bi_home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BI_PLATFORM_HOME": str(bi_home), "BI_PLATFORM_PG_BIN_DIR": str(tmp_path)}
    result = subprocess.run(
        [bi_platform_cli(), "up"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "apt-get install -y postgresql" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bi_platform.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "status" in result.stdout and "up" in result.stdout
