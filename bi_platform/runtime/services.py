"""The platform's services as one unit: ``up``, ``down``, ``status``.

With ``DATABASE_URL`` unset, PostgreSQL is the embedded cluster of
:mod:`bi_platform.runtime.postgres` in the directory :func:`cluster_root` picks
(``$BI_PLATFORM_HOME/postgres``, or a shared directory under ``/var/lib/bi_platform``
when root runs it from a home its OS user cannot reach); with it set, that server is
used and nothing local is started. Either way ``up`` writes
``$BI_PLATFORM_HOME/services.env`` (the variables ``dagster.yaml`` and shells need) and
installs the Dagster instance config into ``$DAGSTER_HOME``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg

from bi_platform.lib.benchmarking import BenchError
from bi_platform.lib.files import atomic_path, write_text_atomic
from bi_platform.lib.secrets import mask_password
from bi_platform.runtime.postgres import (
    LocalPostgres,
    PostgresRuntimeError,
    accepts_connections,
    create_databases,
    local_url,
    prepare_shared_root,
    resolve_cluster_root,
)
from bi_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)

APP_DATABASE = "bi_platform"
DAGSTER_DATABASE = "dagster"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTANCE_YAML = PROJECT_ROOT / "dagster.yaml"


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def cluster_root(settings: Settings) -> Path:
    """The directory of the local cluster (``data/``, ``server.log``, ``cluster.json``).

    ``$BI_PLATFORM_HOME/postgres``, or, when this process is root and
    ``BI_PLATFORM_PG_OS_USER`` cannot enter a directory above ``BI_PLATFORM_HOME``,
    ``/var/lib/bi_platform/postgres/<hash of the home path>``. An initialised cluster
    in either place keeps being used (see
    :func:`bi_platform.runtime.postgres.resolve_cluster_root`).

    Args:
        settings: The platform settings.

    Returns:
        The cluster's root directory; ``up``, ``down``, ``status`` and
        :func:`database_url` all use this one.
    """
    return resolve_cluster_root(settings.home_dir, settings.bi_platform_pg_os_user)


def local_cluster(settings: Settings) -> LocalPostgres:
    """The local cluster of ``settings``, in :func:`cluster_root` (nothing is created).

    Args:
        settings: The platform settings.

    Returns:
        A :class:`LocalPostgres` for the platform's two databases.
    """
    return LocalPostgres(
        cluster_root(settings),
        bin_dir=settings.bi_platform_pg_bin_dir,
        os_user=settings.bi_platform_pg_os_user,
        preferred_port=settings.bi_platform_pg_port,
        timeout=settings.bi_platform_pg_start_timeout,
        databases=(APP_DATABASE, DAGSTER_DATABASE),
    )


@dataclass(frozen=True)
class PostgresService:
    """Where the platform's PostgreSQL is and whether it answers."""

    mode: str  # "local" | "external"
    running: bool
    url: str | None
    dagster_url: str | None
    data_dir: Path | None = None  # the local cluster's PGDATA; None when external

    def as_json(self) -> dict:
        """The public shape: secrets masked, ``data_dir`` as a string (or None)."""
        return {
            "running": self.running,
            "url": mask_password(self.url) if self.url else None,
            "dagster_url": mask_password(self.dagster_url) if self.dagster_url else None,
            "mode": self.mode,
            "data_dir": str(self.data_dir) if self.data_dir else None,
        }


def _external_urls(settings: Settings) -> tuple[str, str]:
    assert settings.database_url is not None
    dagster_url = settings.dagster_database_url or with_database(
        settings.database_url, DAGSTER_DATABASE
    )
    return settings.database_url, dagster_url


def postgres_status(settings: Settings) -> PostgresService:
    """Where the platform's PostgreSQL is and whether it answers (nothing is started).

    Args:
        settings: The platform settings.

    Returns:
        The external server (``data_dir`` None) or the local cluster of
        :func:`cluster_root`.
    """
    if settings.uses_external_database:
        url, dagster_url = _external_urls(settings)
        return PostgresService("external", accepts_connections(url), url, dagster_url)
    cluster = local_cluster(settings)
    status = cluster.status()
    return PostgresService(
        "local",
        status.running,
        status.url(APP_DATABASE),
        status.url(DAGSTER_DATABASE),
        cluster.data_dir,
    )


def database_url(settings: Settings) -> str:
    """The platform database URL: ``DATABASE_URL`` or the running local cluster's."""
    if settings.database_url:
        return settings.database_url
    cluster = local_cluster(settings)
    status = cluster.status()
    if not status.running:
        raise PostgresRuntimeError(
            f"The local PostgreSQL under {cluster.root} is not running: run "
            f"`bi-platform up` (or `make run`), or set DATABASE_URL."
        )
    return local_url(status.port, APP_DATABASE)


