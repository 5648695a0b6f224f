"""Secure hybrid ETL: binary/CSV/Parquet ingest, dead-letter queue, estimates
and an HTML report."""
