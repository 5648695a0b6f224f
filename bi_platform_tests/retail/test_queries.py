"""The retail query battery: every query on Polars, Dask and DuckDB, parameters, security.

The sample data is built here (:func:`make_admmat`), typed exactly like ``ADMMAT_SCHEMA``
for the columns the queries read; :mod:`test_parity` reuses it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import duckdb
import narwhals as nw
import numpy as np
import polars as pl
import pytest

from bi_platform.retail.parity import compare_frames, to_polars
from bi_platform.retail.queries import (
    ALL_SEGMENTS,
    CACHE_CLASSES,
    CATALOG,
    DEFAULT_UNES,
    ENGINES,
    BusinessQuery,
    Param,
    QueryParameterError,
    get_query,
    run_query,
    scan_admmat,
    validate_params,
)
from bi_platform.retail.schema import ADMMAT_SCHEMA, SEGMENTS

#: dask's own parquet reader calls a pandas API deprecated in pandas 3.1.
DASK_PANDAS_WARNING = "ignore:The inplace keyword in DataFrame.reset_index:DeprecationWarning"
pytestmark = pytest.mark.filterwarnings(DASK_PANDAS_WARNING)

#: Every admmat column some query reads, plus two no query reads.
USED_COLUMNS: tuple[str, ...] = tuple(
    c for c in ADMMAT_SCHEMA if c in {col for q in CATALOG.values() for col in q.columns}
)
EXTRA_COLUMNS: tuple[str, ...] = ("TIPO", "EAN")
_WEEK_NAMES = ("SEMANA_ATUAL", *(f"SEMANA_ANTERIOR_{k}" for k in range(2, 6)))
#: Store ids like the export's (the query defaults are UNE 261 and 2).
_UNE_IDS = (261, 2, 3, 11, 14, 35, 37, 42)
_PT_STARTS = ("Quais", "Qual", "Como", "Quantos", "Compare")


# --------------------------------------------------------------------------------------
# A small, deterministic, rich admmat sample
# --------------------------------------------------------------------------------------
def make_admmat(n_unes: int = 6, n_products: int = 480, seed: int = 7) -> pl.DataFrame:
    """A typed admmat sample (UNE x PRODUTO): all 16 segments, ABC classes, zero DC stock,
    products without sales, discontinued and promotional items, a few nulls."""
    rng = np.random.default_rng(seed)
    n = n_unes * n_products
    une = np.repeat(np.array(_UNE_IDS[:n_unes]), n_products)
    prod_idx = np.tile(np.arange(n_products), n_unes)
    produto = 100_000 + prod_idx
    # every segment present; TECIDOS over-represented like the real export
    seg_of_product = np.where(
        rng.random(n_products) < 0.15, 0, rng.integers(0, len(SEGMENTS), n_products)
    )
    seg_of_product[: len(SEGMENTS)] = np.arange(len(SEGMENTS))
    segment = np.array(SEGMENTS, dtype=object)[seg_of_product][prod_idx]
    category_of_product = rng.integers(0, 4, n_products)
    category = np.array(
        [
            f"CATEGORIA {s:02d}-{c}"
            for s, c in zip(seg_of_product, category_of_product, strict=True)
        ],
        dtype=object,
    )[prod_idx]
    manufacturer = np.array([f"FABRICANTE {i:02d}" for i in range(30)], dtype=object)[
        rng.integers(0, 30, n_products)
    ][prod_idx]
    price = np.round(rng.uniform(0.5, 250.0, n_products), 2)[prod_idx]
    popularity = rng.gamma(1.2, 6.0, n_products)[prod_idx] * rng.uniform(0.5, 1.5, n)
    dead = rng.random(n) < 0.08  # no sales at all

    def sales(scale: float = 1.0) -> np.ndarray:
        return np.where(dead, 0.0, rng.poisson(popularity * scale)).astype(float)

    months = {f"MES_{m:02d}": sales(1.0 + 0.3 * np.sin(m)) for m in range(1, 13)}
    data: dict[str, object] = {
        "UNE": une,
        "UNE_NOME": np.array([f"UNE {u} - LOJA" for u in une], dtype=object),
        "TIPO": np.ones(n, dtype=np.int16),
        "PRODUTO": produto,
        "NOME": np.array([f"PRODUTO {i:04d}" for i in range(n_products)], dtype=object)[prod_idx],
        "EAN": np.array([f"789{i:010d}" for i in range(n_products)], dtype=object)[prod_idx],
        "NOMESEGMENTO": segment,
        "NOMECATEGORIA": category,
        "NOMEFABRICANTE": manufacturer,
        "PROMOCIONAL": np.where(rng.random(n) < 0.2, "S", "N"),
        "FORALINHA": np.where(rng.random(n) < 0.06, "S", "N"),
        "LIQUIDO_38": price,
        "ABC_UNE_30DD": rng.choice(["A", "B", "C"], n, p=[0.2, 0.3, 0.5]),
        **months,
        "MES_PARCIAL": sales(0.5),
        "VENDA_30DD": sales(),
        "ESTOQUE_CD": np.where(rng.random(n) < 0.3, 0.0, rng.integers(1, 500, n)).astype(float),
        "ESTOQUE_UNE": rng.integers(0, 120, n).astype(float),
        "ESTOQUE_LV": rng.integers(5, 60, n).astype(float),
        "LEADTIME_LV": rng.choice([3, 5, 7, 10, 14, 21, 30, 45, 60, 90], n),
        "PONTO_PEDIDO_LV": rng.integers(0, 50, n).astype(float),
        "ULTIMA_VENDA_DATA_UNE": [
            dt.date(2025, 6, 30) - dt.timedelta(days=int(d)) for d in rng.integers(0, 400, n)
        ],
    }
    for week in _WEEK_NAMES:
        data[f"QTDE_{week}"] = sales(0.25)
        data[f"FREQ_{week}"] = rng.integers(0, 20, n)
    frame = pl.DataFrame(data)
    # a few nulls where the cleaning step leaves them (unparsable stock, missing class)
    null_rows = rng.random(n)
    frame = frame.with_columns(
        pl.when(pl.Series(null_rows < 0.01))
        .then(None)
        .otherwise(pl.col("ESTOQUE_UNE"))
        .alias("ESTOQUE_UNE"),
        pl.when(pl.Series((null_rows > 0.01) & (null_rows < 0.02)))
        .then(None)
        .otherwise(pl.col("ABC_UNE_30DD"))
        .alias("ABC_UNE_30DD"),
        pl.when(pl.Series((null_rows > 0.02) & (null_rows < 0.03)))
        .then(None)
        .otherwise(pl.col("LEADTIME_LV"))
        .alias("LEADTIME_LV"),
    )
    columns = [c for c in ADMMAT_SCHEMA if c in (*USED_COLUMNS, *EXTRA_COLUMNS)]
    return frame.select(columns).cast({c: ADMMAT_SCHEMA[c] for c in columns})


def write_admmat(frame: pl.DataFrame, directory: Path, parts: int = 3) -> Path:
    """Write ``frame`` as ``parts`` Parquet files under ``directory`` (Dask: one partition
    per file, so cross-partition code paths run)."""
    directory.mkdir(parents=True, exist_ok=True)
    size = -(-frame.height // parts)
    for i in range(parts):
        frame.slice(i * size, size).write_parquet(directory / f"part-{i}.parquet")
    return directory


@pytest.fixture(scope="module")
def admmat() -> pl.DataFrame:
    return make_admmat()


@pytest.fixture(scope="module")
def admmat_dir(admmat: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_admmat(admmat, tmp_path_factory.mktemp("admmat") / "admmat")


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def scan(
    path: Path, engine: str, query: BusinessQuery, con: duckdb.DuckDBPyConnection
) -> nw.LazyFrame:
    """Scan exactly the query's declared columns."""
    return scan_admmat(path, engine, query.columns, connection=con)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# The sample itself
