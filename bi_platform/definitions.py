"""The one Dagster code location: every domain's definitions plus the shared resources
and the sensor that evaluates the automation conditions.

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

#: Evaluates every asset's automation condition (serving/bi_warehouse after retail,
#: news/hf_news_sync after each ingest) every 30 s under the daemon. On by default, unlike
#: the inbox sensors: it only follows what already ran, gated by the blocking checks.
platform_automation = dg.AutomationConditionSensorDefinition(
    "platform_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Declarative automation: rebuilds an asset after its upstream changed, once every "
        "upstream blocking check passed."
    ),
)

defs = dg.Definitions.merge(
    dg.Definitions(
        resources={"postgres": PostgresResource.from_settings()}, sensors=[platform_automation]
    ),
    *(domain.defs for domain in DOMAINS),
)
