"""Asset checks of the retail tables.

Per typed table: not empty, key unique, schema as declared, rows reconcile with the raw
export. On ``admmat``: engine parity over the query battery (Polars vs Dask), blocking,
so the marts never build on a table the two engines disagree about.
"""

from collections.abc import Iterator
from pathlib import Path

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


def _non_empty(table: RetailTable, path: Path) -> dg.AssetCheckResult:
    rows = parquet_row_count(path)
    return dg.AssetCheckResult(
        check_name="non_empty",
        passed=rows > 0,
        metadata={"rows": rows, "path": str(path)},
        description=None if rows else f"retail table {table.name!r} ({path}) is empty",
    )


def _key_unique(table: RetailTable, path: Path) -> dg.AssetCheckResult:
    loaded = load_parquet(path, nw.LazyFrame, EngineConfig.from_settings(), columns=table.key)
    duplicates = (
        loaded.frame.group_by(*table.key)
        .agg(nw.len().alias("rows"))
        .filter(nw.col("rows") > 1)
        .collect(backend="polars")
    )
    sample = duplicates.sort(list(table.key)).head(5).rows(named=True)
    return dg.AssetCheckResult(
        check_name="key_unique",
        passed=len(duplicates) == 0,
        metadata={
            "duplicated_keys": len(duplicates),
            "sample": dg.MetadataValue.json(sample),
            "engine": str(loaded.engine),
        },
    )


def _schema_as_declared(table: RetailTable, path: Path) -> dg.AssetCheckResult:
    found = pl.scan_parquet(parquet_files(path)).collect_schema()
    try:
        check_columns(table, found, str(path), raw=False)
    except SchemaDriftError as drift:
        return dg.AssetCheckResult(
            check_name="schema_as_declared", passed=False, description=str(drift)
        )
    return dg.AssetCheckResult(
        check_name="schema_as_declared", passed=True, metadata={"columns": len(found)}
    )


def _rows_reconcile(table: RetailTable, path: Path, raw: Path) -> dg.AssetCheckResult:
    raw_rows, rows = parquet_row_count(raw), parquet_row_count(path)
    return dg.AssetCheckResult(
        check_name="rows_reconcile",
        passed=raw_rows == rows,
        metadata={"raw_rows": raw_rows, "rows": rows},
    )


def _table_checks(table: RetailTable) -> dg.AssetChecksDefinition:
    """The four checks of one typed table, evaluated in one step (one process)."""
    key = table_key(table.name)
    keys = ", ".join(table.key)
    specs = [
        dg.AssetCheckSpec(
            "non_empty",
            asset=key,
            blocking=True,
            description=f"{table.name} has at least one row (an empty export is an error).",
        ),
        dg.AssetCheckSpec(
            "key_unique",
            asset=key,
            blocking=True,
            description=f"No two rows of {table.name} share the key ({keys}).",
        ),
        dg.AssetCheckSpec(
            "schema_as_declared",
            asset=key,
            blocking=True,
            description=f"{table.name}'s columns and types are the declared ones (no drift).",
        ),
        dg.AssetCheckSpec(
            "rows_reconcile",
            asset=key,
            description=f"{table.name} has exactly as many rows as its raw export (none lost).",
        ),
    ]

    @dg.multi_asset_check(specs=specs, name=f"{table.name}_table_checks", can_subset=True)
    def _checks(
        context: dg.AssetCheckExecutionContext, retail_exports: RetailExportsResource
    ) -> Iterator[dg.AssetCheckResult]:
        path = materialized_path(context.instance, key)
        selected = {check_key.name for check_key in context.selected_asset_check_keys}
        evaluations = {
            "non_empty": lambda: _non_empty(table, path),
            "key_unique": lambda: _key_unique(table, path),
            "schema_as_declared": lambda: _schema_as_declared(table, path),
            "rows_reconcile": lambda: _rows_reconcile(table, path, retail_exports.path(table)),
        }
        for name, evaluate in evaluations.items():
            if name in selected:
                yield evaluate()

    return _checks


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


retail_checks = [*(_table_checks(table) for table in TABLES.values()), admmat_engine_parity]
