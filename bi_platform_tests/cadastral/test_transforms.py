"""The optimized cadastral transforms against the naive reference, plus edge cases."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F  # noqa: N812
from pyspark.sql import types as T  # noqa: N812

from bi_platform.cadastral import transforms
from bi_platform.cadastral.reference import PERSON_TYPES, SOURCE_TABLES, STATES
from bi_platform.cadastral.sample import generate_cadastral_sources
from bi_platform.cadastral.sources import (
    SourceMissingError,
    latest_load_date,
    read_source,
)
from bi_platform_tests.cadastral.naive_reference import (
    naive_cadastro_consolidado,
    naive_coletapedt001,
    naive_coletapedt002,
    naive_coletapedt003,
    naive_coletapedt205,
)

LOAD = date(2024, 6, 30)
CAP = 5


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def assert_same(actual: DataFrame, expected: DataFrame) -> None:
    """Same columns and types in the same order, same row counts, and ``exceptAll`` empty
    in both directions (rows compared with multiplicity); two Spark jobs."""
    assert [(f.name, f.dataType) for f in actual.schema] == [
        (f.name, f.dataType) for f in expected.schema
    ]
    counts = (
        actual.select(F.lit("actual").alias("_side"))
        .unionByName(expected.select(F.lit("expected").alias("_side")))
        .groupBy("_side")
        .count()
        .collect()
    )
    sides = {r["_side"]: r["count"] for r in counts}
    assert sides.get("actual", 0) == sides.get("expected", 0)
    missing = actual.exceptAll(expected).select(F.lit("only_actual").alias("_side"))
    extra = expected.exceptAll(actual).select(F.lit("only_expected").alias("_side"))
    assert missing.unionByName(extra).groupBy("_side").count().collect() == []


def run_both(sources: dict[str, DataFrame], lookups) -> dict[str, tuple[DataFrame, DataFrame]]:
    """Every output of the optimized and of the naive implementation."""
    p001, q001 = transforms.coletapedt001(sources["pedt001"], lookups)
    n001, nq001 = naive_coletapedt001(sources["pedt001"])
    p002, q002 = transforms.coletapedt002(sources["pedt002"], p001, lookups)
    n002, nq002 = naive_coletapedt002(sources["pedt002"], n001)
    p003 = transforms.coletapedt003(sources["pedt003"])
    n003 = naive_coletapedt003(sources["pedt003"])
    p205 = transforms.coletapedt205(sources["pedt205"], CAP)
    n205 = naive_coletapedt205(sources["pedt205"], CAP)
    return {
        "coletapedt001": (p001, n001),
        "quarantine001": (q001, nq001),
        "coletapedt002": (p002, n002),
        "quarantine002": (q002, nq002),
        "coletapedt003": (p003, n003),
        "coletapedt205": (p205, n205),
        "cadastro_consolidado": (
            transforms.cadastro_consolidado(p001, p002, p003, p205),
            naive_cadastro_consolidado(n001, n002, n003, n205),
        ),
    }


@pytest.fixture(scope="module")
def lookups(spark):
    return transforms.lookup_tables(spark)


def test_code_tables_are_local_relations_of_the_reference_codes(lookups):
    """Each code table is an inline table held by the driver (broadcast without building
    an RDD), with exactly the reference's codes and names, none null."""
    for code_table in dataclasses.fields(lookups):
        table = getattr(lookups, code_table.name)
        assert table._jdf.queryExecution().optimizedPlan().nodeName() == "LocalRelation"
        assert not any(column.nullable for column in table.schema.fields)
    assert dict(tuple(row) for row in lookups.person_types.collect()) == PERSON_TYPES
    states = {row[0]: tuple(row[1:]) for row in lookups.states.collect()}
    assert states == {code: tuple(values) for code, values in STATES.items()}


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw_cadastral")
    generate_cadastral_sources(root, persons=5_000, load_date=LOAD)
    return root


@pytest.fixture(scope="module")
def sample(spark, sample_root) -> dict[str, DataFrame]:
    return {
        table: read_source(spark, sample_root, table, LOAD)
        for table in ("pedt001", "pedt002", "pedt003", "pedt205")
    }


@pytest.fixture(scope="module")
def sample_outputs(sample, lookups):
    return run_both(sample, lookups)


