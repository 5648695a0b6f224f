"""Shared Dagster resources (ConfigurableResource) used by more than one domain."""

from bi_platform.resources.postgres import PostgresResource, pg_table_schema

__all__ = ["PostgresResource", "pg_table_schema"]
