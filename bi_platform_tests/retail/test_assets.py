"""The retail assets and checks end to end on the `small` sample profile, and bad input."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from bi_platform.io_managers.engines import parquet_row_count
from bi_platform.retail import checks as retail_checks_module
from bi_platform.retail.assets import (
    mart_assets,
    raw_exports,
    table_inventory,
    table_key,
    typed_tables,
)
from bi_platform.retail.checks import retail_checks
from bi_platform.retail.definitions import resources as retail_resources
from bi_platform.retail.parity import ParityResult
from bi_platform.retail.sample import write_retail_exports
from bi_platform.retail.schema import TABLES

ALL = [*raw_exports, *typed_tables, *mart_assets, table_inventory, *retail_checks]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A BI_PLATFORM_HOME with the `small` raw exports."""
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path))
    write_retail_exports(tmp_path / "raw" / "retail", "small")
    yield tmp_path


def _materialize(assets: list | None = None, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets or ALL,
        resources=retail_resources(),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        **kwargs,
    )


def _check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in result.get_asset_check_evaluations()
    }


def test_whole_retail_group_on_the_small_profile(home: Path) -> None:
    result = _materialize()
    assert result.success
    checks = _check_results(result)
    assert checks and all(checks.values()), {k: v for k, v in checks.items() if not v}
    assert ("retail/admmat", "engine_parity") in checks
    with_text_keys = sum(1 for t in TABLES.values() if t.text_keys)
    assert len(checks) == 4 * len(TABLES) + with_text_keys + 1
    assert ("retail/admmat", "text_keys_distinct") in checks

    lake = home / "lake" / "retail"
    raw = home / "raw" / "retail"
    for table in TABLES.values():
        assert parquet_row_count(lake / f"{table.name}.parquet") == parquet_row_count(
            raw / table.raw_file
        )
    typed = pl.read_parquet(lake / "admmat.parquet")
    assert typed.schema == pl.Schema(TABLES["admmat"].schema)

    quarantine = pl.read_parquet(lake / "admmat_quarantine.parquet")
    assert quarantine.height > 0
    materialization = result.asset_materializations_for_node("clean_admmat")[0]
    assert materialization.metadata["rejected_values"].value == quarantine.height
    for mart in ("ruptura_critica", "vendas_segmento_une_fabricante", "concentracao_abc"):
        assert parquet_row_count(lake / f"{mart}.parquet") > 0

    inventory = json.loads((home / "reports" / "retail_table_inventory.json").read_text())
    names = {entry["name"] for entry in inventory["tables"]}
    assert set(TABLES) <= names and "admmat_quarantine" in names
    assert inventory["threshold_mb"] == 500
    assert all(entry["engine"] == "polars" for entry in inventory["tables"])


def test_threshold_routes_the_inventory_to_dask(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLARS_THRESHOLD_MB", "0.05")
    result = _materialize()
    assert result.success
    inventory = json.loads((home / "reports" / "retail_table_inventory.json").read_text())
    engines = {e["name"]: e["engine"] for e in inventory["tables"]}
    assert engines["admmat"] == "dask"  # hundreds of KB on disk
    assert "polars" in engines.values()  # the small lookup tables
    materialization = result.asset_materializations_for_node("clean_admmat")[0]
    assert materialization.metadata["source_engine"].value == "dask"


def _clean_only(name: str) -> list:
    asset = next(a for a in typed_tables if table_key(name) in a.keys)
    return [asset]


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failures, "expected a failed step"
    return failures[0].step_failure_data.error.to_string()


def test_corrupt_raw_export_names_table_and_file(home: Path) -> None:
    path = home / "raw" / "retail" / "admmat.parquet"
    path.write_bytes(path.read_bytes()[:1000])  # truncated: no footer
    result = _materialize(_clean_only("admmat"))
    assert not result.success
    message = _failure_message(result)
    assert "'admmat'" in message and str(path) in message


def test_missing_raw_export_names_table_and_file(home: Path) -> None:
    path = home / "raw" / "retail" / "lojas.parquet"
    path.unlink()
    result = _materialize(_clean_only("lojas"))
    assert not result.success
    message = _failure_message(result)
    assert "'lojas'" in message and str(path) in message and "not found" in message


def test_dropped_column_names_table_file_and_column(home: Path) -> None:
    path = home / "raw" / "retail" / "produtos.parquet"
    pl.read_parquet(path).drop("EAN").write_parquet(path)
    result = _materialize(_clean_only("produtos"))
    message = _failure_message(result)
    assert "'produtos'" in message and str(path) in message and "missing column(s) EAN" in message


def test_text_in_numeric_column_names_the_column(home: Path) -> None:
    path = home / "raw" / "retail" / "vendas_diarias.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.col("QTDE").cast(pl.String)).write_parquet(path)
    result = _materialize(_clean_only("vendas_diarias"))
    message = _failure_message(result)
    assert "column QTDE is String" in message and str(path) in message


def test_empty_table_fails_its_blocking_check(home: Path) -> None:
    path = home / "raw" / "retail" / "fabricantes.parquet"
    pl.read_parquet(path).head(0).write_parquet(path)
    key = table_key("fabricantes")
    result = _materialize([*_clean_only("fabricantes"), *retail_checks])
    evaluation = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == key and e.check_name == "non_empty"
    )
    assert not evaluation.passed
    assert "'fabricantes'" in evaluation.description and "fabricantes.parquet" in (
        evaluation.description
    )


