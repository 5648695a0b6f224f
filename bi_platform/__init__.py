"""bi_platform: one Dagster code location for five BI data systems."""

__version__ = "0.1.0"
