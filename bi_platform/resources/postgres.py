"""``PostgresResource``: pooled psycopg 3 connections to the platform database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import Field, PrivateAttr

from bi_platform.lib.secrets import mask_password
from bi_platform.runtime.services import database_url
from bi_platform.settings import Settings, get_settings


class PostgresResource(dg.ConfigurableResource):
    """The platform's PostgreSQL database through a psycopg 3 connection pool.

    ``database_url`` is unset in the definitions: the URL may carry a password, and the
    local cluster's port is only known once ``bi-platform up`` started it, so it is read
    when the first connection opens (``DATABASE_URL``, else the running local cluster
    under ``$BI_PLATFORM_HOME``). :meth:`from_settings` sets the other fields, so the
    Dagster UI shows the pool configuration in use. The pool opens lazily on the first
    connection and closes when the step ends.
    """

    database_url: str | None = Field(
        default=None,
        description=(
            "postgresql:// URL. Unset (the definitions' value, so no password reaches the "
            "UI): DATABASE_URL, else the running local cluster, read when first used."
        ),
    )
    min_size: int = Field(default=1, ge=0, description="Connections the pool keeps open.")
    max_size: int = Field(default=4, ge=1, description="Upper bound of pooled connections.")
    application_name: str = Field(default="bi_platform", description="Shown in pg_stat_activity.")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> PostgresResource:
        """The resource as the definitions configure it: the pool fields at their
        defaults, ``database_url`` unset. ``settings`` is accepted for symmetry with the
        other resources; the one setting involved, the URL, may carry a password, so it is
        read from the settings in effect when the first connection opens."""
        del settings
        return cls()

    _pool: ConnectionPool | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        return self.database_url or database_url(get_settings())

    @property
    def masked_url(self) -> str:
        """The URL for logs and metadata: the password never leaves the resource."""
        return mask_password(self.resolved_url())

    def _get_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.resolved_url(),
                min_size=self.min_size,
                max_size=self.max_size,
                kwargs={"application_name": self.application_name},
                open=True,
                name=self.application_name,
            )
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; the transaction commits on success, rolls back on error."""
        with self._get_pool().connection() as conn:
            yield conn

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()


def pg_table_schema(conn: psycopg.Connection, table: str, schema: str = "public") -> dg.TableSchema:
    """``dagster/column_schema`` of a PostgreSQL table: its columns in order, with their
    types and NOT NULL constraints, read from ``information_schema``."""
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable = 'NO' FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=data_type,
                constraints=dg.TableColumnConstraints(nullable=not not_null),
            )
            for name, data_type, not_null in rows
        ]
    )
