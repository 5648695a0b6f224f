"""The incremental sync's file-pair diff (:mod:`bi_platform.cadastral.pg_sync_diff`)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from bi_platform.cadastral import pg_sync
from bi_platform.cadastral.delta import write_delta
from bi_platform.cadastral.pg_sync import sync_to_postgres
from bi_platform.cadastral.pg_sync_diff import diff_pair, pair_differ, pair_files, partition_id
from bi_platform_tests.cadastral.test_pg_sync import (
    TABLE,
    assert_equal,
    snapshot,
    source_df,
)

KEY = "chave_pessoa"
UUID = "0b1c2d3e-1111-2222-3333-444455556666"


def part(directory: Path, pid: int, rows: dict[str, list], c: int = 0) -> str:
    path = directory / f"part-{pid:05d}-{UUID}-c{c:03d}.snappy.parquet"
    pq.write_table(pa.table(rows), path)
    return str(path)


def ops(table: pa.Table) -> Counter:
    """(key, op) -> rows: each changed key once, the unchanged ones under (None, "N")."""
    counted: Counter = Counter()
    columns = (table.column(c).to_pylist() for c in (KEY, "op", "rows"))
    for key, op, rows in zip(*columns, strict=True):
        counted[(key, op)] += rows
    return counted


def spark_ops(diff) -> Counter:
    """:func:`ops` of a Spark diff (``(key, op, rows)`` rows)."""
    counted: Counter = Counter()
    for row in diff.collect():
        counted[(row[KEY], row["op"])] += row["rows"]
    return counted


def test_diff_pair_inserts_updates_deletes_unchanged(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = part(
        tmp_path / "old",
        0,
        {KEY: ["a", "b", "c", "d"], "row_hash": ["1", "2", "3", "4"], "other": [1, 2, 3, 4]},
    )
    new = [
        part(tmp_path / "new", 0, {KEY: ["b", "c"], "row_hash": ["2", "30"]}),
        part(tmp_path / "new", 0, {KEY: ["e"], "row_hash": ["5"]}, c=1),
    ]
    result = diff_pair([old], new, KEY)
    assert result.schema == pa.schema(
        [(KEY, pa.string()), ("op", pa.string()), ("rows", pa.int64())]
    )
    assert result.column("op").to_pylist().count("N") == 1  # one row counts the unchanged
    assert ops(result) == Counter(
        {("a", "D"): 1, ("d", "D"): 1, ("c", "U"): 1, ("e", "I"): 1, (None, "N"): 1}
    )
    # One side without rows or files.
    empty = part(tmp_path / "new", 1, {KEY: pa.array([], pa.string()), "row_hash": []})
    assert ops(diff_pair([old], [empty], KEY)) == Counter({(k, "D"): 1 for k in "abcd"})
    assert ops(diff_pair([], new, KEY)) == Counter({(k, "I"): 1 for k in "bce"})
    assert diff_pair([], [], KEY).num_rows == 0
    # A large_string key read back as the requested type.
    large = part(tmp_path / "new", 2, {KEY: pa.array(["a"], pa.large_string()), "row_hash": ["1"]})
    assert ops(diff_pair([old], [large], KEY, pa.string())) == Counter(
        {("b", "D"): 1, ("c", "D"): 1, ("d", "D"): 1, (None, "N"): 1}
    )

    # The mapInArrow function: pairs picked by the ids it is given.
    differ = pair_differ([([old], new), ([], [empty]), ([old], [])], KEY)
    batches = list(differ(iter([pa.record_batch({"id": pa.array([0, 1], pa.int64())})])))
    assert ops(pa.Table.from_batches(batches)) == ops(result)


def test_pair_files_groups_by_partition_id() -> None:
    def name(pid: int, c: int = 0) -> str:
        return f"/d/part-{pid:05d}-{UUID}-c{c:03d}.snappy.parquet"

    assert partition_id(name(7)) == 7
    assert partition_id(f"/d/part-123456-{UUID}-c000.parquet") == 123456
    assert partition_id("/d/0-abc.parquet") is None
    assert partition_id(f"/d/part-00001-{UUID}-c000.snappy.parquet.crc") is None

    pairs, reason = pair_files([name(1), name(0)], [name(0, 1), name(1), name(0)])
    assert reason == ""
    assert pairs == [([name(0)], [name(0), name(0, 1)]), ([name(1)], [name(1)])]
    assert pair_files([name(0)], [name(0), name(1)])[0] is None
    assert "partition ids differ" in pair_files([name(0)], [name(1)])[1]
    none, reason = pair_files([name(0)], ["/d/0-abc.parquet"])
    assert none is None and "0-abc.parquet" in reason
    assert pair_files([], [])[0] is None


def write_keyed(spark, uri: str, rows: list[tuple], partitions: int, by: str = KEY):
    """A new Delta version of ``rows`` hash-partitioned by ``by`` into ``partitions``
    partitions, as the pipeline's stages write them; the source read back from it."""
    df = source_df(spark, rows).repartition(partitions, by)
    version = write_delta(df, uri).version
    return spark.read.parquet(*DeltaTable(uri, version=version).file_uris()), version


