"""Raw export -> typed table + quarantine, on Polars and on Dask, with the real generator."""

from __future__ import annotations

from pathlib import Path

import narwhals as nw
import polars as pl
import pytest

from bi_platform.io_managers.engines import EngineConfig, load_parquet
from bi_platform.retail.cleaning import (
    NUMBER_PATTERN,
    SchemaDriftError,
    check_columns,
    quarantine_rows,
    typed_table,
    unparsable_counts,
)
from bi_platform.retail.schema import RAW_STRING_COLUMNS, TABLES
from bi_platform.sample_data.retail import generate_admmat

ADMMAT = TABLES["admmat"]


@pytest.fixture(scope="module")
def raw_admmat() -> pl.DataFrame:
    return generate_admmat(4_000, stores=6, seed=7)


@pytest.fixture(scope="module")
def raw_file(raw_admmat: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "admmat.parquet"
    raw_admmat.write_parquet(path)
    return path


def _load(path: Path, engine: str) -> nw.LazyFrame:
    """The export as the assets read it: through the IO layer, on the given engine."""
    loaded = load_parquet(path, nw.LazyFrame, EngineConfig(force_dask=engine == "dask"))
    assert loaded.engine == engine
    return loaded.frame


@pytest.mark.parametrize("engine", ["polars", "dask"])
def test_typed_table_has_declared_schema_and_keeps_every_row(
    raw_admmat: pl.DataFrame, raw_file: Path, engine: str
) -> None:
    raw = _load(raw_file, engine)
    typed = typed_table(raw, ADMMAT).collect(backend="polars").to_native()
    assert typed.schema == pl.Schema(ADMMAT.schema)
    assert typed.height == raw_admmat.height


@pytest.mark.parametrize("engine", ["polars", "dask"])
def test_unparsable_values_are_null_and_quarantined_with_their_key(
    raw_admmat: pl.DataFrame, raw_file: Path, engine: str
) -> None:
    raw = _load(raw_file, engine)
    typed = typed_table(raw, ADMMAT).collect(backend="polars").to_native()
    quarantine = quarantine_rows(raw, ADMMAT).collect(backend="polars")
    counts = unparsable_counts(quarantine)

    for column in RAW_STRING_COLUMNS:
        values = raw_admmat[column]
        bad = values.is_not_null() & ~values.str.contains(NUMBER_PATTERN)
        assert counts.get(column, 0) == bad.sum() > 0
        # every parseable value survives as its number; every bad one becomes null
        parsed = values.str.strip_chars().cast(pl.Float64, strict=False)
        assert typed[column].filter(~bad).to_list() == parsed.filter(~bad).to_list()
        assert typed[column].filter(bad).null_count() == bad.sum()

    rows = quarantine.to_native().sort("UNE", "PRODUTO", "COLUNA")
    assert rows.columns == ["UNE", "PRODUTO", "TABELA", "COLUNA", "VALOR_BRUTO", "MOTIVO"]
    sample = rows.row(0, named=True)
    original = raw_admmat.filter(
        (pl.col("UNE") == sample["UNE"]) & (pl.col("PRODUTO") == sample["PRODUTO"])
    )[sample["COLUNA"]].item()
    assert original == sample["VALOR_BRUTO"]


def test_tables_without_string_numbers_have_no_quarantine() -> None:
    lojas = TABLES["lojas"]
    frame = nw.from_native(pl.DataFrame(schema=lojas.raw_schema).lazy())
    assert quarantine_rows(frame, lojas) is None


def test_dropped_column_names_table_file_and_column(raw_admmat: pl.DataFrame) -> None:
    with pytest.raises(SchemaDriftError) as excinfo:
        check_columns(ADMMAT, raw_admmat.drop("VENDA_30DD").schema, "raw/admmat.parquet")
    message = str(excinfo.value)
    assert "'admmat'" in message and "raw/admmat.parquet" in message
    assert "missing column(s) VENDA_30DD" in message


def test_renamed_column_is_reported_as_such(raw_admmat: pl.DataFrame) -> None:
    renamed = raw_admmat.rename({"ESTOQUE_UNE": "ESTOQUE_LOJA"}).schema
    with pytest.raises(SchemaDriftError, match=r"ESTOQUE_UNE.*ESTOQUE_LOJA; renamed"):
        check_columns(ADMMAT, renamed, "raw/admmat.parquet")


def test_text_in_a_numeric_column_is_a_drift_error(raw_admmat: pl.DataFrame) -> None:
    texty = raw_admmat.with_columns(pl.col("MES_01").cast(pl.String)).schema
    with pytest.raises(SchemaDriftError, match=r"column MES_01 is String.*text in a numeric"):
        check_columns(ADMMAT, texty, "raw/admmat.parquet")


def test_integer_width_and_date_widening_are_tolerated(raw_admmat: pl.DataFrame) -> None:
    widened = raw_admmat.with_columns(
        pl.col("UNE").cast(pl.Int64), pl.col("DATA_CADASTRO").cast(pl.Datetime("ms"))
    )
    check_columns(ADMMAT, widened.schema, "raw/admmat.parquet")