@pytest.mark.parametrize(
    "output",
    [
        "coletapedt001",
        "quarantine001",
        "coletapedt002",
        "quarantine002",
        "coletapedt003",
        "coletapedt205",
        "cadastro_consolidado",
    ],
)
def test_optimized_equals_naive_on_sample(sample_outputs, output):
    optimized, naive = sample_outputs[output]
    assert_same(optimized, naive)
    if output.startswith("quarantine"):
        assert [(f.name, f.dataType) for f in optimized.schema] == [
            (f.name, f.dataType) for f in transforms.QUARANTINE_SCHEMA
        ]
    else:
        assert optimized.count() > 0
        assert optimized.select("chave_pessoa").distinct().count() == optimized.count()
        assert optimized.where(F.col("chave_pessoa").isNull()).count() == 0


def test_sample_shapes(sample, sample_outputs):
    persons = sample_outputs["coletapedt001"][0]
    assert sample_outputs["cadastro_consolidado"][0].count() == persons.count()
    assert persons.columns == [
        "chave_pessoa",
        "tipo_pessoa",
        "nome_completo",
        "data_nascimento",
        "idade",
        "estado_civil",
        "sexo",
        "ocupacao",
        "segmento",
        "cod_uf_nascimento",
        "usuario_alteracao",
        "dat_ref_carga",
    ]
    reasons = {r["reason"] for r in sample_outputs["quarantine001"][0].select("reason").collect()}
    assert reasons == {transforms.REASON_MALFORMED, transforms.REASON_CONFLICT}
    consolidated = sample_outputs["cadastro_consolidado"][0]
    expected = (
        persons.drop("cod_uf_nascimento", "dat_ref_carga").columns
        + sample_outputs["coletapedt002"][0].columns[1:-1]
        + sample_outputs["coletapedt003"][0].columns[1:-1]
        + sample_outputs["coletapedt205"][0].columns[1:-1]
    )
    assert consolidated.columns == expected
    assert "dat_ref_carga" not in consolidated.columns  # the snapshot's, not the row's


def assert_no_raw_penumper(outputs: list[DataFrame], sources: list[DataFrame]) -> None:
    """No output has the in-run key column or any string value that is a source's
    document number."""
    raw = {
        r["penumper"]
        for source in sources
        for r in source.select("penumper").where("penumper <> ''").distinct().collect()
    }
    assert raw
    for output in outputs:
        assert transforms.PERSON not in output.columns
        strings = [f.name for f in output.schema if isinstance(f.dataType, T.StringType)]
        values = {v for row in output.select(*strings).collect() for v in row if v is not None}
        assert not values & raw


def test_no_raw_penumper_leaves(sample, sample_outputs):
    assert_no_raw_penumper(
        [optimized for optimized, _ in sample_outputs.values()],
        [sample[table] for table in SOURCE_TABLES],
    )


# --- hand-built edge cases -------------------------------------------------------------

P001 = T.StructType(
    [T.StructField(c, T.StringType()) for c in ("penumper", "petipper", "penomper")]
    + [T.StructField(c, T.StringType()) for c in ("pepriape", "pesegape")]
    + [T.StructField("pefecnac", T.DateType())]
    + [
        T.StructField(c, T.StringType())
        for c in ("peestciv", "pesexper", "petipocu", "penacper", "pesegmen", "peusualt")
    ]
    + [T.StructField("dat_ref_carga", T.DateType())]
)
A, B, C, D, E = "12345678901", "98765432100", "11111111111", "22222222222333", "33333333333"


def _p001(spark):
    rows = [
        # ok person; birthday tomorrow -> still 23; exact duplicate collapses
        (A, "F", " Ana ", "SILVA", "", date(2000, 7, 1), "1", "F", "01", " 25 ", " varejo ", "U1"),
        (A, "F", " Ana ", "SILVA", "", date(2000, 7, 1), "1", "F", "01", " 25 ", " varejo ", "U1"),
        # invalid codes decode to null; state 29 -> quarantined by 002
        (B, "F", "BIA", None, None, date(2000, 6, 30), "2", "X", "99", "29", "xx", "U2"),
        # conflicting duplicate (three rows, two distinct) -> two quarantine rows
        (C, "F", "CAIO", "", "", None, "3", "M", "02", "13", "PRIVATE", "U3"),
        (C, "F", "CAIO", "", "", None, "3", "M", "02", "13", "PRIVATE", "U3"),
        (C, "F", "CAIO", "", "", None, "3", "M", "02", "13", "PRIVATE", "U9"),
        # legal person, null state code
        (
            D,
            "J",
            "ACME LTDA",
            None,
            "",
            date(1990, 1, 15),
            None,
            None,
            "03",
            None,
            "Corporate",
            "U4",
        ),
        # person without pedt002 row, blank state code
        (E, "F", "EVA", "", None, None, "Z", "F", "17", "  ", None, "U5"),
        # malformed penumpers (one exact duplicate)
        (None, "F", "X", "", "", None, "1", "F", "01", "01", "VAREJO", "U6"),
        ("", "F", "X", "", "", None, "1", "F", "01", "01", "VAREJO", "U6"),
        ("1234567890A", "F", "X", "", "", None, "1", "F", "01", "01", "VAREJO", "U6"),
        ("123", "F", "X", "", "", None, "1", "F", "01", "01", "VAREJO", "U6"),
        ("123", "F", "X", "", "", None, "1", "F", "01", "01", "VAREJO", "U6"),
    ]
    return spark.createDataFrame([(*r, LOAD) for r in rows], P001)