# --------------------------------------------------------------------------------------
def test_sample_is_typed_like_admmat_and_rich(admmat: pl.DataFrame) -> None:
    for name, dtype in admmat.schema.items():
        assert dtype == ADMMAT_SCHEMA[name], name
    assert set(admmat["NOMESEGMENTO"].unique()) == set(SEGMENTS)
    assert admmat["UNE"].n_unique() >= 5
    assert set(DEFAULT_UNES) <= set(admmat["UNE"].to_list())
    assert set(admmat["ABC_UNE_30DD"].drop_nulls().unique()) == {"A", "B", "C"}
    assert (admmat["ESTOQUE_CD"] == 0).sum() > 100
    assert (admmat["FORALINHA"] == "S").sum() > 50
    assert admmat.select(pl.col("ESTOQUE_UNE").null_count()).item() > 0
    assert admmat.select(["UNE", "PRODUTO"]).is_duplicated().sum() == 0


# --------------------------------------------------------------------------------------
# The catalog
# --------------------------------------------------------------------------------------
def test_catalog_has_at_least_20_well_formed_queries() -> None:
    assert len(CATALOG) >= 20
    assert len({q.name for q in CATALOG.values()}) == len(CATALOG)
    for name, q in CATALOG.items():
        assert name == q.name
        assert q.question.startswith(_PT_STARTS), q.question
        assert q.question.rstrip().endswith(("?", ".")), q.question
        assert q.description and q.description.endswith("."), name
        assert q.cache_class in CACHE_CLASSES
        assert set(q.columns) <= set(ADMMAT_SCHEMA)
        assert len(set(q.columns)) == len(q.columns), name
        assert "NOMESEGMENTO" in q.columns
        assert len(q.sort_descending) == len(q.sort_by)
        # the defaults are valid values
        defaults = validate_params(q)
        assert defaults == q.defaults
        for param in q.params:
            assert param.coerce(q.name, param.default) == param.default
    assert {q.cache_class for q in CATALOG.values()} == set(CACHE_CLASSES)


