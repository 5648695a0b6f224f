"""Resources of the etl domain: where the ETL reads and writes, and how it parses."""

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from bi_platform.etl.layouts import LayoutError, RecordLayout, get_layout
from bi_platform.etl.parse_common import ParseOptions
from bi_platform.etl.security import AUDIT_DETAIL_MAX, AuditLog
from bi_platform.settings import Settings, get_settings


class EtlResource(dg.ConfigurableResource):
    """The secure ETL's directories and options. There is nothing secret here.

    :meth:`from_settings` fills every field from the settings in effect (``ETL_*`` and
    ``BI_PLATFORM_HOME``, see the README); the definitions build the resource with it, so
    the Dagster UI shows the configuration in use. A field left unset (``None``) is read
    from the settings when used; set a field to override it (tests, a one-off run).
    """

    etl_dir: str | None = Field(
        default=None, description="Inbox, audit log, report, backups. From $BI_PLATFORM_HOME/etl."
    )
    layout: str | None = Field(
        default=None, description="Record layout of binary inputs. From ETL_LAYOUT."
    )
    layouts_file: str | None = Field(
        default=None,
        description="Extra record layouts (None: packaged only). From ETL_LAYOUTS_FILE.",
    )
    max_file_mb: float | None = Field(
        default=None, description="Inbox files larger than this are rejected. From ETL_MAX_FILE_MB."
    )
    chunk_mb: int | None = Field(
        default=None, description="MB of a binary file decoded per chunk. From ETL_CHUNK_MB."
    )
    workers: int | None = Field(
        default=None,
        description="Parser processes (None: the cores of the machine running). From ETL_WORKERS.",
    )
    timestamp_min: str | None = Field(
        default=None,
        description="Earliest valid record time (ISO 8601 with offset). From ETL_TIMESTAMP_MIN.",
    )
    timestamp_max: str | None = Field(
        default=None,
        description="Latest valid record time (ISO 8601 with offset). From ETL_TIMESTAMP_MAX.",
    )
    sample_fraction: float | None = Field(
        default=None, description="Fraction of records in the sample. From ETL_SAMPLE_FRACTION."
    )
    sample_seed: int | None = Field(
        default=None, description="Seed of the stratified sample. From ETL_SAMPLE_SEED."
    )
    backup_keep: int | None = Field(
        default=None, description="Previous reports kept. From ETL_BACKUP_KEEP."
    )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "EtlResource":
        """The resource with every field set from ``settings`` (default: the environment)."""
        settings = settings or get_settings()
        return cls(
            etl_dir=str(settings.etl_dir),
            layout=settings.etl_layout,
            layouts_file=str(settings.etl_layouts_file) if settings.etl_layouts_file else None,
            max_file_mb=settings.etl_max_file_mb,
            chunk_mb=settings.etl_chunk_mb,
            workers=settings.etl_workers,
            timestamp_min=settings.etl_timestamp_min.isoformat(),
            timestamp_max=settings.etl_timestamp_max.isoformat(),
            sample_fraction=settings.etl_sample_fraction,
            sample_seed=settings.etl_sample_seed,
            backup_keep=settings.etl_backup_keep,
        )

    # -- resolved values --------------------------------------------------------------
    def settings(self) -> Settings:
        return get_settings()

    def _pick(self, value: Any, setting: str) -> Any:
        return getattr(self.settings(), setting) if value is None else value

    @property
    def root(self) -> Path:
        return Path(self.etl_dir) if self.etl_dir else self.settings().etl_dir

    @property
    def inbox_dir(self) -> Path:
        return self.root / "inbox"

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    @property
    def dead_letter_dir(self) -> Path:
        return self.root / "dead_letter"

    @property
    def estimates_dir(self) -> Path:
        return self.root / "estimates"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def backup_dir(self) -> Path:
        return self.root / "backup"

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def hash_cache_path(self) -> Path:
        """The sha256 of each inbox file by identity, shared by every inbox scan."""
        return self.root / "state" / "inbox_hashes.json"

    @property
    def max_bytes(self) -> int:
        return int(float(self._pick(self.max_file_mb, "etl_max_file_mb")) * 2**20)

    @property
    def fraction(self) -> float:
        return float(self._pick(self.sample_fraction, "etl_sample_fraction"))

    @property
    def seed(self) -> int:
        return int(self._pick(self.sample_seed, "etl_sample_seed"))

    @property
    def keep(self) -> int:
        return int(self._pick(self.backup_keep, "etl_backup_keep"))

    def resolved_workers(self) -> int:
        workers = self._pick(self.workers, "etl_workers")
        return int(workers) if workers else os.cpu_count() or 1

    def timestamp_window(self) -> tuple[datetime, datetime]:
        settings = self.settings()
        low = (
            datetime.fromisoformat(self.timestamp_min)
            if self.timestamp_min
            else settings.etl_timestamp_min
        )
        high = (
            datetime.fromisoformat(self.timestamp_max)
            if self.timestamp_max
            else settings.etl_timestamp_max
        )
        if low.tzinfo is None or high.tzinfo is None:
            raise ValueError("the ETL timestamp window needs UTC offsets (e.g. 2000-01-01T00:00Z)")
        return low, high

    def record_layout(self) -> RecordLayout:
        """The configured record layout. A refused layout (unknown name, malformed layouts
        file, bad format or field) is written to the audit log (once per distinct reason
        in a row) before :class:`~bi_platform.etl.layouts.LayoutError` propagates."""
        layouts_file = self._pick(self.layouts_file, "etl_layouts_file")
        name = self._pick(self.layout, "etl_layout")
        try:
            return get_layout(name, Path(layouts_file) if layouts_file else None)
        except LayoutError as exc:
            self._audit_refused_layout(str(name), layouts_file, exc)
            raise

    def _audit_refused_layout(self, name: str, layouts_file: Any, exc: LayoutError) -> None:
        entry_name = f"layout:{name}"
        detail = f"record layout refused ({layouts_file or 'packaged layouts'}): {exc}"
        try:
            audit = self.audit_log()
            previous = [e for e in audit.entries() if e.get("name") == entry_name]
            if previous and previous[-1].get("detail") == detail[:AUDIT_DETAIL_MAX]:
                return
            audit.record(name=entry_name, size=None, sha256=None, result="refused", detail=detail)
        except OSError as audit_error:  # the layout error is what the caller must see
            logging.getLogger(__name__).warning("refused layout not audited: %s", audit_error)

    def parse_options(self) -> ParseOptions:
        low, high = self.timestamp_window()
        return ParseOptions(
            layout=self.record_layout(),
            timestamp_min=low,
            timestamp_max=high,
            chunk_bytes=int(self._pick(self.chunk_mb, "etl_chunk_mb")) * 2**20,
            workers=self.resolved_workers(),
        )

    def audit_log(self) -> AuditLog:
        self.root.mkdir(parents=True, exist_ok=True)
        return AuditLog(self.audit_path)

    def describe(self) -> dict[str, Any]:
        """The run configuration, for metadata and the report (no secrets, no records)."""
        layout = self.record_layout()
        low, high = self.timestamp_window()
        return {
            "etl_dir": str(self.root),
            "layout": layout.name,
            "struct_format": layout.struct_format,
            "record_size": layout.record_size,
            "max_file_mb": round(self.max_bytes / 2**20, 3),
            "chunk_mb": int(self._pick(self.chunk_mb, "etl_chunk_mb")),
            "workers": self.resolved_workers(),
            "timestamp_min": low.isoformat(),
            "timestamp_max": high.isoformat(),
            "sample_fraction": self.fraction,
            "sample_seed": self.seed,
            "backup_keep": self.keep,
        }
