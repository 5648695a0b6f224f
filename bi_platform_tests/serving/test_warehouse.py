"""The warehouse build: native tables, aggregates, metadata, atomic swap, failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from bi_platform.io_managers.engines import parquet_row_count
from bi_platform.retail.queries import CATALOG, run_query, scan_admmat
from bi_platform.serving.warehouse import (
    AGGREGATES,
    META_TABLE,
    SOURCE_TABLES,
    WarehouseBuildError,
    build_warehouse,
    check_row_counts,
    lake_table_path,
    open_read_only,
    read_data_version,
    read_meta,
)
from bi_platform_tests.serving import SmallLake


def _admmat(lake: SmallLake) -> pl.DataFrame:
    return pl.read_parquet(lake_table_path(lake.lake_dir, "admmat"))


def test_build_loads_every_lake_table_natively(lake: SmallLake, tmp_path: Path) -> None:
    target = tmp_path / "wh" / "bi_warehouse.duckdb"
    info = build_warehouse(lake.lake_dir, target, "run-1", threads=2)
    assert info.path == target and target.is_file()
    assert info.data_version == "run-1"
    assert set(info.tables) == {*SOURCE_TABLES, *AGGREGATES}
    for name in SOURCE_TABLES:
        assert info.tables[name] == parquet_row_count(lake_table_path(lake.lake_dir, name)), name
    assert info.size_mb > 0 and info.seconds > 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["bi_warehouse.duckdb"]
    con = open_read_only(target)
    try:
        kinds = dict(
            con.execute(
                "SELECT table_name, 'table' FROM duckdb_tables() WHERE database_name = 'warehouse' "
                "UNION ALL SELECT view_name, 'view' FROM duckdb_views() "
                "WHERE database_name = 'warehouse' AND NOT internal"
            ).fetchall()
        )
        assert {n: kinds.get(n) for n in [*SOURCE_TABLES, *AGGREGATES]} == dict.fromkeys(
            [*SOURCE_TABLES, *AGGREGATES], "table"
        )
        version, counts = read_meta(con)
        assert version == "run-1"
        assert counts == info.tables
        ((built_at, n_versions),) = con.execute(
            f"SELECT max(built_at), count(DISTINCT data_version) FROM {META_TABLE}"
        ).fetchall()
        assert built_at is not None and n_versions == 1
    finally:
        con.close()
    assert read_data_version(target) == "run-1"


def test_admmat_in_the_warehouse_equals_the_lake(lake: SmallLake, warehouse: Path) -> None:
    con = open_read_only(warehouse)
    try:
        got = pl.from_arrow(con.table("admmat").order("UNE, PRODUTO").to_arrow_table())
    finally:
        con.close()
    expected = _admmat(lake).sort("UNE", "PRODUTO")
    assert got.columns == expected.columns
    assert got.equals(expected)


def test_aggregates_match_polars(lake: SmallLake, warehouse: Path) -> None:
    admmat = _admmat(lake)
    con = open_read_only(warehouse)
    try:

        def table(name: str, order: str) -> pl.DataFrame:
            return pl.from_arrow(con.table(name).order(order).to_arrow_table())

        by_seg_une = table("agg_sales_by_segment_une", "NOMESEGMENTO, UNE")
        monthly = table("agg_sales_by_month_segment_une", "NOMESEGMENTO, UNE, MESES_ATRAS")
        top = table("agg_top_products_by_segment", "NOMESEGMENTO, POSICAO")
        rupture = table("agg_critical_rupture_by_segment_une", "NOMESEGMENTO, UNE")
    finally:
        con.close()
    expected = (
        admmat.group_by("NOMESEGMENTO", "UNE")
        .agg(pl.len().alias("ITENS"), pl.col("VENDA_30DD").sum(), pl.col("MES_PARCIAL").sum())
        .sort("NOMESEGMENTO", "UNE")
    )
    assert by_seg_une["ITENS"].to_list() == expected["ITENS"].to_list()
    assert by_seg_une["VENDA_30DD"].to_list() == pytest.approx(expected["VENDA_30DD"].to_list())
    assert by_seg_une["ITENS_RUPTURA_CRITICA"].sum() == rupture["ITENS_RUPTURA"].sum()
    mart = pl.read_parquet(lake_table_path(lake.lake_dir, "ruptura_critica"))
    assert rupture["ITENS_RUPTURA"].sum() == mart.height
    assert rupture["NECESSIDADE"].sum() == pytest.approx(mart["NECESSIDADE"].sum())
    for m in range(1, 13):
        month = monthly.filter(pl.col("MESES_ATRAS") == m)
        assert month["VENDAS"].sum() == pytest.approx(admmat[f"MES_{m:02d}"].sum()), m
    # the aggregate's top 10 of TECIDOS is the battery's top_products_by_segment
    battery = run_query(
        CATALOG["top_products_by_segment"],
        scan_admmat(lake_table_path(lake.lake_dir, "admmat")),
        {"segmento": "TECIDOS", "limite": 10},
        backend="polars",
    ).to_native()
    tecidos = top.filter(pl.col("NOMESEGMENTO") == "TECIDOS").head(10)
    assert tecidos["PRODUTO"].to_list() == battery["PRODUTO"].to_list()
    assert tecidos["POSICAO"].to_list() == list(range(1, 11))


def test_swap_is_atomic_for_open_readers(lake: SmallLake, tmp_path: Path) -> None:
    target = tmp_path / "bi_warehouse.duckdb"
    build_warehouse(lake.lake_dir, target, "v1")
    old = open_read_only(target)
    try:
        build_warehouse(lake.lake_dir, target, "v2")
        assert read_meta(old)[0] == "v1"  # the old file, still readable
        ((rows,),) = old.execute("SELECT count(*) FROM admmat").fetchall()
        assert rows > 0
        assert read_data_version(target) == "v2"
    finally:
        old.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bi_warehouse.duckdb"]


def test_failed_build_names_the_table_and_keeps_the_published_file(
    lake: SmallLake, tmp_path: Path
) -> None:
    target = tmp_path / "bi_warehouse.duckdb"
    build_warehouse(lake.lake_dir, target, "good")
    sources = {name: lake_table_path(lake.lake_dir, name) for name in SOURCE_TABLES}
    sources["lojas"] = tmp_path / "missing" / "lojas.parquet"
    with pytest.raises(WarehouseBuildError, match=r"retail/lojas.*missing/lojas\.parquet"):
        build_warehouse(lake.lake_dir, target, "bad", tables=sources)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not parquet")
    sources["lojas"] = corrupt
    with pytest.raises(WarehouseBuildError, match=r"retail/lojas.*corrupt\.parquet"):
        build_warehouse(lake.lake_dir, target, "bad", tables=sources)
    assert read_data_version(target) == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bi_warehouse.duckdb", "corrupt.parquet"]


def test_invalid_arguments(lake: SmallLake, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data_version"):
        build_warehouse(lake.lake_dir, tmp_path / "w.duckdb", " ")
    with pytest.raises(ValueError, match="admmat"):
        build_warehouse(lake.lake_dir, tmp_path / "w.duckdb", "v", tables=["lojas"])
    with pytest.raises(FileNotFoundError, match=r"no DuckDB warehouse at .*nowhere"):
        read_data_version(tmp_path / "nowhere.duckdb")


def test_read_only_connection_cannot_write_nor_read_files(lake: SmallLake, warehouse: Path) -> None:
    con = open_read_only(warehouse)
    try:
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("DELETE FROM admmat")
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute("CREATE TABLE hacked AS SELECT 1")
        with pytest.raises(duckdb.PermissionException):
            con.execute(
                "SELECT * FROM read_parquet(?)", [str(lake_table_path(lake.lake_dir, "lojas"))]
            )
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()
    assert read_data_version(warehouse) == "v-test_warehouse"


def test_check_row_counts_detects_a_lake_that_changed(lake: SmallLake, tmp_path: Path) -> None:
    copy = tmp_path / "lake"
    shutil.copytree(lake.lake_dir, copy)
    target = tmp_path / "bi_warehouse.duckdb"
    build_warehouse(copy, target, "v")
    con = open_read_only(target)
    try:
        checks = check_row_counts(con)
        assert {c.table for c in checks} == set(SOURCE_TABLES)
        assert all(c.ok for c in checks), [c.problem for c in checks if not c.ok]
        lojas = lake_table_path(copy, "lojas")
        pl.read_parquet(lojas).head(3).write_parquet(lojas)
        problems = [c.problem for c in check_row_counts(con) if not c.ok]
    finally:
        con.close()
    assert len(problems) == 1
    assert "lojas" in problems[0] and "3 in the lake" in problems[0]
