"""``RetailExportsResource``: where the raw retail ERP exports land, and how to read one."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import narwhals as nw
from pydantic import Field

from bi_platform.io_managers.engines import EngineConfig, Loaded, load_parquet
from bi_platform.retail.cleaning import check_columns
from bi_platform.retail.schema import RetailTable
from bi_platform.settings import get_settings


class RawExportError(RuntimeError):
    """A raw export is missing or unreadable; the message names the table and file."""


class RetailExportsResource(dg.ConfigurableResource):
    """The directory the ERP drops its nightly Parquet exports in (one file per table).

    Exports are read with the same size-routed engine choice as the lake tables
    (Polars below ``POLARS_THRESHOLD_MB``, Dask at or above, Dask as fallback), and
    their columns are checked against the declared raw schema before any work starts.
    """

    raw_dir: str | None = Field(default=None, description="Default: $BI_PLATFORM_HOME/raw/retail.")

    def directory(self) -> Path:
        return Path(self.raw_dir) if self.raw_dir else get_settings().raw_dir / "retail"

    def path(self, table: RetailTable) -> Path:
        return self.directory() / table.raw_file

    def load(self, table: RetailTable, config: EngineConfig | None = None) -> Loaded:
        """The export as a narwhals LazyFrame (schema-checked), with the engine decision."""
        path = self.path(table)
        if not path.exists():
            raise RawExportError(
                f"retail table {table.name!r}: raw export {path} not found "
                f"(run `bi-platform seed`, or check the ERP export job)"
            )
        try:
            loaded = load_parquet(path, nw.LazyFrame, config or EngineConfig.from_settings())
            schema = loaded.frame.collect_schema()
        except Exception as exc:  # corrupt file: both engines refused it
            raise RawExportError(
                f"retail table {table.name!r}: cannot read raw export {path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        check_columns(table, schema, str(path))
        return loaded
