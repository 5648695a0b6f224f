"""Raw export -> typed table + quarantine, on Polars and on Dask, with the real generator,
plus one regression test per defect an adversarial user found (each on both engines)."""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import narwhals as nw
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bi_platform.io_managers.engines import EngineConfig, load_parquet
from bi_platform.retail.cleaning import (
    AMBIGUOUS_REASON,
    ERP_TIME_ZONE,
    FRACTION_REASON,
    NON_FINITE_REASON,
    QUARANTINE_COLUMNS,
    TEXT_BLANKS,
    UNPARSABLE_REASON,
    SchemaDriftError,
    ambiguous_reason,
    can_quarantine,
    check_columns,
    collision_key,
    normalize_text_keys,
    number_pattern,
    out_of_range_reason,
    quarantine_rows,
    text_key_collisions,
    typed_table,
    unparsable_counts,
)
from bi_platform.retail.sample import JUNK_VALUES, generate_admmat
from bi_platform.retail.schema import (
    PT_BR,
    PT_BR_BRL,
    RAW_NUMBER_FORMATS,
    RAW_STRING_COLUMNS,
    TABLES,
    TEXT_KEY_COLUMNS,
    NumberFormat,
    RetailTable,
)

ADMMAT = TABLES["admmat"]
LOJAS = TABLES["lojas"]
ENGINES = ["polars", "dask"]


def full_width(text: str) -> str:
    """``text`` with its ASCII letters, digits and signs in their full-width forms."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


#: An independent reading of pt-BR numbers (Python's re, ASCII digits).
PT_BR_NUMBER = re.compile(
    r"[ \t\r\n\u00a0\u202f]*([-+]?)(?:R\$[ \u00a0\u202f]?)?([-+]?)"
    r"([1-9]\d{0,2}(?:\.\d{3})+|\d+)(?:,(\d+))?[ \t\r\n\u00a0\u202f]*",
    re.ASCII,
)


def reference_value(text: str | None, *, currency: bool) -> Decimal | None:
    """The value a pt-BR number stands for, or None when it is not one."""
    if text is None:
        return None
    match = PT_BR_NUMBER.fullmatch(text)
    if match is None or (match[1] and match[2]) or (match[2] and not currency):
        return None
    if not currency and "R$" in text:
        return None
    sign = "-" if "-" in (match[1] + match[2]) else ""
    return Decimal(f"{sign}{match[3].replace('.', '')}.{match[4] or '0'}")


@pytest.fixture(scope="module")
def raw_admmat() -> pl.DataFrame:
    return generate_admmat(4_000, stores=6, seed=7)


@pytest.fixture(scope="module")
def raw_file(raw_admmat: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "admmat.parquet"
    raw_admmat.write_parquet(path)
    return path


def _load(path: Path, engine: str, *, fallback: bool = False) -> nw.LazyFrame:
    """The export as the assets read it: through the IO layer, on the given engine
    (with ``fallback``: Polars asked for, Dask expected to take over)."""
    loaded = load_parquet(path, nw.LazyFrame, EngineConfig(force_dask=engine == "dask"))
    assert loaded.engine == ("dask" if fallback else engine)
    assert loaded.fallback is fallback
    return loaded.frame


def _clean(
    frame: pl.DataFrame | pa.Table, table: RetailTable, engine: str, tmp_path: Path
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Write ``frame`` as an export, load it on ``engine``, return (typed, quarantine)."""
    path = tmp_path / f"{table.name}_{engine}.parquet"
    if isinstance(frame, pl.DataFrame):
        frame.write_parquet(path)
    else:
        pq.write_table(frame, path)
    raw = _load(path, engine)
    check_columns(table, raw.collect_schema(), str(path))
    typed = typed_table(raw, table).collect(backend="polars").to_native()
    quarantine = quarantine_rows(raw, table)
    rejected = None if quarantine is None else quarantine.collect(backend="polars").to_native()
    assert typed.height == (frame.height if isinstance(frame, pl.DataFrame) else frame.num_rows)
    return typed, rejected


