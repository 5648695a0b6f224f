"""Retail BI tables: Parquet tables behind the size-routed Polars/Dask IO manager."""
