"""The one Dagster code location: every domain's definitions plus the shared resources.

Each domain module holds its own ``defs``; they are imported as modules (a code
location may hold only one ``Definitions`` at module scope) and merged here.
"""

import dagster as dg

from bi_platform.cadastral import definitions as cadastral
from bi_platform.etl import definitions as etl
from bi_platform.news import definitions as news
from bi_platform.resources import PostgresResource
from bi_platform.retail import definitions as retail
from bi_platform.serving import definitions as serving

DOMAINS = (retail, serving, news, cadastral, etl)

defs = dg.Definitions.merge(
    dg.Definitions(resources={"postgres": PostgresResource()}),
    *(domain.defs for domain in DOMAINS),
)
