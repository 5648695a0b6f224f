"""Where the local cluster lives when root runs from a home its OS user cannot reach.

As root, initdb and pg_ctl run as ``postgres``, which cannot enter a clone under
``/root`` (mode 0700): the cluster then lives under ``/var/lib/bi_platform/postgres``.
A non-root user runs the cluster itself, so for it the cluster stays in the home.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bi_platform.runtime import services
from bi_platform.runtime.postgres import (
    HOME_MARKER,
    SHARED_CLUSTERS_DIR,
    LocalPostgres,
    owner_can_traverse,
    prepare_shared_root,
    resolve_cluster_root,
    shared_cluster_root,
)
from bi_platform_tests.conftest import bi_platform_cli

AS_ROOT = os.geteuid() == 0


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BI_PLATFORM_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [bi_platform_cli(), *args], env=env, capture_output=True, text=True, check=False
    )


def _status(home: Path) -> dict:
    result = _cli(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["postgres"]


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A fresh directory of mode 0700, like /root: only its owner may enter it."""
    directory = Path(tempfile.mkdtemp(prefix="bi_private_"))
    directory.chmod(0o700)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def shared_base() -> Iterator[Path]:
    """A stand-in for /var/lib/bi_platform/postgres (not created: its parent is empty)."""
    scratch = Path(tempfile.mkdtemp(prefix="bi_shared_"))
    yield scratch / "bi_platform" / "postgres"
    shutil.rmtree(scratch, ignore_errors=True)