def _p002(spark):
    schema = (
        "penumper string, penomnat string, penommae string, penompai string, dat_ref_carga date"
    )
    rows = [
        (A, " recife ", " MAE A ", None),
        (A, " recife ", " MAE A ", None),  # exact duplicate
        (A, "CURITIBA", "MAE Z", "PAI"),  # divergent: greatest triple wins
        (A, None, "MAE Y", "PAI"),
        (B, "SAO PAULO", "MAE B", "PAI B"),
        (D, "NATAL", "X", "Y"),
        ("123", "NATAL", "X", "Y"),
    ]
    return spark.createDataFrame([(*r, LOAD) for r in rows], schema)


def _p003(spark):
    schema = (
        "penumper string, pesequen int, petipcon string, peemail string, pelograd string, "
        "pecidade string, peuf string, pecep string, pedatalt date, dat_ref_carga date"
    )
    d1, d2 = date(2024, 1, 1), date(2024, 3, 1)
    rows = [
        (A, 1, "E", " Old@X.com ", None, None, None, None, d1),
        (A, 2, "E", " New@X.COM ", None, None, None, None, d2),
        (A, 3, "E", "tie-low@x.com", None, None, None, None, d2),
        (A, 4, "R", None, "RUA 4", "RECIFE", "PE", "50000000", d2),
        (A, 5, "R", None, "RUA 5", "RECIFE", "PE", "50000001", d2),  # tie -> pesequen 5
        (A, 5, "R", None, "RUA 5", "RECIFE", "PE", "50000001", d2),  # exact duplicate
        (A, 6, "R", None, "RUA 6", "RECIFE", "PE", "50000002", d1),
        (A, 7, "C", None, "AV 7", "SP", "SP", "01000000", None),  # undated never wins
        (B, 1, "C", None, "AV 1", "SP", "SP", "01000000", d1),
        (B, 2, "C", None, "AV 2", "SP", "SP", "01000000", d1),
        ("123", 1, "E", "bad@x.com", None, None, None, None, d2),
    ]
    return spark.createDataFrame([(*r, LOAD) for r in rows], schema)


ASSET_KINDS = (
    "TERRENO",
    "AUTOMOVEL",
    "AERONAVE",
    "OUTROS BENS",
    "MOTOCICLETA",
    "EMBARCACAO",
    "IMOVEL RURAL",
)


def _p205(spark):
    schema = (
        "penumper string, pecodbem string, petipbem string, pevalbem decimal(18,2), "
        "pedatalt date, dat_ref_carga date"
    )
    rows = [
        (A, f"B{i}", kind, Decimal("10.50"), date(2024, 1, 1)) for i, kind in enumerate(ASSET_KINDS)
    ]
    rows += [(A, "B0", "TERRENO", Decimal("10.50"), date(2024, 1, 1))]  # exact duplicate
    rows += [(A, "B9", "TERRENO", Decimal("1.25"), date(2024, 1, 1))]  # same type again
    rows += [(B, "B1", "AUTOMOVEL", Decimal("100.00"), date(2024, 1, 1))]
    rows += [(B, "B2", None, None, date(2024, 1, 1))]  # no type, no value: counted only
    rows += [(E, "B1", None, None, None)] * 2  # nothing but nulls, twice: one asset
    rows += [("1234567890", "B1", "AUTOMOVEL", Decimal("1.00"), date(2024, 1, 1))]
    return spark.createDataFrame([(*r, LOAD) for r in rows], schema)


@pytest.fixture(scope="module")
def edge_sources(spark):
    return {
        "pedt001": _p001(spark),
        "pedt002": _p002(spark),
        "pedt003": _p003(spark),
        "pedt205": _p205(spark),
    }


@pytest.fixture(scope="module")
def edge_outputs(edge_sources, lookups):
    return run_both(edge_sources, lookups)


def _by_key(df: DataFrame) -> dict[str, dict]:
    return {r["chave_pessoa"]: r.asDict() for r in df.collect()}


