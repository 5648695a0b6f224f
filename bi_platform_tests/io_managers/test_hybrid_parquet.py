"""HybridParquetIOManager in real Dagster runs (``dg.materialize``), files re-read after."""

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import dask.dataframe as dd
import narwhals as nw
import pandas as pd
import polars as pl
import pytest
from distributed import Client, LocalCluster, get_task_stream

from bi_platform.io_managers import HybridParquetIOManager, engines
from bi_platform.io_managers.engines import EngineConfig, IntegrityError, Loaded, load_parquet

# Third-party noise: narwhals' Dask notice (when tests call narwhals on Dask themselves;
# the io_managers modules filter it for their own calls) and dask's use of a pandas-3
# deprecated keyword.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Dask support is moving out of Narwhals:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]

UP = pl.DataFrame({"id": [1, 2, 3, 4], "name": ["a", "b", "c", "d"], "price": [1.5, 2.5, 3.5, 4.5]})


@dg.asset
def up() -> pl.DataFrame:
    return UP


def io(tmp_path: Path, **fields: Any) -> HybridParquetIOManager:
    return HybridParquetIOManager(base_dir=str(tmp_path), **fields)


def run(
    assets: Sequence[Any], manager: HybridParquetIOManager, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, resources={"io_manager": manager}, **kwargs)


def output_metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    (event,) = result.asset_materializations_for_node(key)
    return {k: v.value for k, v in event.metadata.items()}


def input_metadata(result: dg.ExecuteInProcessResult, step: str) -> dict[str, Any]:
    (event,) = [
        e for e in result.all_events if e.step_key == step and e.event_type_value == "LOADED_INPUT"
    ]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, level: int) -> str:
    return "\n".join(
        entry.user_message for entry in instance.all_logs(result.run_id) if entry.level == level
    )


def native(frame: Any) -> Any:
    return nw.to_native(frame) if isinstance(frame, nw.DataFrame | nw.LazyFrame) else frame


# -- round trips and metadata -------------------------------------------------------------
def test_output_metadata_and_file(tmp_path: Path) -> None:
    result = run([up], io(tmp_path))
    path = tmp_path / "up.parquet"
    assert pl.read_parquet(path).equals(UP)
    meta = output_metadata(result, "up")
    assert meta["dagster/row_count"] == 4
    assert meta["dagster/column_schema"] == dg.TableSchema(
        columns=[
            dg.TableColumn("id", "int64"),
            dg.TableColumn("name", "large_string"),
            dg.TableColumn("price", "double"),
        ]
    )
    assert meta["path"] == str(path)
    assert meta["size_mb"] == pytest.approx(path.stat().st_size / 2**20, abs=1e-6)
    assert meta["engine"] == "polars"
    assert meta["fallback"] is False
    assert 0 < meta["write_seconds"] < 10
    assert meta["files"] == 1


def test_asset_key_prefix_is_a_directory(tmp_path: Path) -> None:
    @dg.asset(key_prefix=["retail", "clean"])
    def sales() -> pl.LazyFrame:
        return UP.lazy()

    run([sales], io(tmp_path))
    assert pl.read_parquet(tmp_path / "retail" / "clean" / "sales.parquet").equals(UP)


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (pl.LazyFrame, pl.LazyFrame),
        (pl.DataFrame, pl.DataFrame),
        (dd.DataFrame, dd.DataFrame),
        (nw.LazyFrame, nw.LazyFrame),
        (nw.DataFrame, nw.DataFrame),
    ],
)
def test_each_annotation_loads_its_type(tmp_path: Path, annotation: type, expected: type) -> None:
    seen: list[Any] = []

    @dg.asset(ins={"up": dg.AssetIn(dagster_type=dg.PythonObjectDagsterType(annotation))})
    def down(up: Any) -> pl.DataFrame:
        seen.append(up)
        frame = native(up)
        if isinstance(frame, pl.LazyFrame):
            return frame.collect()
        if isinstance(frame, dd.DataFrame):
            return pl.from_pandas(frame.compute())
        return frame

    result = run([up, down], io(tmp_path))
    assert isinstance(seen[0], expected)
    assert pl.read_parquet(tmp_path / "down.parquet").equals(UP)
    assert input_metadata(result, "down")["engine"] == (
        "dask" if annotation is dd.DataFrame else "polars"
    )


