"""The cadastral group end to end through Dagster: real Spark (the session fixture), real
Delta tables, a real PostgreSQL database; two load dates as partitions, a rollback, the
sensor's plan."""

from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner

from bi_platform.cadastral.assets import (
    CONSOLIDADO,
    P001,
    P002,
    PG_SYNC,
    Q001,
    cadastral_assets,
    delta_uri,
    load_dates,
)
from bi_platform.cadastral.automation import (
    SERIAL_TAG,
    LoadDateRequest,
    cadastral_job,
    cadastral_new_load_sensor,
    plan_load_dates,
)
from bi_platform.cadastral.checks import cadastral_checks
from bi_platform.cadastral.delta import read_delta, table_version
from bi_platform.cadastral.quality import delta_rows
from bi_platform.cadastral.resources import CadastralSparkResource, DeltaSparkIOManager
from bi_platform.cadastral.sample import generate_cadastral_sources, generate_change_set
from bi_platform.cli import main as cli
from bi_platform.definitions import defs
from bi_platform.resources import PostgresResource
from bi_platform.settings import get_settings

D0, D1 = date(2026, 11, 20), date(2026, 11, 21)
S = dg.DagsterRunStatus


@pytest.fixture
def cadastral_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path))
    raw = get_settings().cadastral_raw_dir
    generate_cadastral_sources(raw, persons=3_000, load_date=D0, seed=11)
    generate_change_set(raw, from_date=D0, to_date=D1, seed=12)
    return tmp_path


def _resources(pg_url: str) -> dict:
    spark = CadastralSparkResource()
    return {
        "spark": spark,
        "cadastral_delta_io_manager": DeltaSparkIOManager(spark=spark),
        "postgres": PostgresResource(database_url=pg_url),
    }


