"""Dagster resources of the cadastral pipeline: a lazy Spark session and a Delta IO manager.

``CadastralSparkResource`` starts Spark only when an asset first touches it, with the
settings of :mod:`bi_platform.cadastral.spark_config` (chosen from the environment by
:func:`bi_platform.cadastral.spark_session.start_spark`). ``DeltaSparkIOManager`` stores
Spark DataFrames as Delta tables through :mod:`bi_platform.cadastral.delta`.

No ``from __future__ import annotations`` here: Dagster resolves the resource field
annotations at runtime.
"""

import logging
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from bi_platform.cadastral.delta import (
    DeltaCommit,
    latest_version_where,
    read_delta,
    table_version,
    write_delta,
)
from bi_platform.cadastral.spark_metrics import StageMetrics, StageMetricsCollector
from bi_platform.cadastral.spark_session import CACHE_LEVEL, start_spark
from bi_platform.cadastral.transforms import HIGH_CARDINALITY_COLUMNS
from bi_platform.settings import Settings, get_settings

log = logging.getLogger(__name__)


class CadastralSparkResource(LazyPySparkResource):
    """A Spark session started lazily (on first ``spark_session`` access) by
    :func:`~bi_platform.cadastral.spark_session.start_spark`.

    The master, cores, driver memory and JDBC jar are fields that :meth:`from_settings`
    fills from ``SPARK_MASTER``, ``SPARK_TOTAL_CORES``, ``SPARK_DRIVER_MEMORY`` and
    ``CADASTRAL_JDBC_JAR`` (the definitions build the resource with it, so the Dagster UI
    shows them); a field left unset (``None``) is read from the settings when the session
    starts. ``SPARK_REMOTE`` (Spark Connect, which wins over the master) is no field: its
    URL may carry a token, so it is read from the environment when the session starts.
    :mod:`bi_platform.cadastral.spark_config` derives the session settings from these;
    ``spark_config`` only adds or overrides individual Spark settings on top of them
    (ignored with Spark Connect).
    """

    master: str | None = Field(
        default=None,
        description="Spark master URL (None: local[*]). From SPARK_MASTER.",
    )
    total_cores: int | None = Field(
        default=None,
        description=(
            "Cores of the Spark cluster, sizing shuffle partitions (None: the local cores). "
            "From SPARK_TOTAL_CORES."
        ),
    )
    driver_memory: str | None = Field(
        default=None,
        description="spark.driver.memory of a local-mode session. From SPARK_DRIVER_MEMORY.",
    )
    jdbc_jar: str | None = Field(
        default=None, description="PostgreSQL JDBC driver jar. From CADASTRAL_JDBC_JAR."
    )

    spark_config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Extra Spark settings applied over those derived from the environment by "
            "spark_config.py (e.g. {'spark.driver.memory': '4g'})."
        ),
    )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "CadastralSparkResource":
        """The resource with every field set from ``settings`` (default: the environment)."""
        settings = settings or get_settings()
        return cls(
            master=settings.spark_master,
            total_cores=settings.spark_total_cores,
            driver_memory=settings.spark_driver_memory,
            jdbc_jar=str(settings.cadastral_jdbc_jar),
        )

    def settings(self) -> Settings:
        """The settings in effect with this resource's set fields on top."""
        overrides = {
            name: value
            for name, value in (
                ("spark_master", self.master),
                ("spark_total_cores", self.total_cores),
                ("spark_driver_memory", self.driver_memory),
                ("cadastral_jdbc_jar", Path(self.jdbc_jar) if self.jdbc_jar else None),
            )
            if value is not None
        }
        settings = get_settings()
        return settings.model_copy(update=overrides) if overrides else settings

    def _init_session(self) -> None:
        if self._spark_session is None:
            extra = {key: str(value) for key, value in self.spark_config.items()}
            self._spark_session = start_spark(self.settings(), extra=extra)


def _uri(base_dir: Path, asset_key: dg.AssetKey) -> Path:
    return base_dir.joinpath(*asset_key.path)


def _column_schema(df: Any) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=field.name, type=field.dataType.simpleString())
            for field in df.schema.fields
        ]
    )


