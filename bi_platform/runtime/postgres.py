"""An embedded PostgreSQL cluster, normally under ``$BI_PLATFORM_HOME/postgres``.

The cluster is created once with ``initdb`` and started with ``pg_ctl`` on a free
loopback port. Both programs refuse to run as root, so when this process is root they
run as an unprivileged OS user (``runuser -u postgres --``) that owns the data
directory. Every state change happens under a file lock, so two processes calling
:meth:`LocalPostgres.up` at once start one server.

That OS user must be able to enter every directory above the cluster. When root runs
with a ``BI_PLATFORM_HOME`` it cannot reach (a clone under ``/root``, mode 0700), the
cluster lives in ``/var/lib/bi_platform/postgres/<hash of the home path>`` instead:
:func:`resolve_cluster_root` makes that choice, the same way on every call.

Layout::

    postgres/          (or /var/lib/bi_platform/postgres/<hash>/)
      data/            PGDATA (owned by the cluster's OS user, mode 0700)
      server.log       the postmaster's log (pg_ctl -l)
      cluster.json     port, superuser and server version of the last start
      .lock            the file lock
      bi_platform_home the home a shared directory belongs to (shared ones only)

Authentication is ``trust`` and the server listens on 127.0.0.1 only (no Unix socket):
this runtime is for a developer's machine or CI, not a shared host; a shared or
production deployment sets ``DATABASE_URL`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from filelock import FileLock
from psycopg import sql

from bi_platform.lib.files import write_text_atomic

log = logging.getLogger(__name__)

DEFAULT_DATABASES = ("bi_platform", "dagster")
SUPERUSER = "postgres"
DEFAULT_SEARCH_ROOTS = (Path("/usr/lib/postgresql"),)
REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
# Where a root-run cluster goes when its OS user cannot reach BI_PLATFORM_HOME.
SHARED_CLUSTERS_DIR = Path("/var/lib/bi_platform/postgres")
HOME_MARKER = "bi_platform_home"

INSTALL_HINT = (
    "Install the PostgreSQL server binaries, e.g. on Debian/Ubuntu: "
    "`sudo apt-get update && sudo apt-get install -y postgresql`; "
    "on Fedora/RHEL: `sudo dnf install -y postgresql-server`; on macOS: "
    "`brew install postgresql@15`. Or point BI_PLATFORM_PG_BIN_DIR at a directory "
    "holding initdb and pg_ctl, or set DATABASE_URL to use an existing server."
)


class PostgresRuntimeError(RuntimeError):
    """The local cluster could not be created, started or stopped."""


class PostgresBinariesNotFoundError(PostgresRuntimeError):
    """No directory holds initdb, pg_ctl and postgres."""


@dataclass(frozen=True)
class PgBinaries:
    """The PostgreSQL server programs of one installation."""

    bin_dir: Path

    def program(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def version(self) -> str:
        out = subprocess.run(
            [self.program("postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"(\d+(?:\.\d+)?)", out)
        return match.group(1) if match else out.strip()


def _has_programs(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def _version_key(directory: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,)
    digits = re.findall(r"\d+", directory.parent.name)
    return tuple(int(d) for d in digits) or (0,)


def find_pg_binaries(
    explicit: Path | None = None,
    *,
    path_env: str | None = None,
    search_roots: Iterable[Path] = DEFAULT_SEARCH_ROOTS,
) -> PgBinaries:
    """Locate initdb/pg_ctl/postgres: ``explicit``, then PATH, then ``<root>/*/bin``.

    Raises :class:`PostgresBinariesNotFoundError` with the install command when none exist.
    """
    if explicit is not None:
        if _has_programs(explicit):
            return PgBinaries(explicit)
        raise PostgresBinariesNotFoundError(
            f"BI_PLATFORM_PG_BIN_DIR={explicit} does not contain "
            f"{', '.join(REQUIRED_PROGRAMS)}. {INSTALL_HINT}"
        )
    path_env = os.environ.get("PATH", "") if path_env is None else path_env
    initdb = shutil.which("initdb", path=path_env)
    if initdb:
        # Debian links initdb into /usr/local/bin or /usr/bin: resolve to the real bin dir.
        for candidate in (Path(initdb).parent, Path(initdb).resolve().parent):
            if _has_programs(candidate):
                return PgBinaries(candidate)
    candidates = [
        bin_dir
        for root in search_roots
        for bin_dir in sorted(Path(root).glob("*/bin"), key=_version_key, reverse=True)
        if _has_programs(bin_dir)
    ]
    if candidates:
        return PgBinaries(candidates[0])
    roots = ", ".join(f"{r}/*/bin" for r in search_roots) or "no search roots"
    raise PostgresBinariesNotFoundError(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH nor in "
        f"{roots}. {INSTALL_HINT}"
    )


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else a port the kernel hands out."""
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def local_url(port: int, database: str, user: str = SUPERUSER) -> str:
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def owner_can_traverse(directory: Path, uid: int, gids: Collection[int]) -> bool:
    """Whether a user with ``uid`` and groups ``gids`` may enter ``directory``.

    Judged from the directory's owner, group and mode bits (no ACLs): the owner may, a
    member of its group needs ``g+x``, anyone else ``o+x``.

    Args:
        directory: An existing directory.
        uid: The user's id.
        gids: The user's primary and supplementary group ids.

    Returns:
        True when the permission bits let that user traverse ``directory``.
    """
    st = directory.stat()
    if st.st_uid == uid:
        return True
    bit = 0o010 if st.st_gid in gids else 0o001
    return bool(st.st_mode & bit)


def unprivileged_identity(os_user: str) -> tuple[int, int, frozenset[int]] | None:
    """(uid, primary gid, all group ids) of ``os_user``; None when it is missing or root."""
    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        return None
    groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return entry.pw_uid, entry.pw_gid, groups


def _is_initialized(root: Path) -> bool:
    return (root / "data" / "PG_VERSION").exists()


def _home_reachable(home: Path, uid: int, gids: Collection[int]) -> bool:
    """Whether every existing directory above ``home`` lets the user through.

    ``home`` itself and anything below it is left out: :class:`LocalPostgres` opens
    those for traversal itself. Both the path as written and its symlink-free form are
    checked, since the kernel walks both when it follows a link.
    """
    for path in (home, home.resolve()):
        for parent in path.parents:
            try:
                if not owner_can_traverse(parent, uid, gids):
                    return False
            except (FileNotFoundError, NotADirectoryError):
                continue  # created later by this process, like home itself
    return True


def shared_cluster_root(home: Path, shared_base: Path = SHARED_CLUSTERS_DIR) -> Path:
    """The alternate cluster directory of ``home``: ``<shared_base>/<16 hex>``.

    Args:
        home: ``BI_PLATFORM_HOME``.
        shared_base: The directory holding the alternate clusters of every home.

    Returns:
        ``shared_base`` joined with the first 16 hex digits of the SHA-256 of the
        resolved ``home`` path (one directory per home, stable across calls).
    """
    digest = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()
    return Path(shared_base) / digest[:16]


def resolve_cluster_root(
    home: Path, os_user: str, *, shared_base: Path = SHARED_CLUSTERS_DIR
) -> Path:
    """The directory of ``home``'s local cluster: ``home/postgres`` or a shared one.

    In order: a cluster already initialised in ``home/postgres``, then one already
    initialised in :func:`shared_cluster_root`; otherwise ``home/postgres``, unless this
    process is root and ``os_user`` (who runs the cluster) cannot enter a directory
    above ``home``, in which case the shared directory. A non-root process, or a root
    one whose ``os_user`` is missing or root (:class:`LocalPostgres` reports that),
    always gets ``home/postgres``. Nothing is created or changed.

    Args:
        home: ``BI_PLATFORM_HOME`` (made absolute here).
        os_user: The OS user that runs the cluster when this process is root.
        shared_base: The parent of the shared cluster directories.

    Returns:
        The cluster's root directory (holding ``data/``, ``server.log``, ...).
    """
    home = Path(home).absolute()
    in_home = home / "postgres"
    if not LocalPostgres.runs_as_root():
        return in_home
    identity = unprivileged_identity(os_user)
    if identity is None:
        return in_home
    shared = shared_cluster_root(home, shared_base)
    if _is_initialized(in_home):
        return in_home
    if _is_initialized(shared):
        return shared
    uid, _gid, groups = identity
    if _home_reachable(home, uid, groups):
        return in_home
    log.info(
        "OS user %s cannot enter a directory above %s: the local PostgreSQL lives in %s",
        os_user,
        home,
        shared,
    )
    return shared


def prepare_shared_root(root: Path, home: Path, *, shared_base: Path = SHARED_CLUSTERS_DIR) -> None:
    """Create the shared parents of ``root`` when it is a shared cluster directory.

    ``shared_base`` and its parent are created root-owned with mode 0755 when missing
    (existing ones are left as they are); ``root`` gets a ``bi_platform_home`` file
    naming the home it serves. A ``root`` outside ``shared_base`` is left alone.

    Args:
        root: The cluster directory :func:`resolve_cluster_root` chose.
        home: ``BI_PLATFORM_HOME``.
        shared_base: The parent of the shared cluster directories.
    """
    shared_base = Path(shared_base)
    if Path(root).parent != shared_base:
        return
    for directory in (shared_base.parent, shared_base):
        try:
            directory.mkdir(mode=0o755)
        except FileExistsError:
            continue
        directory.chmod(0o755)  # whatever the umask
        log.info("created %s (mode 0755)", directory)
    root.mkdir(mode=0o755, exist_ok=True)
    marker = root / HOME_MARKER
    resolved = f"{Path(home).resolve()}\n"
    if not marker.exists() or marker.read_text() != resolved:
        marker.write_text(resolved)


@dataclass(frozen=True)
class ClusterStatus:
    """What a look at the cluster directory and the server found."""

    initialized: bool
    running: bool
    port: int | None
    pid: int | None

    def url(self, database: str = "bi_platform") -> str | None:
        return local_url(self.port, database) if self.port else None


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait (up to ``timeout`` s) until process ``pid`` no longer runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # alive, owned by another user
        if _is_zombie(pid):  # exited; its parent (init here) has not reaped it yet
            return
        time.sleep(0.02)
    log.warning("PostgreSQL postmaster %d still running %.0f s after pg_ctl stop", pid, timeout)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): rely on kill(pid, 0)
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


class LocalPostgres:
    """One PostgreSQL cluster in a directory, started and stopped on demand."""

    def __init__(
        self,
        root: Path,
        *,
        binaries: PgBinaries | None = None,
        bin_dir: Path | None = None,
        os_user: str = "postgres",
        preferred_port: int | None = None,
        timeout: float = 60.0,
        databases: Sequence[str] = DEFAULT_DATABASES,
    ) -> None:
        self.root = Path(root).absolute()
        self._binaries = binaries
        self._bin_dir = bin_dir
        self.os_user = os_user
        self.preferred_port = preferred_port
        self.timeout = timeout
        self.databases = tuple(databases)

    # -- paths ---------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def lock(self) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / ".lock", timeout=self.timeout * 3)

    @property
    def binaries(self) -> PgBinaries:
        if self._binaries is None:
            self._binaries = find_pg_binaries(self._bin_dir)
        return self._binaries

    # -- running as the cluster owner -------------------------------------------------
    @staticmethod
    def runs_as_root() -> bool:
        return os.geteuid() == 0

    def owner_command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as the cluster's OS user: wrapped in ``runuser`` when we are root."""
        if self.runs_as_root():
            return ["runuser", "-u", self.os_user, "--", *argv]
        return list(argv)

    def _owner_ids(self) -> tuple[int, int]:
        uid, gid, _groups = self._owner_identity()
        return uid, gid

    def _owner_identity(self) -> tuple[int, int, frozenset[int]]:
        """(uid, primary gid, all group ids) of the user the cluster runs as."""
        if not self.runs_as_root():
            return os.geteuid(), os.getegid(), frozenset(os.getgroups()) | {os.getegid()}
        try:
            entry = pwd.getpwnam(self.os_user)
        except KeyError:
            raise PostgresRuntimeError(
                f"Running as root, the local PostgreSQL must run as an unprivileged OS user "
                f"(initdb and pg_ctl refuse root), but user {self.os_user!r} does not exist. "
                f"Create it (`useradd --system --user-group {self.os_user}`), install the "
                f"postgresql package (which creates `postgres`), or set "
                f"BI_PLATFORM_PG_OS_USER to an existing unprivileged user."
            ) from None
        if entry.pw_uid == 0:
            raise PostgresRuntimeError(
                f"BI_PLATFORM_PG_OS_USER={self.os_user!r} is root; it must be unprivileged."
            )
        groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return entry.pw_uid, entry.pw_gid, groups

    def _run_owned(self, argv: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
        # cwd: a directory the owner can enter (pg tools complain about an unreadable cwd).
        result = subprocess.run(
            self.owner_command(argv),
            cwd=self.root,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise PostgresRuntimeError(
                f"{what} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}{self._log_tail()}"
            )
        return result

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- {self.log_file} (last {len(tail)} lines) ---\n" + "\n".join(tail)

    def _ensure_owner_can_reach(self, path: Path) -> None:
        """As root, the cluster's user must be able to traverse every parent of ``path``.

        Directories this runtime creates are opened for traversal (``o+x``, no listing);
        a parent outside ``$BI_PLATFORM_HOME`` is never changed: the error names it.
        """
        if not self.runs_as_root():
            return
        uid, _gid, groups = self._owner_identity()
        home = self.root.parent
        for parent in reversed(path.parents):
            if owner_can_traverse(parent, uid, groups):
                continue
            if parent == home or home in parent.parents:
                parent.chmod(parent.stat().st_mode | 0o001)
                log.info("granted traversal (o+x) on %s to %s", parent, self.os_user)
                continue
            raise PostgresRuntimeError(
                f"OS user {self.os_user!r} (which runs the local PostgreSQL because this "
                f"process is root) cannot enter {parent}. Choose a BI_PLATFORM_HOME outside "
                f"it, or allow traversal: `chmod o+x {parent}`."
            )

    # -- state ---------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, **state: object) -> None:
        write_text_atomic(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid when that process is alive, else None."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return pid, port

    def status(self) -> ClusterStatus:
        if not self.initialized:
            return ClusterStatus(initialized=False, running=False, port=None, pid=None)
        postmaster = self._postmaster()
        if postmaster is None:
            port = self._read_state().get("port")
            return ClusterStatus(initialized=True, running=False, port=port, pid=None)
        pid, port = postmaster
        running = accepts_connections(local_url(port, "postgres"))
        return ClusterStatus(initialized=True, running=running, port=port, pid=pid)

    # -- lifecycle -------------------------------------------------------------------------
    def up(self) -> tuple[ClusterStatus, bool]:
        """Initialise (once) and start the cluster; return (status, started_now).

        Idempotent: when the server already runs, nothing changes. Safe to call from
        several processes at once.
        """
        with self.lock:
            current = self.status()
            if current.running:
                self.ensure_ready(current.port)
                return current, False
            if not self.initialized:
                self._initdb()
            port = self._start()
            self.ensure_ready(port)
            started = self.status()
            if not started.running:
                raise PostgresRuntimeError(f"PostgreSQL did not come up.{self._log_tail()}")
            return started, True

    def down(self) -> bool:
        """Stop the server (fast shutdown); return False when it was not running."""
        with self.lock:
            postmaster = self._postmaster()
            if postmaster is None:
                return False
            self._run_owned(
                [
                    self.binaries.program("pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(self.timeout)),
                ],
                "pg_ctl stop",
            )
            # pg_ctl returns once postmaster.pid is gone; the process itself may still be
            # releasing its shared memory. Return when it has exited (port and memory free).
            _wait_for_exit(postmaster[0], self.timeout)
            log.info("stopped PostgreSQL in %s", self.data_dir)
            return True

    def _initdb(self) -> None:
        """Create the cluster in a scratch directory, then rename it into place."""
        uid, gid = self._owner_ids()
        self.root.mkdir(parents=True, exist_ok=True)
        self._ensure_owner_can_reach(self.root)
        scratch = self.root / f"data.init-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        if self.data_dir.exists():  # an interrupted earlier attempt without PG_VERSION
            shutil.rmtree(self.data_dir)
        scratch.mkdir(mode=0o700)
        if self.runs_as_root():
            os.chown(scratch, uid, gid)
        log.info("initialising PostgreSQL cluster in %s", self.data_dir)
        self._run_owned(
            [
                self.binaries.program("initdb"),
                "-D",
                str(scratch),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            "initdb",
        )
        with (scratch / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# bi_platform embedded runtime\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
                "logging_collector = off\n"
                "# bulk loads (news migration, cadastral sync): fewer checkpoints during a\n"
                "# load, compressed full-page images (lz4 when the build has it, set by\n"
                "# ALTER SYSTEM at each start), bigger sorts for index builds\n"
                "shared_buffers = 512MB\n"
                "max_wal_size = 4GB\n"
                "checkpoint_timeout = 15min\n"
                "wal_compression = on\n"
                "maintenance_work_mem = 256MB\n"
            )
        scratch.rename(self.data_dir)

    def _start(self) -> int:
        uid, gid = self._owner_ids()
        self._ensure_owner_can_reach(self.data_dir)
        self.log_file.touch()
        if self.runs_as_root():
            os.chown(self.log_file, uid, gid)
        # A stale postmaster.pid from a crash is handled by postgres itself.
        preferred = self.preferred_port or self._read_state().get("port")
        last_error: PostgresRuntimeError | None = None
        for _attempt in range(3):
            port = free_port(preferred)
            try:
                self._run_owned(
                    [
                        self.binaries.program("pg_ctl"),
                        "start",
                        "-D",
                        str(self.data_dir),
                        "-l",
                        str(self.log_file),
                        "-w",
                        "-t",
                        str(int(self.timeout)),
                        "-o",
                        f"-p {port}",
                    ],
                    "pg_ctl start",
                )
            except PostgresRuntimeError as exc:  # most likely the port was taken meanwhile
                last_error = exc
                preferred = None
                continue
            self._write_state(port=port, superuser=SUPERUSER, version=self.binaries.version)
            log.info("PostgreSQL running on 127.0.0.1:%s (data %s)", port, self.data_dir)
            return port
        assert last_error is not None
        raise last_error

    def ensure_ready(self, port: int | None) -> None:
        """Create the missing databases and apply :data:`BUILD_DEPENDENT_SETTINGS` on the
        server running on ``port``."""
        if port is None:
            raise PostgresRuntimeError("the cluster has no port: is it running?")
        create_databases(local_url(port, "postgres"), self.databases)
        apply_build_settings(local_url(port, "postgres"))


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database named ``<prefix><random>`` on ``admin_url``'s server; its
    URL is yielded and the database is dropped (even with open sessions) afterwards."""
    name = f"{prefix}{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


#: Settings the embedded cluster takes when its server build offers the value (checked
#: against ``pg_settings.enumvals`` at each start, so an older or differently built
#: server keeps its postgresql.conf value): full-page images in the WAL compressed with
#: lz4 instead of pglz. An index build writes every page of the new index as a
#: full-page image; with pglz that compression was a quarter of the news migration's
#: index rebuild (3.35 s against 2.44 s with lz4 on 300k rows).
BUILD_DEPENDENT_SETTINGS: tuple[tuple[str, str], ...] = (("wal_compression", "lz4"),)


def apply_build_settings(maintenance_url: str) -> list[str]:
    """``ALTER SYSTEM SET`` each of :data:`BUILD_DEPENDENT_SETTINGS` that the server
    offers and does not have yet, then reload the configuration.

    Args:
        maintenance_url: a superuser connection URL to the server.

    Returns:
        The names of the settings changed (empty when every one is in place or offered
        by no value of this build).
    """
    changed: list[str] = []
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        for name, value in BUILD_DEPENDENT_SETTINGS:
            row = conn.execute(
                "SELECT setting, %s = ANY (enumvals) FROM pg_settings WHERE name = %s",
                (value, name),
            ).fetchone()
            if row is None or not row[1] or row[0] == value:
                continue
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), value))
            changed.append(name)
        if changed:
            conn.execute("SELECT pg_reload_conf()")
            log.info("PostgreSQL settings applied for this server build: %s", changed)
    return changed


def accepts_connections(url: str, timeout: int = 3) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def create_databases(maintenance_url: str, databases: Iterable[str]) -> list[str]:
    """Create each missing database; return the ones created."""
    created = []
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        for name in databases:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone():
                continue
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a racing creator
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
                log.info("created database %s", name)
    return created
