"""Engine parity: compare_frames catches every kind of disagreement; the battery agrees."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import narwhals as nw
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from bi_platform.retail.parity import (
    ParityResult,
    check_battery_parity,
    compare_frames,
    dtype_family,
    to_polars,
)
from bi_platform.retail.queries import CATALOG, BusinessQuery
from bi_platform_tests.retail.test_queries import DASK_PANDAS_WARNING, make_admmat

pytestmark = pytest.mark.filterwarnings(DASK_PANDAS_WARNING)

SORT_BY = ("VENDA_30DD", "UNE", "PRODUTO")


@pytest.fixture
def result() -> pl.DataFrame:
    """A query-like result: 30 rows sorted by VENDA_30DD desc, UNE, PRODUTO."""
    rng = np.random.default_rng(3)
    n = 30
    frame = pl.DataFrame(
        {
            "UNE": pl.Series(rng.integers(1, 4, n), dtype=pl.Int32),
            "PRODUTO": pl.Series(np.arange(1000, 1000 + n), dtype=pl.Int64),
            "NOME": [f"PRODUTO {i}" for i in range(n)],
            "VENDA_30DD": rng.integers(1, 500, n).astype(float),
            "VALOR_ESTOQUE": np.round(rng.uniform(10, 5000, n), 2),
            "ITENS": pl.Series(rng.integers(1, 40, n), dtype=pl.Int64),
            "ULTIMA_VENDA": [dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(n)],
        }
    )
    return frame.sort(["VENDA_30DD", "UNE", "PRODUTO"], descending=[True, False, False])


def compare(left: Any, right: Any, **kwargs: Any) -> ParityResult:
    return compare_frames(left, right, sort_by=SORT_BY, query="q", **kwargs)


def one_problem(res: ParityResult, *fragments: str) -> str:
    """The result failed with a problem mentioning every fragment."""
    assert not res.ok
    matching = [p for p in res.problems if all(f in p for f in fragments)]
    assert matching, res.problems
    return matching[0]


# --------------------------------------------------------------------------------------
# Agreement across native frame types
# --------------------------------------------------------------------------------------
def test_identical_frames_agree(result: pl.DataFrame) -> None:
    res = compare(result, result.clone())
    assert res.ok and res.problems == []
    assert res.rows == {"polars": 30, "dask": 30}
    assert res.engines == ("polars", "dask")
    assert res.summary().startswith("q [polars vs dask]: OK")


def test_engine_native_types_agree(result: pl.DataFrame) -> None:
    # Dask computes pandas; DuckDB returns pyarrow with decimal integer sums
    as_pandas = result.to_pandas()
    table = result.to_arrow()
    decimal_items = pa.array([Decimal(int(v)) for v in result["ITENS"]], pa.decimal128(38, 0))
    table = table.set_column(table.schema.get_field_index("ITENS"), "ITENS", decimal_items)
    assert compare(result, as_pandas, names=("polars", "dask")).ok
    res = compare(result, table, names=("polars", "duckdb"))
    assert res.ok, res.problems
    assert compare(nw.from_native(result), nw.from_native(result.lazy())).ok


def test_nan_and_null_are_the_same(result: pl.DataFrame) -> None:
    with_null = result.with_columns(
        pl.when(pl.col("PRODUTO") == 1005)
        .then(None)
        .otherwise(pl.col("VALOR_ESTOQUE"))
        .alias("VALOR_ESTOQUE")
    )
    pandas = with_null.to_pandas()  # the null becomes NaN
    assert pandas["VALOR_ESTOQUE"].isna().sum() == 1
    assert compare(with_null, pandas).ok
    # but a null on one side only is a difference
    one_problem(compare(result, with_null), "VALOR_ESTOQUE", "null count")


def test_integer_float_decimal_are_one_family() -> None:
    assert dtype_family(pl.Int32()) == dtype_family(pl.Float64()) == "numeric"
    assert dtype_family(pl.Decimal(38, 0)) == dtype_family(pl.UInt32()) == "numeric"
    assert dtype_family(pl.String()) == dtype_family(pl.Categorical()) == "string"
    assert dtype_family(pl.Date()) == "date"
    assert dtype_family(pl.Datetime("ns", "UTC")) == dtype_family(pl.Datetime("us")) == "datetime"
    assert dtype_family(pl.Boolean()) == "bool"


def test_to_polars_accepts_every_engine_output(result: pl.DataFrame) -> None:
    for frame in (result, result.lazy(), result.to_pandas(), result.to_arrow()):
        assert to_polars(frame).shape == result.shape
    assert to_polars(nw.from_native(result.lazy())).shape == result.shape


# --------------------------------------------------------------------------------------
# Disagreements are reported, clearly
# --------------------------------------------------------------------------------------
def test_value_changed_by_one_percent_fails(result: pl.DataFrame) -> None:
    changed = result.with_columns(
        pl.when(pl.col("PRODUTO") == 1007)
        .then(pl.col("VALOR_ESTOQUE") * 1.01)
        .otherwise(pl.col("VALOR_ESTOQUE"))
        .alias("VALOR_ESTOQUE")
    )
    res = compare(result, changed)
    original = result.filter(pl.col("PRODUTO") == 1007)["VALOR_ESTOQUE"].item()
    problem = one_problem(res, "q [polars vs dask]", "'VALOR_ESTOQUE'", "1 value(s) differ")
    assert f"{original:.10g}" in problem and f"{original * 1.01:.10g}" in problem


def test_value_changed_within_tolerance_passes(result: pl.DataFrame) -> None:
    nudged = result.with_columns(
        (pl.col("VALOR_ESTOQUE") * (1 + 1e-6)).alias("VALOR_ESTOQUE"),
        (pl.col("VENDA_30DD") * (1 - 1e-6)).alias("VENDA_30DD"),
    )
    res = compare(result, nudged)
    assert res.ok, res.problems


def test_aggregate_sum_differs(result: pl.DataFrame) -> None:
    shifted = result.with_columns(pl.col("VENDA_30DD") + 100.0)
    problem = one_problem(compare(result, shifted), "'VENDA_30DD' sum differs beyond 0.0001")
    assert "polars" in problem and "dask" in problem


def test_dropped_row_fails(result: pl.DataFrame) -> None:
    res = compare(result, result.slice(0, 29))
    one_problem(res, "row count differs: polars 30 vs dask 29")
    assert res.rows == {"polars": 30, "dask": 29}


def test_renamed_column_fails(result: pl.DataFrame) -> None:
    renamed = result.rename({"VALOR_ESTOQUE": "VALOR"})
    one_problem(
        compare(result, renamed),
        "columns differ: only in polars ['VALOR_ESTOQUE'], only in dask ['VALOR']",
    )


def test_column_order_fails(result: pl.DataFrame) -> None:
    reordered = result.select(["PRODUTO", "UNE", *result.columns[2:]])
    one_problem(compare(result, reordered), "column order differs")


def test_swapped_top_order_fails(result: pl.DataFrame) -> None:
    swapped = pl.concat([result.slice(1, 1), result.slice(0, 1), result.slice(2)])
    problem = one_problem(compare(result, swapped), "top-10 order differs at row 0")
    assert str(result.select(SORT_BY).row(0)) in problem
    # rows past the top-N may differ in order (same values): only the top-N is compared
    tail_swapped = pl.concat(
        [result.slice(0, 20), result.slice(21, 1), result.slice(20, 1), result.slice(22)]
    )
    assert compare(result, tail_swapped).ok
    assert not compare(result, tail_swapped, top_n=30).ok


def test_dtype_family_change_fails(result: pl.DataFrame) -> None:
    as_text = result.with_columns(pl.col("ITENS").cast(pl.String))
    one_problem(
        compare(result, as_text),
        "column 'ITENS' dtype family differs: polars numeric (Int64) vs dask string (String)",
    )
    # a datetime of midnights is a date (pandas' only option), a real datetime is not
    midnights = result.with_columns(pl.col("ULTIMA_VENDA").cast(pl.Datetime("ms")))
    assert compare(result, midnights).ok
    with_hours = midnights.with_columns(pl.col("ULTIMA_VENDA") + dt.timedelta(hours=3))
    one_problem(compare(result, with_hours), "'ULTIMA_VENDA' dtype family differs: polars date")
    flags = result.with_columns((pl.col("ITENS") > 10).alias("ITENS"))
    one_problem(compare(result, flags), "'ITENS' dtype family differs", "dask bool")


def test_string_and_date_values_are_compared(result: pl.DataFrame) -> None:
    renamed = result.with_columns(
        pl.when(pl.col("PRODUTO") == 1003)
        .then(pl.lit("OUTRO"))
        .otherwise(pl.col("NOME"))
        .alias("NOME")
    )
    one_problem(compare(result, renamed), "'NOME': 1 value(s) differ", "'OUTRO'")
    later = result.with_columns(pl.col("ULTIMA_VENDA") + dt.timedelta(days=1))
    one_problem(compare(result, later), "'ULTIMA_VENDA'")


def test_problems_name_the_engines(result: pl.DataFrame) -> None:
    res = compare_frames(
        result, result.slice(1), sort_by=SORT_BY, names=("polars", "duckdb"), query="top"
    )
    assert not res.ok and len(res.problems) >= 2
    assert all(p.startswith("top [polars vs duckdb]: ") for p in res.problems)
    assert res.summary().startswith(f"top [polars vs duckdb]: {len(res.problems)} problem(s)")


# --------------------------------------------------------------------------------------
# The whole battery on a small file
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def admmat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parity") / "admmat.parquet"
    make_admmat(n_unes=4, n_products=300, seed=11).write_parquet(path, row_group_size=400)
    return path


def test_battery_parity_holds_on_all_engines(admmat_file: Path) -> None:
    results = check_battery_parity(admmat_file, ("polars", "dask", "duckdb"))
    assert len(results) == 2 * len(CATALOG)
    bad = [r.summary() for r in results if not r.ok]
    assert not bad, bad
    assert {r.engines for r in results} == {("polars", "dask"), ("polars", "duckdb")}
    assert all(r.rows["polars"] > 0 for r in results)
    assert all(set(r.seconds) == set(r.engines) for r in results)


def test_battery_parity_with_params_segments_and_subset(admmat_file: Path) -> None:
    results = check_battery_parity(
        admmat_file,
        ("duckdb", "polars"),
        queries=["top_products_by_une", CATALOG["compare_unes"]],
        params={"top_products_by_une": {"une": "2", "limite": "5"}},
        segments={"TECIDOS", "BAZAR"},
    )
    assert [r.query for r in results] == ["top_products_by_une", "compare_unes"]
    assert all(r.ok for r in results), [r.problems for r in results]
    assert results[0].rows == {"duckdb": 5, "polars": 5}
    assert results[1].rows["duckdb"] == 2  # two segments, side by side
    with pytest.raises(ValueError, match="at least two engines"):
        check_battery_parity(admmat_file, ("polars",))


def test_an_engine_that_fails_is_reported(admmat_file: Path) -> None:
    def build(lf: nw.LazyFrame, params: Mapping[str, Any]) -> nw.LazyFrame:
        if lf.implementation is nw.Implementation.DASK:
            raise RuntimeError("boom")
        return lf.group_by("NOMESEGMENTO").agg(nw.len().alias("N"))

    fragile = BusinessQuery(
        name="fragile",
        question="Quantos itens há por segmento?",
        description="Items per segment.",
        cache_class="dashboard",
        params=(),
        columns=("NOMESEGMENTO",),
        sort_by=("NOMESEGMENTO",),
        build=build,
    )
    (res,) = check_battery_parity(admmat_file, ("polars", "dask"), queries=[fragile])
    assert not res.ok
    assert res.problems == ["fragile [polars vs dask]: dask failed: RuntimeError: boom"]
    assert res.rows == {"polars": 16}


def test_battery_parity_computes_dask_on_the_configured_cluster(admmat_file: Path) -> None:
    """With DASK_SCHEDULER_ADDRESS set, the blocking parity check's Dask side runs on that
    scheduler (asserted from its task records), not on local threads."""
    from distributed import Client, LocalCluster

    from bi_platform.io_managers.engines import EngineConfig, close_dask_clients

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        config = EngineConfig(dask_scheduler_address=cluster.scheduler_address)
        try:
            results = check_battery_parity(
                admmat_file, ("polars", "dask"), queries=["top_products_by_une"], config=config
            )
            with Client(cluster.scheduler_address) as client:
                processed = client.run_on_scheduler(
                    lambda dask_scheduler: len(dask_scheduler.transition_log)
                )
        finally:
            close_dask_clients()
    assert [r.ok for r in results] == [True]
    assert processed > 0
