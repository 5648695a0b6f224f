"""``HybridParquetIOManager``: Parquet tables read with Polars or Dask, routed by size.

A thin Dagster layer over :mod:`bi_platform.io_managers.engines` (paths, partitions,
logging, metadata); the reading and writing logic lives there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from bi_platform.io_managers.engines import (
    Engine,
    EngineConfig,
    Loaded,
    Written,
    load_parquet,
    write_parquet,
)
from bi_platform.settings import Settings, get_settings

PARQUET_SUFFIX = ".parquet"
#: Output definition metadata: ``{PUBLISH_KEY: AFTER_CHECKS}`` writes the new version
#: without publishing it (write-audit-publish); the asset's gate publishes it.
PUBLISH_KEY = "bi_platform/publish"
AFTER_CHECKS = "after_checks"


def _safe_segment(text: str) -> str:
    """A partition key as one path segment: ``%`` and ``/`` escaped, no leading dot."""
    segment = text.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C")
    if not segment or segment.startswith("."):
        segment = "%2E" + segment[1:] if segment else "%00"
    return segment


def partition_segments(partition_key: str) -> list[str]:
    """Path segments of a partition key; a multi-dimensional key gives one directory
    level per dimension, in dimension-name order (``<date>/<region>``)."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        return [_safe_segment(v) for _, v in sorted(partition_key.keys_by_dimension.items())]
    return [_safe_segment(partition_key)]