def up(settings: Settings) -> PostgresService:
    """Start (or reach) PostgreSQL, create the databases, write services.env."""
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    if settings.uses_external_database:
        url, dagster_url = _external_urls(settings)
        if not accepts_connections(url):
            raise PostgresRuntimeError(f"DATABASE_URL {mask_password(url)} does not answer.")
        if not accepts_connections(dagster_url):
            log.info("creating the Dagster database on the external server")
            create_databases(url, [urlsplit(dagster_url).path.lstrip("/")])
        service = PostgresService("external", True, url, dagster_url)
        log.info("using external PostgreSQL %s; nothing local started", mask_password(url))
    else:
        cluster = local_cluster(settings)
        prepare_shared_root(cluster.root, settings.home_dir)
        status, started = cluster.up()
        if not started:
            log.info("PostgreSQL already running on port %s: nothing to do", status.port)
        service = PostgresService(
            "local",
            True,
            status.url(APP_DATABASE),
            status.url(DAGSTER_DATABASE),
            cluster.data_dir,
        )
    install_dagster_instance(settings)
    write_services_env(settings, service)
    return service


def down(settings: Settings) -> bool:
    """Stop the local cluster; with DATABASE_URL set there is nothing local to stop."""
    if settings.uses_external_database:
        log.info("DATABASE_URL is set: no local service to stop")
        return False
    cluster = local_cluster(settings)
    if not cluster.root.exists():  # never started here: nothing to stop, nothing to create
        return False
    return cluster.down()


def services_env(settings: Settings, service: PostgresService) -> dict[str, str]:
    """The variables ``dagster.yaml`` and a shell need to reach the services."""
    assert service.url and service.dagster_url
    dagster = urlsplit(service.dagster_url)
    dagster_home = settings.dagster_home_dir
    return {
        "BI_PLATFORM_HOME": str(settings.home_dir),
        "BI_PLATFORM_DATABASE_URL": service.url,
        "BI_PLATFORM_DAGSTER_DATABASE_URL": service.dagster_url,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_COMPUTE_LOGS_DIR": str(dagster_home / "logs"),
        "DAGSTER_PG_HOST": dagster.hostname or "127.0.0.1",
        "DAGSTER_PG_PORT": str(dagster.port or 5432),
        "DAGSTER_PG_USERNAME": unquote(dagster.username or ""),
        "DAGSTER_PG_PASSWORD": unquote(dagster.password or ""),
        "DAGSTER_PG_DB": dagster.path.lstrip("/") or DAGSTER_DATABASE,
    }


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def write_services_env(settings: Settings, service: PostgresService) -> Path:
    """Write ``services.env`` atomically (mode 0600: it may hold a password)."""
    target = settings.services_env_file
    lines = ["# Written by `bi-platform up`. Load with: set -a; . ./services.env; set +a"]
    lines += [f"{key}={_quote(value)}" for key, value in services_env(settings, service).items()]
    return write_text_atomic(target, "\n".join(lines) + "\n", mode=0o600)


def read_services_env(path: Path) -> dict[str, str]:
    """Parse a file written by :func:`write_services_env`."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        if not raw or raw.startswith("#") or "=" not in raw:
            continue
        key, value = raw.split("=", 1)
        if value.startswith("'") and value.endswith("'"):
            value = value[1:-1].replace("'\"'\"'", "'")
        env[key] = value
    return env


def install_dagster_instance(settings: Settings) -> Path:
    """Copy the project's ``dagster.yaml`` into ``$DAGSTER_HOME`` (the instance dir).

    The default instance dir (``$BI_PLATFORM_HOME/dagster``) is ours and refreshed on
    every ``up``; a ``DAGSTER_HOME`` elsewhere that already has a dagster.yaml is left
    alone.
    """
    target_dir = settings.dagster_home_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "dagster.yaml"
    if target_dir != settings.home_dir / "dagster" and target.exists():
        return target
    if not INSTANCE_YAML.exists():
        raise PostgresRuntimeError(
            f"{INSTANCE_YAML} not found: bi_platform must be installed from its checkout "
            f"(`pip install -e .`), or DAGSTER_HOME must hold a dagster.yaml of your own."
        )
    if INSTANCE_YAML.resolve() != target.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(INSTANCE_YAML, tmp)
    return target


def status_json(settings: Settings) -> dict:
    """``{"postgres": {...}}``: running, URLs (masked), mode and data_dir.

    Args:
        settings: The platform settings.

    Returns:
        The document ``bi-platform status --json`` prints.
    """
    return {"postgres": postgres_status(settings).as_json()}


__all__ = [
    "PostgresService",
    "cluster_root",
    "database_url",
    "down",
    "install_dagster_instance",
    "postgres_status",
    "status_json",
    "up",
]


def admin_url(url: str | None = None) -> str:
    """The URL on which a benchmark creates its scratch databases.

    Args:
        url: the server to use; default: the platform's (``DATABASE_URL``, else
            the running local cluster).

    Returns:
        A URL that answered ``SELECT 1``.

    Raises:
        BenchError: no server, or it does not answer (the message says how to start one).
    """
    if url is None:
        try:
            url = database_url(get_settings())
        except PostgresRuntimeError as exc:
            raise BenchError(f"no PostgreSQL server: {exc}") from None
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        raise BenchError(
            f"PostgreSQL at {mask_password(url)} does not answer ({exc}); "
            "start the local server with `bi-platform up` (or pass --database-url)"
        ) from None
    return url