def test_annotations_without_dagster_type(tmp_path: Path) -> None:
    """Plain Python annotations (the usual way to write assets) drive the loaded type."""
    types: dict[str, type] = {}

    @dg.asset
    def lazy(up: pl.LazyFrame) -> None:
        types["lazy"] = type(up)

    @dg.asset
    def agnostic(up: nw.LazyFrame) -> None:
        types["agnostic"] = type(native(up))

    @dg.asset
    def untyped(up) -> None:  # type: ignore[no-untyped-def]
        types["untyped"] = type(up)

    run([up, lazy, agnostic, untyped], io(tmp_path))
    assert types == {"lazy": pl.LazyFrame, "agnostic": pl.LazyFrame, "untyped": nw.LazyFrame}


def test_columns_from_input_metadata(tmp_path: Path) -> None:
    @dg.asset(ins={"up": dg.AssetIn(metadata={"columns": ["price", "id"]})})
    def down(up: pl.DataFrame) -> pl.DataFrame:
        return up

    run([up, down], io(tmp_path))
    assert pl.read_parquet(tmp_path / "down.parquet").columns == ["price", "id"]


def test_op_outputs_without_assets(tmp_path: Path) -> None:
    @dg.op
    def make() -> pl.DataFrame:
        return UP

    @dg.op
    def total(frame: nw.LazyFrame) -> nw.LazyFrame:
        return frame.select(nw.col("id").sum())

    @dg.job(resource_defs={"io_manager": io(tmp_path)})
    def job() -> None:
        total(make())

    result = job.execute_in_process()
    written = tmp_path / "storage" / result.run_id / "total" / "result.parquet"
    assert pl.read_parquet(written)["id"].to_list() == [10]
    assert (tmp_path / "storage" / result.run_id / "make" / "result.parquet").is_file()


