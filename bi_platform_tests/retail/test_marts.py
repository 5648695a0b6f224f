"""The marts give the same answer on Polars and Dask, and follow the team's definitions."""

from pathlib import Path

import narwhals as nw
import polars as pl
import pytest

from bi_platform.io_managers.engines import EngineConfig, load_parquet, write_parquet
from bi_platform.retail import marts
from bi_platform.retail.cleaning import typed_table
from bi_platform.retail.parity import compare_frames
from bi_platform.retail.sample import generate_admmat
from bi_platform.retail.schema import TABLES

SORT_KEYS = {
    "ruptura_critica": ("VENDA_30DD", "UNE", "PRODUTO"),
    "vendas_segmento_une_fabricante": ("NOMESEGMENTO", "UNE", "NOMEFABRICANTE"),
    "crescimento_mensal": ("NOMESEGMENTO", "UNE"),
    "concentracao_abc": ("UNE", "ABC_UNE_30DD"),
}


@pytest.fixture(scope="module")
def admmat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = nw.from_native(generate_admmat(6_000, stores=5, seed=11).lazy())
    path = tmp_path_factory.mktemp("lake") / "admmat.parquet"
    write_parquet(typed_table(raw, TABLES["admmat"]), path)
    return path


def _mart(path: Path, name: str, engine: str) -> pl.DataFrame:
    loaded = load_parquet(path, nw.LazyFrame, EngineConfig(force_dask=engine == "dask"))
    return marts.MARTS[name](loaded.frame).collect(backend="polars").to_native()


@pytest.mark.parametrize("name", sorted(marts.MARTS))
def test_mart_parity_polars_dask(admmat_file: Path, name: str) -> None:
    polars_result = _mart(admmat_file, name, "polars")
    dask_result = _mart(admmat_file, name, "dask")
    assert polars_result.height > 0
    parity = compare_frames(polars_result, dask_result, sort_by=SORT_KEYS[name], query=name)
    assert parity.ok, parity.problems


def test_critical_rupture_definition(admmat_file: Path) -> None:
    admmat = pl.read_parquet(admmat_file)
    expected = admmat.filter(
        (pl.col("ESTOQUE_CD") == 0)
        & (pl.col("ESTOQUE_UNE") < pl.col("ESTOQUE_LV"))
        & (pl.col("VENDA_30DD") > 0)
    )
    result = _mart(admmat_file, "ruptura_critica", "polars")
    assert result.height == expected.height > 0
    assert (result["NECESSIDADE"] > 0).all()


def test_growth_and_abc_shares(admmat_file: Path) -> None:
    growth = _mart(admmat_file, "crescimento_mensal", "polars")
    check = growth.with_columns(
        ((pl.col("MES_01") - pl.col("MES_02")) / pl.col("MES_02")).alias("expected")
    )
    assert (check["CRESCIMENTO"] - check["expected"]).abs().max() < 1e-12
    assert (growth["MES_02"] > 0).all()
    shares = _mart(admmat_file, "concentracao_abc", "polars")
    per_store = shares.group_by("UNE").agg(pl.col("PARTICIPACAO").sum())
    assert ((per_store["PARTICIPACAO"] - 1).abs() < 1e-9).all()
