"""Asset checks of the retail tables, and the publication of what passed them.

Per typed table, in one step: not empty, key unique, schema as declared, text keys
distinct (no two values that differ only by case, width or spacing: cleaning already made
them NFC and trimmed) (blocking), rows reconcile with the raw export; on ``admmat`` also
engine parity over the query battery (Polars vs Dask, on the Dask cluster when one is
configured; blocking), so the marts never build on a table the two engines disagree
about.

Write-audit-publish: the clean step stages the new version of a typed table (see
:class:`~bi_platform.io_managers.HybridParquetIOManager`); these checks read exactly that
staged version, and publish it only when every blocking check of the table ran and
passed. Otherwise the published table stays the previous version, for every reader
(the marts, the warehouse build, the inventory), and the staged one stays beside it for
diagnosis: the check results name it (``version``, ``published``).
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
    publish_staged,
)
from bi_platform.retail.cleaning import SchemaDriftError, check_columns, text_key_collisions
from bi_platform.retail.parity import check_battery_parity
from bi_platform.retail.published import table_key, version_under_check
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


def _text_keys_distinct(table: RetailTable, path: Path) -> dg.AssetCheckResult:
    columns = list(table.text_keys)
    frame = pl.read_parquet(parquet_files(path), columns=columns)
    collisions = {c: groups for c, groups in text_key_collisions(frame, columns).items() if groups}
    return dg.AssetCheckResult(
        check_name="text_keys_distinct",
        passed=not collisions,
        metadata={
            "columns": columns,
            "collisions": dg.MetadataValue.json({c: g[:5] for c, g in collisions.items()}),
        },
        description=(
            "values that differ only by case, width or spacing would split a group: "
            + "; ".join(f"{c}: {g[0]}" for c, g in collisions.items())
            if collisions
            else None
        ),
    )


def _engine_parity(path: Path) -> dg.AssetCheckResult:
    results = check_battery_parity(path, PARITY_ENGINES, config=EngineConfig.from_settings())
    failed = [r for r in results if not r.ok]
    problems = [problem for r in failed for problem in r.problems]
    return dg.AssetCheckResult(
        check_name="engine_parity",
        passed=not failed,
        metadata={
            "queries": len(results),
            "failed_queries": [r.query for r in failed],
            "engines": list(PARITY_ENGINES),
        },
        description="; ".join(problems[:10]) or None,
    )


def _table_check_specs(table: RetailTable) -> list[dg.AssetCheckSpec]:
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
    if table.text_keys:
        specs.append(
            dg.AssetCheckSpec(
                "text_keys_distinct",
                asset=key,
                blocking=True,
                description=(
                    f"No two values of {table.name}'s text keys "
                    f"({', '.join(table.text_keys)}) differ only by case, width or spacing "
                    "(they would split a segment, store or product into two groups)."
                ),
            )
        )
    if table.name == "admmat":
        specs.append(
            dg.AssetCheckSpec(
                "engine_parity",
                asset=key,
                blocking=True,
                description=(
                    "Every query of the battery gives the same answer on Polars and on Dask: "
                    "same rows, same schema, aggregates within 0.01%, same top-10 order. "
                    "Blocks the marts."
                ),
            )
        )
    return specs


def _table_checks(table: RetailTable) -> dg.AssetChecksDefinition:
    """The checks of one typed table, evaluated in one step on the staged version, which
    they publish when every blocking check passed."""
    key = table_key(table.name)
    specs = _table_check_specs(table)
    blocking = {spec.name for spec in specs if spec.blocking}

    @dg.multi_asset_check(specs=specs, name=f"{table.name}_table_checks", can_subset=True)
    def _checks(
        context: dg.AssetCheckExecutionContext, retail_exports: RetailExportsResource
    ) -> Iterator[dg.AssetCheckResult]:
        published, staged = version_under_check(context.instance, key)
        path = staged or published
        selected = {check_key.name for check_key in context.selected_asset_check_keys}
        evaluations = {
            "non_empty": lambda: _non_empty(table, path),
            "key_unique": lambda: _key_unique(table, path),
            "schema_as_declared": lambda: _schema_as_declared(table, path),
            "rows_reconcile": lambda: _rows_reconcile(table, path, retail_exports.path(table)),
            "engine_parity": lambda: _engine_parity(path),
            "text_keys_distinct": lambda: _text_keys_distinct(table, path),
        }
        results = [evaluations[spec.name]() for spec in specs if spec.name in selected]
        gates = {r.check_name: r.passed for r in results if r.check_name in blocking}
        publish = staged is not None and set(gates) == blocking and all(gates.values())
        if publish:
            publish_staged(staged, published)
            context.log.info(f"{table.name}: published {staged.name} as {published}")
        elif staged is not None:
            failed = sorted(n for n, ok in gates.items() if not ok)
            context.log.warning(
                f"{table.name}: version {staged} NOT published "
                + (f"(failed: {', '.join(failed)})" if failed else "(not every gate ran)")
                + f"; readers keep {published}"
            )
        state = {
            "version": dg.MetadataValue.path(str(path)),
            "published": publish or staged is None,
        }
        for result in results:
            yield dg.AssetCheckResult(
                check_name=result.check_name,
                passed=result.passed,
                metadata={**result.metadata, **state},
                description=result.description,
            )

    return _checks


retail_checks = [_table_checks(table) for table in TABLES.values()]
