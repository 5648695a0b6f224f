"""Checks of the cadastral domain that run on their own.

``cadastral_pg_in_sync`` (blocking) verifies PostgreSQL itself after the sync: per key
bucket, the row count and a checksum of the row hashes recomputed *by PostgreSQL from
the stored columns* against the same figures from the Delta table (reladiff-style
bucketed checksums); buckets that differ are compared key by key. It passes when the
counts are equal and no hash differs, whichever path (incremental or full) the sync took.

The per-table checks (unique keys, schema unchanged, invalid-state rate) run inside the
Spark assets on the version they commit: see ``assets.py``.
"""

import dagster as dg

from bi_platform.cadastral.assets import (
    CONSOLIDADO,
    KEY,
    PG_SYNC,
    PG_TABLE,
    delta_uri,
    partition_date,
)
from bi_platform.cadastral.delta import read_delta
from bi_platform.cadastral.pg_sync import verify_in_sync
from bi_platform.cadastral.resources import CadastralSparkResource, version_for_load_date
from bi_platform.resources import PostgresResource


@dg.asset_check(
    asset=PG_SYNC,
    additional_deps=[CONSOLIDADO],
    blocking=True,
    description=(
        "PostgreSQL equals cadastro_consolidado of the run's load date: same row count and "
        "zero hash differences, hashes recomputed in PostgreSQL from the stored columns."
    ),
)
def cadastral_pg_in_sync(
    context: dg.AssetCheckExecutionContext,
    spark: CadastralSparkResource,
    postgres: PostgresResource,
) -> dg.AssetCheckResult:
    session = spark.spark_session
    uri = delta_uri(CONSOLIDADO)
    load_date = partition_date(context).isoformat()
    version = version_for_load_date(uri, load_date)
    if version is None:
        return dg.AssetCheckResult(
            passed=False,
            description=f"{CONSOLIDADO.to_user_string()} has no version for {load_date}",
        )
    result = verify_in_sync(
        session,
        read_delta(session, uri, version),
        postgres.resolved_url(),
        table=PG_TABLE,
        key=KEY,
    )
    passed = (
        result.pg_count == result.source_count
        and result.hash_differences == 0
        and result.mismatched_buckets == 0
    )
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "dat_ref_carga": load_date,
            "delta_version": version,
            "pg_count": result.pg_count,
            "delta_count": result.source_count,
            "mismatched_buckets": result.mismatched_buckets,
            "hash_differences": result.hash_differences,
            "seconds": round(result.seconds, 3),
        },
    )


cadastral_checks = [cadastral_pg_in_sync]