# -- Dask outputs: directories, replacement -----------------------------------------------
def test_dask_output_directory_and_replacement(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"

    def make(kind: str) -> dg.AssetsDefinition:
        @dg.asset(name="table")
        def table() -> Any:
            if kind == "dask":
                return dd.from_pandas(UP.to_pandas(), npartitions=2)
            if kind == "nw-dask":
                return nw.from_native(dd.from_pandas(UP.to_pandas(), npartitions=3))
            return UP.lazy()

        return table

    result = run([make("dask")], io(tmp_path))
    meta = output_metadata(result, "table")
    assert (meta["engine"], meta["files"], meta["dagster/row_count"]) == ("dask", 2, 4)
    assert path.is_dir() and path.is_symlink()
    assert sorted(p.name for p in path.iterdir()) == ["part.0.parquet", "part.1.parquet"]

    result = run([make("polars")], io(tmp_path))  # directory -> file
    assert output_metadata(result, "table")["engine"] == "polars"
    assert path.is_file() and pl.read_parquet(path).equals(UP)

    result = run([make("nw-dask")], io(tmp_path))  # file -> directory
    assert output_metadata(result, "table")["files"] == 3
    assert pl.read_parquet(engines.parquet_files(path)).equals(UP)


# -- routing, flags, settings ---------------------------------------------------------------
def routed(tmp_path: Path, manager: HybridParquetIOManager) -> tuple[type, dict[str, Any]]:
    seen: list[type] = []

    @dg.asset
    def down(up: nw.LazyFrame) -> None:
        seen.append(type(native(up)))

    result = run([up, down], manager)
    return seen[0], input_metadata(result, "down")


def test_narwhals_input_routed_by_size(tmp_path: Path) -> None:
    kind, meta = routed(tmp_path, io(tmp_path, polars_threshold_mb="500"))
    assert kind is pl.LazyFrame
    assert (meta["engine"], meta["threshold_mb"], meta["fallback"]) == ("polars", 500.0, False)
    assert meta["size_mb"] == pytest.approx(engines.size_mb(tmp_path / "up.parquet"), abs=1e-6)
    assert meta["reason"].endswith("< threshold 500 MB")

    kind, meta = routed(tmp_path, io(tmp_path, polars_threshold_mb="0.001"))
    assert kind is dd.DataFrame
    assert meta["engine"] == "dask"
    assert meta["reason"].endswith(">= threshold 0.001 MB")

    kind, meta = routed(tmp_path, io(tmp_path, polars_threshold_mb="auto"))
    assert kind is pl.LazyFrame  # a few KB is below every auto threshold
    assert meta["threshold_mb"] in (200.0, 500.0, 1000.0)
    assert "(auto)" in meta["reason"]


@pytest.mark.parametrize(
    ("env", "fields", "expected"),
    [
        ({"POLARS_ENABLED": "false"}, {}, dd.DataFrame),
        ({"FORCE_DASK": "true"}, {}, dd.DataFrame),
        ({"POLARS_THRESHOLD_MB": "0"}, {}, dd.DataFrame),
        ({"FORCE_DASK": "true"}, {"force_dask": False}, pl.LazyFrame),  # field beats env
        ({"POLARS_ENABLED": "false"}, {"polars_enabled": True}, pl.LazyFrame),
        ({"POLARS_THRESHOLD_MB": "0"}, {"polars_threshold_mb": "500"}, pl.LazyFrame),
        ({}, {"force_dask": True}, dd.DataFrame),
    ],
)
def test_flags_from_env_and_fields(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    fields: dict[str, Any],
    expected: type,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    kind, _ = routed(tmp_path, io(tmp_path, **fields))
    assert kind is expected


def test_base_dir_defaults_to_lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path / "home"))
    run([up], HybridParquetIOManager())
    assert pl.read_parquet(tmp_path / "home" / "lake" / "up.parquet").equals(UP)


def test_invalid_threshold_field_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="polars_threshold_mb"):
        io(tmp_path, polars_threshold_mb="lots").engine_config()


# -- fallback and integrity ----------------------------------------------------------------
def out_of_memory(files: Any, **kwargs: Any) -> Any:
    raise MemoryError("simulated: Polars ran out of memory")


def duplicating_dask(files: Any, **kwargs: Any) -> dd.DataFrame:
    """A faulty Dask read: every row twice."""
    frame = engines.read_dask(files, **kwargs)
    return dd.concat([frame, frame])


class FailingPolars(HybridParquetIOManager):
    """Every Polars load raises MemoryError (injected reader); Dask reads for real."""

    def load_files(
        self, paths: Sequence[Path], as_type: Any, config: EngineConfig, columns: Any
    ) -> Loaded:
        return load_parquet(paths, as_type, config, columns=columns, polars_reader=out_of_memory)


class FailingPolarsBadDask(HybridParquetIOManager):
    """Polars fails and the Dask fallback returns the wrong number of rows."""

    def load_files(
        self, paths: Sequence[Path], as_type: Any, config: EngineConfig, columns: Any
    ) -> Loaded:
        return load_parquet(
            paths,
            as_type,
            config,
            columns=columns,
            polars_reader=out_of_memory,
            dask_reader=duplicating_dask,
        )


