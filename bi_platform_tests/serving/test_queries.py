"""The query battery on the warehouse: parity with Polars, parameters, row-level security."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import narwhals as nw
import pyarrow as pa
import pytest

from bi_platform.retail.parity import compare_frames
from bi_platform.retail.queries import CATALOG, QueryParameterError, run_query, scan_admmat
from bi_platform.serving import queries as serving
from bi_platform.serving.pool import ConnectionPool
from bi_platform.serving.warehouse import lake_table_path, read_data_version
from bi_platform_tests.serving import SmallLake

INJECTIONS = (
    "TECIDOS' OR '1'='1",
    "'; DROP TABLE admmat; --",
    "1; DELETE FROM admmat",
    "1 OR 1=1",
    "TECIDOS\x00",
)
RESTRICTED = ("TECIDOS", "PAPELARIA")


@pytest.fixture(scope="module")
def pool(warehouse: Path) -> Iterator[ConnectionPool]:
    with ConnectionPool(warehouse, size=4) as pool:
        yield pool


@pytest.fixture(scope="module")
def polars_source(lake: SmallLake) -> nw.LazyFrame:
    return scan_admmat(lake_table_path(lake.lake_dir, "admmat"), "polars")


def _polars(source: nw.LazyFrame, name: str, params: Any = None, segments: Any = None) -> Any:
    return run_query(CATALOG[name], source, params, segments=segments, backend="polars").to_native()


def _assert_parity(got: pa.Table, expected: Any, name: str) -> None:
    result = compare_frames(
        got,
        expected,
        sort_by=CATALOG[name].sort_by,
        names=("warehouse", "polars"),
        query=name,
    )
    assert result.ok, result.problems


@pytest.mark.parametrize("name", list(CATALOG))
def test_every_query_matches_polars_with_default_params(
    name: str, pool: ConnectionPool, polars_source: nw.LazyFrame
) -> None:
    result = serving.execute(pool, name)
    assert isinstance(result.table, pa.Table)
    assert result.params == CATALOG[name].defaults
    assert result.data_version == "v-test_queries"
    assert result.table.num_rows > 0, name
    _assert_parity(result.table, _polars(polars_source, name), name)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("top_products_by_une", {"une": "2", "limite": "5"}),
        ("near_reorder_point", {"margem": "0.5", "segmento": "papelaria", "limite": 20}),
        ("growth_products", {"crescimento_minimo": 0.0, "segmento": "TODOS"}),
        ("abc_concentration", {"classe": "B"}),
        ("compare_unes", {"une_a": 2, "une_b": 261}),
    ],
)
def test_typed_params_match_polars(
    name: str, params: dict, pool: ConnectionPool, polars_source: nw.LazyFrame
) -> None:
    result = serving.execute(pool, name, params)
    for param in CATALOG[name].params:  # URL strings came back typed
        assert type(result.params[param.name]) is param.type, param.name
    _assert_parity(result.table, _polars(polars_source, name, params), name)


@pytest.mark.parametrize("name", list(CATALOG))
def test_row_level_security_applies_to_every_query(
    name: str, pool: ConnectionPool, polars_source: nw.LazyFrame
) -> None:
    table = serving.run_query(pool, name, segments=RESTRICTED)
    if "NOMESEGMENTO" in table.column_names:
        assert set(table.column("NOMESEGMENTO").to_pylist()) <= set(RESTRICTED), name
    _assert_parity(table, _polars(polars_source, name, segments=RESTRICTED), name)


def test_no_segment_means_no_rows(pool: ConnectionPool) -> None:
    totals = serving.run_query(pool, "dashboard_totals", segments=[]).to_pylist()
    assert len(totals) <= 1
    assert all(not v for row in totals for k, v in row.items() if k.startswith(("ITENS", "VENDA")))
    assert serving.run_query(pool, "critical_rupture", segments=()).num_rows == 0


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_strings_are_rejected_or_inert(evil: str, pool: ConnectionPool) -> None:
    for name, param in [
        ("top_products_by_segment", "segmento"),
        ("top_products_by_une", "une"),
        ("top_products_by_une", "limite"),
        ("near_reorder_point", "margem"),
        ("abc_concentration", "classe"),
    ]:
        with pytest.raises(QueryParameterError, match=param):
            serving.execute(pool, name, {param: evil})
    # as a row-level security segment it is just a value matching no row
    assert serving.run_query(pool, "critical_rupture", segments=[evil]).num_rows == 0
    assert serving.run_query(pool, "critical_rupture", segments=[evil, "TECIDOS"]).num_rows > 0
    assert read_data_version(pool.path) == "v-test_queries"
    assert serving.run_query(pool, "sales_by_une").num_rows > 0


def test_unknown_queries_params_and_bad_segments(pool: ConnectionPool) -> None:
    with pytest.raises(serving.UnknownQueryError, match="unknown query 'drop_tables'"):
        serving.execute(pool, "drop_tables")
    with pytest.raises(QueryParameterError, match="unknown parameter"):
        serving.execute(pool, "sales_by_une", {"sql": "SELECT 1"})
    with pytest.raises(QueryParameterError, match="must be <= 1000"):
        serving.execute(pool, "top_products_by_une", {"limite": 10**9})
    with pytest.raises(QueryParameterError, match="expected int"):
        serving.execute(pool, "top_products_by_une", {"une": [1, 2]})
    with pytest.raises(QueryParameterError, match="finite"):
        serving.execute(pool, "near_reorder_point", {"margem": "nan"})
    with pytest.raises(TypeError, match="segments"):
        serving.execute(pool, "sales_by_une", segments="TECIDOS")
    assert pool.stats().leased == 0


def test_catalog_lists_every_query_with_typed_params() -> None:
    listed = {q["name"]: q for q in serving.catalog()}
    assert set(listed) == set(CATALOG)
    top = listed["top_products_by_segment"]
    assert top["cache_class"] == "top_products"
    params = {p["name"]: p for p in top["params"]}
    assert params["limite"]["type"] == "int" and params["limite"]["maximum"] == 1000
    assert params["segmento"]["type"] == "str" and "TECIDOS" in params["segmento"]["choices"]