def test_edge_cases_optimized_equals_naive(edge_outputs):
    for optimized, naive in edge_outputs.values():
        assert_same(optimized, naive)


def test_pedt001_decoding_and_quarantine(edge_outputs):
    persons = _by_key(edge_outputs["coletapedt001"][0])
    assert set(persons) == {sha(A), sha(B), sha(D), sha(E)}
    ana = persons[sha(A)]
    assert ana["nome_completo"] == "Ana SILVA"
    assert ana["idade"] == 23  # computed from dat_ref_carga (turns 24 the next day)
    assert (ana["estado_civil"], ana["sexo"], ana["ocupacao"]) == (
        "SOLTEIRO",
        "FEMININO",
        "ASSALARIADO",
    )
    assert ana["segmento"] == "VAREJO"
    assert ana["tipo_pessoa"] == "FISICA"
    assert ana["cod_uf_nascimento"] == "25"
    assert ana["dat_ref_carga"] == LOAD
    bia = persons[sha(B)]
    assert bia["idade"] == 24
    assert bia["nome_completo"] == "BIA"
    assert (bia["estado_civil"], bia["sexo"], bia["ocupacao"], bia["segmento"]) == (None,) * 4
    acme = persons[sha(D)]
    assert (acme["tipo_pessoa"], acme["segmento"], acme["sexo"]) == ("JURIDICA", "CORPORATE", None)
    assert persons[sha(E)]["idade"] is None

    quarantine = edge_outputs["quarantine001"][0].collect()
    malformed = [r for r in quarantine if r["reason"] == transforms.REASON_MALFORMED]
    conflicts = [r for r in quarantine if r["reason"] == transforms.REASON_CONFLICT]
    assert len(malformed) == 4  # null, "", letters, wrong length (its duplicate collapses)
    assert all(r["chave_pessoa"] is None and r["value"] is None for r in malformed)
    assert [r["chave_pessoa"] for r in conflicts] == [sha(C), sha(C)]
    assert all(
        (r["source_table"], r["field"], r["value"], r["dat_ref_carga"])
        == ("pedt001", "penumper", None, LOAD)
        for r in quarantine
    )


def test_pedt002_states_parents_and_quarantine(edge_outputs):
    rows = _by_key(edge_outputs["coletapedt002"][0])
    assert set(rows) == {sha(A)}
    ana = rows[sha(A)]
    assert (ana["uf_nascimento"], ana["estado_nascimento"], ana["regiao_nascimento"]) == (
        "SP",
        "SAO PAULO",
        "SUDESTE",
    )
    # greatest raw triple: "CURITIBA" > " recife " (leading space) > null
    assert (ana["naturalidade"], ana["nome_mae"], ana["nome_pai"]) == ("CURITIBA", "MAE Z", "PAI")
    quarantine = {r["chave_pessoa"]: r for r in edge_outputs["quarantine002"][0].collect()}
    assert {k: r["value"] for k, r in quarantine.items()} == {
        sha(B): "29",
        sha(D): None,
        sha(E): "",
    }
    assert {r["reason"] for r in quarantine.values()} == {transforms.REASON_INVALID_UF}
    assert {r["field"] for r in quarantine.values()} == {"penacper"}
    # persons quarantined by 002 stay in the consolidated table with null state fields
    consolidated = _by_key(edge_outputs["cadastro_consolidado"][0])
    assert set(consolidated) == {sha(A), sha(B), sha(D), sha(E)}
    assert consolidated[sha(B)]["uf_nascimento"] is None
    assert consolidated[sha(A)]["naturalidade"] == "CURITIBA"


def test_pedt003_latest_contact_ties_broken_by_pesequen(edge_outputs):
    rows = _by_key(edge_outputs["coletapedt003"][0])
    assert set(rows) == {sha(A), sha(B)}
    ana = rows[sha(A)]
    assert (ana["email"], ana["data_email"]) == ("tie-low@x.com", date(2024, 3, 1))
    assert (ana["endereco_residencial"], ana["cep_residencial"]) == ("RUA 5", "50000001")
    assert ana["endereco_comercial"] is None and ana["data_endereco_comercial"] is None
    bia = rows[sha(B)]
    assert (bia["endereco_comercial"], bia["data_endereco_comercial"]) == ("AV 2", date(2024, 1, 1))
    assert bia["email"] is None


