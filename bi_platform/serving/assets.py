"""Serving assets: the DuckDB warehouse the BI query API reads, and its gate.

retail/<tables> + retail/<marts> --> serving/bi_warehouse (native tables + aggregates)
"""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from bi_platform.automation import after_upstream_gates
from bi_platform.retail.published import materialized_path, table_key
from bi_platform.serving.warehouse import (
    AGGREGATES,
    SOURCE_TABLES,
    build_warehouse,
    check_row_counts,
    read_meta,
)
from bi_platform.settings import get_settings

GROUP = "serving"
OWNERS = ["team:retail-bi"]
#: Resource key of the DuckDBResource whose ``database`` is the warehouse file.
WAREHOUSE_RESOURCE = "warehouse_duckdb"


def serving_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def default_warehouse_path() -> Path:
    """``SERVING_WAREHOUSE_PATH``, else ``$BI_PLATFORM_HOME/warehouse/bi_warehouse.duckdb``."""
    return get_settings().warehouse_path


def warehouse_resource(path: Path | str | None = None) -> DuckDBResource:
    """The warehouse as a DuckDBResource. Connections are opened read-only
    (``access_mode``): the file is only ever written by a build into a new file, and a
    read-only open shares the file with the API's readers instead of locking them out."""
    return DuckDBResource(
        database=str(path or default_warehouse_path()),
        connection_config={"access_mode": "READ_ONLY"},
    )


def _tables_markdown(tables: dict[str, int]) -> str:
    lines = ["| table | kind | rows |", "|---|---|---:|"]
    for name, rows in tables.items():
        kind = "aggregate" if name in AGGREGATES else "native (from the lake)"
        lines.append(f"| {name} | {kind} | {rows:,} |")
    return "\n".join(lines)


@dg.asset(
    key=serving_key("bi_warehouse"),
    deps=[table_key(name) for name in SOURCE_TABLES],
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
    automation_condition=after_upstream_gates(),
)
def bi_warehouse(
    context: dg.AssetExecutionContext, warehouse_duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """The BI warehouse: one DuckDB file with every retail table (typed tables and marts)
    loaded as native tables, pre-aggregated dashboard tables (sales by month x segment x
    store, sales and stock by segment x store, top products per segment, critical
    rupture by segment x store) and `warehouse_meta` (data_version = this run's id,
    build time, row counts). Built into a new file and swapped in atomically: API readers
    never see a half-built warehouse, and a new data_version invalidates their caches.
    Rebuilt automatically after the retail tables change, once their blocking checks
    passed."""
    target = Path(warehouse_duckdb.database)
    sources = {name: materialized_path(context.instance, table_key(name)) for name in SOURCE_TABLES}
    settings = get_settings()
    info = build_warehouse(
        settings.lake_dir,
        target,
        context.run.run_id,
        tables=sources,
        threads=settings.serving_duckdb_threads,
    )
    with warehouse_duckdb.get_connection() as conn:
        data_version, tables = read_meta(conn)
    if data_version != info.data_version:
        raise dg.Failure(
            f"warehouse {target}: data_version {data_version!r} after the swap, expected "
            f"{info.data_version!r} (another build published meanwhile?)"
        )
    context.log.info(
        "warehouse %s: %d tables, %.1f MB in %.2f s",
        target,
        len(tables),
        info.size_mb,
        info.seconds,
    )
    return dg.MaterializeResult(
        metadata={
            "path": str(target),
            "data_version": data_version,
            "built_at": info.built_at,
            "size_mb": info.size_mb,
            "seconds": info.seconds,
            "engine": "duckdb",
            "dagster/row_count": tables["admmat"],
            "table_row_counts": dg.MetadataValue.json(tables),
            "tables": dg.MetadataValue.md(_tables_markdown(tables)),
        }
    )


@dg.asset_check(asset=bi_warehouse, blocking=True)
def warehouse_row_counts_match_lake(warehouse_duckdb: DuckDBResource) -> dg.AssetCheckResult:
    """Every native table of the warehouse has as many rows as the lake's Parquet file
    it was loaded from (and as its `warehouse_meta` record)."""
    with warehouse_duckdb.get_connection() as conn:
        data_version, _ = read_meta(conn)
        results = check_row_counts(conn)
    problems = [r.problem for r in results if r.problem]
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "data_version": data_version,
            "tables_checked": len(results),
            "row_counts": dg.MetadataValue.json(
                {r.table: {"warehouse": r.warehouse_rows, "lake": r.lake_rows} for r in results}
            ),
            "problems": dg.MetadataValue.json(problems),
        },
        description="; ".join(problems) if problems else None,
    )


serving_assets = [bi_warehouse]
serving_checks = [warehouse_row_counts_match_lake]
