"""Definitions of the `retail` domain, merged by `bi_platform.definitions`.

Retail BI tables (seed 000): Parquet tables behind the size-routed Polars/Dask IO manager.
"""

import dagster as dg

defs = dg.Definitions()
