"""The retail rules: each rule's narwhals expression and SQL fragment agree row by row."""

from __future__ import annotations

import duckdb
import narwhals as nw
import polars as pl
import pytest

from bi_platform.retail import rules
from bi_platform.retail.schema import ADMMAT_SCHEMA

#: Rows on both sides of every threshold (nulls included).
ROWS = pl.DataFrame(
    {
        "ESTOQUE_CD": [0.0, 0.0, 5.0, 0.0, None, 0.0],
        "ESTOQUE_UNE": [1.0, 3.0, 0.0, 0.0, 2.0, 10.0],
        "ESTOQUE_LV": [2.0, 3.0, 1.0, 4.0, 5.0, 1.0],
        "VENDA_30DD": [5.0, 5.0, 0.0, 1.0, 2.0, 0.0],
        "MES_01": [1.0, 0.0, 0.0, None, 9.0, 0.0],
        "MES_02": [2.0, 0.0, 0.0, 3.0, 0.0, 0.0],
        "MES_03": [None, 0.0, 0.0, 3.0, 1.0, 0.0],
        "LIQUIDO_38": [1.5, 2.0, None, 3.0, 1.0, 2.5],
        "PONTO_PEDIDO_LV": [0.0, 2.0, 1.0, None, 3.0, 4.0],
        "FORALINHA": ["S", "N", "S", None, "S", "S"],
        "LEADTIME_LV": [None, 7, 8, 30, 61, 60],
    },
    schema_overrides={"LEADTIME_LV": pl.Int32},
)


def _query(sql: str) -> list[object]:
    con = duckdb.connect()
    con.register("t", ROWS.with_row_index("__ROW").to_arrow())
    return [r[0] for r in con.execute(sql).fetchall()]


def _sql(expression: str) -> list[object]:
    return _query(f'SELECT {expression} FROM t ORDER BY "__ROW"')


def _nw(expression: nw.Expr) -> list[object]:
    return nw.from_native(ROWS).select(expression.alias("__OUT"))["__OUT"].to_list()


CONDITIONS = {
    "CRITICAL_RUPTURE": rules.CRITICAL_RUPTURE,
    "IN_STORE_STOCK": rules.IN_STORE_STOCK,
    "HAS_REORDER_POINT": rules.HAS_REORDER_POINT,
    "NO_SALES_90D": rules.NO_SALES_90D,
    "DISCONTINUED_IN_STOCK": rules.DISCONTINUED_IN_STOCK,
}


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_condition_sql_matches_narwhals(name: str) -> None:
    condition = CONDITIONS[name]
    kept_nw = nw.from_native(ROWS.with_row_index("__ROW")).filter(condition.expr)["__ROW"]
    kept_sql = _query(f'SELECT "__ROW" FROM t WHERE {condition.sql} ORDER BY "__ROW"')
    assert kept_nw.to_list() == kept_sql


def test_critical_rupture_is_the_documented_rule() -> None:
    assert rules.CRITICAL_RUPTURE.sql == (
        '("ESTOQUE_CD" = 0 AND "ESTOQUE_UNE" < "ESTOQUE_LV" AND "VENDA_30DD" > 0)'
    )
    assert _nw(rules.CRITICAL_RUPTURE.expr) == [True, False, False, True, None, False]


@pytest.mark.parametrize(
    "measure", [rules.STOCK_VALUE, rules.SHORTFALL, rules.QUARTER_SALES, rules.DAILY_DEMAND]
)
def test_measure_sql_matches_narwhals(measure: rules.Measure) -> None:
    assert _nw(measure.expr) == pytest.approx(_sql(measure.sql), nan_ok=True)
    assert nw.from_native(ROWS).select(measure.expr).columns == [measure.name]


def test_ratio_growth_and_flag_agree() -> None:
    assert _nw(rules.ratio_expr("ESTOQUE_UNE", "ESTOQUE_LV", "R")) == _sql(
        rules.ratio_sql('"ESTOQUE_UNE"', '"ESTOQUE_LV"')
    )
    growth = _nw(rules.growth_expr("MES_01", "MES_02"))
    assert growth == _sql(rules.growth_sql('"MES_01"', '"MES_02"'))
    pairs = zip(ROWS["MES_01"], ROWS["MES_02"], growth, strict=True)
    for current, previous, expected in pairs:
        if current is not None:
            assert rules.growth_value(current, previous) == expected
    flags = _nw(rules.flag_expr(rules.IN_STORE_STOCK.expr, "F"))
    assert flags == _sql(rules.flag_sql(rules.IN_STORE_STOCK.sql)) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_leadtime_buckets_agree() -> None:
    order_expr, label_expr = rules.leadtime_bucket_exprs()
    order_sql, label_sql = rules.leadtime_bucket_sql()
    assert _nw(order_expr) == _sql(order_sql) == [0, 1, 2, 3, 5, 4]
    assert _nw(label_expr) == _sql(label_sql)
    assert _sql(label_sql)[0] == rules.NO_LEADTIME
    assert _sql(label_sql)[4] == rules.LEADTIME_OVER


def test_calendar() -> None:
    assert rules.MONTHS[0] == "MES_01" and rules.MONTHS[-1] == "MES_12"
    assert rules.QUARTER == ("MES_01", "MES_02", "MES_03")
    assert rules.MONTH_ROWS[0] == ("MES_12", 12) and rules.MONTH_ROWS[-1] == ("MES_01", 1)
    assert rules.WEEKS[0] == ("SEMANA_ANTERIOR_5", 4) and rules.WEEKS[-1] == ("SEMANA_ATUAL", 0)
    for month in rules.MONTHS:
        assert month in ADMMAT_SCHEMA
    for week in rules.WEEK_LABELS:
        assert f"QTDE_{week}" in ADMMAT_SCHEMA and f"FREQ_{week}" in ADMMAT_SCHEMA
