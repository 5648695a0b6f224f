"""Delta tables written by Spark and committed by delta-rs (real local Spark)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F  # noqa: N812
from pyspark.sql import types as T  # noqa: N812

from bi_platform.cadastral.delta import (
    DeltaCommit,
    DeltaTableMissing,
    history,
    read_delta,
    restore,
    table_version,
    write_delta,
)

SCHEMA = T.StructType(
    [
        T.StructField("chave_pessoa", T.StringType()),
        T.StructField("idade", T.IntegerType()),
        T.StructField("qtd_bens", T.LongType()),
        T.StructField("tipos_bens_truncado", T.BooleanType()),
        T.StructField("data_nascimento", T.DateType()),
        T.StructField("valor_total_bens", T.DecimalType(18, 2)),
        T.StructField("tipos_bens", T.ArrayType(T.StringType())),
    ]
)

ROWS = [
    ("a1", 30, 2, False, dt.date(1990, 5, 17), Decimal("1234.50"), ["CASA", "CARRO"]),
    ("b2", None, 1, True, None, Decimal("-0.01"), []),
    ("c3", 71, 3_000_000_000, None, dt.date(1953, 1, 1), None, None),
    (None, 5, None, False, dt.date(2020, 2, 29), Decimal("9999999999999999.99"), ["TERRENO"]),
]


def _frame(spark, rows=ROWS, partitions: int = 2):
    return spark.createDataFrame(rows, SCHEMA).repartition(partitions)


def _rows(df) -> list[tuple]:
    return sorted((tuple(r) for r in df.collect()), key=repr)


def _log_entries(uri: Path, version: int) -> list[dict]:
    path = uri / "_delta_log" / f"{version:020d}.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_round_trip_types_metadata_and_stats(spark, tmp_path: Path) -> None:
    uri = tmp_path / "pessoas"
    commit = write_delta(_frame(spark), uri, description="carga inicial")

    assert isinstance(commit, DeltaCommit)
    assert commit.version == 0
    assert commit.uri == str(uri.resolve())
    assert commit.rows == len(ROWS)
    written = [p for p in (uri / "data").rglob("*.parquet") if p.stat().st_size > 0]
    adds = [e["add"] for e in _log_entries(uri, 0) if "add" in e]
    assert commit.files == len(adds) >= 1
    assert commit.bytes == sum(a["size"] for a in adds)
    assert {a["path"] for a in adds} <= {p.relative_to(uri).as_posix() for p in written}
    assert all(a["path"].startswith("data/") for a in adds)

    back = read_delta(spark, uri)
    assert back.schema == SCHEMA
    assert _rows(back) == _rows(_frame(spark))

    # stats from the footers: exact, JSON-serialisable, nested columns left out
    stats = [json.loads(a["stats"]) for a in adds]
    assert sum(s["numRecords"] for s in stats) == len(ROWS)
    low_decimals = [s["minValues"]["valor_total_bens"] for s in stats if s["minValues"]]
    assert min(Decimal(str(v)) for v in low_decimals) == Decimal("-0.01")
    raw = [json.loads(a["stats"], parse_float=Decimal) for a in adds]
    highs = [s["maxValues"].get("valor_total_bens") for s in raw]
    assert Decimal("9999999999999999.99") in highs  # exact, not rounded through a float
    dates = {s["minValues"].get("data_nascimento") for s in stats} - {None}
    assert "1953-01-01" in dates or "1990-05-17" in dates
    assert all("tipos_bens" not in s["minValues"] for s in stats)
    assert sum(s["nullCount"]["idade"] for s in stats) == 1
    assert sum(s["nullCount"]["valor_total_bens"] for s in stats) == 1
    assert sum(s["nullCount"]["chave_pessoa"] for s in stats) == 1
    for s in stats:
        for column in s["minValues"]:
            assert s["minValues"][column] <= s["maxValues"][column]


def test_versions_overwrite_time_travel_history(spark, tmp_path: Path) -> None:
    uri = tmp_path / "t"
    v0 = write_delta(_frame(spark), uri)
    v1 = write_delta(_frame(spark, ROWS[:2], 1), uri)
    v2 = write_delta(_frame(spark, ROWS[2:3], 1), uri, mode="overwrite")
    assert [v0.version, v1.version, v2.version] == [0, 1, 2]
    assert table_version(uri) == 2
    assert (v1.rows, v2.rows) == (2, 1)

    # old files stay on disk for time travel, readers only see the committed version
    on_disk = sum(1 for _ in (uri / "data").rglob("*.parquet"))
    assert on_disk >= v0.files + v1.files + v2.files
    assert len(list((uri / "data").iterdir())) == 3
    assert _rows(read_delta(spark, uri)) == _rows(_frame(spark, ROWS[2:3]))
    assert _rows(read_delta(spark, uri, version=0)) == _rows(_frame(spark))
    assert _rows(read_delta(spark, uri, version=1)) == _rows(_frame(spark, ROWS[:2]))

    appended = write_delta(_frame(spark, ROWS[:1], 1), uri, mode="append")
    assert appended.version == 3
    assert appended.rows == 2
    assert _rows(read_delta(spark, uri)) == _rows(_frame(spark, [ROWS[2], ROWS[0]]))

    ops = history(uri)
    assert [h["version"] for h in ops] == [3, 2, 1, 0]
    assert ops[-1]["operation"] == "CREATE TABLE"
    assert all(h["operation"] == "WRITE" for h in ops[:3])


def test_restore_is_a_new_version(spark, tmp_path: Path) -> None:
    uri = tmp_path / "t"
    write_delta(_frame(spark), uri)
    write_delta(_frame(spark, ROWS[:1], 1), uri)
    commit = restore(uri, 0)
    assert commit.version == 2
    assert commit.rows == len(ROWS)
    assert _rows(read_delta(spark, uri)) == _rows(_frame(spark))
    assert history(uri)[0]["operation"] == "RESTORE"


def test_plain_columns_are_written_without_a_dictionary(spark, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    uri = tmp_path / "plain"
    # few distinct values, repeated: the writer keeps a dictionary where it may
    rows = [(f"k{i % 3}", i % 4, *ROWS[0][2:]) for i in range(1000)]
    commit = write_delta(
        _frame(spark, rows, partitions=1), uri, plain_columns=("chave_pessoa", "not_a_column")
    )
    assert commit.rows == len(rows)
    (path,) = DeltaTable(str(uri)).file_uris()
    chunks = pq.ParquetFile(path).metadata.row_group(0)
    dictionary = {
        chunks.column(i).path_in_schema: chunks.column(i).has_dictionary_page
        for i in range(chunks.num_columns)
    }
    assert dictionary["chave_pessoa"] is False
    assert dictionary["idade"] is True  # every other column keeps Parquet's default
    assert _rows(read_delta(spark, uri)) == _rows(_frame(spark, rows))


def test_empty_dataframe_commits_an_empty_version(spark, tmp_path: Path) -> None:
    uri = tmp_path / "vazio"
    empty = spark.createDataFrame([], SCHEMA)
    first = write_delta(empty, uri)
    assert (first.version, first.files, first.rows) == (0, 0, 0)
    back = read_delta(spark, uri)
    assert back.schema == SCHEMA
    assert back.count() == 0

    write_delta(_frame(spark), uri)
    emptied = write_delta(_frame(spark).where(F.lit(False)), uri)
    assert (emptied.version, emptied.files, emptied.rows) == (2, 0, 0)
    back = read_delta(spark, uri)
    assert back.schema == SCHEMA
    assert back.count() == 0
    assert read_delta(spark, uri, version=1).count() == len(ROWS)


def test_failed_spark_write_leaves_previous_version(spark, tmp_path: Path) -> None:
    uri = tmp_path / "t"
    write_delta(_frame(spark), uri)

    @F.udf(T.IntegerType())
    def explode_on_c3(key):
        if key == "c3":
            raise RuntimeError("boom")
        return 1

    broken = _frame(spark).withColumn("idade", explode_on_c3("chave_pessoa"))
    with pytest.raises(Exception, match="boom"):
        write_delta(broken, uri)

    assert table_version(uri) == 0
    assert _rows(read_delta(spark, uri)) == _rows(_frame(spark))
    assert len(list((uri / "data").iterdir())) == 1  # the failed write's files are gone
    assert write_delta(_frame(spark, ROWS[:1], 1), uri).version == 1


def test_external_reader_parity(spark, tmp_path: Path) -> None:
    uri = tmp_path / "t"
    write_delta(_frame(spark), uri)
    write_delta(_frame(spark, ROWS[1:], 2), uri)
    table = DeltaTable(str(uri)).to_pyarrow_table()
    external = sorted(
        (tuple(row[c] for c in SCHEMA.fieldNames()) for row in table.to_pylist()),
        key=repr,
    )
    spark_rows = [
        tuple(list(v) if isinstance(v, list) else v for v in r)
        for r in _rows(read_delta(spark, uri))
    ]
    assert external == spark_rows
    assert table.num_rows == len(ROWS) - 1


def test_missing_table(spark, tmp_path: Path) -> None:
    uri = tmp_path / "nada"
    assert table_version(uri) is None
    with pytest.raises(DeltaTableMissing, match="nada"):
        read_delta(spark, uri)
    with pytest.raises(DeltaTableMissing):
        history(uri)
    with pytest.raises(ValueError, match="mode"):
        write_delta(_frame(spark), uri, mode="upsert")