def test_get_query_names_the_known_queries() -> None:
    assert get_query("top_products_by_segment") is CATALOG["top_products_by_segment"]
    with pytest.raises(KeyError, match=r"unknown query 'nope'.*top_products_by_une"):
        get_query("nope")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Not Snake"}, "snake_case"),
        ({"cache_class": "forever"}, "unknown cache class"),
        ({"columns": ("UNE", "NOMESEGMENTO", "NOPE")}, "not in admmat"),
        ({"columns": ("UNE",)}, "row-level security"),
        ({"descending": (True, False, True)}, "descending flag"),
    ],
)
def test_business_query_rejects_bad_definitions(change: dict, message: str) -> None:
    base = CATALOG["sales_by_une"]
    fields = {
        "name": base.name,
        "question": base.question,
        "description": base.description,
        "cache_class": base.cache_class,
        "params": base.params,
        "columns": base.columns,
        "sort_by": base.sort_by,
        "build": base.build,
        "descending": base.descending,
        **change,
    }
    with pytest.raises(ValueError, match=message):
        BusinessQuery(**fields)


# --------------------------------------------------------------------------------------
# Every query on every engine
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CATALOG))
def test_query_runs_on_every_engine_with_parity(
    name: str, admmat_dir: Path, con: duckdb.DuckDBPyConnection
) -> None:
    query = CATALOG[name]
    results = {
        engine: to_polars(run_query(query, scan(admmat_dir, engine, query, con)))
        for engine in ENGINES
    }
    reference = results["polars"]
    assert reference.height > 0, f"{name} is empty on the sample"
    # the result is in the declared order
    if query.sort_by:
        resorted = reference.sort(
            list(query.sort_by), descending=query.sort_descending, nulls_last=True
        )
        assert resorted.equals(reference)
    for engine in ENGINES[1:]:
        parity = compare_frames(
            reference,
            results[engine],
            sort_by=query.sort_by,
            names=("polars", engine),
            query=name,
        )
        assert parity.ok, parity.problems
        assert results[engine].columns == reference.columns


