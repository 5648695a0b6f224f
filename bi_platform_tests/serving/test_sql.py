"""The SQL statements over the serving pre-aggregates equal the narwhals battery (the
reference) for every query, over a range of parameters and segment restrictions."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from bi_platform.retail.parity import compare_frames
from bi_platform.retail.queries import ALL_SEGMENTS, CATALOG, BusinessQuery, validate_params
from bi_platform.retail.schema import SEGMENTS
from bi_platform.serving import queries as serving
from bi_platform.serving import sql
from bi_platform.serving.pool import ConnectionPool
from bi_platform.serving.warehouse import META_TABLE, SERVING_AGGREGATES, read_data_version

#: Row-level-security restrictions: none, two segments, one, none at all.
RESTRICTIONS: tuple[tuple[str, ...] | None, ...] = (
    None,
    ("TECIDOS", "PAPELARIA"),
    ("PAPELARIA",),
    (),
)


def _cases(query: BusinessQuery, unes: list[int]) -> list[dict[str, Any]]:
    """Defaults plus, per parameter, values across its range (choices, bounds, ...)."""
    cases: list[dict[str, Any]] = [{}]
    for p in query.params:
        if p.choices:
            cases += [{p.name: c} for c in p.choices[:5]]
        elif p.name == "limite":
            cases += [{p.name: 1}, {p.name: 3}, {p.name: int(p.maximum or 1000)}]
        elif p.name in ("une", "une_a"):
            cases += [{p.name: une} for une in unes[:3]] + [{p.name: 987654}]
        elif p.name == "une_b":
            cases += [{"une_a": unes[0], "une_b": unes[1]}, {"une_a": unes[1], "une_b": unes[1]}]
        elif p.name == "dias":
            cases += [{p.name: 1}, {p.name: 30}, {p.name: int(p.maximum or 365)}]
        elif p.name == "margem":
            cases += [{p.name: 0.0}, {p.name: 0.5}, {p.name: 1.0}]
        elif p.name == "crescimento_minimo":
            cases += [{p.name: -1.0}, {p.name: 0.0}, {p.name: 2.5}]
        else:  # pragma: no cover - a new parameter needs cases here
            raise AssertionError(f"{query.name}: no test values for parameter {p.name}")
    names = {p.name for p in query.params}
    if {"segmento", "limite"} <= names:
        cases.append({"segmento": "PAPELARIA", "limite": 7})
    return cases


@pytest.fixture(scope="module")
def pool(warehouse: Path) -> Iterator[ConnectionPool]:
    with ConnectionPool(warehouse, size=2, threads=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def unes(pool: ConnectionPool) -> list[int]:
    with pool.acquire() as lease:
        rows = lease.connection.execute(
            'SELECT "UNE" FROM admmat GROUP BY 1 ORDER BY sum("VENDA_30DD") DESC, 1 LIMIT 3'
        ).fetchall()
    return [int(r[0]) for r in rows]


def _assert_same(got: pa.Table, expected: pa.Table, name: str, context: Any) -> None:
    assert got.schema == expected.schema, (name, context)
    assert got.num_rows == expected.num_rows, (name, context)
    result = compare_frames(
        got, expected, sort_by=CATALOG[name].sort_by, names=("sql", "reference"), query=name
    )
    assert result.ok, (context, result.problems)
    if CATALOG[name].sort_by:  # the order of the keys is the battery's too
        keys = [
            c for c in ("UNE", "PRODUTO", "NOMESEGMENTO", "MES", "SEMANA") if c in got.schema.names
        ]
        if keys:
            assert got.select(keys).to_pylist() == expected.select(keys).to_pylist(), (
                name,
                context,
            )


def test_every_catalog_query_has_a_statement() -> None:
    assert set(sql.STATEMENTS) == set(CATALOG)


@pytest.mark.parametrize("name", list(CATALOG))
def test_sql_equals_the_reference(name: str, pool: ConnectionPool, unes: list[int]) -> None:
    with pool.acquire() as lease:
        assert lease.tables >= serving.SERVING_TABLES  # the SQL path is taken
    for params in _cases(CATALOG[name], unes):
        for segments in RESTRICTIONS:
            got = serving.execute(pool, name, params, segments=segments)
            expected = serving.execute_reference(pool, name, params, segments=segments)
            assert got.params == expected.params
            _assert_same(got.table, expected.table, name, (params, segments))
            if segments is not None and "NOMESEGMENTO" in got.table.column_names:
                assert set(got.table.column("NOMESEGMENTO").to_pylist()) <= set(segments)


@pytest.mark.parametrize("name", list(CATALOG))
def test_values_are_bound_never_formatted(name: str) -> None:
    query = CATALOG[name]
    evil = "TECIDOS' OR '1'='1"
    params = validate_params(query, {})
    text, args = sql.statement(query, params, [evil, *SEGMENTS])
    assert evil not in text
    assert not any(segment in text for segment in SEGMENTS)
    for value in params.values():  # every parameter value is bound, never in the text
        if isinstance(value, str):
            assert f"'{value}'" not in text
    assert text.count("?") == len(args)
    assert all(isinstance(a, int | float | str) for a in args)


def test_effective_segments_intersect_the_parameter_and_the_restriction() -> None:
    query = CATALOG["sales_by_une"]
    assert sql.effective_segments(query, {"segmento": ALL_SEGMENTS}, None) is None
    assert sql.effective_segments(query, {"segmento": ALL_SEGMENTS}, ["B", "A", "A"]) == ["A", "B"]
    assert sql.effective_segments(query, {"segmento": "TECIDOS"}, None) == ["TECIDOS"]
    assert sql.effective_segments(query, {"segmento": "TECIDOS"}, ["PAPELARIA"]) == []
    assert sql.effective_segments(CATALOG["dashboard_totals"], {}, ["X"]) == ["X"]


def test_a_warehouse_without_the_serving_tables_falls_back_to_the_reference(
    warehouse: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old.duckdb"
    shutil.copy(warehouse, old)
    con = duckdb.connect(str(old))
    try:
        for name in SERVING_AGGREGATES:
            con.execute(f'DROP TABLE "{name}"')
        con.execute(f"DELETE FROM {META_TABLE} WHERE table_name LIKE 'srv_%'")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    assert read_data_version(old) == read_data_version(warehouse)
    with ConnectionPool(old, size=1) as old_pool, ConnectionPool(warehouse, size=1) as new_pool:
        for name in ("seasonality", "top_products_by_une", "dashboard_totals"):
            got = serving.execute(old_pool, name, segments=("TECIDOS",))
            expected = serving.execute(new_pool, name, segments=("TECIDOS",))
            _assert_same(got.table, expected.table, name, "fallback")
