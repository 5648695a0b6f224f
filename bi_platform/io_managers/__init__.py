"""IO managers shared by the domains (the size-routed Polars/Dask Parquet IO manager)."""
