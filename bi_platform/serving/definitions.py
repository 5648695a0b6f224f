"""Definitions of the `serving` domain, merged by `bi_platform.definitions`.

BI serving (seed 001): the DuckDB warehouse and the query API for concurrent users.
"""

import dagster as dg

defs = dg.Definitions()
