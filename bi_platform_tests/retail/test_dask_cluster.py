"""Retail loads routed to Dask run on a real ``distributed`` cluster (a scheduler and two
worker processes) when ``DASK_SCHEDULER_ADDRESS`` points at it, and give the tables the
local run gives; the blocking engine-parity check holds with its Dask side on the cluster.

Where the work ran is read from the scheduler's own task records (its task-stream plugin
and task prefixes), not assumed from the configuration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from distributed import Client, get_task_stream
from polars.testing import assert_frame_equal

from bi_platform.io_managers.engines import close_dask_clients, parquet_files
from bi_platform.retail.assets import mart_assets, raw_exports, table_inventory, typed_tables
from bi_platform.retail.checks import retail_checks
from bi_platform.retail.definitions import resources as retail_resources
from bi_platform.retail.marts import MARTS
from bi_platform.retail.sample import write_retail_exports
from bi_platform.retail.schema import TABLES

pytestmark = pytest.mark.cluster

ALL = [*raw_exports, *typed_tables, *mart_assets, table_inventory, *retail_checks]


def _materialize(home: Path, env: dict[str, str]) -> dg.ExecuteInProcessResult:
    """The whole retail group on the `small` exports in ``home`` with ``env`` set."""
    write_retail_exports(home / "raw" / "retail", "small")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BI_PLATFORM_HOME", str(home))
        patch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
        for key, value in env.items():
            patch.setenv(key, value)
        try:
            return dg.materialize(
                ALL,
                resources=retail_resources(),
                instance=dg.DagsterInstance.ephemeral(),
                raise_on_error=False,
            )
        finally:
            close_dask_clients()


def _table(home: Path, name: str) -> pl.DataFrame:
    frame = pl.read_parquet(parquet_files(home / "lake" / "retail" / f"{name}.parquet"))
    return frame.sort(frame.columns, nulls_last=True)


def test_retail_loads_routed_to_dask_run_on_the_cluster(dask_cluster, tmp_path: Path) -> None:
    address = dask_cluster.scheduler_address
    local_home, cluster_home = tmp_path / "local", tmp_path / "cluster"
    local = _materialize(local_home, {})
    assert local.success

    with Client(address, set_as_default=False) as watcher:
        worker_pids = watcher.run(os.getpid)  # {worker address: pid}
        with get_task_stream(client=watcher) as stream:
            result = _materialize(
                cluster_home, {"POLARS_THRESHOLD_MB": "0.05", "DASK_SCHEDULER_ADDRESS": address}
            )
        prefixes = watcher.run_on_scheduler(
            lambda dask_scheduler: {
                name: sum(prefix.state_counts.values())
                for name, prefix in dask_scheduler.task_prefixes.items()
            }
        )
    assert result.success
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }
    assert checks[("retail/admmat", "engine_parity")] is True
    assert all(checks.values()), {k: v for k, v in checks.items() if not v}

    # The big table was routed to Dask ...
    inventory = json.loads((cluster_home / "reports" / "retail_table_inventory.json").read_text())
    engines = {entry["name"]: entry["engine"] for entry in inventory["tables"]}
    assert engines["admmat"] == "dask"
    clean = result.asset_materializations_for_node("clean_admmat")[0]
    assert clean.metadata["source_engine"].value == "dask"

    # ... and the scheduler ran its tasks on the worker processes, not in this process.
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids.values()
    records = stream.data
    assert records, "the scheduler recorded no task"
    assert {record["worker"] for record in records} <= set(worker_pids)
    names = {str(record["key"]) for record in records}
    assert any("read_parquet" in n or "readparquet" in n for n in names), sorted(names)[:20]
    assert any("toparquet" in n or "to_parquet" in n for n in names), sorted(names)[:20]
    assert sum(prefixes.values()) >= len(records)

    # Same tables as the local run (Polars on local threads): the typed tables exactly;
    # the marts have the same values, but a count's integer type follows the engine
    # (Polars n_unique is UInt32, Dask's nunique int64).
    for name in TABLES:
        assert_frame_equal(_table(cluster_home, name), _table(local_home, name))
    for name in MARTS:
        assert_frame_equal(_table(cluster_home, name), _table(local_home, name), check_dtypes=False)
