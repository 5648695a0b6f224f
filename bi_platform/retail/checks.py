"""Asset checks of the retail tables.

Per typed table: not empty, key unique, schema as declared, rows reconcile with the raw
export. On ``admmat``: engine parity over the query battery (Polars vs Dask), blocking,
so the marts never build on a table the two engines disagree about.
"""

import dagster as dg
import narwhals as nw
import polars as pl

from bi_platform.io_managers.engines import (
    EngineConfig,
    load_parquet,
    parquet_files,
    parquet_row_count,
)
from bi_platform.retail.assets import materialized_path, table_key
from bi_platform.retail.cleaning import SchemaDriftError, check_columns
from bi_platform.retail.parity import check_battery_parity
from bi_platform.retail.resources import RetailExportsResource
from bi_platform.retail.schema import TABLES, RetailTable

PARITY_ENGINES = ("polars", "dask")


def _table_checks(table: RetailTable) -> list[dg.AssetChecksDefinition]:
    key = table_key(table.name)

    @dg.asset_check(
        asset=key,
        name="non_empty",
        blocking=True,
        description=f"{table.name} has at least one row (an empty export is an error).",
    )
    def non_empty(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        path = materialized_path(context.instance, key)
        rows = parquet_row_count(path)
        return dg.AssetCheckResult(
            passed=rows > 0,
            metadata={"rows": rows, "path": str(path)},
            description=None if rows else f"retail table {table.name!r} ({path}) is empty",
        )

    @dg.asset_check(
        asset=key,
        name="key_unique",
        blocking=True,
        description=f"No two rows of {table.name} share the key ({', '.join(table.key)}).",
    )
    def key_unique(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        path = materialized_path(context.instance, key)
        loaded = load_parquet(
            path, nw.LazyFrame, EngineConfig.from_settings(), columns=list(table.key)
        )
        duplicates = (
            loaded.frame.group_by(*table.key)
            .agg(nw.len().alias("rows"))
            .filter(nw.col("rows") > 1)
            .collect(backend="polars")
        )
        sample = duplicates.sort(list(table.key)).head(5).rows(named=True)
        return dg.AssetCheckResult(
            passed=len(duplicates) == 0,
            metadata={
                "duplicated_keys": len(duplicates),
                "sample": dg.MetadataValue.json(sample),
                "engine": str(loaded.engine),
            },
        )

    @dg.asset_check(
        asset=key,
        name="schema_as_declared",
        blocking=True,
        description=f"{table.name}'s columns and types are the declared ones (no drift).",
    )
    def schema_as_declared(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        path = materialized_path(context.instance, key)
        found = pl.scan_parquet(parquet_files(path)).collect_schema()
        try:
            check_columns(table, found, str(path), raw=False)
        except SchemaDriftError as drift:
            return dg.AssetCheckResult(passed=False, description=str(drift))
        return dg.AssetCheckResult(passed=True, metadata={"columns": len(found)})

    @dg.asset_check(
        asset=key,
        name="rows_reconcile",
        description=f"{table.name} has exactly as many rows as its raw export (none lost).",
    )
    def rows_reconcile(
        context: dg.AssetCheckExecutionContext, retail_exports: RetailExportsResource
    ) -> dg.AssetCheckResult:
        raw_rows = parquet_row_count(retail_exports.path(table))
        rows = parquet_row_count(materialized_path(context.instance, key))
        return dg.AssetCheckResult(
            passed=raw_rows == rows, metadata={"raw_rows": raw_rows, "rows": rows}
        )

    return [non_empty, key_unique, schema_as_declared, rows_reconcile]


@dg.asset_check(
    asset=table_key("admmat"),
    name="engine_parity",
    blocking=True,
    description=(
        "Every query of the battery gives the same answer on Polars and on Dask: same "
        "rows, same schema, aggregates within 0.01%, same top-10 order. Blocks the marts."
    ),
)
def admmat_engine_parity(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    path = materialized_path(context.instance, table_key("admmat"))
    results = check_battery_parity(path, PARITY_ENGINES)
    failed = [r for r in results if not r.ok]
    problems = [problem for r in failed for problem in r.problems]
    return dg.AssetCheckResult(
        passed=not failed,
        metadata={
            "queries": len(results),
            "failed_queries": [r.query for r in failed],
            "engines": list(PARITY_ENGINES),
        },
        description="; ".join(problems[:10]) or None,
    )


retail_checks = [
    *(check for table in TABLES.values() for check in _table_checks(table)),
    admmat_engine_parity,
]
