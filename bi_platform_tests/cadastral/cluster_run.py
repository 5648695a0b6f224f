"""The cadastral assets and checks materialized through Dagster, one run per load date,
with the Spark session the environment selects (``SPARK_MASTER`` / ``SPARK_REMOTE``).

:func:`materialize_cadastral` runs in the test process (local mode, the session fixture)
or, via ``python -m bi_platform_tests.cadastral.cluster_run '<json args>'``, in a
subprocess whose environment points at a cluster: a process has one Spark session, so
each engine gets its own driver process. The subprocess prints ``REPORT <json>`` last.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import dagster as dg
import psutil
import psycopg

from bi_platform.cadastral.assets import PG_SYNC, cadastral_assets, load_dates
from bi_platform.cadastral.checks import cadastral_checks
from bi_platform.cadastral.resources import CadastralSparkResource, DeltaSparkIOManager
from bi_platform.resources import PostgresResource

REPORT_PREFIX = "REPORT "
SYNC_STATE_COLUMNS = "status, delta_version, mode, inserted, updated, deleted, unchanged"
SYNC_FIELDS = ("mode", "inserted", "updated", "deleted", "unchanged", "partitions", "retries")


def postgres_state(pg_url: str) -> dict[str, Any]:
    """The synced table (row count and a digest of every row, in key order) and the sync
    state (without timestamps and the Delta location, which differ between homes)."""
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT * FROM cadastral.cadastro_consolidado ORDER BY chave_pessoa"
        ).fetchall()
        state = conn.execute(f"SELECT {SYNC_STATE_COLUMNS} FROM cadastral.sync_state").fetchall()
    digest = hashlib.sha256(repr(rows).encode()).hexdigest()
    return {"rows": len(rows), "digest": digest, "sync_state": [list(r) for r in state]}


def materialize_cadastral(
    pg_url: str,
    dates: list[str],
    spark_config: dict[str, str] | None = None,
    *,
    stop_session: bool = False,
) -> dict[str, Any]:
    """Materialize every cadastral asset and check for each load date in ``dates``, in
    order, reading PostgreSQL's state after each;
    ``stop_session``: stop the Spark session at the end (which closes its event log).

    Returns:
        ``{"runs": [{load_date, success, checks: {name: passed}, sync: {...}, postgres:
        :func:`postgres_state`}], "session":
        the session class's module, "master": the classic session's master (None over
        Spark Connect), "java_children": JVMs this process started}``.
    """
    spark = CadastralSparkResource(spark_config=spark_config or {})
    resources = {
        "spark": spark,
        "cadastral_delta_io_manager": DeltaSparkIOManager(spark=spark),
        "postgres": PostgresResource(database_url=pg_url),
    }
    instance = dg.DagsterInstance.ephemeral()
    report: dict[str, Any] = {"runs": []}
    for load_date in dates:
        instance.add_dynamic_partitions(load_dates.name, [load_date])
        result = dg.materialize(
            [*cadastral_assets, *cadastral_checks],
            resources=resources,
            instance=instance,
            partition_key=load_date,
            raise_on_error=False,
        )
        checks = {
            f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
            for e in result.get_asset_check_evaluations()
        }
        sync = {}
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            if materialization.asset_key == PG_SYNC:
                sync = {k: materialization.metadata[k].value for k in SYNC_FIELDS}
        failures = [
            e.step_failure_data.error.to_string()
            for e in result.all_events
            if e.event_type_value == "STEP_FAILURE"
        ]
        report["runs"].append(
            {
                "load_date": load_date,
                "success": result.success,
                "checks": checks,
                "sync": sync,
                "failures": failures,
                "postgres": postgres_state(pg_url) if result.success else None,
            }
        )
    session = spark.spark_session
    report["session"] = type(session).__module__
    report["spark_version"] = session.version
    connect = report["session"].startswith("pyspark.sql.connect")
    report["master"] = None if connect else session.sparkContext.master
    report["java_children"] = [
        p.pid for p in psutil.Process().children(recursive=True) if "java" in p.name()
    ]
    if stop_session:
        session.stop()
    return report


def main() -> None:
    """Run :func:`materialize_cadastral` with the JSON arguments of ``argv[1]`` and print
    the report; the session is stopped first (so its event log is complete)."""
    args = json.loads(sys.argv[1])
    report = materialize_cadastral(
        args["pg_url"], args["dates"], args.get("spark_config"), stop_session=True
    )
    sys.stdout.write(REPORT_PREFIX + json.dumps(report, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