def test_native_results_per_engine(admmat_dir: Path, con: duckdb.DuckDBPyConnection) -> None:
    query = CATALOG["sales_by_une"]
    natives = {
        engine: run_query(query, scan(admmat_dir, engine, query, con)).to_native()
        for engine in ENGINES
    }
    assert isinstance(natives["polars"], pl.DataFrame)
    assert type(natives["dask"]).__module__.startswith("pandas")
    assert type(natives["duckdb"]).__module__.startswith("pyarrow")
    as_polars = run_query(query, scan(admmat_dir, "duckdb", query, con), backend="polars")
    assert isinstance(as_polars.to_native(), pl.DataFrame)
    # by name too
    assert run_query("sales_by_une", scan(admmat_dir, "polars", query, con)).shape == (
        as_polars.shape
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_scan_reads_only_the_given_columns(
    engine: str, admmat_dir: Path, con: duckdb.DuckDBPyConnection
) -> None:
    columns = ("UNE", "NOMESEGMENTO", "VENDA_30DD")
    lf = scan_admmat(admmat_dir, engine, columns, connection=con)  # type: ignore[arg-type]
    assert lf.columns == list(columns)
    whole = scan_admmat(admmat_dir, engine, connection=con)  # type: ignore[arg-type]
    assert set(whole.columns) == set(USED_COLUMNS) | set(EXTRA_COLUMNS)
    assert lf.select(nw.len()).collect().item() == 6 * 480


def test_scan_single_file_fresh_duckdb_connection(admmat: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "admmat.parquet"
    admmat.write_parquet(path)
    query = CATALOG["dashboard_totals"]
    totals = {
        engine: to_polars(run_query(query, scan_admmat(path, engine, query.columns))).row(
            0, named=True
        )
        for engine in ENGINES
    }
    assert totals["duckdb"]["ITENS"] == totals["dask"]["ITENS"] == admmat.height
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        scan_admmat(path, "spark")  # type: ignore[arg-type]


def test_run_query_names_missing_columns(admmat_dir: Path) -> None:
    source = scan_admmat(admmat_dir, "polars", ["UNE", "NOMESEGMENTO"])
    with pytest.raises(ValueError, match=r"'sales_by_une': source lacks columns \['UNE_NOME'"):
        run_query("sales_by_une", source)


# --------------------------------------------------------------------------------------
# Results are right (checked against plain Polars)
# --------------------------------------------------------------------------------------
def run_polars(name: str, admmat: pl.DataFrame, params: dict | None = None) -> pl.DataFrame:
    return to_polars(run_query(name, nw.from_native(admmat.lazy()), params))


def test_top_products_by_une_matches_polars(admmat: pl.DataFrame) -> None:
    got = run_polars("top_products_by_une", admmat, {"une": "3", "limite": "7"})
    expected = (
        admmat.filter(pl.col("UNE") == 3)
        .sort(["VENDA_30DD", "PRODUTO"], descending=[True, False])
        .head(7)
    )
    assert got["PRODUTO"].to_list() == expected["PRODUTO"].to_list()
    assert (got["UNE"] == 3).all()


def test_top_products_by_segment_matches_polars(admmat: pl.DataFrame) -> None:
    got = run_polars("top_products_by_segment", admmat, {"segmento": "papelaria"})
    expected = (
        admmat.filter(pl.col("NOMESEGMENTO") == "PAPELARIA")
        .group_by("PRODUTO")
        .agg(pl.col("VENDA_30DD").sum())
        .sort(["VENDA_30DD", "PRODUTO"], descending=[True, False])
        .head(10)
    )
    assert got.select("PRODUTO", "VENDA_30DD").equals(expected)
    assert (got["NOMESEGMENTO"] == "PAPELARIA").all()


def test_monthly_and_weekly_shapes(admmat: pl.DataFrame) -> None:
    evolution = run_polars("segment_sales_evolution", admmat)
    assert evolution["MES"].to_list() == [f"MES_{m:02d}" for m in range(12, 0, -1)]
    tecidos = admmat.filter(pl.col("NOMESEGMENTO") == "TECIDOS")
    assert evolution["VENDAS"].to_list() == [
        tecidos[f"MES_{m:02d}"].sum() for m in range(12, 0, -1)
    ]
    m1, m2 = tecidos["MES_01"].sum(), tecidos["MES_02"].sum()
    assert evolution["VARIACAO"][-1] == pytest.approx((m1 - m2) / m2)
    assert evolution["VARIACAO"][0] is None

    season = run_polars("seasonality", admmat)
    assert season["PARTICIPACAO"].sum() == pytest.approx(1.0)
    assert season["INDICE_SAZONAL"].mean() == pytest.approx(1.0)

    weeks = run_polars("weekly_trend", admmat, {"segmento": "BAZAR"})
    assert weeks["SEMANA"].to_list() == [
        "SEMANA_ANTERIOR_5",
        "SEMANA_ANTERIOR_4",
        "SEMANA_ANTERIOR_3",
        "SEMANA_ANTERIOR_2",
        "SEMANA_ATUAL",
    ]
    bazar = admmat.filter(pl.col("NOMESEGMENTO") == "BAZAR")
    assert weeks["QTDE"][-1] == bazar["QTDE_SEMANA_ATUAL"].sum()
    assert weeks["FREQUENCIA"][0] == bazar["FREQ_SEMANA_ANTERIOR_5"].sum()


def test_stock_and_rupture_rules(admmat: pl.DataFrame) -> None:
    rupture = run_polars("critical_rupture", admmat, {"limite": 1000})
    expected = admmat.filter(
        (pl.col("ESTOQUE_CD") == 0)
        & (pl.col("ESTOQUE_UNE") < pl.col("ESTOQUE_LV"))
        & (pl.col("VENDA_30DD") > 0)
    )
    assert rupture.height == expected.height > 0
    by_segment = run_polars("rupture_risk_by_segment", admmat)
    assert by_segment["ITENS_RUPTURA"].sum() == expected.height
    assert by_segment["ITENS"].sum() == admmat.height
    totals = run_polars("dashboard_totals", admmat).row(0, named=True)
    assert totals["ITENS_RUPTURA"] == expected.height
    assert totals["VALOR_ESTOQUE"] == pytest.approx(
        (admmat["ESTOQUE_UNE"] * admmat["LIQUIDO_38"]).sum()
    )
    assert totals["PRODUTOS"] == admmat["PRODUTO"].n_unique()

    near = run_polars("near_reorder_point", admmat, {"margem": "0.2", "limite": 1000})
    assert near.height > 0
    assert (near["ESTOQUE_UNE"] <= near["PONTO_PEDIDO_LV"] * 1.2).all()
    assert (near["PONTO_PEDIDO_LV"] > 0).all()

    low = run_polars("low_stock_high_demand", admmat, {"dias": 10, "limite": 1000})
    assert (low["COBERTURA_DIAS"] < 10).all() and (low["DEMANDA_DIARIA"] > 0).all()
    over = run_polars("overstock_products", admmat, {"dias": 60, "limite": 1000})
    assert (over["COBERTURA_DIAS"] > 60).all()

    idle = run_polars("products_without_sales_90d", admmat, {"limite": 1000})
    assert idle.height > 0 and (idle["ESTOQUE_UNE"] > 0).all()
    discontinued = run_polars("discontinued_in_stock", admmat, {"limite": 1000})
    assert (
        discontinued.height
        == admmat.filter((pl.col("FORALINHA") == "S") & (pl.col("ESTOQUE_UNE") > 0)).height
    )


def test_growth_and_concentration(admmat: pl.DataFrame) -> None:
    growth = run_polars("growth_products", admmat, {"crescimento_minimo": 0.5, "limite": 1000})
    per_product = (
        admmat.group_by("PRODUTO")
        .agg(pl.col("MES_01").sum(), pl.col("MES_02").sum())
        .filter(pl.col("MES_02") > 0)
        .filter((pl.col("MES_01") - pl.col("MES_02")) / pl.col("MES_02") > 0.5)
    )
    assert growth.height == per_product.height > 0
    assert (growth["CRESCIMENTO"] > 0.5).all()

    abc = run_polars("abc_concentration", admmat, {"classe": "a"})
    une1 = admmat.filter(pl.col("UNE") == 261)
    share = (
        une1.filter(pl.col("ABC_UNE_30DD") == "A")["VENDA_30DD"].sum() / une1["VENDA_30DD"].sum()
    )
    assert abc.filter(pl.col("UNE") == 261)["CONCENTRACAO"].item() == pytest.approx(share)
    assert abc["CLASSE"].unique().to_list() == ["A"]

    compare = run_polars("compare_unes", admmat, {"une_a": 2, "une_b": 35})
    a = admmat.filter(pl.col("UNE") == 2, pl.col("NOMESEGMENTO") == "TECIDOS")["VENDA_30DD"]
    row = compare.filter(pl.col("NOMESEGMENTO") == "TECIDOS").row(0, named=True)
    assert row["VENDA_UNE_A"] == a.sum() and row["UNE_A"] == 2 and row["UNE_B"] == 35
    assert row["DIFERENCA"] == row["VENDA_UNE_A"] - row["VENDA_UNE_B"]


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------
def test_validate_params_coerces_and_applies_defaults() -> None:
    query = CATALOG["top_products_by_segment"]
    assert validate_params(query, {}) == {"segmento": "TECIDOS", "limite": 10}
    assert validate_params(query, {"limite": "25", "segmento": " papelaria "}) == {
        "segmento": "PAPELARIA",
        "limite": 25,
    }
    assert validate_params(query, {"limite": 5.0, "segmento": None})["limite"] == 5
    assert validate_params(CATALOG["near_reorder_point"], {"margem": " 0.15 "})["margem"] == 0.15
    assert validate_params(CATALOG["near_reorder_point"], {"margem": 1})["margem"] == 1.0
    assert validate_params(CATALOG["seasonality"], {"segmento": "todos"}) == {
        "segmento": ALL_SEGMENTS
    }
    assert validate_params(CATALOG["abc_concentration"], {"classe": "b"}) == {"classe": "B"}


@pytest.mark.parametrize(
    ("query", "raw", "pattern"),
    [
        (
            "top_products_by_segment",
            {"top": 5},
            r"'top' = 5: unknown parameter \(allowed: limite, segmento\)",
        ),
        ("dashboard_totals", {"limite": 5}, r"unknown parameter \(allowed: none\)"),
        (
            "top_products_by_segment",
            {"segmento": "ROUPAS"},
            r"'segmento' = 'ROUPAS': must be one of 'TECIDOS'",
        ),
        ("abc_concentration", {"classe": "D"}, r"must be one of 'A', 'B', 'C'"),
        ("top_products_by_une", {"limite": 0}, r"'limite' = 0: must be >= 1"),
        ("top_products_by_une", {"limite": "5000"}, r"'limite' = '5000': must be <= 1000"),
        ("near_reorder_point", {"margem": -0.5}, r"must be >= 0"),
        ("top_products_by_une", {"limite": "dez"}, r"expected int, not a number"),
        ("top_products_by_une", {"limite": "2.5"}, r"expected int, not a number"),
        ("top_products_by_une", {"limite": 2.5}, r"expected an integer"),
        ("top_products_by_une", {"une": True}, r"expected int, got bool"),
        ("top_products_by_une", {"une": [1]}, r"expected int, got list"),
        ("near_reorder_point", {"margem": "nan"}, r"must be a finite number"),
        ("top_products_by_segment", {"segmento": 5}, r"expected str, got int"),
    ],
)
def test_validate_params_rejects_with_clear_message(query: str, raw: dict, pattern: str) -> None:
    with pytest.raises(QueryParameterError, match=pattern) as info:
        validate_params(CATALOG[query], raw)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.query == query and str(error).startswith(f"query {query!r}: parameter")
    assert error.param == next(iter(raw))


def test_run_query_validates_params(admmat_dir: Path) -> None:
    query = CATALOG["top_products_by_une"]
    with pytest.raises(QueryParameterError, match="must be <= 1000"):
        run_query(query, scan_admmat(admmat_dir, "polars", query.columns), {"limite": 10**6})


def test_param_type_is_restricted() -> None:
    with pytest.raises(TypeError, match="int, float or str"):
        Param("x", list, [], "no")


# --------------------------------------------------------------------------------------
# Row-level security
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CATALOG))
def test_segments_restrict_every_query_before_it_runs(
    name: str, admmat: pl.DataFrame, admmat_dir: Path
) -> None:
    query = CATALOG[name]
    source = scan_admmat(admmat_dir, "polars", query.columns)
    restricted = to_polars(run_query(query, source, segments={"TECIDOS"}))
    if "NOMESEGMENTO" in restricted.columns:
        assert set(restricted["NOMESEGMENTO"].to_list()) <= {"TECIDOS"}
    # the same as running on a table that holds only TECIDOS
    only_tecidos = nw.from_native(admmat.lazy().filter(pl.col("NOMESEGMENTO") == "TECIDOS"))
    expected = to_polars(run_query(query, only_tecidos))
    parity = compare_frames(expected, restricted, sort_by=query.sort_by, names=("pre", "rls"))
    assert parity.ok, parity.problems


