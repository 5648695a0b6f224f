"""Retail BI assets: raw ERP exports -> typed lake tables (+ quarantine) -> marts,
and the table inventory.

Typed tables and marts are stored by the ``retail_io_manager``
(:class:`~bi_platform.io_managers.HybridParquetIOManager`), which loads each input with
Polars or Dask according to its size on disk.
"""

import dagster as dg
import narwhals as nw
import polars as pl

from bi_platform.io_managers.engines import EngineConfig
from bi_platform.io_managers.hybrid_parquet import AFTER_CHECKS, PUBLISH_KEY
from bi_platform.retail import marts
from bi_platform.retail.cleaning import QUARANTINE_COLUMNS
from bi_platform.retail.inventory import analyze_tables, inventory_markdown, write_json_atomic
from bi_platform.retail.published import (
    GROUP,
    materialized_path,
    raw_key,
    table_key,
)
from bi_platform.retail.resources import RetailExportsResource
from bi_platform.retail.schema import TABLES, RetailTable
from bi_platform.settings import get_settings

OWNERS = ["team:retail-bi"]
IO_MANAGER = "retail_io_manager"
TABLE_KINDS = {"polars", "dask", "parquet"}


def quarantine_name(table: RetailTable) -> str:
    return f"{table.name}_quarantine"


# -- raw sources: written by the ERP (or `bi-platform seed`), external to Dagster -------
raw_exports = [
    dg.AssetSpec(
        raw_key(table.name),
        description=f"Raw ERP export ({table.raw_file}). {table.description}",
        group_name=GROUP,
        kinds={"parquet"},
        owners=OWNERS,
        metadata={"file": table.raw_file, "key": ", ".join(table.key)},
    )
    for table in TABLES.values()
]


# -- typed tables ----------------------------------------------------------------------
def empty_quarantine(table: RetailTable) -> pl.DataFrame:
    """A quarantine with no row: the table key's columns, then :data:`QUARANTINE_COLUMNS`."""
    return pl.DataFrame(
        schema={
            **{column: table.schema[column] for column in table.key},
            **dict.fromkeys(QUARANTINE_COLUMNS, pl.String()),
        }
    )


def _typed_table_asset(table: RetailTable) -> dg.AssetsDefinition:
    outs = {
        table.name: dg.AssetOut(
            key=table_key(table.name),
            description=(
                f"{table.description} Typed and schema-checked from the raw export; values "
                "that do not parse or do not fit their declared type exactly are null here "
                f"and listed in {quarantine_name(table)}. Staged, then published by its "
                "blocking checks."
            ),
            io_manager_key=IO_MANAGER,
            kinds=TABLE_KINDS,
            owners=OWNERS,
            # write-audit-publish: the table's blocking checks publish the new version
            metadata={"key": ", ".join(table.key), PUBLISH_KEY: AFTER_CHECKS},
            is_required=False,
        ),
        quarantine_name(table): dg.AssetOut(
            key=table_key(quarantine_name(table)),
            description=(
                f"Quarantine of {table.name}: one row per rejected value (unparsable, "
                "ambiguous, non-finite, out of range, fraction in an integer column) with "
                f"{', '.join(QUARANTINE_COLUMNS)} and the table key, so every rejected value "
                "can be traced to its row and fixed at the source."
            ),
            io_manager_key=IO_MANAGER,
            kinds={"polars", "parquet"},
            owners=OWNERS,
            is_required=False,
        ),
    }

    @dg.multi_asset(
        name=f"clean_{table.name}",
        outs=outs,
        deps=[raw_key(table.name)],
        group_name=GROUP,
        can_subset=True,
    )
    def _clean(context: dg.AssetExecutionContext, retail_exports: RetailExportsResource):
        """The typed table and its quarantine from one read of the raw export; either
        can be materialized alone (the other is left as it was). The typed table is
        staged: its blocking checks publish it."""
        cleaned = retail_exports.clean(table)
        loaded = cleaned.loaded
        context.log.info(
            "%s: raw export %.1f MB read with %s (%s)",
            table.name,
            loaded.size_mb,
            loaded.engine,
            loaded.reason,
        )
        if cleaned.fallback_error:
            context.log.warning(
                "%s: Polars failed (%s); cleaned with Dask", table.name, cleaned.fallback_error
            )
        counts = cleaned.unparsable
        metadata = {
            "source_file": str(retail_exports.path(table)),
            "source_engine": str(loaded.engine),
            "source_fallback": loaded.fallback or cleaned.fallback_error is not None,
            "rejected_values": sum(counts.values()),
            "rejected_by_column": counts,
        }
        selected = context.op_execution_context.selected_output_names
        if table.name in selected:
            yield dg.Output(cleaned.typed, output_name=table.name, metadata=metadata)
        if quarantine_name(table) in selected:
            rejected = cleaned.quarantine
            yield dg.Output(
                empty_quarantine(table) if rejected is None else rejected,
                output_name=quarantine_name(table),
                metadata={"rejected_by_column": counts},
            )

    return _clean


typed_tables = [_typed_table_asset(table) for table in TABLES.values()]


# -- marts -----------------------------------------------------------------------------
def _mart_asset(name: str) -> dg.AssetsDefinition:
    transform = marts.MARTS[name]

    @dg.asset(
        key=table_key(name),
        ins={"admmat": dg.AssetIn(table_key("admmat"))},
        io_manager_key=IO_MANAGER,
        group_name=GROUP,
        kinds=TABLE_KINDS,
        owners=OWNERS,
        description=transform.__doc__,
    )
    def _mart(admmat: nw.LazyFrame) -> nw.LazyFrame:
        return transform(admmat)

    return _mart


mart_assets = [_mart_asset(name) for name in marts.MARTS]

LAKE_TABLES = [
    *(table_key(t.name) for t in TABLES.values()),
    *(table_key(quarantine_name(t)) for t in TABLES.values()),
    *(table_key(name) for name in marts.MARTS),
]


#: One row per lake table in the inventory JSON's ``tables``.
INVENTORY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("name", "string", "the lake table"),
        dg.TableColumn("path", "string", "its Parquet file or directory"),
        dg.TableColumn("files", "int", "Parquet files"),
        dg.TableColumn("size_mb", "float", "size on disk"),
        dg.TableColumn("rows", "int", "rows, from the Parquet footers"),
        dg.TableColumn("columns", "int", "columns"),
        dg.TableColumn("engine", "string", "polars or dask under the threshold in force"),
        dg.TableColumn("reason", "string", "why that engine"),
    ]
)


@dg.asset(
    key=table_key("table_inventory"),
    deps=LAKE_TABLES,
    group_name=GROUP,
    kinds={"json"},
    owners=OWNERS,
)
def table_inventory(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Every retail lake table with its size on disk, rows, columns, and the engine it
    loads with under the threshold in force, as JSON under $BI_PLATFORM_HOME/reports
    and a Markdown table here."""
    config = EngineConfig.from_settings()
    tables = {key.path[-1]: materialized_path(context.instance, key) for key in LAKE_TABLES}
    report = analyze_tables(tables, config)
    path = write_json_atomic(report, get_settings().reports_dir / "retail_table_inventory.json")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report["total_tables"],
            "dagster/column_schema": INVENTORY_SCHEMA,
            "path": str(path),
            "threshold_mb": report["threshold_mb"],
            "total_rows": report["total_rows"],
            "polars_recommended": report["polars_recommended"],
            "dask_recommended": report["dask_recommended"],
            "inventory": dg.MetadataValue.md(inventory_markdown(report)),
        }
    )
