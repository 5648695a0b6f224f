"""Every environment variable the platform reads, typed, with embedded defaults.

Nothing else in ``bi_platform`` calls ``os.environ`` for configuration: modules take a
``Settings`` (or the values they need from it). The README's configuration table lists
the same variables; ``bi_platform_tests/test_settings.py`` keeps the two in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Platform configuration, read from the process environment.

    Each field is read from the environment variable of the same name, upper-cased.
    """

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    bi_platform_home: Path = Field(
        Path(".bi_platform"),
        description="Root of everything a run writes (lake, warehouse, local PostgreSQL, ...).",
    )
    database_url: str | None = Field(
        None,
        description="External PostgreSQL for platform data. Unset: the embedded local cluster.",
    )
    dagster_database_url: str | None = Field(
        None,
        description=(
            "External PostgreSQL for Dagster's run/event/schedule storage. Only read when "
            "DATABASE_URL is set; defaults to the database `dagster` on that server."
        ),
    )
    dagster_home: Path | None = Field(
        None,
        description="Dagster instance dir (has dagster.yaml). Default: $BI_PLATFORM_HOME/dagster",
    )
    bi_platform_pg_bin_dir: Path | None = Field(
        None,
        description="Directory with initdb/pg_ctl. Default: PATH, then /usr/lib/postgresql/*/bin.",
    )
    bi_platform_pg_os_user: str = Field(
        "postgres",
        description="Unprivileged OS user owning and running the local cluster when run as root.",
    )
    bi_platform_pg_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Preferred port of the local cluster. Default: the last one used, else free.",
    )
    bi_platform_pg_start_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds to wait for the local cluster to start or stop.",
    )
    # -- retail: the hybrid Polars/Dask Parquet IO manager ------------------------------
    polars_threshold_mb: str = Field(
        "500",
        description=(
            "On-disk size (MB) from which a table loads with Dask instead of Polars, or "
            "`auto`: 1000 with > 16 GiB RAM available, 200 with < 8 GiB, else 500."
        ),
        pattern=r"^(auto|\d+(\.\d+)?)$",
    )
    polars_enabled: bool = Field(True, description="false: every table loads with Dask.")
    force_dask: bool = Field(False, description="true: every table loads with Dask (debug).")
    validate_integrity: bool = Field(
        True, description="Check a Dask fallback's schema and row count against the file."
    )
    dask_scheduler_address: str | None = Field(
        None, description="tcp://host:8786 of a Dask cluster. Unset: local threads."
    )
    verify_checksums: bool = Field(
        True,
        description=(
            "Decode every page (checksums checked) of each Parquet file version before "
            "its first read by the retail IO layer; false: trust the files."
        ),
    )

    # -- news: the HuggingFace dataset repo -------------------------------------------
    hf_repo_id: str | None = Field(
        None,
        description=(
            "owner/name of the HF dataset repo on the Hub. Unset: a local directory repo "
            "under $BI_PLATFORM_HOME/hf (same layout)."
        ),
    )
    hf_token: SecretStr | None = Field(
        None, description="Hub token with write access (never logged)."
    )
    hf_endpoint: str | None = Field(
        None, description="Hub URL (default https://huggingface.co; a mirror or test server)."
    )

    storage_backend: Literal["huggingface", "postgres", "dual_write"] = Field(
        "postgres",
        description="Where news writes go: PG (source of truth), the HF repo, or both.",
    )
    storage_read_from: Literal["huggingface", "postgres"] = Field(
        "postgres", description="Where news reads come from."
    )

    # -- serving: the DuckDB warehouse and the query API --------------------------------
    serving_warehouse_path: Path | None = Field(
        None,
        description=(
            "The DuckDB warehouse file. Default: $BI_PLATFORM_HOME/warehouse/bi_warehouse.duckdb."
        ),
    )
    serving_duckdb_threads: int | None = Field(
        None,
        ge=1,
        description=(
            "DuckDB threads of each API worker's warehouse connections (and of the build). "
            "Default: usable cores / uvicorn workers (at least 1)."
        ),
    )

    serving_host: str = Field("127.0.0.1", description="Address `bi-platform serve` binds.")
    serving_port: int = Field(8080, ge=1, le=65535, description="Port of the query API.")
    serving_workers: int = Field(1, ge=1, description="uvicorn worker processes of the API.")
    serving_pool_size: int = Field(
        8, ge=1, le=256, description="Read-only DuckDB connections per API worker."
    )
    serving_pool_timeout: float = Field(
        5.0, gt=0, description="Seconds a request waits for a pooled connection (then 503)."
    )
    serving_auth: bool = Field(
        True, description="Require an API key (X-API-Key or Bearer) on query endpoints."
    )
    serving_api_keys_file: Path | None = Field(
        None,
        description="Hashed API keys. Default: $BI_PLATFORM_HOME/serving/api_keys.json.",
    )
    serving_rate_limit: str = Field(
        "100/minute", description="Requests per API key (or client address without auth)."
    )
    serving_cache: bool = Field(True, description="false: every request runs its query.")
    serving_drain_seconds: float = Field(
        10.0, gt=0, description="Seconds a SIGTERMed API drains its connections before it exits 0."
    )
    serving_redis_timeout: float = Field(
        0.1,
        gt=0,
        description="Seconds one Redis command of the API may take (connect: half of it).",
    )
    serving_redis_breaker_cooldown: float = Field(
        2.0, gt=0, description="Seconds the API's Redis circuit breaker stays open before a probe."
    )
    redis_url: str | None = Field(
        None,
        description="redis://host:port/db for the cache and rate limits. Unset: in-process.",
    )

    # -- etl: the secure hybrid ETL (binary/CSV/Parquet inbox) ---------------------------
    etl_layout: str = Field(
        "default", description="Record layout (struct_config.json entry) of binary inputs."
    )
    etl_layouts_file: Path | None = Field(
        None,
        description=(
            "A JSON file of extra record layouts, merged over the packaged struct_config.json."
        ),
    )
    etl_max_file_mb: float = Field(
        1024.0, gt=0, description="Inbox files larger than this are rejected unread."
    )
    etl_chunk_mb: int = Field(
        64, ge=1, description="Bytes of a binary file decoded per chunk (bounds memory)."
    )
    etl_workers: int | None = Field(
        None, ge=1, description="Parser processes. Default: the machine's cores."
    )
    etl_timestamp_min: datetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC),
        description="Records timestamped before this (ISO 8601) go to the dead-letter queue.",
    )
    etl_timestamp_max: datetime = Field(
        datetime(2035, 12, 31, 23, 59, 59, tzinfo=UTC),
        description="Records timestamped after this (ISO 8601) go to the dead-letter queue.",
    )
    etl_sample_fraction: float = Field(
        0.005, gt=0, le=1, description="Fraction of records in the stratified sample."
    )
    etl_sample_seed: int = Field(42, description="Seed of the stratified sample (reproducible).")
    etl_backup_keep: int = Field(
        5, ge=0, description="Previous reports kept under $BI_PLATFORM_HOME/etl/backup/."
    )

    # -- cadastral: PySpark transforms, Delta tables, the PostgreSQL sync ---------------
    spark_master: str | None = Field(
        None, description="Spark master URL (spark://host:7077, yarn, ...). Default: local[*]."
    )
    spark_remote: str | None = Field(
        None, description="sc://host:15002 of a Spark Connect server (wins over SPARK_MASTER)."
    )
    spark_total_cores: int | None = Field(
        None,
        ge=1,
        description="Cores of the Spark cluster (sizes shuffle partitions). Default: local cores.",
    )
    spark_driver_memory: str = Field(
        "4g", description="spark.driver.memory of the local-mode session (ignored remotely)."
    )
    cadastral_jdbc_jar: Path = Field(
        Path("/usr/share/java/postgresql.jar"),
        description="PostgreSQL JDBC driver jar (Debian libpostgresql-jdbc-java).",
    )
    cadastral_max_asset_types: int = Field(
        5, ge=1, description="Cap of the per-person asset-type set of coletapedt205."
    )
    cadastral_sync_retries: int = Field(
        5, ge=1, description="Retries per partition of the PostgreSQL sync (exponential backoff)."
    )

    bi_platform_log_level: str = Field(
        "INFO",
        description="Log level of the `bi-platform` CLI.",
    )

    @field_validator("bi_platform_log_level")
    @classmethod
    def _upper_log_level(cls, value: str) -> str:
        return value.upper()

    # -- derived paths -------------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        """``BI_PLATFORM_HOME`` as an absolute path."""
        return self.bi_platform_home.expanduser().absolute()

    @property
    def postgres_dir(self) -> Path:
        return self.home_dir / "postgres"

    @property
    def dagster_home_dir(self) -> Path:
        return (self.dagster_home or self.home_dir / "dagster").expanduser().absolute()

    @property
    def lake_dir(self) -> Path:
        """Parquet tables written by the platform's IO managers."""
        return self.home_dir / "lake"

    @property
    def raw_dir(self) -> Path:
        """Raw source exports (written by `bi-platform seed`, or dropped by upstream systems)."""
        return self.home_dir / "raw"

    @property
    def hf_dir(self) -> Path:
        """Local HF dataset repos (the default DatasetRepo backend)."""
        return self.home_dir / "hf"

    @property
    def news_dir(self) -> Path:
        """The news inbox (daily scraper batches) and its archive."""
        return self.home_dir / "news"

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB warehouse file the serving API reads."""
        default = self.home_dir / "warehouse" / "bi_warehouse.duckdb"  # serving.warehouse
        path = self.serving_warehouse_path or default
        return path.expanduser().absolute()

    @property
    def api_keys_file(self) -> Path:
        """Where ``bi-platform api-key`` stores the (hashed) API keys."""
        path = self.serving_api_keys_file or self.home_dir / "serving" / "api_keys.json"
        return path.expanduser().absolute()

    @property
    def etl_dir(self) -> Path:
        """The ETL inbox, its audit log, report and backups (``etl/inbox``, ...)."""
        return self.home_dir / "etl"

    @property
    def cadastral_raw_dir(self) -> Path:
        """Source exports of the person registry: ``<table>/dat_ref_carga=YYYY-MM-DD/``."""
        return self.raw_dir / "cadastral"

    @property
    def delta_dir(self) -> Path:
        """Delta tables of the cadastral pipeline (``delta/cadastral/<table>``)."""
        return self.home_dir / "delta"

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"

    @property
    def services_env_file(self) -> Path:
        return self.home_dir / "services.env"

    @property
    def uses_external_database(self) -> bool:
        return self.database_url is not None


class SettingsError(ValueError):
    """An environment variable holds a value of the wrong type or range."""


def get_settings() -> Settings:
    """Read the settings from the current environment (cheap; not cached on purpose).

    Raises :class:`SettingsError` naming each offending variable and its value.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])).upper()}={err['input']!r}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid environment: {problems}") from None


# Environment variables documented in the README that Settings does not own, because
# another program reads them from files this platform writes.
DERIVED_ENV_VARS = (
    "BI_PLATFORM_DATABASE_URL",
    "BI_PLATFORM_DAGSTER_DATABASE_URL",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
    "DAGSTER_COMPUTE_LOGS_DIR",
)