def test_pedt205_asset_cap_and_truncation(edge_outputs):
    rows = _by_key(edge_outputs["coletapedt205"][0])
    assert set(rows) == {sha(A), sha(B), sha(E)}
    ana = rows[sha(A)]
    assert ana["tipos_bens"] == sorted(ASSET_KINDS)[:CAP]
    assert ana["tipos_bens_truncado"] is True
    assert ana["qtd_bens"] == 8
    assert ana["valor_total_bens"] == Decimal("74.75")
    bia = rows[sha(B)]
    assert (bia["tipos_bens"], bia["tipos_bens_truncado"], bia["qtd_bens"]) == (
        ["AUTOMOVEL"],
        False,
        2,
    )
    assert bia["valor_total_bens"] == Decimal("100.00")
    eva = rows[sha(E)]
    assert (eva["tipos_bens"], eva["tipos_bens_truncado"], eva["qtd_bens"]) == ([], False, 1)
    assert eva["valor_total_bens"] is None
    schema = {f.name: f.dataType for f in edge_outputs["coletapedt205"][0].schema}
    assert schema["valor_total_bens"] == T.DecimalType(18, 2)
    assert schema["qtd_bens"] == T.LongType()


# --- sources ---------------------------------------------------------------------------


def _write_partition(root: Path, table: str, day: str, values: list[str]) -> None:
    directory = root / table / f"dat_ref_carga={day}"
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"penumper": values}), directory / "part-00000.parquet")


def test_sources_latest_date_and_errors(spark, tmp_path):
    _write_partition(tmp_path, "pedt001", "2024-05-31", ["old"])
    _write_partition(tmp_path, "pedt001", "2024-06-30", ["new1", "new2"])
    (tmp_path / "pedt001" / "dat_ref_carga=2024-07-31").mkdir()  # empty: not a load
    (tmp_path / "pedt001" / ".tmp-dat_ref_carga=2024-08-31").mkdir()
    assert latest_load_date(tmp_path) == date(2024, 6, 30)
    frame = read_source(spark, tmp_path, "pedt001", date(2024, 5, 31))
    assert frame.columns == ["penumper", "dat_ref_carga"]
    assert frame.schema["dat_ref_carga"].dataType == T.DateType()
    assert [tuple(r) for r in frame.collect()] == [("old", date(2024, 5, 31))]
    assert read_source(spark, tmp_path, "pedt001", date(2024, 6, 30)).count() == 2

    with pytest.raises(SourceMissingError, match="pedt205"):
        latest_load_date(tmp_path, "pedt205")
    with pytest.raises(SourceMissingError, match=str(tmp_path / "pedt205")):
        read_source(spark, tmp_path, "pedt205", date(2024, 6, 30))
    with pytest.raises(SourceMissingError, match="dat_ref_carga=2024-07-31"):
        read_source(spark, tmp_path, "pedt001", date(2024, 7, 31))
    (tmp_path / "pedt002").mkdir()
    with pytest.raises(SourceMissingError, match="no load date"):
        latest_load_date(tmp_path, "pedt002")
    assert issubclass(SourceMissingError, FileNotFoundError)


@pytest.mark.parametrize(
    ("sources", "outputs"), [("edge_sources", "edge_outputs"), ("sample", "sample_outputs")]
)
def test_in_run_handover_equals_the_tables_read_back(request, sources, outputs, lookups):
    """The pipeline hands stage outputs on keyed by the raw number (:data:`PERSON`); the
    assets read them back keyed by ``chave_pessoa``: both give the same tables."""
    src = request.getfixturevalue(sources)
    public = request.getfixturevalue(outputs)  # the module's run_both of these sources
    out = transforms.coletapedt001_outputs(src["pedt001"], lookups)
    p002, q002 = transforms.coletapedt002(src["pedt002"], out.keyed_rows, lookups)
    p003 = transforms.coletapedt003(src["pedt003"], keep_person=True)
    p205 = transforms.coletapedt205(src["pedt205"], CAP, keep_person=True)
    consolidated = transforms.cadastro_consolidado(out.keyed_rows, p002, p003, p205)
    assert all(transforms.PERSON in df.columns for df in (out.keyed_rows, p002, p003, p205))
    # the persisted hand-overs hold the raw number only; the 64-character key is derived
    # when a table is written
    assert all(transforms.KEY not in df.columns for df in (out.keyed_rows, p002, p003, p205))
    assert transforms.PERSON not in consolidated.columns
    handed_over = {
        "coletapedt001": out.keyed_rows,
        "quarantine001": out.quarantine,
        "coletapedt002": p002,
        "quarantine002": q002,
        "coletapedt003": p003,
        "coletapedt205": p205,
        "cadastro_consolidado": consolidated,
    }
    for name, df in handed_over.items():
        assert_same(transforms.published(df), public[name][0])
    out.shared.unpersist()