def _admmat_with(raw_admmat: pl.DataFrame, **columns: list | pl.Series) -> pl.DataFrame:
    """The first rows of the sample export, with some columns replaced."""
    n = len(next(iter(columns.values())))
    head = raw_admmat.head(n)
    return head.with_columns(
        (v if isinstance(v, pl.Series) else pl.Series(c, v, dtype=head.schema[c])).alias(c)
        for c, v in columns.items()
    )


def _reasons(rejected: pl.DataFrame, column: str) -> dict[str, str]:
    rows = rejected.filter(pl.col("COLUNA") == column)
    return dict(zip(rows["VALOR_BRUTO"], rows["MOTIVO"], strict=True))


# --------------------------------------------------------------------------------------
# The sample export
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_typed_table_has_declared_schema_and_keeps_every_row(
    raw_admmat: pl.DataFrame, raw_file: Path, engine: str
) -> None:
    raw = _load(raw_file, engine)
    typed = typed_table(raw, ADMMAT).collect(backend="polars").to_native()
    assert typed.schema == pl.Schema(ADMMAT.schema)
    assert typed.height == raw_admmat.height


def test_a_half_hour_offset_falls_back_to_dask_and_is_converted(
    raw_admmat: pl.DataFrame, tmp_path: Path
) -> None:
    """Polars cannot read a ``+05:30`` zone: the IO layer hands the file to Dask, whose
    cleaning converts it like any other offset."""
    head = raw_admmat.head(1).to_arrow()
    stamps = pa.array([datetime(2026, 10, 31, 6, 15)], pa.timestamp("us", tz="UTC"))
    index = head.schema.get_field_index("ULTIMA_ATUALIZACAO")
    path = tmp_path / "admmat.parquet"
    pq.write_table(
        head.set_column(index, "ULTIMA_ATUALIZACAO", stamps.cast(pa.timestamp("us", "+05:30"))),
        path,
    )
    raw = _load(path, "polars", fallback=True)
    typed = typed_table(raw, ADMMAT).collect(backend="polars")
    assert typed["ULTIMA_ATUALIZACAO"].to_list() == [datetime(2026, 10, 31, 3, 15)]


@pytest.mark.parametrize("engine", ENGINES)
def test_unparsable_values_are_null_and_quarantined_with_their_key(
    raw_admmat: pl.DataFrame, raw_file: Path, engine: str
) -> None:
    raw = _load(raw_file, engine)
    typed = typed_table(raw, ADMMAT).collect(backend="polars").to_native()
    quarantine = quarantine_rows(raw, ADMMAT).collect(backend="polars")
    counts = unparsable_counts(quarantine)

    for column in RAW_STRING_COLUMNS:
        currency = ADMMAT.number_format(column).currency is not None
        values = raw_admmat[column].to_list()
        expected = [reference_value(v, currency=currency) for v in values]
        bad = [v is not None and e is None for v, e in zip(values, expected, strict=True)]
        assert counts.get(column, 0) == sum(bad) > 0
        # every parseable value survives as its exact number; every bad one becomes null
        got = typed[column].to_list()
        assert got == [None if e is None else float(e) for e in expected]
        assert {v for v, b in zip(values, bad, strict=True) if b} <= set(JUNK_VALUES)

    rows = quarantine.to_native().sort("UNE", "PRODUTO", "COLUNA")
    assert rows.columns == ["UNE", "PRODUTO", *QUARANTINE_COLUMNS]
    assert set(rows["MOTIVO"]) == {UNPARSABLE_REASON}
    sample = rows.row(0, named=True)
    original = raw_admmat.filter(
        (pl.col("UNE") == sample["UNE"]) & (pl.col("PRODUTO") == sample["PRODUTO"])
    )[sample["COLUNA"]].item()
    assert original == sample["VALOR_BRUTO"]


def test_both_engines_clean_the_sample_identically(raw_file: Path) -> None:
    results = {}
    for engine in ENGINES:
        raw = _load(raw_file, engine)
        typed = typed_table(raw, ADMMAT).collect(backend="polars").to_native()
        rejected = quarantine_rows(raw, ADMMAT).collect(backend="polars").to_native()
        results[engine] = (typed, rejected.sort("UNE", "PRODUTO", "COLUNA"))
    assert results["polars"][0].equals(results["dask"][0])
    assert results["polars"][1].equals(results["dask"][1])


