"""The retail sample-data generator: schemas, keys, realism, determinism and file writing.

Only the ``small`` profile (and a few hand-sized calls) is generated here; the ``default``
and ``large`` profiles are checked through their declared numbers.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import narwhals as nw
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from bi_platform.retail import sample as retail
from bi_platform.retail.cleaning import (
    UNPARSABLE_REASON,
    number_pattern,
    quarantine_rows,
    typed_table,
)
from bi_platform.retail.sample import (
    JUNK_VALUES,
    PROFILES,
    REFERENCE_DATE,
    generate_admmat,
    generate_table,
    write_large_fact,
    write_retail_exports,
)
from bi_platform.retail.sample.helpers import _format_numbers
from bi_platform.retail.sample.universe import _universe
from bi_platform.retail.schema import (
    ABC_CLASSES,
    LARGE_FACT_TABLE,
    PT_BR,
    PT_BR_BRL,
    RAW_STRING_COLUMNS,
    SEGMENTS,
    TABLES,
)

SMALL = PROFILES["small"]
ADMMAT = TABLES["admmat"]


def parse_raw(frame: pl.DataFrame) -> pl.DataFrame:
    """The typed admmat, cleaned by the cleaning step (unparsable -> null)."""
    return typed_table(nw.from_native(frame.lazy()), ADMMAT).collect().to_native()


@pytest.fixture(scope="module")
def small_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], float]:
    out = tmp_path_factory.mktemp("retail_small")
    _universe.cache_clear()
    started = time.perf_counter()
    paths = write_retail_exports(out, "small")
    return out, paths, time.perf_counter() - started


@pytest.fixture(scope="module")
def frames(small_exports: tuple[Path, dict[str, Path], float]) -> dict[str, pl.DataFrame]:
    _, paths, _ = small_exports
    return {name: pl.read_parquet(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def admmat(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return frames["admmat"]


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
def test_profiles_declare_the_expected_sizes() -> None:
    default, large = PROFILES["default"], PROFILES["large"]
    assert set(PROFILES) == {"small", "default", "large"}
    assert default.admmat_rows == 1_113_822
    assert default.stores == 38
    assert default.admmat_rows <= 0.9 * default.stores * default.products
    assert default.vendas_diarias_rows <= 5_000_000
    assert not default.include_large_fact and LARGE_FACT_TABLE.name not in default.tables
    assert large.include_large_fact and large.tables == (*default.tables, LARGE_FACT_TABLE.name)
    # large = default + the fact table
    for field in ("admmat_rows", "stores", "products", "manufacturers", "vendas_diarias_rows"):
        assert getattr(large, field) == getattr(default, field)
    assert SMALL.admmat_rows <= 10_000 and SMALL.vendas_diarias_rows <= 50_000
    assert not SMALL.include_large_fact


# --------------------------------------------------------------------------------------
# Files, schemas, keys
# --------------------------------------------------------------------------------------
def test_small_export_writes_every_table_quickly(
    small_exports: tuple[Path, dict[str, Path], float],
) -> None:
    out, paths, elapsed = small_exports
    assert set(paths) == set(TABLES)
    assert all(p == out / TABLES[name].raw_file and p.is_file() for name, p in paths.items())
    assert not list(out.glob("*.tmp")), "atomic writes leave no temporary file behind"
    assert elapsed < 3.0


@pytest.mark.parametrize("name", list(TABLES))
def test_raw_schema_and_unique_key(name: str, frames: dict[str, pl.DataFrame]) -> None:
    table = TABLES[name]
    frame = frames[name]
    assert frame.schema == pl.Schema(table.raw_schema)
    assert frame.height > 0
    assert frame.select(pl.struct(table.key).is_duplicated().sum()).item() == 0
    assert frame.select(pl.col(table.key).null_count()).sum_horizontal().item() == 0


def test_manifest_records_profile_rows_sizes_and_schema_hash(
    small_exports: tuple[Path, dict[str, Path], float], frames: dict[str, pl.DataFrame]
) -> None:
    out, paths, _ = small_exports
    manifest = json.loads((out / retail.MANIFEST_NAME).read_text())
    assert manifest["profile"] == "small" and manifest["seed"] == retail.DEFAULT_SEED
    assert manifest["schema_hash"] == retail.schema_hash(SMALL.tables)
    for name, path in paths.items():
        entry = manifest["tables"][name]
        assert entry["rows"] == frames[name].height
        assert entry["bytes"] == path.stat().st_size
    assert manifest["tables"]["admmat"]["rows"] == SMALL.admmat_rows


def test_schema_hash_changes_with_the_tables() -> None:
    assert retail.schema_hash(SMALL.tables) != retail.schema_hash(PROFILES["large"].tables)
    assert retail.schema_hash(SMALL.tables) == retail.schema_hash(PROFILES["default"].tables)


# --------------------------------------------------------------------------------------
# admmat realism
# --------------------------------------------------------------------------------------
def test_admmat_segments_and_stores(admmat: pl.DataFrame) -> None:
    assert admmat.height == SMALL.admmat_rows
    assert len(admmat.columns) == 97
    shares = admmat["NOMESEGMENTO"].value_counts(normalize=True, name="share")
    share = dict(shares.iter_rows())
    assert set(share) == set(SEGMENTS)
    assert abs(share["TECIDOS"] - 0.126) <= 0.01
    others = [v for k, v in share.items() if k != "TECIDOS"]
    assert max(others) / min(others) > 2, "the other segments share the rest unevenly"
    assert admmat["UNE"].n_unique() == SMALL.stores
    names = admmat.select("UNE", "UNE_NOME").unique()
    assert names.height == SMALL.stores
    assert names["UNE_NOME"].str.contains(r"^UNE \d+ - [A-ZÀ-Ú ]+$").all()
    assert (names["UNE_NOME"].str.extract(r"^UNE (\d+)").cast(pl.Int32) == names["UNE"]).all()
    assert "UNE 261 - CAMPO GRANDE" in names["UNE_NOME"].to_list()


def test_default_store_count_and_exact_row_count() -> None:
    frame = generate_admmat(20_011, stores=38, seed=5)
    assert frame.height == 20_011
    assert frame["UNE"].n_unique() == 38
    assert frame.select(pl.struct("UNE", "PRODUTO").is_duplicated().sum()).item() == 0
    share = (frame["NOMESEGMENTO"] == "TECIDOS").mean()
    assert abs(share - 0.126) <= 0.01


def test_admmat_descriptive_columns(admmat: pl.DataFrame) -> None:
    ean = admmat["EAN"].drop_nulls()
    assert 0 < admmat["EAN"].null_count() < 0.05 * admmat.height
    assert ean.str.contains(r"^\d{13}$").all()
    digits = [[int(c) for c in code] for code in ean.unique().to_list()[:500]]
    assert all(
        sum(d * (3 if i % 2 else 1) for i, d in enumerate(code)) % 10 == 0 for code in digits
    )
    for flag in ("PROMOCIONAL", "FORALINHA", "MEDIA_TRAVADA", "SOLICITACAO_PENDENTE"):
        assert set(admmat[flag].unique()) == {"S", "N"}
        assert (admmat[flag] == "S").mean() < 0.5
    names = admmat["NOME"]
    assert names.str.contains(r"^[A-ZÀ-Ú0-9][A-ZÀ-Ú0-9 ,.+/Xº-]+$").all()
    assert names.n_unique() > 0.8 * admmat["PRODUTO"].n_unique()
    tecidos = admmat.filter(pl.col("NOMESEGMENTO") == "TECIDOS")
    assert (tecidos["EMBALAGEM"] == "MT").all()
    assert tecidos["NOME"].str.contains("LARG").all()


def test_admmat_abc_classes(admmat: pl.DataFrame) -> None:
    abc = [f"ABC_UNE_MES_{m:02d}" for m in range(1, 5)] + ["ABC_UNE_30DD", "ABC_CACULA_90DD"]
    for col in abc:
        counts = dict(admmat[col].drop_nulls().value_counts().iter_rows())
        assert set(counts) == set(ABC_CLASSES)
        assert counts["A"] < counts["B"] < counts["C"], col
        assert admmat[col].null_count() < 0.2 * admmat.height


def test_admmat_sales_are_seasonal_with_zeros(admmat: pl.DataFrame) -> None:
    months = [f"MES_{m:02d}" for m in range(1, 13)]
    assert admmat.select(pl.min_horizontal([*months, "MES_PARCIAL"]).min()).item() >= 0
    zero_share = admmat.select((pl.col(m) == 0).mean() for m in months).row(0)
    assert all(0.15 < z < 0.8 for z in zero_share)
    # MES_01 = 2026-09 ... MES_10 = 2025-12, MES_02 = 2026-08: Christmas vs August.
    seasonal = admmat.filter(pl.col("NOMESEGMENTO") == "SAZONAIS")
    assert seasonal["MES_10"].sum() > 4 * seasonal["MES_02"].sum()
    school = admmat.filter(pl.col("NOMESEGMENTO") == "PAPELARIA")
    assert school["MES_08"].sum() > 1.5 * school["MES_02"].sum()  # February vs August


def test_admmat_weekly_columns_are_consistent(admmat: pl.DataFrame) -> None:
    weeks = ["SEMANA_ATUAL", *(f"SEMANA_ANTERIOR_{k}" for k in range(2, 6))]
    for week in weeks:
        freq, qty, media = (pl.col(f"{p}_{week}") for p in ("FREQ", "QTDE", "MEDIA"))
        checks = admmat.select(
            ok_media=pl.when(freq > 0)
            .then(((qty / freq).round(2) - media).abs() < 1e-9)
            .otherwise(media == 0)
            .all(),
            qty_ge_freq=(pl.when(freq > 0).then(qty >= freq * 0.5).otherwise(qty == 0)).all(),
            value_ok=((pl.col(week) == 0) == (qty == 0)).mean() > 0.99,
        )
        assert checks.row(0) == (True, True, True), week
    last4 = pl.sum_horizontal(f"QTDE_{w}" for w in weeks[:4])
    ok = admmat.select(
        lower=(pl.col("VENDA_30DD") >= last4).all(),
        upper=(pl.col("VENDA_30DD") <= last4 + pl.col("QTDE_SEMANA_ANTERIOR_5")).all(),
    )
    assert ok.row(0) == (True, True)
    assert (admmat["FREQ_ULT_SEM"] == admmat["FREQ_SEMANA_ANTERIOR_2"]).all()
    # the current month holds the current week (the reference date is a Saturday, the 31st)
    # and no more than the five weeks
    partial = admmat.select(
        lower=(pl.col("MES_PARCIAL") >= pl.col("QTDE_SEMANA_ATUAL")).all(),
        upper=(pl.col("MES_PARCIAL") <= pl.sum_horizontal(f"QTDE_{w}" for w in weeks)).all(),
    )
    assert partial.row(0) == (True, True)
    assert (admmat["VENDA_30DD"] > 0).mean() > 0.4


def test_admmat_raw_string_columns_are_mostly_parseable(admmat: pl.DataFrame) -> None:
    quarantine = quarantine_rows(nw.from_native(admmat.lazy()), ADMMAT).collect().to_native()
    typed = parse_raw(admmat)
    for col in RAW_STRING_COLUMNS:
        values = admmat[col].drop_nulls()
        parseable = values.str.contains(number_pattern(ADMMAT.number_format(col)))
        bad = values.filter(~parseable)
        assert 0 < bad.len() <= 0.01 * admmat.height, col
        assert set(bad.unique()) <= set(JUNK_VALUES), col
        assert admmat[col].null_count() <= 0.005 * admmat.height
        rejected = quarantine.filter(pl.col("COLUNA") == col)
        assert rejected.height == bad.len(), col  # every junk value quarantines ...
        assert set(rejected["MOTIVO"]) == {UNPARSABLE_REASON}, col
        assert typed[col].null_count() == admmat[col].null_count() + bad.len()  # ... only they
    nulls = sum(admmat[c].null_count() for c in RAW_STRING_COLUMNS)
    assert nulls > 0
    styles = admmat["LIQUIDO_38"].drop_nulls()
    for style in (r"^\d+,\d\d$", r"^\d+$", r"^\d+,\d$", r"^R\$ \d", r"^R\$\d", r"^ .+ $"):
        assert styles.str.contains(style).any(), style
    for col in RAW_STRING_COLUMNS:
        english = admmat[col].drop_nulls().str.contains(r"^\s*-?\d+\.\d{1,2}\s*$")
        assert not english.any(), f"{col}: English decimals"
    stock = admmat["ESTOQUE_UNE"].drop_nulls()
    assert not stock.str.contains("R$", literal=True).any()
    assert stock.str.starts_with("-").any()


def test_format_numbers_writes_pt_br_keeping_junk_and_null_shares() -> None:
    n = 200_000
    values = np.random.default_rng(1).choice(
        [0.0, 7.0, 12.5, 15.0, 1534.0, 1234567.891, -3.0, 29.99, 0.29], n
    )
    for currency in (False, True):
        text = _format_numbers(values, np.random.default_rng(2), currency=currency)
        again = _format_numbers(values, np.random.default_rng(2), currency=currency)
        assert text.equals(again), "deterministic for the same generator state"
        fmt = PT_BR_BRL if currency else PT_BR
        frame = pl.DataFrame({"text": text, "value": np.round(values, 2)})
        junk = frame.filter(pl.col("text").is_in(list(JUNK_VALUES)))
        assert abs(junk.height / n - retail.JUNK_SHARE) < 0.001
        assert abs(frame["text"].null_count() / n - retail.RAW_NULL_SHARE) < 0.0005
        numbers = frame.filter(
            pl.col("text").is_not_null() & ~pl.col("text").is_in(list(JUNK_VALUES))
        )
        assert numbers["text"].str.contains(number_pattern(fmt)).all()
        parsed = (
            numbers["text"]
            .str.replace_all(r"[^0-9,\-]", "")
            .str.replace(",", ".", literal=True)
            .cast(pl.Float64)
        )
        assert (parsed == numbers["value"]).all()  # rounded to cents, exactly
        written = set(numbers["text"])
        assert {"1.534,00", "1534,00", "1.534", "1534", "12,5", "15,0", "0"} <= written
        assert {"1.234.567,89", "-3", "-3,00", "0,29"} <= written
        assert any(t.startswith(" ") and t.endswith(" ") for t in written)
        has_currency = any(t.startswith(("R$ ", "R$")) for t in written)
        assert has_currency is currency


def test_admmat_stock_makes_the_rupture_filter_selective(admmat: pl.DataFrame) -> None:
    stock = parse_raw(admmat)
    cd_zero = (stock["ESTOQUE_CD"] == 0).mean()
    assert 0.08 < cd_zero < 0.25
    below = stock.select((pl.col("ESTOQUE_UNE") < pl.col("ESTOQUE_LV")).mean()).item()
    assert 0.03 < below < 0.4
    rupture = (
        stock.filter(
            (pl.col("ESTOQUE_CD") == 0)
            & (pl.col("ESTOQUE_UNE") < pl.col("ESTOQUE_LV"))
            & (pl.col("VENDA_30DD") > 0)
        ).height
        / stock.height
    )
    assert 0.01 <= rupture <= 0.05
    gondola_plus_island = stock.select(
        (pl.col("ESTOQUE_GONDOLA_LV") + pl.col("ESTOQUE_ILHA_LV") == pl.col("ESTOQUE_LV")).mean()
    ).item()
    assert gondola_plus_island > 0.97
    assert stock["LEADTIME_LV"].min() >= 1 and stock["LEADTIME_LV"].max() <= 60


def test_admmat_dates_are_relative_to_the_reference_date(admmat: pl.DataFrame) -> None:
    first = REFERENCE_DATE - timedelta(days=731)
    for col, dtype in admmat.schema.items():
        if dtype == pl.Date():
            values = admmat[col].drop_nulls()
            assert first <= values.min() and values.max() <= REFERENCE_DATE, col
    stamps = admmat["ULTIMA_ATUALIZACAO"]
    assert stamps.dt.date().max() == REFERENCE_DATE
    assert stamps.dt.date().min() >= REFERENCE_DATE - timedelta(days=1)
    assert admmat["ULTIMA_VENDA_DATA_UNE"].null_count() > 0  # never sold in the store
    sold = admmat.filter(pl.col("QTDE_SEMANA_ATUAL") > 0)
    monday = REFERENCE_DATE - timedelta(days=REFERENCE_DATE.weekday())
    assert (sold["ULTIMA_VENDA_DATA_UNE"] >= monday).all()
    optional = ["ULTIMO_INVENTARIO_UNE", "PICKLIST", "ENDERECO_RESERVA", "NOTA"]
    assert all(0 < admmat[c].null_count() < admmat.height for c in optional)


# --------------------------------------------------------------------------------------
# Coherence between the tables
# --------------------------------------------------------------------------------------
def test_tables_reference_the_same_universes(frames: dict[str, pl.DataFrame]) -> None:
    admmat, lojas, produtos = frames["admmat"], frames["lojas"], frames["produtos"]
    fabricantes, segmentos = frames["fabricantes"], frames["segmentos"]
    stores = set(lojas["UNE"])
    products = set(produtos["PRODUTO"])
    assert set(admmat["UNE"]) <= stores
    assert set(admmat["PRODUTO"]) <= products
    assert set(admmat["NOMEFABRICANTE"]) <= set(fabricantes["NOMEFABRICANTE"])
    assert set(produtos["COD_FABRICANTE"]) <= set(fabricantes["COD_FABRICANTE"])
    hierarchy = ["NOMESEGMENTO", "NOMECATEGORIA", "NOMEGRUPO", "NOMESUBGRUPO"]
    assert produtos.join(segmentos, on=hierarchy, how="anti").height == 0
    assert admmat.join(segmentos, on=hierarchy, how="anti").height == 0
    assert set(segmentos["NOMESEGMENTO"]) == set(SEGMENTS)
    # admmat repeats the product master's attributes
    joined = admmat.join(produtos, on="PRODUTO", suffix="_P")
    for col in ("NOME", "EMBALAGEM", "NOMESUBGRUPO", "DATA_CADASTRO", "FORALINHA"):
        assert (joined[col] == joined[f"{col}_P"]).all(), col
    assert (
        joined.select((pl.col("EAN") == pl.col("EAN_P")) | pl.col("EAN").is_null())
        .to_series()
        .all()
    )
    for name in ("vendas_diarias", "inventarios", "precos", "devolucoes"):
        frame = frames[name]
        assert set(frame["UNE"]) <= stores and set(frame["PRODUTO"]) <= products, name
        pairs = frame.select("UNE", "PRODUTO").unique()
        assert pairs.join(admmat, on=["UNE", "PRODUTO"], how="anti").height == 0, name
    transfers = frames["transferencias"]
    assert set(transfers["UNE_ORIGEM"]) | set(transfers["UNE_DESTINO"]) <= stores
    assert (transfers["UNE_ORIGEM"] != transfers["UNE_DESTINO"]).all()
    assert (transfers["UNE_ORIGEM"] == retail.CD_UNE).mean() > 0.7
    orders = frames["pedidos_compra"]
    assert set(orders["COD_FABRICANTE"]) <= set(fabricantes["COD_FABRICANTE"])
    makers = orders.join(produtos, on="PRODUTO")
    assert (makers["COD_FABRICANTE"] == makers["COD_FABRICANTE_right"]).all()
    assert set(frames["promocoes"]["PRODUTO"]) <= products
    promos = frames["promocoes"]
    assert (promos["FIM"] > promos["INICIO"]).all()


def test_lojas_has_every_store_the_dc_and_closed_stores(frames: dict[str, pl.DataFrame]) -> None:
    lojas = frames["lojas"]
    assert lojas.height == SMALL.stores + 3
    assert lojas.filter(pl.col("UNE") == retail.CD_UNE)["AREA_VENDA_M2"].null_count() == 1
    assert (~lojas["ATIVA"]).sum() == 2
    assert lojas.join(frames["admmat"], on="UNE", how="semi")["ATIVA"].all()


# --------------------------------------------------------------------------------------
# Determinism, idempotence, atomicity
# --------------------------------------------------------------------------------------
def test_generation_is_deterministic() -> None:
    _universe.cache_clear()
    first = {name: generate_table(name, SMALL, seed=11) for name in TABLES}
    _universe.cache_clear()
    second = {name: generate_table(name, SMALL, seed=11) for name in TABLES}
    for name in TABLES:
        assert first[name].equals(second[name]), name
    assert generate_admmat(2_000, stores=6, seed=3).equals(generate_admmat(2_000, stores=6, seed=3))
    other = generate_table("admmat", SMALL, seed=12)
    assert not other.equals(first["admmat"])


def test_write_is_idempotent_and_force_rewrites(tmp_path: Path) -> None:
    paths = write_retail_exports(tmp_path, "small", seed=4)
    manifest = tmp_path / retail.MANIFEST_NAME
    files = [*paths.values(), manifest]
    old = 1_000_000_000  # 2001: any rewrite shows up as a newer mtime
    for path in files:
        os.utime(path, (old, old))
    again = write_retail_exports(tmp_path, "small", seed=4)
    assert again == paths
    assert all(p.stat().st_mtime == old for p in files), "second call must not rewrite"
    forced = write_retail_exports(tmp_path, "small", seed=4, force=True)
    assert forced == paths
    assert all(p.stat().st_mtime > old for p in files), "force=True rewrites every file"
    assert not list(tmp_path.glob("*.tmp"))


def test_write_regenerates_when_the_manifest_does_not_match(tmp_path: Path) -> None:
    paths = write_retail_exports(tmp_path, "small", seed=4)
    before = pl.read_parquet(paths["admmat"])
    write_retail_exports(tmp_path, "small", seed=5)
    manifest = json.loads((tmp_path / retail.MANIFEST_NAME).read_text())
    assert manifest["seed"] == 5
    assert not pl.read_parquet(paths["admmat"]).equals(before)
    # a damaged file (size differs from the manifest) is regenerated too
    paths["lojas"].write_bytes(b"broken")
    write_retail_exports(tmp_path, "small", seed=5)
    assert pl.read_parquet(paths["lojas"]).height == SMALL.stores + 3
    # a leftover fact table of the large profile is removed
    (tmp_path / LARGE_FACT_TABLE.raw_file).write_bytes(b"stale")
    write_retail_exports(tmp_path, "small", seed=6)
    assert not (tmp_path / LARGE_FACT_TABLE.raw_file).exists()


def test_generate_table_rejects_the_fact_table_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="write_large_fact"):
        generate_table(LARGE_FACT_TABLE.name, SMALL)
    with pytest.raises(KeyError):
        generate_table("nope", SMALL)


# --------------------------------------------------------------------------------------
# The large fact table
# --------------------------------------------------------------------------------------
def test_large_fact_writer_chunks_with_the_raw_schema(tmp_path: Path) -> None:
    path = write_large_fact(
        tmp_path / "vendas_itens.parquet", 50_000, chunk_rows=20_000, profile=SMALL
    )
    assert not list(tmp_path.glob("*.tmp"))
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 50_000 and meta.num_row_groups == 3
    frame = pl.read_parquet(path)
    assert frame.schema == pl.Schema(LARGE_FACT_TABLE.raw_schema)
    assert frame.select(pl.struct("CUPOM", "ITEM").is_duplicated().sum()).item() == 0
    assert frame["CUPOM"].is_sorted() and frame["DATA_HORA"].is_sorted()
    assert frame["ITEM"].min() == 1
    first_day = REFERENCE_DATE - timedelta(days=364)
    assert first_day <= frame["DATA_HORA"].dt.date().min()
    assert frame["DATA_HORA"].dt.date().max() <= REFERENCE_DATE
    assert set(frame["UNE"]) <= set(generate_table("lojas", SMALL)["UNE"])
    assert (
        frame["VALOR_LIQUIDO"] - (frame["QTDE"] * frame["PRECO_UNITARIO"] - frame["DESCONTO"])
    ).abs().max() < 0.011
    again = write_large_fact(tmp_path / "again.parquet", 50_000, chunk_rows=20_000, profile=SMALL)
    assert pl.read_parquet(again).equals(frame)


def test_large_profile_fact_table_exceeds_600_mb(tmp_path: Path) -> None:
    rows = 200_000
    path = write_large_fact(tmp_path / "sample.parquet", rows, chunk_rows=100_000, profile=SMALL)
    bytes_per_row = path.stat().st_size / rows
    # The small universe compresses slightly worse than the default one (~13 vs ~11 bytes
    # per row measured): keep a 20% margin.
    estimate = PROFILES["large"].vendas_itens_rows * bytes_per_row * 0.8
    assert estimate > 600e6, f"{estimate / 1e6:.0f} MB"