class HybridParquetIOManager(dg.ConfigurableIOManager):
    """Stores Polars / Dask / narwhals frames as Parquet; loads them with Polars or Dask,
    chosen per load from the on-disk size.

    **Layout** (under ``base_dir``, default ``$BI_PLATFORM_HOME/lake``): an asset
    ``a/b`` is ``a/b.parquet``, a single file when written by Polars, a directory of
    ``part.N.parquet`` files when written by Dask. A partitioned asset keeps one file or
    directory per partition: ``a/b/<partition_key>.parquet`` (multi-dimensional keys:
    one directory per dimension). Op outputs without an asset go to
    ``storage/<run_id>/<step>/<output>.parquet``.

    **Writes** are atomic: a file is written to a hidden temporary sibling and renamed
    over the target; a Dask directory is written into a fresh hidden version directory
    and published by atomically swapping a symlink. Readers see the old table or the new
    one, never a partial one, and a failed or killed write leaves the old table intact.
    A step that outputs several partitions at once returns ``{partition_key: frame}``.

    **Write-audit-publish**: an output whose definition metadata has
    ``bi_platform/publish: after_checks`` is written as a staged version next to the
    table (``staged_path`` in its metadata, ``published: false``) while readers keep the
    current one; the asset's blocking checks read the staged version and publish it
    (:func:`~bi_platform.io_managers.engines.publish_staged`) only when they pass. Every
    file carries Parquet page checksums, and every load verifies each file version once
    (see :mod:`bi_platform.io_managers.integrity`).

    **Loads** follow the input's type annotation:

    - ``pl.LazyFrame`` / ``pl.DataFrame``: Polars; ``dd.DataFrame``: Dask.
    - ``nw.LazyFrame`` / ``nw.DataFrame`` (or no annotation: ``nw.LazyFrame``): the
      engine is chosen from the size summed over all files and partitions: Polars below
      ``polars_threshold_mb``, Dask at or above, Dask always when ``polars_enabled`` is
      false or ``force_dask`` is true. A Polars lazy load resolves the schema at load
      time (a corrupt or missing file fails here) but reads no data, so projections and
      filters are still pushed down.
    - If Polars fails (any error, incl. ``MemoryError``), Dask takes over with a warning,
      and with ``validate_integrity`` the result's columns, dtypes and row count are
      checked against the Parquet footers (``IntegrityError`` on a mismatch).

    A partitioned input reads all requested partitions together (a range, or all of
    them for an unpartitioned downstream asset); input metadata ``columns: [...]``
    projects, ``allow_missing_partitions: true`` skips unmaterialized partitions. A
    missing table fails at load time with its asset key and expected path.

    **Metadata**: outputs get ``dagster/row_count``, ``dagster/column_schema``,
    ``path``, ``size_mb``, ``engine`` (the writer), ``fallback`` (an input of the step
    fell back to Dask), ``write_seconds``, ``files`` (a step writing several partitions
    reports ``rows_total`` and ``partitions`` instead of ``dagster/row_count``); inputs
    get the routing decision (``engine``, ``reason``, ``size_mb``, ``threshold_mb``,
    ``fallback``, ``files``), which is also logged.

    :meth:`from_settings` sets every field from the environment variable of the same
    name (see ``bi_platform.settings``); the definitions build the IO manager with it, so
    the Dagster UI shows the configuration in use. A field left unset (``None``) is read
    from the settings at each load. With ``dask_scheduler_address`` Dask runs on that
    ``distributed`` cluster (one client per process, reused); its workers must see
    ``base_dir``.
    """

    base_dir: str | None = Field(
        default=None,
        description="Root directory of the tables. From $BI_PLATFORM_HOME/lake.",
    )
    polars_threshold_mb: str | None = Field(
        default=None,
        description=(
            "On-disk MB from which narwhals inputs load with Dask, or `auto` (from "
            "available RAM). From POLARS_THRESHOLD_MB (500)."
        ),
    )
    polars_enabled: bool | None = Field(
        default=None,
        description="false: narwhals inputs always load with Dask. From POLARS_ENABLED.",
    )
    force_dask: bool | None = Field(
        default=None, description="true: narwhals inputs always load with Dask. From FORCE_DASK."
    )
    validate_integrity: bool | None = Field(
        default=None,
        description="Check a Dask fallback's schema and row count. From VALIDATE_INTEGRITY.",
    )
    dask_scheduler_address: str | None = Field(
        default=None,
        description="tcp://host:8786 of a Dask cluster (None: local). From DASK_SCHEDULER_ADDRESS.",
    )
    verify_checksums: bool | None = Field(
        default=None,
        description="Verify each Parquet file version's page checksums before its first read. "
        "From VERIFY_CHECKSUMS.",
    )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> HybridParquetIOManager:
        """The IO manager with every field set from ``settings`` (default: the environment)."""
        settings = settings or get_settings()
        return cls(
            base_dir=str(settings.lake_dir),
            polars_threshold_mb=settings.polars_threshold_mb,
            polars_enabled=settings.polars_enabled,
            force_dask=settings.force_dask,
            validate_integrity=settings.validate_integrity,
            dask_scheduler_address=settings.dask_scheduler_address,
            verify_checksums=settings.verify_checksums,
        )

    # (run_id, step_key) of steps where an input load fell back to Dask.
    _fallback_steps: set[tuple[str, str]] = PrivateAttr(default_factory=set)

    # -- configuration and paths ---------------------------------------------------------
    def engine_config(self) -> EngineConfig:
        """The environment's settings with this IO manager's set fields on top."""
        return EngineConfig.from_settings(get_settings()).with_overrides(
            polars_threshold_mb=self.polars_threshold_mb,
            polars_enabled=self.polars_enabled,
            force_dask=self.force_dask,
            validate_integrity=self.validate_integrity,
            dask_scheduler_address=self.dask_scheduler_address,
            verify_checksums=self.verify_checksums,
        )

    @property
    def root(self) -> Path:
        return Path(self.base_dir).expanduser() if self.base_dir else get_settings().lake_dir

    def asset_path(self, asset_key: dg.AssetKey, partition_key: str | None = None) -> Path:
        """Where an asset (or one of its partitions) is stored."""
        if partition_key is None:
            *parents, name = asset_key.path
            return self.root.joinpath(*parents, name + PARQUET_SUFFIX)
        *parents, leaf = partition_segments(partition_key)
        return self.asset_dir(asset_key).joinpath(*parents, leaf + PARQUET_SUFFIX)

    def asset_dir(self, asset_key: dg.AssetKey) -> Path:
        """The directory holding a partitioned asset's partitions."""
        return self.root.joinpath(*asset_key.path)

    def _output_paths(self, context: dg.OutputContext) -> list[tuple[str | None, Path]]:
        if not context.has_asset_key:
            *parents, name = context.get_identifier()
            return [(None, self.root.joinpath("storage", *parents, name + PARQUET_SUFFIX))]
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            return [(key, self.asset_path(context.asset_key, key)) for key in keys]
        return [(None, self.asset_path(context.asset_key))]

    def _input_paths(self, context: dg.InputContext) -> list[tuple[str | None, Path]]:
        if not context.has_asset_key:
            upstream = context.upstream_output
            if upstream is None:
                raise dg.DagsterInvariantViolationError(
                    f"input {context.name!r} has neither an asset nor an upstream output"
                )
            return self._output_paths(upstream)
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            return [(key, self.asset_path(context.asset_key, key)) for key in keys]
        return [(None, self.asset_path(context.asset_key))]

    # -- extension point -----------------------------------------------------------------
    def load_files(
        self,
        paths: Sequence[Path],
        as_type: Any,
        config: EngineConfig,
        columns: Sequence[str] | None,
    ) -> Loaded:
        """Read the paths (see :func:`engines.load_parquet`); override to swap readers."""
        return load_parquet(paths, as_type, config, columns=columns)

    # -- IOManager -----------------------------------------------------------------------
    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Forget the fallback flags of the run that ends."""
        run = context.run
        if run is None:
            return
        self._fallback_steps = {step for step in self._fallback_steps if step[0] != run.run_id}

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            context.log.debug("output is None: nothing written")
            return
        config = self.engine_config()
        targets = self._output_paths(context)
        publish = context.definition_metadata.get(PUBLISH_KEY) != AFTER_CHECKS
        if not publish and len(targets) != 1:
            raise TypeError(f"{PUBLISH_KEY}={AFTER_CHECKS} supports unpartitioned outputs only")
        if isinstance(obj, Mapping):
            keys = [key for key, _ in targets]
            if keys == [None]:
                raise TypeError("a mapping can only be returned for partitioned outputs")
            missing = [key for key in keys if key not in obj]
            if missing:
                raise KeyError(f"no frame for partitions {missing} in the returned mapping")
            written = [write_parquet(obj[key], path, config=config) for key, path in targets]
        elif len(targets) > 1:
            raise TypeError(
                f"this step outputs {len(targets)} partitions of "
                f"{context.asset_key.to_user_string()}: return {{partition_key: frame}}"
            )
        else:
            written = [write_parquet(obj, targets[0][1], config=config, publish=publish)]
        metadata = self._output_metadata(context, written)
        if not publish:
            metadata["staged_path"] = dg.MetadataValue.path(str(written[0].staged))
            metadata["published"] = False
            context.log.info(
                f"{context.asset_key.to_user_string()}: new version staged at "
                f"{written[0].staged}; {written[0].path} is published only after the "
                "blocking checks pass"
            )
        context.add_output_metadata(metadata)

    def _output_metadata(self, context: dg.OutputContext, written: list[Written]) -> dict[str, Any]:
        first = written[0]
        step = (context.run_id, context.step_key)
        path = first.path if len(written) == 1 else self.asset_dir(context.asset_key)
        metadata: dict[str, Any] = {
            "dagster/row_count": sum(w.rows for w in written),
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(name=n, type=t) for n, t in first.schema.items()]
            ),
            "path": dg.MetadataValue.path(str(path)),
            "size_mb": round(sum(w.size_mb for w in written), 6),
            "engine": str(first.engine),
            "fallback": step in self._fallback_steps,
            "write_seconds": round(sum(w.seconds for w in written), 4),
            "files": sum(w.files for w in written),
        }
        if len(written) > 1:
            # Several partitions in one step: Dagster copies this metadata onto each
            # partition's materialization, so a per-partition row count would be wrong.
            metadata["rows_total"] = metadata.pop("dagster/row_count")
            metadata["partitions"] = len(written)
        return metadata

    def load_input(self, context: dg.InputContext) -> Any:
        config = self.engine_config()
        targets = self._input_paths(context)
        label = (
            context.asset_key.to_user_string()
            if context.has_asset_key
            else f"output of step {context.upstream_output.step_key}"  # type: ignore[union-attr]
        )
        present = [path for _, path in targets if path.exists()]
        missing = [(key, path) for key, path in targets if not path.exists()]
        allow_missing = bool(context.definition_metadata.get("allow_missing_partitions"))
        if missing and not (allow_missing and present):
            shown = "; ".join(
                f"{path}" + (f" (partition {key})" if key is not None else "")
                for key, path in missing[:5]
            )
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FileNotFoundError(
                f"input {context.name!r}: no Parquet data for {label}, expected at {shown}{more}. "
                "Materialize it first."
            )
        if missing:
            context.log.warning(
                f"{label}: skipping {len(missing)} unmaterialized partition(s) "
                f"(allow_missing_partitions): {[key for key, _ in missing][:5]}"
            )

        columns = context.definition_metadata.get("columns")
        loaded = self.load_files(present, context.dagster_type.typing_type, config, columns)

        where = f"{len(loaded.files)} file(s)" + (
            f", {len(present)} partition(s)" if context.has_asset_partitions else ""
        )
        threshold = (
            f"; threshold {loaded.threshold_mb:g} MB"
            if loaded.threshold_mb is not None and "threshold" not in loaded.reason
            else ""
        )
        chosen = Engine.POLARS if loaded.fallback else loaded.engine
        context.log.info(
            f"{label}: {loaded.size_mb:.6g} MB in {where} -> {chosen} ({loaded.reason}{threshold})"
        )
        if loaded.fallback:
            context.log.warning(
                f"{label}: Polars failed ({loaded.error}); loaded with Dask instead"
                + (" and validated schema and row count" if loaded.validated else "")
            )
            step_key = _step_key(context)
            if step_key is not None:
                self._fallback_steps.add(step_key)
        self._add_input_metadata(context, loaded, present)
        return loaded.frame

    def _add_input_metadata(
        self, context: dg.InputContext, loaded: Loaded, paths: list[Path]
    ) -> None:
        if not context.has_asset_key:
            return
        path = paths[0] if len(paths) == 1 else self.asset_dir(context.asset_key)
        metadata: dict[str, Any] = {
            "path": dg.MetadataValue.path(str(path)),
            "engine": str(loaded.engine),
            "reason": loaded.reason,
            "size_mb": round(loaded.size_mb, 6),
            "fallback": loaded.fallback,
            "files": len(loaded.files),
        }
        if loaded.threshold_mb is not None:
            metadata["threshold_mb"] = loaded.threshold_mb
        if context.has_asset_partitions:
            metadata["partitions"] = len(paths)
        # Best effort: Dagster records the metadata on the LOADED_INPUT event, then fails to
        # attach its asset observation to several partitions at once (or outside a run).
        with contextlib.suppress(Exception):
            context.add_input_metadata(metadata, description="HybridParquetIOManager load")


def _step_key(context: dg.InputContext) -> tuple[str, str] | None:
    try:
        step_context = context.step_context
    except dg.DagsterInvariantViolationError:
        return None
    return (step_context.run_id, step_context.step.key)