def _run(pg_url: str, instance: dg.DagsterInstance, load_date: date, selection=None):
    instance.add_dynamic_partitions(load_dates.name, [load_date.isoformat()])
    return dg.materialize(
        [*cadastral_assets, *cadastral_checks],
        resources=_resources(pg_url),
        instance=instance,
        partition_key=load_date.isoformat(),
        selection=selection,
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def _pg_count(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        return conn.execute("SELECT count(*) FROM cadastral.cadastro_consolidado").fetchone()[0]


def _materialization(result, key: dg.AssetKey) -> dg.AssetMaterialization:
    (event,) = [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == key
    ]
    return event


def test_two_load_dates_then_rollback(spark, cadastral_home: Path, pg_url: str) -> None:
    instance = dg.DagsterInstance.ephemeral()

    first = _run(pg_url, instance, D0)
    assert first.success
    checks = _checks(first)
    assert len(checks) == 5 * 2 + 2  # unique + schema per table, invalid-state rate, in-sync
    failed = [name for name, check in checks.items() if not check.passed]
    assert failed == []
    sync = _materialization(first, PG_SYNC).metadata
    assert sync["mode"].value == "full"  # nothing synced before
    assert sync["inserted"].value == delta_rows(delta_uri(CONSOLIDADO)) == _pg_count(pg_url)
    meta = _materialization(first, CONSOLIDADO).metadata
    assert meta["delta_version"].value == 0
    assert meta["dagster/row_count"].value == sync["inserted"].value
    assert checks["cadastral/coletapedt002:invalid_state_rate"].metadata["rate"].value <= 0.01
    # Spark's own stage metrics: 001 shuffles pedt001 by key; the consolidated table joins
    # the persisted, co-partitioned outputs of the same run in place (no shuffle at all).
    p001 = _materialization(first, P001).metadata
    assert p001["spark_stages"].value >= 1 and p001["spark_jobs"].value >= 1
    assert p001["shuffle_write_bytes"].value > 0 and p001["shuffle_read_bytes"].value > 0
    assert meta["spark_stages"].value >= 1
    assert meta["shuffle_read_bytes"].value == 0
    assert sync["spark_stages"].value >= 1

    second = _run(pg_url, instance, D1)
    assert second.success
    assert all(check.passed for check in _checks(second).values())
    sync = _materialization(second, PG_SYNC).metadata
    assert sync["mode"].value == "incremental"
    assert sync["inserted"].value > 0 and sync["updated"].value > 0
    assert sync["deleted"].value > 0
    assert table_version(delta_uri(CONSOLIDADO)) == 1
    assert _materialization(second, P002).metadata["dat_ref_carga"].value == D1.isoformat()
    v0_rows = delta_rows(delta_uri(CONSOLIDADO), 0)

    # roll the consolidated table back to D0 with one command, then re-sync D0
    runner = CliRunner()
    restored = runner.invoke(cli, ["delta", "restore", "cadastro_consolidado", "--version", "0"])
    assert restored.exit_code == 0, restored.output
    assert "dat_ref_carga=2026-11-20" in restored.output  # which partition to re-sync
    assert table_version(delta_uri(CONSOLIDADO)) == 2
    history = runner.invoke(cli, ["delta", "history", "cadastro_consolidado"])
    assert history.exit_code == 0 and "RESTORE" in history.output.upper()
    back = _run(pg_url, instance, D0, selection=dg.AssetSelection.assets(PG_SYNC))
    assert back.success
    assert all(check.passed for check in _checks(back).values())
    assert _pg_count(pg_url) == v0_rows
    expected = read_delta(spark, delta_uri(CONSOLIDADO), 0).select("chave_pessoa", "row_hash")
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute(
            "SELECT chave_pessoa, row_hash FROM cadastral.cadastro_consolidado"
        ).fetchall()
    assert sorted(stored) == sorted((r[0], r[1]) for r in expected.toLocalIterator())


def test_unknown_table_for_restore_is_named(cadastral_home: Path) -> None:
    result = CliRunner().invoke(cli, ["delta", "restore", "pedt001", "--version", "0"])
    assert result.exit_code != 0
    assert "unknown table 'pedt001'" in result.output


def test_a_multi_asset_table_can_be_materialized_alone(
    spark, cadastral_home: Path, pg_url: str
) -> None:
    """`cadastral/coletapedt001` alone: its table and its checks, not its quarantine."""
    instance = dg.DagsterInstance.ephemeral()
    result = _run(pg_url, instance, D0, selection=dg.AssetSelection.assets(P001))
    assert result.success
    written = {e.asset_key for e in result.get_asset_materialization_events()}
    assert written == {P001}
    assert table_version(delta_uri(Q001)) is None
    assert {c.check_name for c in result.get_asset_check_evaluations()} == {
        "unique_chave_pessoa",
        "schema_unchanged",
    }


def test_sensor_runs_each_complete_date_oldest_first_and_never_reruns(
    cadastral_home: Path,
) -> None:
    raw = get_settings().cadastral_raw_dir
    # a third date that only pedt001 has: incomplete, never requested
    (raw / "pedt001" / "dat_ref_carga=2026-11-22").mkdir()
    for part in (raw / "pedt001" / "dat_ref_carga=2026-11-21").glob("*.parquet"):
        (raw / "pedt001" / "dat_ref_carga=2026-11-22" / part.name).write_bytes(part.read_bytes())
    with dg.instance_for_test() as instance:
        result = cadastral_new_load_sensor(dg.build_sensor_context(instance=instance))
        assert [r.partition_key for r in result.run_requests] == ["2026-11-20", "2026-11-21"]
        assert [r.run_key for r in result.run_requests] == [
            "dat_ref_carga=2026-11-20#1",
            "dat_ref_carga=2026-11-21#1",
        ]
        (added,) = result.dynamic_partitions_requests
        assert list(added.partition_keys) == ["2026-11-20", "2026-11-21"]
        # D1 already processed (e.g. by `bi-platform materialize`): the first tick of a
        # freshly started sensor requests nothing, D0 being superseded by it
        instance.add_dynamic_partitions(load_dates.name, ["2026-11-20", "2026-11-21"])
        instance.report_runless_asset_event(
            dg.AssetMaterialization(PG_SYNC, partition="2026-11-21")
        )
        again = cadastral_new_load_sensor(dg.build_sensor_context(instance=instance))
        assert again.run_requests == []
        assert again.skip_reason is not None


def test_plan_retries_a_failed_date_in_order_and_gives_up() -> None:
    complete = ["2026-11-20", "2026-11-21", "2026-11-22"]
    plan = plan_load_dates(complete, set(), {})
    assert plan.requests == [LoadDateRequest(d, 1) for d in complete]
    # 20 failed while 21 is queued: 21 supersedes it, no retry behind its back
    plan = plan_load_dates(complete, set(), {"2026-11-20": [S.FAILURE], "2026-11-21": [S.QUEUED]})
    assert "2026-11-20" in plan.waiting and "2026-11-21" in plan.waiting
    assert plan.requests == [LoadDateRequest("2026-11-22", 1)]
    # 21 done: 20 superseded; 22 failed twice: third attempt
    plan = plan_load_dates(complete, {"2026-11-21"}, {"2026-11-22": [S.FAILURE, S.FAILURE]})
    assert plan.superseded == ["2026-11-20"] and plan.done == ["2026-11-21"]
    assert plan.requests == [LoadDateRequest("2026-11-22", 3)]
    assert plan.requests[0].run_key == "dat_ref_carga=2026-11-22#3"
    # three failures: given up, with the reason
    plan = plan_load_dates(
        complete, {"2026-11-21"}, {"2026-11-22": [S.FAILURE, S.FAILURE, S.CANCELED]}
    )
    assert plan.requests == [] and "gave up" in plan.waiting["2026-11-22"]


def test_job_covers_the_group_on_one_process_one_run_at_a_time() -> None:
    assert cadastral_job.name == "cadastral_job"
    assert cadastral_job.executor_def is dg.in_process_executor
    resolved = defs.resolve_job_def(cadastral_job.name)
    assert resolved.partitions_def == load_dates  # inferred from the assets
    assert cadastral_job.tags[SERIAL_TAG] == "cadastral"
