"""The row hash: Spark's and PostgreSQL's digests agree on edge values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from pyspark.sql import types as st

from bi_platform.cadastral.row_hash import row_hash_sql, with_row_hash

SCHEMA = st.StructType(
    [
        st.StructField("chave_pessoa", st.StringType(), False),
        st.StructField("nome_completo", st.StringType()),
        st.StructField("data_nascimento", st.DateType()),
        st.StructField("idade", st.IntegerType()),
        st.StructField("qtd_bens", st.LongType()),
        st.StructField("valor_total_bens", st.DecimalType(18, 2)),
        st.StructField("tipos_bens_truncado", st.BooleanType()),
        st.StructField("tipos_bens", st.ArrayType(st.StringType())),
    ]
)
PG_COLUMNS = [
    ("nome_completo", "text"),
    ("data_nascimento", "date"),
    ("idade", "integer"),
    ("qtd_bens", "bigint"),
    ("valor_total_bens", "numeric(18,2)"),
    ("tipos_bens_truncado", "boolean"),
    ("tipos_bens", "text[]"),
]
EDGE_ROWS = [
    (
        "k01",
        "JOSÉ DA SILVA ÇÃO",
        dt.date(1980, 2, 29),
        44,
        3,
        Decimal("1234.50"),
        True,
        ["IMOVEL", "VEICULO"],
    ),
    ("k02", None, None, None, None, None, None, None),
    ("k03", "", dt.date(1, 1, 1), 0, 0, Decimal("0.00"), False, []),
    (
        "k04",
        "日本語 ümlaut 😀",
        dt.date(9999, 12, 31),
        -1,
        9_007_199_254_740_993,
        Decimal("-9999999999999999.99"),
        True,
        ["A"],
    ),
    (
        "k05",
        "tab\tand\nnewline \\N",
        dt.date(2024, 1, 5),
        2_147_483_647,
        -1,
        Decimal("0.01"),
        False,
        ["", "B;C", None, "ã"],
    ),
    (
        "k06",
        "\\N",
        dt.date(999, 3, 7),
        -2_147_483_648,
        10,
        Decimal("9999999999999999.99"),
        None,
        [None],
    ),
    (
        "k07",
        "quote ' and \" and , {}",
        dt.date(2000, 1, 1),
        1,
        1,
        Decimal("-0.10"),
        True,
        ["{x}", "a,b", 'q"q'],
    ),
]


def test_spark_and_postgres_hashes_agree_on_edge_values(spark, pg_url: str) -> None:
    df = with_row_hash(spark.createDataFrame(EDGE_ROWS, SCHEMA))
    assert df.columns[-1] == "row_hash"
    spark_hashes = {r["chave_pessoa"]: r["row_hash"] for r in df.collect()}
    assert len(set(spark_hashes.values())) == len(EDGE_ROWS)

    with psycopg.connect(pg_url) as conn:
        # A non-ISO DateStyle must not matter: dates are formatted explicitly.
        conn.execute("SET DateStyle = 'SQL, DMY'")
        conn.execute(
            "CREATE TABLE t (chave_pessoa text primary key, nome_completo text,"
            " data_nascimento date, idade integer, qtd_bens bigint,"
            " valor_total_bens numeric(18,2), tipos_bens_truncado boolean, tipos_bens text[])"
        )
        with conn.cursor().copy("COPY t FROM STDIN") as copy:
            for row in EDGE_ROWS:
                copy.write_row(row)
        pg_hashes = dict(
            conn.execute(f"SELECT chave_pessoa, {row_hash_sql(PG_COLUMNS)} FROM t").fetchall()
        )
    assert pg_hashes == spark_hashes


def test_hash_ignores_key_and_existing_hash_and_sees_every_column(spark) -> None:
    rows = [EDGE_ROWS[0], ("other-key", *EDGE_ROWS[0][1:])]
    hashed = with_row_hash(spark.createDataFrame(rows, SCHEMA))
    again = with_row_hash(hashed)  # recomputed, still last, same values
    assert again.columns == hashed.columns
    a, b = (r["row_hash"] for r in again.orderBy("chave_pessoa").collect())
    assert a == b
    changed = spark.createDataFrame([("k", *EDGE_ROWS[0][1:6], False, EDGE_ROWS[0][7])], SCHEMA)
    assert with_row_hash(changed).first()["row_hash"] != a
    # null and the text "\N" differ only by construction; empty array vs null array differ
    null_vs_empty = spark.createDataFrame(
        [
            ("a", None, None, None, None, None, None, None),
            ("b", None, None, None, None, None, None, []),
        ],
        SCHEMA,
    )
    h = [r["row_hash"] for r in with_row_hash(null_vs_empty).orderBy("chave_pessoa").collect()]
    assert h[0] != h[1]


def test_unsupported_types_are_refused(spark) -> None:
    df = spark.createDataFrame([("k", 1.5)], "chave_pessoa string, x double")
    with pytest.raises(ValueError, match="canonical text"):
        with_row_hash(df)
    with pytest.raises(ValueError, match="canonical text"):
        row_hash_sql([("x", "double precision")])