def test_file_pair_diff_equals_shuffle_diff_and_syncs(
    spark, pg_url: str, tmp_path: Path, caplog
) -> None:
    uri = str(tmp_path / "delta")
    v0, n0 = write_keyed(spark, uri, snapshot(range(400)), 4)
    first = sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    assert first.mode == "full" and first.diff == "shuffle"

    updated = set(range(0, 400, 9))
    ids = [i for i in range(400) if i % 31 != 5] + list(range(400, 420))
    previous = spark.conf.get("spark.sql.files.maxRecordsPerFile")
    spark.conf.set("spark.sql.files.maxRecordsPerFile", "40")  # several files per id
    try:
        v1, n1 = write_keyed(spark, uri, snapshot(ids, updated), 4)
    finally:
        spark.conf.set("spark.sql.files.maxRecordsPerFile", previous)
    assert len(DeltaTable(uri, version=n1).file_uris()) > 4

    pairs, described = pg_sync._file_pair_diff(spark, v1, KEY, uri, n0, n1)
    assert pairs is not None and described == "4 file pairs"
    assert pairs.schema == pg_sync._diff(v0, v1, KEY).schema
    by_pairs = spark_ops(pairs)
    by_shuffle = spark_ops(pg_sync._diff(v0, v1, KEY))
    assert pg_sync._count_ops(pairs) == pg_sync._count_ops(pg_sync._diff(v0, v1, KEY))
    assert by_pairs == by_shuffle
    gone = {i for i in range(400) if i % 31 == 5}
    deleted = len(gone)
    assert by_pairs[(None, "N")] == 400 - deleted - len(updated - gone)
    assert not pg_sync._repeated_key(pairs, KEY)

    with caplog.at_level(logging.INFO, logger="bi_platform.cadastral.pg_sync"):
        second = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert "diff: 4 file pairs, no shuffle" in caplog.text
    assert second.mode == "incremental" and second.diff == "file_pairs"
    counts = Counter(op for _, op in by_shuffle.elements())
    assert (second.inserted, second.updated, second.deleted, second.unchanged) == (
        counts["I"],
        counts["U"],
        counts["D"],
        counts["N"],
    )
    assert second.inserted == 20 and second.deleted == deleted
    assert_equal(spark, v1, pg_url)

    # The same version again: no diff runs at all.
    rerun = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert rerun.diff is None and rerun.unchanged == v1.count() and rerun.inserted == 0


def test_different_partition_counts_use_the_shuffle_join(
    spark, pg_url: str, tmp_path: Path, caplog
) -> None:
    uri = str(tmp_path / "delta")
    v0, n0 = write_keyed(spark, uri, snapshot(range(200)), 4)
    sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    v1, n1 = write_keyed(spark, uri, snapshot(range(3, 205), {10, 11, 12}), 3)
    with caplog.at_level(logging.INFO, logger="bi_platform.cadastral.pg_sync"):
        result = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert "diff: shuffle join (partition ids differ (4 old, 3 new))" in caplog.text
    assert result.mode == "incremental" and result.diff == "shuffle"
    assert (result.inserted, result.updated, result.deleted) == (5, 3, 3)
    assert_equal(spark, v1, pg_url)