def test_sample_numbers_are_written_the_brazilian_way(raw_admmat: pl.DataFrame) -> None:
    price = raw_admmat["LIQUIDO_38"].drop_nulls()
    assert price.str.starts_with("R$").any() and price.str.contains(r"^\d+,\d\d$").any()
    stock = pl.concat([raw_admmat[c].drop_nulls() for c in RAW_STRING_COLUMNS[1:]])
    assert stock.str.contains(r"^\d+,\d$").any()
    assert not stock.str.contains(r"^\d+\.\d{1,2}$").any(), "no English decimals"


def test_tables_without_string_numbers_have_no_quarantine() -> None:
    lojas = TABLES["lojas"]
    frame = nw.from_native(pl.DataFrame(schema=lojas.raw_schema).lazy())
    assert quarantine_rows(frame, lojas) is None
    assert not can_quarantine(frame, lojas)


# --------------------------------------------------------------------------------------
# Schema drift
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------------------
def test_every_string_numeric_column_declares_a_pt_br_format() -> None:
    assert set(RAW_NUMBER_FORMATS) == set(RAW_STRING_COLUMNS)
    assert ADMMAT.number_format("LIQUIDO_38") == PT_BR_BRL
    assert all(ADMMAT.number_format(c) == PT_BR for c in RAW_STRING_COLUMNS[1:])
    assert NumberFormat(locale="pt-BR", thousands=".", decimal=",", currency=None) == PT_BR
    with pytest.raises(ValueError, match="must differ"):
        NumberFormat(thousands=",", decimal=",")
    with pytest.raises(ValueError, match="one non-alphanumeric"):
        NumberFormat(thousands="0")
    with pytest.raises(ValueError, match="currency"):
        NumberFormat(currency="R$1")
    with pytest.raises(ValueError, match="non-string"):
        RetailTable("t", "", {"A": pl.Float64()}, key=("A",), number_formats={"A": PT_BR})


def test_text_keys_cover_the_grouping_and_security_columns() -> None:
    required = {"NOMESEGMENTO", "NOMECATEGORIA", "NOMEGRUPO", "NOMESUBGRUPO"}
    required |= {"NOMEFABRICANTE", "UNE_NOME", "NOME"}
    assert required <= set(TEXT_KEY_COLUMNS)
    assert required <= set(ADMMAT.text_keys)
    assert set(LOJAS.text_keys) == {"UNE_NOME", "CIDADE", "UF", "REGIAO"}
    assert all(ADMMAT.schema[c] == pl.String() for c in ADMMAT.text_keys)


def test_text_blanks_are_exactly_pythons_whitespace() -> None:
    whitespace = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(TEXT_BLANKS) == whitespace


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("1.234", True),
        ("1.234,56", True),
        ("1234,5", True),
        ("R$ 12,90", True),
        ("R$12,90", True),
        ("-0,5", True),
        (" 7 ", True),
        ("-R$ 3,5", True),
        ("R$ -3,5", True),
        ("12.5", False),
        ("1.23", False),
        ("0.123", False),
        ("1.2.3", False),
        (",5", False),
        ("5,", False),
        (full_width("123"), False),
        ("1 234", False),
        ("R$ R$ 1", False),
    ],
)
def test_number_pattern_of_brazilian_prices(text: str, matches: bool) -> None:
    assert (re.search(number_pattern(PT_BR_BRL), text) is not None) is matches
    assert (reference_value(text, currency=True) is not None) is matches