def _fake_initialised(root: Path) -> None:
    """Leave the file :attr:`LocalPostgres.initialized` looks for (no server needed)."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "PG_VERSION").write_text("15\n")


# -- the real CLI -------------------------------------------------------------------------
def test_up_in_a_clone_under_a_private_dir(private_dir: Path) -> None:
    """`git clone ... ~/bi_platform && make run` as root: `bi-platform up` must work."""
    home = private_dir / "clone" / ".bi_platform"
    if AS_ROOT:  # the postgres user cannot enter private_dir
        expected_root = shared_cluster_root(home)
        assert expected_root.parent == SHARED_CLUSTERS_DIR
    else:  # the cluster runs as this user, who owns private_dir
        expected_root = home / "postgres"
    expected_data = expected_root / "data"
    try:
        up = _cli(home, "up")
        assert up.returncode == 0, up.stderr

        report = _status(home)
        assert report["running"] is True and report["mode"] == "local"
        assert report["data_dir"] == str(expected_data)
        if AS_ROOT:
            assert private_dir not in Path(report["data_dir"]).parents
            assert not (home / "postgres").exists()
            assert expected_data.stat().st_uid == pwd.getpwnam("postgres").pw_uid
            assert (expected_root / HOME_MARKER).read_text().strip() == str(home.resolve())
        # nothing outside BI_PLATFORM_HOME was opened up
        assert private_dir.stat().st_mode & 0o777 == 0o700

        env = services.read_services_env(home / "services.env")
        assert env["BI_PLATFORM_DATABASE_URL"] == report["url"]
        with psycopg.connect(report["url"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("bi_platform",)
            conn.execute("CREATE TABLE kept_across_restarts (id int)")
            conn.execute("INSERT INTO kept_across_restarts VALUES (7)")

        line = _cli(home, "status").stdout.strip()
        assert line.startswith("postgres (local): running ")
        assert line.endswith(f"(data {expected_data})")

        down = _cli(home, "down")
        assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
        stopped = _status(home)
        assert stopped["running"] is False
        assert stopped["data_dir"] == str(expected_data)

        again = _cli(home, "up", "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["postgres"]["data_dir"] == str(expected_data)
        report = _status(home)
        assert report["running"] is True and report["data_dir"] == str(expected_data)
        with psycopg.connect(report["url"]) as conn:
            assert conn.execute("SELECT id FROM kept_across_restarts").fetchone() == (7,)
    finally:
        _cli(home, "down")
        cluster = LocalPostgres(expected_root)
        if cluster.initialized:
            cluster.down()  # in case the CLI could not stop it
        if expected_root.parent == SHARED_CLUSTERS_DIR:
            shutil.rmtree(expected_root, ignore_errors=True)


def test_down_and_status_before_any_up_create_nothing(private_dir: Path) -> None:
    home = private_dir / "clone" / ".bi_platform"
    root = shared_cluster_root(home) if AS_ROOT else home / "postgres"
    report = _status(home)
    assert report == {
        "running": False,
        "url": None,
        "dagster_url": None,
        "mode": "local",
        "data_dir": str(root / "data"),
    }
    down = _cli(home, "down")
    assert down.returncode == 0 and "was not running" in down.stdout, down.stderr
    assert not root.exists()


# -- resolve_cluster_root -----------------------------------------------------------------
def test_reachable_home_keeps_its_postgres_dir(bi_home: Path, shared_base: Path) -> None:
    assert resolve_cluster_root(bi_home, "postgres", shared_base=shared_base) == (
        bi_home / "postgres"
    )
    assert not shared_base.parent.exists()  # resolving creates nothing


def test_unreachable_home_uses_the_shared_dir(private_dir: Path, shared_base: Path) -> None:
    home = private_dir / "clone" / ".bi_platform"
    home.mkdir(parents=True)
    root = resolve_cluster_root(home, "postgres", shared_base=shared_base)
    if AS_ROOT:
        digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
        assert root == shared_base / digest
        assert root == shared_cluster_root(home, shared_base)
    else:
        assert root == home / "postgres"
    # stable, and nothing was created or opened up
    assert resolve_cluster_root(home, "postgres", shared_base=shared_base) == root
    assert not shared_base.parent.exists()
    assert private_dir.stat().st_mode & 0o777 == 0o700


def test_relative_and_symlinked_homes_share_one_dir(private_dir: Path, shared_base: Path) -> None:
    home = private_dir / "clone" / ".bi_platform"
    home.mkdir(parents=True)
    link = private_dir / "link"
    link.symlink_to(home)
    assert shared_cluster_root(link, shared_base) == shared_cluster_root(home, shared_base)


def test_initialised_cluster_wins(private_dir: Path, bi_home: Path, shared_base: Path) -> None:
    unreachable = private_dir / "clone" / ".bi_platform"
    unreachable.mkdir(parents=True)
    # a cluster initialised in the home keeps being used even if the home is unreachable
    _fake_initialised(unreachable / "postgres")
    assert resolve_cluster_root(unreachable, "postgres", shared_base=shared_base) == (
        unreachable / "postgres"
    )
    # a cluster initialised in the shared dir keeps being used for a reachable home
    shared = shared_cluster_root(bi_home, shared_base)
    _fake_initialised(shared)
    expected = shared if AS_ROOT else bi_home / "postgres"
    assert resolve_cluster_root(bi_home, "postgres", shared_base=shared_base) == expected
    # both initialised: the home's comes first
    _fake_initialised(bi_home / "postgres")
    assert resolve_cluster_root(bi_home, "postgres", shared_base=shared_base) == (
        bi_home / "postgres"
    )


def test_missing_os_user_keeps_the_home_dir(private_dir: Path, shared_base: Path) -> None:
    """LocalPostgres then reports the missing user; no shared dir is picked for it."""
    home = private_dir / "clone" / ".bi_platform"
    home.mkdir(parents=True)
    root = resolve_cluster_root(home, "no_such_user_bi_platform", shared_base=shared_base)
    assert root == home / "postgres"


# -- the helpers --------------------------------------------------------------------------
def test_owner_can_traverse_follows_the_mode_bits(private_dir: Path) -> None:
    st = private_dir.stat()
    stranger = st.st_uid + 12345
    other_group = st.st_gid + 12345
    assert owner_can_traverse(private_dir, st.st_uid, {other_group})  # its owner
    assert not owner_can_traverse(private_dir, stranger, {other_group})
    assert not owner_can_traverse(private_dir, stranger, {st.st_gid})
    private_dir.chmod(0o701)
    assert owner_can_traverse(private_dir, stranger, {other_group})
    assert not owner_can_traverse(private_dir, stranger, {st.st_gid})  # group class: no g+x
    private_dir.chmod(0o710)
    assert owner_can_traverse(private_dir, stranger, {st.st_gid})
    assert not owner_can_traverse(private_dir, stranger, {other_group})
    private_dir.chmod(0o700)


def test_prepare_shared_root_creates_open_parents(private_dir: Path, shared_base: Path) -> None:
    home = private_dir / "clone" / ".bi_platform"
    root = shared_cluster_root(home, shared_base)
    old_umask = os.umask(0o077)
    try:
        prepare_shared_root(root, home, shared_base=shared_base)
    finally:
        os.umask(old_umask)
    for directory in (shared_base.parent, shared_base):
        assert directory.stat().st_mode & 0o777 == 0o755
        assert directory.stat().st_uid == os.geteuid()
    assert (root / HOME_MARKER).read_text() == f"{home.resolve()}\n"
    # idempotent; a directory outside the shared base is left alone
    prepare_shared_root(root, home, shared_base=shared_base)
    elsewhere = private_dir / "elsewhere" / "postgres"
    prepare_shared_root(elsewhere, home, shared_base=shared_base)
    assert not elsewhere.exists()
