"""``RetailExportsResource``: where the raw retail ERP exports land, and how to read one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import narwhals as nw
from pydantic import Field

from bi_platform.io_managers.engines import (
    POLARS_FAILURES,
    Engine,
    EngineConfig,
    Loaded,
    PolarsReader,
    load_parquet,
    read_polars,
)
from bi_platform.retail.cleaning import (
    check_columns,
    quarantine_rows,
    typed_table,
    unparsable_counts,
)
from bi_platform.retail.schema import RetailTable
from bi_platform.settings import Settings, get_settings

logger = logging.getLogger(__name__)


class RawExportError(RuntimeError):
    """A raw export is missing or unreadable; the message names the table and file."""


@dataclass
class CleanedExport:
    """A raw export cleaned: the typed table (a collected Polars frame, or a lazy Dask
    frame for exports routed to Dask), its quarantine rows (collected) and how it was
    read (``loaded.fallback`` / ``fallback_error``: Polars failed, Dask took over)."""

    typed: Any
    quarantine: nw.DataFrame | None
    unparsable: dict[str, int]
    loaded: Loaded
    fallback_error: str | None = None


class RetailExportsResource(dg.ConfigurableResource):
    """The directory the ERP drops its nightly Parquet exports in (one file per table).

    Exports are read with the same size-routed engine choice as the lake tables
    (Polars below ``POLARS_THRESHOLD_MB``, Dask at or above, Dask as fallback), and
    their columns are checked against the declared raw schema before any work starts.
    """

    raw_dir: str | None = Field(
        default=None,
        description=(
            "Directory of the raw exports. From $BI_PLATFORM_HOME/raw/retail "
            "(unset: read from BI_PLATFORM_HOME when used)."
        ),
    )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RetailExportsResource:
        """The resource with ``raw_dir`` set from ``settings`` (default: the environment)."""
        settings = settings or get_settings()
        return cls(raw_dir=str(settings.raw_dir / "retail"))

    def directory(self) -> Path:
        return Path(self.raw_dir) if self.raw_dir else get_settings().raw_dir / "retail"

    def path(self, table: RetailTable) -> Path:
        return self.directory() / table.raw_file

    def load(
        self,
        table: RetailTable,
        config: EngineConfig | None = None,
        *,
        polars_reader: PolarsReader = read_polars,
    ) -> Loaded:
        """The export as a narwhals LazyFrame (schema-checked), with the engine decision.
        ``polars_reader`` replaces the Polars read (tests inject failures with it)."""
        path = self.path(table)
        if not path.exists():
            raise RawExportError(
                f"retail table {table.name!r}: raw export {path} not found "
                f"(run `bi-platform seed`, or check the ERP export job)"
            )
        try:
            loaded = load_parquet(
                path,
                nw.LazyFrame,
                config or EngineConfig.from_settings(),
                polars_reader=polars_reader,
            )
            schema = loaded.frame.collect_schema()
        except Exception as exc:  # corrupt file: both engines refused it
            raise RawExportError(
                f"retail table {table.name!r}: cannot read raw export {path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        check_columns(table, schema, str(path))
        return loaded

    def clean(
        self,
        table: RetailTable,
        config: EngineConfig | None = None,
        *,
        polars_reader: PolarsReader = read_polars,
    ) -> CleanedExport:
        """Read and clean the export, with the same outcome whatever the engine: on
        Polars the typed table and the quarantine are computed now, and any Polars
        failure (an error or a panic, at read or at collect time) redoes the whole
        cleaning on Dask; an export neither engine can clean raises
        :class:`RawExportError` naming the table, the file and both errors."""
        config = config or EngineConfig.from_settings()
        loaded = self.load(table, config, polars_reader=polars_reader)
        try:
            return _clean(loaded, table)
        except POLARS_FAILURES as exc:
            if loaded.engine is not Engine.POLARS:
                raise RawExportError(
                    f"retail table {table.name!r}: cannot clean raw export "
                    f"{self.path(table)}: {type(exc).__name__}: {exc}"
                ) from exc
            polars_error = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "%s: Polars failed while cleaning %s (%s); cleaning it with Dask",
            table.name,
            self.path(table),
            polars_error,
        )
        dask_only = config.with_overrides(force_dask=True)
        loaded = self.load(table, dask_only)
        try:
            cleaned = _clean(loaded, table)
        except Exception as exc:
            raise RawExportError(
                f"retail table {table.name!r}: cannot clean raw export {self.path(table)}: "
                f"Polars: {polars_error}; Dask: {type(exc).__name__}: {exc}"
            ) from exc
        cleaned.fallback_error = polars_error
        return cleaned


def _clean(loaded: Loaded, table: RetailTable) -> CleanedExport:
    """Typed table and quarantine of one loaded export (collected on Polars)."""
    typed = typed_table(loaded.frame, table)
    if loaded.engine is Engine.POLARS:
        typed = typed.collect(backend="polars")
    quarantine = quarantine_rows(loaded.frame, table)
    rejected = None if quarantine is None else quarantine.collect(backend="polars")
    counts = {} if rejected is None else unparsable_counts(rejected)
    return CleanedExport(typed, rejected, counts, loaded)
