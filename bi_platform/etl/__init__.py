"""Secure hybrid ETL (seed 004): binary/CSV/Parquet ingest, dead-letter queue, estimates
and an HTML report."""