def test_fallback_to_dask_sets_output_flag(tmp_path: Path) -> None:
    @dg.asset
    def down(up: nw.LazyFrame) -> nw.LazyFrame:
        assert isinstance(native(up), dd.DataFrame)
        return up.with_columns(double=nw.col("price") * 2)

    @dg.asset
    def clean(up: nw.LazyFrame) -> pl.LazyFrame:
        return native(up)

    instance = dg.DagsterInstance.ephemeral()
    result = run([up, down], FailingPolars(base_dir=str(tmp_path)), instance=instance)
    meta = output_metadata(result, "down")
    assert meta["fallback"] is True
    assert meta["engine"] == "dask"  # the frame stayed a Dask frame
    assert input_metadata(result, "down")["fallback"] is True
    assert "up: 0.00" in logs(instance, result, logging.INFO)
    assert "-> polars (" in logs(instance, result, logging.INFO)  # the decision, then:
    warnings = logs(instance, result, logging.WARNING)
    assert "Polars failed (MemoryError: simulated: Polars ran out of memory)" in warnings
    assert "loaded with Dask instead and validated schema and row count" in warnings
    assert pl.read_parquet(engines.parquet_files(tmp_path / "down.parquet"))[
        "double"
    ].to_list() == [
        3.0,
        5.0,
        7.0,
        9.0,
    ]
    # A step without fallback reports False, also in the same process afterwards.
    result = run([up, clean], io(tmp_path))
    assert output_metadata(result, "clean")["fallback"] is False


def test_integrity_failure_fails_the_step(tmp_path: Path) -> None:
    @dg.asset
    def down(up: nw.LazyFrame) -> None:
        pass

    with pytest.raises(IntegrityError, match="8 rows != 4 in the Parquet footers"):
        run([up, down], FailingPolarsBadDask(base_dir=str(tmp_path)))
    # With validation off the (bad) fallback goes through: the check is what caught it.
    assert run([up, down], FailingPolarsBadDask(base_dir=str(tmp_path), validate_integrity=False))
    # And a faithful fallback passes the check.
    assert run([up, down], FailingPolars(base_dir=str(tmp_path), validate_integrity=True))


# -- partitions ----------------------------------------------------------------------------
DAILY = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")
STATIC = dg.StaticPartitionsDefinition(["br", "eu", "us"])


def partition_frame(key: str, rows: int = 3) -> pl.DataFrame:
    return pl.DataFrame({"key": [key] * rows, "n": list(range(rows))})


@dg.asset(partitions_def=DAILY)
def daily(context: dg.AssetExecutionContext) -> pl.DataFrame:
    return partition_frame(context.partition_key)


def test_daily_partitions(tmp_path: Path) -> None:
    manager = io(tmp_path)
    days = DAILY.get_partition_keys()
    assert days == ["2024-01-01", "2024-01-02", "2024-01-03"]
    for day in days:
        run([daily], manager, partition_key=day)
        assert pl.read_parquet(tmp_path / "daily" / f"{day}.parquet").equals(partition_frame(day))

    @dg.asset(partitions_def=DAILY)
    def same_day(daily: pl.DataFrame) -> pl.DataFrame:
        return daily

    @dg.asset(
        partitions_def=DAILY,
        ins={"daily": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1))},
    )
    def two_days(daily: nw.LazyFrame) -> nw.LazyFrame:
        return daily

    @dg.asset
    def all_days(daily: nw.DataFrame) -> nw.DataFrame:
        return daily

    result = run(
        [daily, same_day, two_days],
        manager,
        partition_key="2024-01-03",
        selection=[same_day, two_days],
    )
    one = pl.read_parquet(tmp_path / "same_day" / "2024-01-03.parquet")
    assert one["key"].unique().to_list() == ["2024-01-03"]
    two = pl.read_parquet(tmp_path / "two_days" / "2024-01-03.parquet")
    assert sorted(two["key"].unique().to_list()) == ["2024-01-02", "2024-01-03"]
    assert input_metadata(result, "two_days")["partitions"] == 2

    for threshold in ("500", "0.001"):  # all partitions read together by either engine
        result = run(
            [daily, all_days], io(tmp_path, polars_threshold_mb=threshold), selection=[all_days]
        )
        frame = pl.read_parquet(tmp_path / "all_days.parquet")
        assert frame.height == 9 and sorted(frame["key"].unique().to_list()) == days
        meta = input_metadata(result, "all_days")
        assert meta["partitions"] == 3 and meta["files"] == 3
        assert meta["engine"] == ("polars" if threshold == "500" else "dask")
        assert meta["path"] == str(tmp_path / "daily")  # the partitions' directory