#: Commit-metadata key of the load date a Delta version was computed from.
LOAD_DATE_METADATA = "dat_ref_carga"


class DeltaSparkIOManager(dg.ConfigurableIOManager):
    """Stores Spark DataFrame outputs as Delta tables, one per asset, and loads them back
    as Spark DataFrames.

    **Layout**: asset ``a/b`` is the Delta table ``<base_dir>/a/b`` (default
    ``$BI_PLATFORM_HOME/delta``, so ``cadastral/coletapedt001`` is
    ``$BI_PLATFORM_HOME/delta/cadastral/coletapedt001``). Every materialization overwrites
    the table as a new Delta version; older versions stay readable (time travel, ``restore``).

    **In-run hand-off**: an output is persisted while it is written; a later input of the
    same process that needs exactly the version just committed gets that DataFrame (so
    ``cadastro_consolidado`` joins the stage outputs in place, co-partitioned by
    ``chave_pessoa``, rather than reading four tables back). Any other version, or after
    the session changed, is read through the Delta log. One DataFrame per table is kept.
    ``hand_off_in_run=False`` always reads through the log.

    **Partitions** (one per load date): the version written for partition ``D`` records
    ``dat_ref_carga=D`` in its commit metadata, and an input of partition ``D`` is the
    newest version written for ``D`` (not simply the latest), so a run reads exactly its
    own date's tables. Unpartitioned outputs and inputs use the latest version.

    **Metadata** per output: ``delta_version``, ``delta_files``, ``rows``, ``delta_uri``,
    ``dagster/row_count``, ``dagster/column_schema``, and the Spark stage metrics of the
    write, which runs the asset's lazy transforms (:func:`stage_metrics_metadata`).
    """

    spark: dg.ResourceDependency[CadastralSparkResource]
    base_dir: str | None = Field(
        default=None,
        description=(
            "Root of the Delta tables. From $BI_PLATFORM_HOME/delta (unset: read from "
            "BI_PLATFORM_HOME when used)."
        ),
    )
    hand_off_in_run: bool = Field(
        default=True,
        description=(
            "Give a later step of the same process the persisted DataFrame a Delta version "
            "was just written from, instead of reading that version's files back."
        ),
    )

    @classmethod
    def from_settings(
        cls, spark: CadastralSparkResource, settings: Settings | None = None
    ) -> "DeltaSparkIOManager":
        """The IO manager on ``spark`` with ``base_dir`` set from ``settings`` (default:
        the environment)."""
        settings = settings or get_settings()
        return cls(spark=spark, base_dir=str(settings.delta_dir))

    def _base_dir(self) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        return get_settings().delta_dir

    def _table_uri(self, context: dg.OutputContext | dg.InputContext) -> Path:
        if not context.has_asset_key:
            raise dg.DagsterInvariantViolationError(
                "DeltaSparkIOManager stores asset outputs only (this output has no asset key)"
            )
        return _uri(self._base_dir(), context.asset_key)

    @staticmethod
    def _partition(context: dg.OutputContext | dg.InputContext) -> str | None:
        if not context.has_asset_partitions:
            return None
        keys = list(context.asset_partition_keys)
        if len(keys) != 1:
            raise dg.DagsterInvariantViolationError(
                f"DeltaSparkIOManager handles one load date per run, got {len(keys)}: "
                f"{keys[:5]} (run one partition at a time)"
            )
        return keys[0]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        from pyspark.sql import DataFrame

        if not isinstance(obj, DataFrame):
            raise dg.DagsterInvariantViolationError(
                f"DeltaSparkIOManager expects a Spark DataFrame, got {type(obj).__name__}"
            )
        uri = self._table_uri(context)
        partition = self._partition(context)
        if self.hand_off_in_run:
            # Kept for the steps of this process that read this very version (load_input).
            obj.persist(CACHE_LEVEL)
        # The DataFrame is lazy: writing it runs the asset's Spark work, measured here.
        with StageMetricsCollector(obj.sparkSession).measure(
            context.asset_key.to_user_string()
        ) as metrics:
            commit: DeltaCommit = write_delta(
                obj,
                uri,
                mode="overwrite",
                description=f"dagster run {context.run_id}",
                commit_metadata={LOAD_DATE_METADATA: partition} if partition else None,
                plain_columns=HIGH_CARDINALITY_COLUMNS,
            )
        context.log.info(
            f"Delta table {commit.uri}: version {commit.version}, {commit.rows} rows "
            f"in {commit.files} files ({commit.bytes} bytes)"
        )
        if self.hand_off_in_run:
            _remember(str(uri), commit.version, obj)
        context.add_output_metadata(
            {
                "delta_version": dg.MetadataValue.int(commit.version),
                "delta_files": dg.MetadataValue.int(commit.files),
                "rows": dg.MetadataValue.int(commit.rows),
                "delta_bytes": dg.MetadataValue.int(commit.bytes),
                "delta_uri": dg.MetadataValue.path(commit.uri),
                "dagster/row_count": dg.MetadataValue.int(commit.rows),
                "dagster/column_schema": _column_schema(obj),
                **stage_metrics_metadata(metrics),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        uri = self._table_uri(context)
        partition = self._partition(context)
        version = None
        if partition is not None:
            version = version_for_load_date(uri, partition)
            if version is None:
                raise dg.Failure(
                    f"Delta table {uri} has no version for {LOAD_DATE_METADATA}={partition}: "
                    f"materialize {context.asset_key.to_user_string()} for that load date first"
                )
        session = self.spark.spark_session
        if version is None:
            version = table_version(uri)
        written = _written_here(str(uri), version, session) if self.hand_off_in_run else None
        if written is not None:
            context.log.info(
                f"Delta table {uri} version {version}: the DataFrame this process wrote it "
                "from, still persisted (no read back)"
            )
            return written
        df = read_delta(session, uri, version)
        context.log.info(f"Loaded Delta table {uri} at version {version}")
        return df


#: Per table URI: the version this process last committed and the persisted DataFrame it
#: was written from. A Delta version never changes, so a step of the same run (the job
#: runs in one process) that needs exactly that version gets the DataFrame instead of
#: reading the files back; any other version is read through the Delta log.
_WRITTEN: dict[str, tuple[int, Any]] = {}


def _remember(uri: str, version: int, df: Any) -> None:
    previous = _WRITTEN.get(uri)
    if previous is not None and previous[1] is not df:
        previous[1].unpersist()
    _WRITTEN[uri] = (version, df)


def _written_here(uri: str, version: int | None, session: Any) -> Any:
    """The persisted DataFrame of ``uri`` at ``version``, if this process wrote it with
    ``session`` and it is still cached; else None."""
    found = _WRITTEN.get(uri)
    if found is None or found[0] != version:
        return None
    df = found[1]
    try:
        if df.sparkSession is not session or not df.is_cached:
            return None
    except Exception:  # a stopped session
        return None
    return df


def stage_metrics_metadata(metrics: StageMetrics) -> dict[str, Any]:
    """Spark's figures for the work behind one materialization: ``spark_stages`` (completed
    stages), ``spark_jobs``, ``spark_skipped_stages``, ``shuffle_read_bytes``,
    ``shuffle_write_bytes``, ``spill_bytes``, ``executor_run_ms``; on a session without a
    readable status store (Spark Connect) ``spark_metrics`` says why instead."""
    if not metrics.available:
        return {"spark_metrics": f"unavailable: {metrics.reason}"}
    return {
        "spark_stages": dg.MetadataValue.int(metrics.stages),
        "spark_jobs": dg.MetadataValue.int(metrics.jobs),
        "spark_skipped_stages": dg.MetadataValue.int(metrics.skipped_stages),
        "shuffle_read_bytes": dg.MetadataValue.int(metrics.shuffle_read_bytes),
        "shuffle_write_bytes": dg.MetadataValue.int(metrics.shuffle_write_bytes),
        "spill_bytes": dg.MetadataValue.int(metrics.spill_bytes),
        "executor_run_ms": dg.MetadataValue.int(metrics.executor_run_ms),
    }


def version_for_load_date(uri: str | Path, load_date: str) -> int | None:
    """The newest version of the Delta table at ``uri`` written for ``load_date``."""
    return latest_version_where(uri, LOAD_DATE_METADATA, load_date)