@pytest.mark.parametrize("engine", ENGINES)
def test_segments_restriction_on_every_engine(
    engine: str, admmat: pl.DataFrame, admmat_dir: Path, con: duckdb.DuckDBPyConnection
) -> None:
    query = CATALOG["dashboard_totals"]
    allowed = {"PAPELARIA", "BAZAR"}
    source = scan(admmat_dir, engine, query, con)
    row = to_polars(run_query(query, source, segments=allowed)).row(0, named=True)
    assert row["SEGMENTOS"] == 2
    assert row["ITENS"] == admmat.filter(pl.col("NOMESEGMENTO").is_in(allowed)).height
    ranking = CATALOG["segment_ranking_quarter"]
    segs = to_polars(run_query(ranking, scan(admmat_dir, engine, ranking, con), segments=allowed))
    assert sorted(segs["NOMESEGMENTO"].to_list()) == sorted(allowed)
    assert segs["PARTICIPACAO"].sum() == pytest.approx(1.0)


def test_empty_segments_see_nothing(admmat_dir: Path) -> None:
    for name in ("critical_rupture", "sales_by_une", "top_products_by_segment"):
        query = CATALOG[name]
        source = scan_admmat(admmat_dir, "polars", query.columns)
        assert to_polars(run_query(query, source, segments=())).height == 0
    # a segment parameter outside the user's segments gives nothing either
    query = CATALOG["top_products_by_segment"]
    source = scan_admmat(admmat_dir, "polars", query.columns)
    result = run_query(query, source, {"segmento": "BAZAR"}, segments={"TECIDOS"})
    assert len(result) == 0