def test_static_partitions_mixed_engines(tmp_path: Path) -> None:
    @dg.asset(partitions_def=STATIC)
    def region(context: dg.AssetExecutionContext) -> Any:
        frame = partition_frame(context.partition_key, rows=4)
        if context.partition_key == "eu":  # one partition written by Dask: a directory
            return dd.from_pandas(frame.to_pandas(), npartitions=2)
        return frame

    @dg.asset
    def everything(region: pl.DataFrame) -> pl.DataFrame:
        return region

    @dg.asset(partitions_def=STATIC)
    def one(region: dd.DataFrame) -> dd.DataFrame:
        return region

    manager = io(tmp_path)
    for key in STATIC.get_partition_keys():
        result = run([region], manager, partition_key=key)
        assert output_metadata(result, "region")["engine"] == ("dask" if key == "eu" else "polars")
    assert (tmp_path / "region" / "eu.parquet").is_dir()
    assert (tmp_path / "region" / "us.parquet").is_file()

    run([region, one], manager, partition_key="eu", selection=[one])
    assert pl.read_parquet(engines.parquet_files(tmp_path / "one" / "eu.parquet")).height == 4
    run([region, everything], manager, selection=[everything])
    frame = pl.read_parquet(tmp_path / "everything.parquet")
    assert frame.height == 12 and sorted(frame["key"].unique().to_list()) == ["br", "eu", "us"]


@pytest.mark.filterwarnings("ignore:Parameter `backfill_policy`")
def test_multi_partition_output_mapping(tmp_path: Path) -> None:
    @dg.asset(partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run())
    def batch(context: dg.AssetExecutionContext) -> dict[str, pl.DataFrame]:
        return {key: partition_frame(key) for key in context.partition_keys}

    result = run(
        [batch],
        io(tmp_path),
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-03",
        },
    )
    assert sorted(p.name for p in (tmp_path / "batch").glob("*.parquet")) == [
        f"2024-01-0{i}.parquet" for i in (1, 2, 3)
    ]
    events = result.asset_materializations_for_node("batch")
    assert sorted(e.partition for e in events) == DAILY.get_partition_keys()
    for event in events:  # Dagster attaches the step's metadata to each partition
        assert "dagster/row_count" not in event.metadata  # it would be wrong per partition
        assert event.metadata["rows_total"].value == 9
        assert event.metadata["partitions"].value == 3
        assert event.metadata["path"].value == str(tmp_path / "batch")