def test_mis_paired_versions_fall_back_to_the_shuffle_join(
    spark, pg_url: str, tmp_path: Path, caplog
) -> None:
    """Same partition ids, but the new version is partitioned by another column: keys
    move between pairs, the repeated-key check sees it and the shuffle join redoes the
    diff."""
    uri = str(tmp_path / "delta")
    v0, n0 = write_keyed(spark, uri, snapshot(range(200)), 4)
    sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    v1, n1 = write_keyed(spark, uri, snapshot(range(3, 205), {10, 11}), 4, by="nome_completo")

    pairs, _ = pg_sync._file_pair_diff(spark, v1, KEY, uri, n0, n1)
    assert pairs is not None and pg_sync._repeated_key(pairs, KEY)

    with caplog.at_level(logging.INFO, logger="bi_platform.cadastral.pg_sync"):
        result = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert "diff: 4 file pairs, no shuffle" in caplog.text
    assert "a key changed in two file pairs" in caplog.text
    assert result.mode == "incremental" and result.diff == "shuffle"
    assert (result.inserted, result.updated, result.deleted, result.unchanged) == (5, 2, 3, 195)
    assert_equal(spark, v1, pg_url)


def test_renamed_partition_id_is_caught(spark, pg_url: str, tmp_path: Path, caplog) -> None:
    """A copy of the new version with two files' partition ids swapped: mis-paired, the
    check falls back, and the sync is still exact."""
    import shutil

    from bi_platform.cadastral.delta import _add_actions

    uri = str(tmp_path / "delta")
    v0, n0 = write_keyed(spark, uri, snapshot(range(160)), 4)
    sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    v1, n1 = write_keyed(spark, uri, snapshot(range(160), {1, 2}), 4)
    files = [Path(f.removeprefix("file://")) for f in DeltaTable(uri, version=n1).file_uris()]
    copy_dir = Path(uri) / "data" / "renamed"
    copy_dir.mkdir()
    swap = {"part-00000-": "part-00001-", "part-00001-": "part-00000-"}
    copies = []
    for path in files:
        name = path.name
        for old, new in swap.items():
            if name.startswith(old):
                name = new + name.removeprefix(old)
                break
        copies.append(copy_dir / name)
        shutil.copy(path, copies[-1])
    actions, _, _, _ = _add_actions(Path(uri), copies)
    table = DeltaTable(uri)
    table.create_write_transaction(actions, mode="overwrite", schema=table.schema())
    n2 = DeltaTable(uri).version()
    v2 = spark.read.parquet(*DeltaTable(uri, version=n2).file_uris())
    # Sync v1 first (the target holds v1), then the renamed copy of the same rows.
    sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    with caplog.at_level(logging.INFO, logger="bi_platform.cadastral.pg_sync"):
        result = sync_to_postgres(spark, v2, pg_url, table=TABLE, delta_uri=uri, delta_version=n2)
    assert "a key changed in two file pairs" in caplog.text
    assert result.diff == "shuffle"
    assert (result.inserted, result.updated, result.deleted, result.unchanged) == (0, 0, 0, 160)
    assert_equal(spark, v2, pg_url)


CONNECT_SCRIPT = """
import json, sys
from collections import Counter
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from bi_platform.cadastral import pg_sync

spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
uri, old, new = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
assert pg_sync._is_connect(spark)
v0, v1 = (spark.read.parquet(*DeltaTable(uri, version=n).file_uris()) for n in (old, new))
pairs, described = pg_sync._file_pair_diff(spark, v1, "chave_pessoa", uri, old, new)
def spark_ops(diff):
    counted = Counter()
    for row in diff.collect():
        counted[(row["chave_pessoa"], row["op"])] += row["rows"]
    return counted
same = spark_ops(pairs) == spark_ops(pg_sync._diff(v0, v1, "chave_pessoa"))
print(json.dumps({"described": described, "same": same,
                  "counts": pg_sync._count_ops(pairs),
                  "repeated": pg_sync._repeated_key(pairs, "chave_pessoa")}))
"""


@pytest.mark.cluster
def test_file_pair_diff_over_spark_connect(spark, tmp_path: Path, spark_connect_server) -> None:
    """The same mapInArrow diff runs over Spark Connect (a client in its own process)."""
    uri = str(tmp_path / "delta")
    _, n0 = write_keyed(spark, uri, snapshot(range(150)), 3)
    _, n1 = write_keyed(spark, uri, snapshot(range(2, 155), {20, 21, 22}), 3)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CONNECT_SCRIPT,
            spark_connect_server.address,
            uri,
            str(n0),
            str(n1),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["described"] == "3 file pairs" and report["same"]
    assert report["counts"] == {"I": 5, "U": 3, "D": 2, "N": 145}
    assert report["repeated"] is False