def test_parity_failure_blocks_the_marts(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disagreeing_engines(path, engines, **_):
        return [
            ParityResult(
                "top_products_by_une",
                tuple(engines),
                ok=False,
                problems=["top_products_by_une [polars vs dask]: rows 10 vs 9"],
            )
        ]

    monkeypatch.setattr(retail_checks_module, "check_battery_parity", disagreeing_engines)
    result = _materialize()
    assert not result.success
    checks = _check_results(result)
    assert checks[("retail/admmat", "engine_parity")] is False
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert table_key("admmat") in materialized
    assert table_key("ruptura_critica") not in materialized


def test_a_typed_table_can_be_materialized_without_its_quarantine(home: Path) -> None:
    """`retail/admmat` alone: the table and its checks, the quarantine left as it was."""
    result = _materialize(
        [*_clean_only("admmat"), *retail_checks],
        selection=dg.AssetSelection.assets(table_key("admmat")),
    )
    assert result.success
    written = {e.asset_key for e in result.get_asset_materialization_events()}
    assert written == {table_key("admmat")}
    assert not (home / "lake" / "retail" / "admmat_quarantine.parquet").exists()
    checks = _check_results(result)
    assert ("retail/admmat", "non_empty") in checks and all(checks.values())


def test_a_bad_export_never_replaces_the_published_table(home: Path) -> None:
    """Write-audit-publish: an empty export is staged, fails its gate, and the lake keeps
    yesterday's table for every reader; the check results name the rejected version."""
    assert _materialize().success
    lake = home / "lake" / "retail" / "fabricantes.parquet"
    good_rows = parquet_row_count(lake)
    raw = home / "raw" / "retail" / "fabricantes.parquet"
    pl.read_parquet(raw).head(0).write_parquet(raw)
    result = _materialize([*_clean_only("fabricantes"), *retail_checks])
    checks = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == table_key("fabricantes")
    }
    assert checks["non_empty"].passed is False
    assert parquet_row_count(lake) == good_rows  # readers still see the good table
    staged = Path(str(checks["non_empty"].metadata["version"].value))
    assert staged != lake and staged.exists() and parquet_row_count(staged) == 0
    assert checks["non_empty"].metadata["published"].value is False
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == table_key("fabricantes")
    ]
    assert event.materialization.metadata["published"].value is False
    # the export fixed: the next run's version passes and is published
    write_retail_exports(home / "raw" / "retail", "small", force=True)
    fixed = _materialize([*_clean_only("fabricantes"), *retail_checks])
    assert fixed.success
    assert parquet_row_count(lake) == good_rows
    published = [
        e.metadata["published"].value
        for e in fixed.get_asset_check_evaluations()
        if e.asset_key == table_key("fabricantes")
    ]
    assert published and all(published)


def test_case_variants_of_a_segment_fail_the_gate_before_they_split_a_group(home: Path) -> None:
    """NFD and padded spellings become the NFC one at cleaning; a spelling that differs
    by case is flagged by the blocking text_keys_distinct check and never published."""
    path = home / "raw" / "retail" / "produtos.parquet"
    frame = pl.read_parquet(path)
    nfd = unicodedata.normalize("NFD", "ARMARINHO E CONFECÇÃO")
    variants = pl.Series([nfd + " ", "Armarinho e Confecção"] * (frame.height // 2 + 1))
    frame.with_columns(NOMESEGMENTO=variants.head(frame.height)).write_parquet(path)
    result = _materialize([*_clean_only("produtos"), *retail_checks])
    checks = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == table_key("produtos")
    }
    gate = checks["text_keys_distinct"]
    assert gate.passed is False
    assert "NOMESEGMENTO" in gate.description and "Armarinho e Confecção" in gate.description
    assert gate.metadata["published"].value is False
    staged = pl.read_parquet(Path(str(gate.metadata["version"].value)))
    assert set(staged["NOMESEGMENTO"]) == {"ARMARINHO E CONFECÇÃO", "Armarinho e Confecção"}
