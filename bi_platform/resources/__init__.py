"""Shared Dagster resources (ConfigurableResource) used by more than one domain."""

from bi_platform.resources.postgres import PostgresResource

__all__ = ["PostgresResource"]
