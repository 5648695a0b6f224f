"""Definitions of the `etl` domain, merged by `bi_platform.definitions`.

Secure hybrid ETL (seed 004): binary/CSV/Parquet ingest, dead-letter queue, estimates
and an HTML report.
"""

import dagster as dg

defs = dg.Definitions()
