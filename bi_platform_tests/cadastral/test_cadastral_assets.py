"""The cadastral group end to end through Dagster: real Spark (the session fixture), real
Delta tables, a real PostgreSQL database; two load dates, a rollback, the sensor."""

from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from click.testing import CliRunner

from bi_platform.cadastral.assets import CONSOLIDADO, P002, PG_SYNC, cadastral_assets, delta_uri
from bi_platform.cadastral.automation import cadastral_job, cadastral_new_load_sensor
from bi_platform.cadastral.checks import cadastral_checks
from bi_platform.cadastral.delta import read_delta, table_version
from bi_platform.cadastral.quality import delta_rows
from bi_platform.cadastral.resources import CadastralSparkResource, DeltaSparkIOManager
from bi_platform.resources import PostgresResource
from bi_platform.runtime.cli import main as cli
from bi_platform.sample_data.cadastral import generate_cadastral_sources, generate_change_set
from bi_platform.settings import get_settings

D0, D1 = date(2026, 11, 20), date(2026, 11, 21)
SOURCE_OPS = (
    "coletapedt001",
    "coletapedt002",
    "cadastral__coletapedt003",
    "cadastral__coletapedt205",
)


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


def _run(pg_url: str, instance: dg.DagsterInstance, load_date: date | None = None):
    run_config = None
    if load_date is not None:
        run_config = {
            "ops": {op: {"config": {"dat_ref_carga": load_date.isoformat()}} for op in SOURCE_OPS}
        }
    return dg.materialize(
        [*cadastral_assets, *cadastral_checks],
        resources=_resources(pg_url),
        instance=instance,
        run_config=run_config,
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

    second = _run(pg_url, instance)  # the latest load date: D1
    assert second.success
    assert all(check.passed for check in _checks(second).values())
    sync = _materialization(second, PG_SYNC).metadata
    assert sync["mode"].value == "incremental"
    assert sync["inserted"].value > 0 and sync["updated"].value > 0
    assert sync["deleted"].value > 0
    assert table_version(delta_uri(CONSOLIDADO)) == 1
    assert _materialization(second, P002).metadata["dat_ref_carga"].value == D1.isoformat()
    v0_rows = delta_rows(delta_uri(CONSOLIDADO), 0)

    # roll the consolidated table back to D0 with one command, then re-sync
    runner = CliRunner()
    restored = runner.invoke(cli, ["delta", "restore", "cadastro_consolidado", "--version", "0"])
    assert restored.exit_code == 0, restored.output
    assert table_version(delta_uri(CONSOLIDADO)) == 2
    history = runner.invoke(cli, ["delta", "history", "cadastro_consolidado"])
    assert history.exit_code == 0 and "RESTORE" in history.output.upper()
    back = dg.materialize(
        [*cadastral_assets, *cadastral_checks],
        resources=_resources(pg_url),
        instance=instance,
        selection=dg.AssetSelection.assets(PG_SYNC),
    )
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


def test_sensor_requests_one_run_per_new_load_date(cadastral_home: Path) -> None:
    context = dg.build_sensor_context()
    request = cadastral_new_load_sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"dat_ref_carga={D1.isoformat()}"
    assert context.cursor == D1.isoformat()
    again = cadastral_new_load_sensor(dg.build_sensor_context(cursor=context.cursor))
    assert isinstance(again, dg.SkipReason)


def test_job_covers_the_group_on_one_process() -> None:
    assert cadastral_job.name == "cadastral_job"
    assert cadastral_job.executor_def is dg.in_process_executor
