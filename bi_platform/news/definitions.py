"""Definitions of the `news` domain, merged by `bi_platform.definitions`.

News platform (seed 002): HuggingFace dataset <-> PostgreSQL news tables.
"""

import dagster as dg

defs = dg.Definitions()