# --------------------------------------------------------------------------------------
# Regression: numbers parsed silently wrong
# --------------------------------------------------------------------------------------
PARSED = {
    "1.234": 1234.0,
    "1.234,56": 1234.56,
    "1234,5": 1234.5,
    "R$ 12,90": 12.9,
    "R$12,90": 12.9,
    "-0,5": -0.5,
    " 7 ": 7.0,
    "\u00a0R$\u00a012,90\u00a0": 12.9,
    "1.234.567,891": 1234567.891,
    "+3": 3.0,
    "-R$ 3,5": -3.5,
    "0": 0.0,
    "007": 7.0,
}
REJECTED = {
    "12.5": AMBIGUOUS_REASON,
    "1.23": AMBIGUOUS_REASON,
    "0.123": AMBIGUOUS_REASON,
    "1,234.56": AMBIGUOUS_REASON,
    "N/D": UNPARSABLE_REASON,
    "-": UNPARSABLE_REASON,
    "1.2.3": UNPARSABLE_REASON,
    full_width("123"): UNPARSABLE_REASON,
    "": UNPARSABLE_REASON,
    " ": UNPARSABLE_REASON,
    "1e5": UNPARSABLE_REASON,
    "12,5,0": UNPARSABLE_REASON,
    "9" * 400: NON_FINITE_REASON,
    "9" * 309 + ",5": NON_FINITE_REASON,
}


