"""The serving/bi_warehouse asset and its blocking row-count check, materialized in process."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from bi_platform import definitions
from bi_platform.retail.definitions import resources as retail_resources
from bi_platform.serving.assets import (
    WAREHOUSE_RESOURCE,
    bi_warehouse,
    serving_key,
    warehouse_resource,
    warehouse_row_counts_match_lake,
)
from bi_platform.serving.definitions import defs as serving_defs
from bi_platform.serving.pool import ConnectionPool
from bi_platform.serving.queries import run_query
from bi_platform.serving.warehouse import (
    AGGREGATES,
    SOURCE_TABLES,
    build_warehouse,
    lake_table_path,
    read_data_version,
)
from bi_platform_tests.serving import RETAIL_ASSETS, SmallLake


def _materialize(lake: SmallLake, path: Path) -> dg.ExecuteInProcessResult:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BI_PLATFORM_HOME", str(lake.home))
        return dg.materialize(
            [*RETAIL_ASSETS, bi_warehouse, warehouse_row_counts_match_lake],
            selection=dg.AssetSelection.assets(bi_warehouse),
            resources={**retail_resources(), WAREHOUSE_RESOURCE: warehouse_resource(path)},
            instance=lake.instance,
            raise_on_error=False,
        )


def test_bi_warehouse_materializes_with_metadata_and_passes_its_check(
    lake: SmallLake, tmp_path: Path
) -> None:
    path = tmp_path / "warehouse" / "bi_warehouse.duckdb"
    result = _materialize(lake, path)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    materialization = event.materialization
    assert materialization.asset_key == serving_key("bi_warehouse")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["path"] == str(path)
    assert meta["data_version"] == result.run_id == read_data_version(path)
    assert set(meta["table_row_counts"]) == {*SOURCE_TABLES, *AGGREGATES}
    assert meta["dagster/row_count"] == meta["table_row_counts"]["admmat"] > 0
    assert meta["size_mb"] > 0 and meta["seconds"] > 0
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "warehouse_row_counts_match_lake" and check.passed
    assert check.metadata["tables_checked"].value == len(SOURCE_TABLES)
    # a second materialization swaps in a new data_version that readers pick up
    with ConnectionPool(path, size=2) as pool:
        assert pool.data_version() == result.run_id
        again = _materialize(lake, path)
        assert again.success and again.run_id != result.run_id
        assert pool.data_version() == again.run_id
        assert run_query(pool, "sales_by_une").num_rows > 0


def test_the_check_fails_when_the_lake_no_longer_matches(lake: SmallLake, tmp_path: Path) -> None:
    copy = tmp_path / "lake"
    shutil.copytree(lake.lake_dir, copy)
    path = tmp_path / "bi_warehouse.duckdb"
    build_warehouse(copy, path, "v")
    produtos = lake_table_path(copy, "produtos")
    pl.read_parquet(produtos).head(10).write_parquet(produtos)
    result = warehouse_row_counts_match_lake(warehouse_duckdb=warehouse_resource(path))
    assert not result.passed
    assert result.description is not None and "produtos" in result.description
    assert "10 in the lake" in result.description


def test_the_asset_fails_before_retail_is_materialized(tmp_path: Path) -> None:
    result = dg.materialize(
        [bi_warehouse],
        resources={WAREHOUSE_RESOURCE: warehouse_resource(tmp_path / "w.duckdb")},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "has not been materialized yet" in str(failure.event_specific_data.error)
    assert not (tmp_path / "w.duckdb").exists()


def test_definitions_wire_the_asset_check_and_resource() -> None:
    resource = serving_defs.resources[WAREHOUSE_RESOURCE]
    assert isinstance(resource, DuckDBResource)
    assert resource.database.endswith("warehouse/bi_warehouse.duckdb")
    assert resource.connection_config == {"access_mode": "READ_ONLY"}
    graph = definitions.defs.resolve_asset_graph()
    key = serving_key("bi_warehouse")
    node = graph.get(key)
    assert node.group_name == "serving"
    assert "duckdb" in node.kinds
    assert {dg.AssetKey(["retail", n]) for n in SOURCE_TABLES} <= set(node.parent_keys)
    (check_key,) = node.check_keys
    assert check_key.name == "warehouse_row_counts_match_lake"
    assert graph.get(check_key).blocking


def _retail_updated(instance: dg.DagsterInstance, parity_passed: bool) -> None:
    """What a retail run leaves in the instance: every table the warehouse reads
    materialized, their blocking checks evaluated (engine parity as given)."""
    asset_graph = definitions.defs.resolve_asset_graph()
    for key in asset_graph.get(bi_warehouse.key).parent_keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
        for check_key in asset_graph.get(key).check_keys:
            passed = parity_passed or check_key.name != "engine_parity"
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=check_key.name,
                    passed=passed,
                    blocking=True,
                )
            )


def test_the_warehouse_follows_retail_only_through_passed_gates() -> None:
    """Across runs: a failed blocking check upstream stops the warehouse's automation; a
    retail run whose gates pass starts it."""
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=definitions.defs, instance=instance)
        assert first.get_num_requested(bi_warehouse.key) == 0  # retail never ran
        _retail_updated(instance, parity_passed=False)
        blocked = dg.evaluate_automation_conditions(
            defs=definitions.defs, instance=instance, cursor=first.cursor
        )
        assert blocked.get_num_requested(bi_warehouse.key) == 0
        _retail_updated(instance, parity_passed=True)
        passed = dg.evaluate_automation_conditions(
            defs=definitions.defs, instance=instance, cursor=blocked.cursor
        )
        assert passed.get_num_requested(bi_warehouse.key) == 1
