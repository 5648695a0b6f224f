"""CadastralSparkResource and DeltaSparkIOManager in real Dagster runs (local Spark).

Assets are defined inside the tests, so no ``from __future__ import annotations``: Dagster
reads their annotations at runtime.
"""

from pathlib import Path

import dagster as dg
import pytest
from pyspark.sql import DataFrame

from bi_platform.cadastral import resources as resources_module
from bi_platform.cadastral.delta import read_delta, table_version
from bi_platform.cadastral.resources import CadastralSparkResource, DeltaSparkIOManager
from bi_platform.settings import get_settings


class PessoasConfig(dg.Config):
    n: int


def test_spark_resource_is_lazy_and_uses_start_spark(monkeypatch) -> None:
    calls: list[tuple] = []

    def fake_start_spark(settings, *, master=None, extra=None):
        calls.append((settings, master, extra))
        return "session"

    monkeypatch.setattr(resources_module, "start_spark", fake_start_spark)
    resource = CadastralSparkResource(spark_config={"spark.driver.memory": "3g", "n": 4})
    assert calls == []  # nothing started on construction
    assert resource.spark_session == "session"
    assert resource.spark_session == "session"
    assert len(calls) == 1
    settings, master, extra = calls[0]
    assert settings == get_settings()
    assert master is None
    assert extra == {"spark.driver.memory": "3g", "n": "4"}
    assert CadastralSparkResource().spark_config == {}


def test_spark_resource_joins_the_running_session(spark) -> None:
    assert CadastralSparkResource().spark_session is spark


def test_default_base_dir_is_settings_delta_dir() -> None:
    manager = DeltaSparkIOManager(spark=CadastralSparkResource())
    assert manager._base_dir() == get_settings().delta_dir


def test_two_asset_materialization_through_delta(spark, tmp_path: Path) -> None:
    base = tmp_path / "delta"
    seen: dict[str, object] = {}

    @dg.asset(key_prefix=["cadastral"])
    def pessoas(config: PessoasConfig, spark_res: CadastralSparkResource) -> DataFrame:
        return spark_res.spark_session.range(config.n).selectExpr(
            "cast(id as int) as idade", "concat('p', cast(id as string)) as chave_pessoa"
        )

    @dg.asset(key_prefix=["cadastral"])
    def resumo(pessoas: DataFrame) -> None:
        seen["type"] = type(pessoas)
        seen["rows"] = sorted(r.chave_pessoa for r in pessoas.collect())
        seen["files"] = pessoas.inputFiles()
        seen["columns"] = pessoas.columns

    spark_resource = CadastralSparkResource()
    resources = {
        "spark_res": spark_resource,
        # the Delta-log read path (the in-run hand-off is covered by the cadastral assets)
        "io_manager": DeltaSparkIOManager(
            spark=spark_resource, base_dir=str(base), hand_off_in_run=False
        ),
    }

    def run(n: int) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            [pessoas, resumo],
            resources=resources,
            run_config={"ops": {"cadastral__pessoas": {"config": {"n": n}}}},
        )
        assert result.success
        return result

    uri = base / "cadastral" / "pessoas"
    first = run(3)
    assert issubclass(seen["type"], DataFrame)
    assert seen["rows"] == ["p0", "p1", "p2"]
    assert seen["columns"] == ["idade", "chave_pessoa"]
    assert seen["files"]
    assert all(
        f.replace("file://", "").startswith(str((uri / "data").resolve())) for f in seen["files"]
    )

    [materialization] = [
        m
        for m in first.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey(["cadastral", "pessoas"])
    ]
    metadata = materialization.materialization.metadata
    assert metadata["delta_version"].value == 0
    assert metadata["rows"].value == 3
    assert metadata["dagster/row_count"].value == 3
    assert metadata["delta_files"].value >= 1
    assert metadata["delta_uri"].value == str(uri.resolve())
    schema = metadata["dagster/column_schema"].value
    assert [(c.name, c.type) for c in schema.columns] == [
        ("idade", "int"),
        ("chave_pessoa", "string"),
    ]

    second = run(5)
    [materialization] = [
        m
        for m in second.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey(["cadastral", "pessoas"])
    ]
    assert materialization.materialization.metadata["delta_version"].value == 1
    assert materialization.materialization.metadata["rows"].value == 5
    assert seen["rows"] == [f"p{i}" for i in range(5)]
    assert table_version(uri) == 1
    assert read_delta(spark, uri, version=0).count() == 3
    # the downstream asset returns None (Nothing): no table is written for it
    assert table_version(base / "cadastral" / "resumo") is None


def test_io_manager_rejects_non_dataframes(tmp_path: Path) -> None:
    @dg.asset
    def not_spark() -> int:
        return 1

    manager = DeltaSparkIOManager(spark=CadastralSparkResource(), base_dir=str(tmp_path))
    with pytest.raises(dg.DagsterInvariantViolationError, match="Spark DataFrame"):
        dg.materialize([not_spark], resources={"io_manager": manager})