@pytest.mark.parametrize("engine", ENGINES)
def test_pt_br_numbers_parse_to_their_value(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    frame = _admmat_with(raw_admmat, LIQUIDO_38=[*PARSED, None])
    typed, rejected = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed["LIQUIDO_38"].to_list() == [*PARSED.values(), None]
    assert "LIQUIDO_38" not in set(rejected["COLUNA"])  # a null is not a rejected value


@pytest.mark.parametrize("engine", ENGINES)
def test_malformed_numbers_are_null_and_quarantined_with_the_reason(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    frame = _admmat_with(raw_admmat, LIQUIDO_38=list(REJECTED), ESTOQUE_CD=["R$ 5"] * len(REJECTED))
    typed, rejected = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed["LIQUIDO_38"].null_count() == len(REJECTED)
    assert _reasons(rejected, "LIQUIDO_38") == REJECTED
    assert _reasons(rejected, "ESTOQUE_CD") == {"R$ 5": UNPARSABLE_REASON}  # no currency there
    keys = rejected.filter(pl.col("COLUNA") == "LIQUIDO_38").select("UNE", "PRODUTO")
    assert keys.equals(frame.select("UNE", "PRODUTO"))
    assert ambiguous_reason(PT_BR) == AMBIGUOUS_REASON
    assert (
        AMBIGUOUS_REASON
        == "ambiguous number: pt-BR writes thousands with '.' and decimals with ','"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_dot_grouped_thousands_are_thousands(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    frame = _admmat_with(raw_admmat, ESTOQUE_UNE=["1.234", "12.345", "1.234.567"])
    typed, _ = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed["ESTOQUE_UNE"].to_list() == [1234.0, 12345.0, 1234567.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_four_hundred_nines_are_quarantined_never_infinite(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    frame = _admmat_with(raw_admmat, ESTOQUE_LV=["9" * 400, "-" + "9" * 400, "1"])
    typed, rejected = _clean(frame, ADMMAT, engine, tmp_path)
    values = typed["ESTOQUE_LV"].to_list()
    assert values == [None, None, 1.0]
    assert all(v is None or math.isfinite(v) for v in typed.select(pl.col(pl.Float64)).row(0))
    assert _reasons(rejected, "ESTOQUE_LV") == {
        "9" * 400: NON_FINITE_REASON,
        "-" + "9" * 400: NON_FINITE_REASON,
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_full_width_digits_are_quarantined(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    unicode_digits = [
        full_width("123"),
        full_width("1") + "." + full_width("234"),
        "R$ " + full_width("12,90"),
        "\u0663",  # ARABIC-INDIC DIGIT THREE
        "\u0967\u0968",  # DEVANAGARI 1 2
    ]
    frame = _admmat_with(raw_admmat, ESTOQUE_ILHA_LV=unicode_digits, LIQUIDO_38=unicode_digits)
    typed, rejected = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed["ESTOQUE_ILHA_LV"].null_count() == typed["LIQUIDO_38"].null_count() == 5
    assert _reasons(rejected, "LIQUIDO_38") == dict.fromkeys(unicode_digits, UNPARSABLE_REASON)


# --------------------------------------------------------------------------------------
# Regression: lossy casts of numeric columns
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_a_float_in_an_int32_column_is_quarantined_not_truncated(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    leadtime = [10.7, 10.0, -3.0, float("nan"), float("inf"), 3e9, 0.5, None, 2147483647.0]
    frame = _admmat_with(raw_admmat, LEADTIME_LV=pl.Series("LEADTIME_LV", leadtime))
    typed, rejected = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed.schema["LEADTIME_LV"] == pl.Int32()
    assert typed["LEADTIME_LV"].to_list() == [
        None,
        10,
        -3,
        None,
        None,
        None,
        None,
        None,
        2147483647,
    ]
    assert _reasons(rejected, "LEADTIME_LV") == {
        "10.7": FRACTION_REASON,
        "nan": NON_FINITE_REASON,
        "inf": NON_FINITE_REASON,
        "3000000000.0": out_of_range_reason(pl.Int32()),
        "0.5": FRACTION_REASON,
    }
    assert out_of_range_reason(pl.Int32()) == "out of range for Int32"


@pytest.mark.parametrize("engine", ENGINES)
def test_an_int64_out_of_the_int32_range_is_quarantined_not_wrapped(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    master = [2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**40, None, 12]
    frame = _admmat_with(raw_admmat, QTDE_EMBALAGEM_MASTER=pl.Series(master, dtype=pl.Int64))
    typed, rejected = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed["QTDE_EMBALAGEM_MASTER"].to_list() == [
        2**31 - 1,
        None,
        -(2**31),
        None,
        None,
        None,
        12,
    ]
    assert _reasons(rejected, "QTDE_EMBALAGEM_MASTER") == dict.fromkeys(
        [str(2**31), str(-(2**31) - 1), str(2**40)], "out of range for Int32"
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_widening_and_matching_dtypes_pass_through(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    frame = _admmat_with(
        raw_admmat,
        TIPO=pl.Series([1, 2, None], dtype=pl.Int8),  # Int16 declared
        MES_01=pl.Series([1.5, None, 2.25], dtype=pl.Float32),  # Float64 declared
        FREQ_ULT_SEM=pl.Series([1, None, 3], dtype=pl.Int16),  # Int32 declared
    )
    typed, rejected = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed.schema == pl.Schema(ADMMAT.schema)
    assert typed["TIPO"].to_list() == [1, 2, None]
    assert typed["MES_01"].to_list() == [1.5, None, 2.25]
    assert typed["FREQ_ULT_SEM"].to_list() == [1, None, 3]
    assert set(rejected["COLUNA"]) <= set(RAW_STRING_COLUMNS)


def test_a_table_without_string_numbers_gets_a_quarantine_for_a_lossy_column(
    tmp_path: Path,
) -> None:
    frame = pl.DataFrame(
        {
            "UNE": pl.Series([1.0, 2.5], dtype=pl.Float64),
            "UNE_NOME": ["UNE 1 - A", "UNE 2 - B"],
            "CIDADE": ["RIO", "RIO"],
            "UF": ["RJ", "RJ"],
            "REGIAO": ["CENTRO", "CENTRO"],
            "AREA_VENDA_M2": [1.0, 2.0],
            "DATA_ABERTURA": [None, None],
            "ATIVA": [True, True],
        },
        schema_overrides={"DATA_ABERTURA": pl.Date},
    )
    for engine in ENGINES:
        typed, rejected = _clean(frame, LOJAS, engine, tmp_path)
        assert typed["UNE"].to_list() == [1, None]
        assert rejected.select("UNE", "COLUNA", "VALOR_BRUTO", "MOTIVO").rows() == [
            (2.5, "UNE", "2.5", FRACTION_REASON)
        ]


# --------------------------------------------------------------------------------------
# Regression: timestamps with an offset
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("zone", ["-03:00", "UTC", "America/Sao_Paulo", "+05:00"])
def test_a_timestamp_with_an_offset_becomes_sao_paulo_wall_time(
    raw_admmat: pl.DataFrame, engine: str, zone: str, tmp_path: Path
) -> None:
    instants = [
        datetime(2026, 10, 31, 6, 15),  # UTC; Sao Paulo is UTC-3 (no DST since 2019)
        datetime(2018, 12, 1, 12, 0),  # Sao Paulo was UTC-2 (summer time)
        None,
    ]
    expected = [datetime(2026, 10, 31, 3, 15), datetime(2018, 12, 1, 10, 0), None]
    utc = pa.array(instants, pa.timestamp("us", tz="UTC"))
    head = raw_admmat.head(3).to_arrow()
    index = head.schema.get_field_index("ULTIMA_ATUALIZACAO")
    table = head.set_column(index, "ULTIMA_ATUALIZACAO", utc.cast(pa.timestamp("us", tz=zone)))
    typed, _ = _clean(table, ADMMAT, engine, tmp_path)
    assert typed.schema["ULTIMA_ATUALIZACAO"] == pl.Datetime("us")
    assert typed["ULTIMA_ATUALIZACAO"].to_list() == expected
    assert ERP_TIME_ZONE == "America/Sao_Paulo"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_timestamp_where_a_date_is_declared_keeps_its_sao_paulo_date(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    utc = pa.array([datetime(2026, 10, 31, 1, 30), None], pa.timestamp("us", tz="UTC"))
    head = raw_admmat.head(2).to_arrow()
    index = head.schema.get_field_index("DATA_CADASTRO")
    typed, _ = _clean(head.set_column(index, "DATA_CADASTRO", utc), ADMMAT, engine, tmp_path)
    assert typed["DATA_CADASTRO"].to_list() == [datetime(2026, 10, 30).date(), None]


# --------------------------------------------------------------------------------------
# Regression: text keys in several Unicode spellings
# --------------------------------------------------------------------------------------
NFC = "ARMARINHO E CONFECÇÃO"
NFD = unicodedata.normalize("NFD", NFC)


@pytest.mark.parametrize("engine", ENGINES)
def test_nfc_and_nfd_spellings_are_one_segment_after_cleaning(
    raw_admmat: pl.DataFrame, engine: str, tmp_path: Path
) -> None:
    assert NFC != NFD
    spellings = [NFC, NFD, f" {NFC} ", f"\t{NFD}\u00a0", None]
    frame = _admmat_with(raw_admmat, NOMESEGMENTO=spellings, NOME=spellings[::-1])
    typed, _ = _clean(frame, ADMMAT, engine, tmp_path)
    assert typed["NOMESEGMENTO"].to_list() == [NFC] * 4 + [None]
    assert typed["NOME"].to_list() == [None] + [NFC] * 4
    assert typed.group_by("NOMESEGMENTO").len().height == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_normalize_text_keys_equals_python_nfc_and_strip(engine: str, tmp_path: Path) -> None:
    values = [NFD, " a\u0301 ", "\u3000x\u2028", "ﬁ", "A\u030a", None, "\x1cz\x1f", ""]
    path = tmp_path / "t.parquet"
    pl.DataFrame({"K": values}).write_parquet(path)
    out = normalize_text_keys(_load(path, engine), ["K"]).collect(backend="polars")
    expected = [None if v is None else unicodedata.normalize("NFC", v).strip() for v in values]
    assert out["K"].to_list() == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_text_key_collisions_reports_case_width_and_spacing_variants(
    engine: str, tmp_path: Path
) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame(
        {
            "NOMESEGMENTO": [
                "CONFECÇÃO",
                "Confecção",
                "CONFECÇÃO",
                "TECIDOS",
                full_width("TECIDOS"),
            ],
            "NOMEGRUPO": ["CAMA MESA", "CAMA  MESA", "BANHO", None, "CONFECCAO"],
            "UNE_NOME": ["A", "B", "C", "D", "E"],
        }
    ).write_parquet(path)
    frame = _load(path, engine)
    assert text_key_collisions(frame, ["NOMESEGMENTO", "NOMEGRUPO", "UNE_NOME"]) == {
        "NOMESEGMENTO": [["CONFECÇÃO", "Confecção"], ["TECIDOS", full_width("TECIDOS")]],
        "NOMEGRUPO": [["CAMA  MESA", "CAMA MESA"]],
        "UNE_NOME": [],
    }
    eager = pl.DataFrame({"K": [NFC, NFD]})
    assert text_key_collisions(eager, ["K"]) == {"K": [sorted([NFC, NFD])]}
    assert collision_key(" Confecção\u00a0 e  Cia ") == "confecção e cia"
