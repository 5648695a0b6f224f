"""Definitions of the `cadastral` domain, merged by `bi_platform.definitions`.

Cadastral pipeline (seed 003): PySpark transforms to Delta tables and a hash-compare
sync into PostgreSQL.
"""

import dagster as dg

defs = dg.Definitions()