def test_multi_dimensional_partitions(tmp_path: Path) -> None:
    grid = dg.MultiPartitionsDefinition(
        {"date": STATIC, "kind": dg.StaticPartitionsDefinition(["x", "y"])}
    )

    @dg.asset(partitions_def=grid)
    def cells(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return partition_frame(str(context.partition_key), rows=1)

    @dg.asset
    def table(cells: nw.DataFrame) -> nw.DataFrame:
        return cells

    manager = io(tmp_path)
    for key in grid.get_partition_keys():
        run([cells], manager, partition_key=key)
    assert (tmp_path / "cells" / "eu" / "y.parquet").is_file()  # one level per dimension
    run([cells, table], manager, selection=[table])
    assert sorted(pl.read_parquet(tmp_path / "table.parquet")["key"]) == sorted(
        grid.get_partition_keys()
    )


def test_missing_partitions(tmp_path: Path) -> None:
    @dg.asset
    def strict(daily: pl.DataFrame) -> pl.DataFrame:
        return daily

    @dg.asset(ins={"daily": dg.AssetIn(metadata={"allow_missing_partitions": True})})
    def lenient(daily: pl.DataFrame) -> pl.DataFrame:
        return daily

    manager = io(tmp_path)
    run([daily], manager, partition_key="2024-01-02")
    with pytest.raises(FileNotFoundError) as excinfo:
        run([daily, strict], manager, selection=[strict])
    message = str(excinfo.value)
    assert "daily" in message and str(tmp_path / "daily" / "2024-01-01.parquet") in message
    assert "(partition 2024-01-03)" in message
    run([daily, lenient], manager, selection=[lenient])
    assert pl.read_parquet(tmp_path / "lenient.parquet")["key"].to_list() == ["2024-01-02"] * 3


# -- missing input -------------------------------------------------------------------------
def test_missing_input_fails_at_load_with_key_and_path(tmp_path: Path) -> None:
    @dg.asset(key_prefix=["retail"])
    def source() -> pl.DataFrame:
        return UP

    ran: list[bool] = []

    @dg.asset(ins={"source": dg.AssetIn(key=["retail", "source"])})
    def down(source: nw.LazyFrame) -> None:
        ran.append(True)

    with pytest.raises(FileNotFoundError) as excinfo:
        run([source, down], io(tmp_path), selection=[down])
    message = str(excinfo.value)
    assert "retail/source" in message
    assert str(tmp_path / "retail" / "source.parquet") in message
    assert ran == []  # failed while loading, before the asset body ran


# -- atomic writes through Dagster -----------------------------------------------------------
def test_failed_materialization_keeps_previous_table(tmp_path: Path) -> None:
    def explode(batch: pl.Series) -> pl.Series:
        raise RuntimeError("computation failed halfway")

    @dg.asset(name="up")
    def broken_up() -> pl.LazyFrame:
        return pl.LazyFrame({"id": range(50_000)}).with_columns(
            bad=pl.col("id").map_batches(explode, return_dtype=pl.Int64)
        )

    run([up], io(tmp_path))
    before = (tmp_path / "up.parquet").read_bytes()
    with pytest.raises(Exception, match="computation failed halfway"):
        run([broken_up], io(tmp_path))
    assert (tmp_path / "up.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".parquet-publish.lock", "up.parquet"]


# -- distributed ---------------------------------------------------------------------------
@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as local:
        try:
            yield local
        finally:
            engines.close_dask_clients()


def test_dask_runs_on_the_scheduler_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: LocalCluster
) -> None:
    address = cluster.scheduler_address
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    totals: list[int] = []

    @dg.asset
    def big() -> dd.DataFrame:
        return dd.from_pandas(pd.DataFrame({"x": range(1000)}), npartitions=4)

    @dg.asset
    def summed(big: nw.LazyFrame) -> nw.LazyFrame:
        from distributed import get_client

        assert get_client().scheduler.address == address
        totals.append(int(native(big)["x"].sum().compute()))
        return big.select(nw.col("x") * 2)

    watcher = Client(cluster, set_as_default=False)
    try:
        with get_task_stream(client=watcher) as stream:
            result = run([big, summed], io(tmp_path, force_dask=True))
    finally:
        watcher.close()
    assert totals == [sum(range(1000))]
    assert output_metadata(result, "summed")["engine"] == "dask"
    client = engines.dask_client(address)
    assert client.scheduler.address == address
    assert engines.dask_client(address) is client  # one client per process, reused
    names = {str(task["key"]) for task in stream.data}
    assert any("toparquet" in name for name in names)  # the writes ran on the cluster
    assert any("read_parquet" in name or "readparquet" in name for name in names)
    assert pl.read_parquet(engines.parquet_files(tmp_path / "summed.parquet"))["x"].sum() == (
        2 * sum(range(1000))
    )
