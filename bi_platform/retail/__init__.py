"""Retail BI tables (seed 000): Parquet tables behind the size-routed Polars/Dask IO manager."""
