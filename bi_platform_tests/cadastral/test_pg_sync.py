"""The PostgreSQL sync against a real PostgreSQL and a real Spark session."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from deltalake import DeltaTable
from pyspark.sql import types as st

from bi_platform.cadastral import pg_sync
from bi_platform.cadastral.compare_baseline import collect_compare_sync
from bi_platform.cadastral.delta import write_delta
from bi_platform.cadastral.pg_sync import (
    SyncError,
    SyncFaults,
    jdbc_connection,
    sync_to_postgres,
    verify_in_sync,
)
from bi_platform.cadastral.row_hash import with_row_hash

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE = "cadastro_consolidado"

SCHEMA = st.StructType(
    [
        st.StructField("chave_pessoa", st.StringType(), False),
        st.StructField("tipo_pessoa", st.StringType()),
        st.StructField("nome_completo", st.StringType()),
        st.StructField("data_nascimento", st.DateType()),
        st.StructField("idade", st.IntegerType()),
        st.StructField("segmento", st.StringType()),
        st.StructField("email", st.StringType()),
        st.StructField("tipos_bens", st.ArrayType(st.StringType())),
        st.StructField("tipos_bens_truncado", st.BooleanType()),
        st.StructField("qtd_bens", st.LongType()),
        st.StructField("valor_total_bens", st.DecimalType(18, 2)),
        st.StructField("dat_ref_carga", st.DateType()),
    ]
)
COLUMNS = [f.name for f in SCHEMA.fields] + ["row_hash"]
LOAD = dt.date(2024, 6, 30)


def key(i: int) -> str:
    return hashlib.sha256(f"{i:011d}".encode()).hexdigest()


def person(i: int, tag: str = "") -> tuple:
    birth = None if i % 17 == 0 else dt.date(1950, 1, 1) + dt.timedelta(days=i * 37 % 20000)
    assets = None if i % 7 == 0 else [] if i % 5 == 0 else ["IMOVEL", "VEICULO"][: i % 3]
    return (
        key(i),
        "FISICA" if i % 4 else "JURIDICA",
        f"PESSOA {i} JOSÉ ÇÃO{tag}",
        birth,
        None if birth is None else 18 + i % 70,
        ["VAREJO", "PRIVATE", None, ""][i % 4],
        None if i % 9 == 0 else f"p{i}@exemplo.com.br",
        assets,
        None if assets is None else i % 11 == 0,
        i % 6,
        Decimal(i * 1337 % 10_000_000) / 100,
        LOAD,
    )


def snapshot(ids: range | list[int], updated: set[int] = frozenset()) -> list[tuple]:
    return [person(i, " ALTERADO" if i in updated else "") for i in ids]


def source_df(spark, rows: list[tuple]):
    return with_row_hash(spark.createDataFrame(rows, SCHEMA))


def write_version(spark, uri: str, rows: list[tuple], files: int = 4):
    """Write ``rows`` (with row_hash) as a new Delta version of ``files`` Parquet files, as
    the pipeline does (Spark writes, delta-rs commits); the source read back from it."""
    version = write_delta(source_df(spark, rows).repartition(files), uri).version
    return spark.read.parquet(*DeltaTable(uri, version=version).file_uris()), version


def pg_rows(pg_url: str, table: str = TABLE) -> list[tuple]:
    names = ", ".join(f'"{c}"' for c in COLUMNS)
    with psycopg.connect(pg_url) as conn:
        return conn.execute(f"SELECT {names} FROM cadastral.{table} ORDER BY 1").fetchall()


def source_rows(df) -> list[tuple]:
    return sorted(tuple(r) for r in df.select(*COLUMNS).collect())


def assert_equal(spark, df, pg_url: str, table: str = TABLE) -> None:
    check = verify_in_sync(spark, df, pg_url, table=table)
    assert check.hash_differences == 0 and check.mismatched_buckets == 0, check
    assert check.pg_count == check.source_count == df.count()
    assert pg_rows(pg_url, table) == source_rows(df)


def state(pg_url: str) -> tuple:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT status, delta_version, target_version FROM cadastral.sync_state"
            " WHERE table_name = %s",
            (TABLE,),
        ).fetchone()


def test_first_sync_changes_and_rerun(spark, pg_url: str, tmp_path: Path, caplog) -> None:
    uri = str(tmp_path / "delta")
    v0, n0 = write_version(spark, uri, snapshot(range(300)))
    first = sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    assert (first.inserted, first.updated, first.deleted, first.unchanged) == (300, 0, 0, 0)
    assert first.mode == "full" and first.source_version == n0 and first.partitions >= 2
    assert state(pg_url) == ("done", n0, None)
    assert_equal(spark, v0, pg_url)

    # 12 updates, 7 inserts, 5 deletes
    updated = set(range(10, 130, 10))
    ids = [i for i in range(300) if i not in {3, 77, 151, 155, 299}] + list(range(300, 307))
    v1, n1 = write_version(spark, uri, snapshot(ids, updated))
    with caplog.at_level(logging.INFO, logger="bi_platform.cadastral.pg_sync"):
        second = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert second.mode == "incremental"
    # The changed rows were read from the version's 4 files by the apply tasks.
    assert "read 4 Parquet files for 19 upserts, 5 deletes" in caplog.text
    assert (second.inserted, second.updated, second.deleted, second.unchanged) == (
        7,
        12,
        5,
        300 - 5 - 12,
    )
    assert state(pg_url) == ("done", n1, None)
    assert_equal(spark, v1, pg_url)

    rerun = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert rerun.mode == "incremental"
    assert (rerun.inserted, rerun.updated, rerun.deleted, rerun.unchanged) == (0, 0, 0, 302)
    forced = sync_to_postgres(
        spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1, full_compare=True
    )
    assert forced.mode == "full"
    assert (forced.inserted, forced.updated, forced.deleted, forced.unchanged) == (0, 0, 0, 302)
    assert_equal(spark, v1, pg_url)

    # Without a Delta version the sync is always a full compare.
    v2 = source_df(spark, snapshot(ids[:-1], updated | {200}))
    plain = sync_to_postgres(spark, v2, pg_url, table=TABLE)
    assert plain.mode == "full" and plain.source_version is None
    assert (plain.inserted, plain.updated, plain.deleted) == (0, 1, 1)
    assert_equal(spark, v2, pg_url)


def test_large_change_sets_apply_through_a_spark_join(
    spark, pg_url: str, tmp_path: Path, monkeypatch
) -> None:
    """Above FILE_APPLY_MAX_CHANGES the changed rows are joined back in Spark instead of
    being read from the Delta files by the apply tasks: same end state."""
    uri = str(tmp_path / "delta")
    v0, n0 = write_version(spark, uri, snapshot(range(120)))
    sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    ids = [i for i in range(125) if i not in {4, 50}]
    v1, n1 = write_version(spark, uri, snapshot(ids, {7, 8, 9}), files=3)
    monkeypatch.setattr(pg_sync, "FILE_APPLY_MAX_CHANGES", 0)
    result = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert result.mode == "incremental"
    assert (result.inserted, result.updated, result.deleted) == (5, 3, 2)
    assert_equal(spark, v1, pg_url)


def test_versions_without_row_hash_apply_through_a_spark_join(
    spark, pg_url: str, tmp_path: Path
) -> None:
    """A Delta table without a stored row_hash (computed on the fly): the apply tasks
    cannot read it from the files, so the changed rows come from the source in Spark."""
    uri = str(tmp_path / "delta")

    def version(rows: list[tuple]):
        n = write_delta(spark.createDataFrame(rows, SCHEMA).repartition(2), uri).version
        files = DeltaTable(uri, version=n).file_uris()
        return with_row_hash(spark.read.parquet(*files)), n

    v0, n0 = version(snapshot(range(60)))
    sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    v1, n1 = version(snapshot(range(1, 61), {3, 4}))
    result = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert result.mode == "incremental"
    assert (result.inserted, result.updated, result.deleted) == (1, 2, 1)
    assert_equal(spark, v1, pg_url)


def test_interrupted_state_forces_full_compare(spark, pg_url: str, tmp_path: Path) -> None:
    uri = str(tmp_path / "delta")
    v0, n0 = write_version(spark, uri, snapshot(range(120)))
    sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE cadastral.sync_state SET status = 'in_progress'")
    v1, n1 = write_version(spark, uri, snapshot(range(2, 125), {5, 6}))
    result = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert result.mode == "full"
    assert (result.inserted, result.updated, result.deleted, result.unchanged) == (5, 2, 2, 116)
    assert state(pg_url) == ("done", n1, None)
    assert_equal(spark, v1, pg_url)


def test_transient_fault_is_retried_and_exhausted_retries_fail(
    spark, pg_url: str, tmp_path: Path
) -> None:
    uri = str(tmp_path / "delta")
    v0, n0 = write_version(spark, uri, snapshot(range(200)))
    faults = SyncFaults(fail_partition=1, fail_times=2)
    result = sync_to_postgres(
        spark,
        v0,
        pg_url,
        table=TABLE,
        delta_uri=uri,
        delta_version=n0,
        retries=3,
        faults=faults,
    )
    assert result.retries == 2 and result.inserted == 200 and result.partitions >= 4
    assert_equal(spark, v0, pg_url)

    v1, n1 = write_version(spark, uri, snapshot(range(200), set(range(0, 200, 3))))
    with pytest.raises(Exception, match="injected failure"):
        sync_to_postgres(
            spark,
            v1,
            pg_url,
            table=TABLE,
            delta_uri=uri,
            delta_version=n1,
            retries=1,
            faults=SyncFaults(fail_partition=1, fail_times=5),
        )
    assert state(pg_url)[0] == "in_progress"
    assert verify_in_sync(spark, v1, pg_url, table=TABLE).hash_differences > 0
    again = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert again.mode == "full" and again.retries == 0
    assert 0 < again.updated < 67  # the partitions that committed are not redone
    assert_equal(spark, v1, pg_url)


KILL_SCRIPT = textwrap.dedent(
    """
    import os
    from deltalake import DeltaTable
    from bi_platform.cadastral.pg_sync import SyncFaults, sync_to_postgres
    from bi_platform.cadastral.spark_session import start_spark

    spark = start_spark(master="local[2]", extra={"spark.driver.memory": "1g",
                        "spark.default.parallelism": "4"})
    uri, version = os.environ["SYNC_URI"], int(os.environ["SYNC_VERSION"])
    source = spark.read.parquet(*DeltaTable(uri, version=version).file_uris())
    sync_to_postgres(spark, source, os.environ["SYNC_PG_URL"], table="cadastro_consolidado",
                     delta_uri=uri, delta_version=version,
                     faults=SyncFaults(stall_after_partitions=1, stall_seconds=900))
    """
)


def test_killed_sync_converges_on_rerun(spark, pg_url: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="sync_kill_"))
    uri = str(root / "delta")
    v0, n0 = write_version(spark, uri, snapshot(range(400)))
    sync_to_postgres(spark, v0, pg_url, table=TABLE, delta_uri=uri, delta_version=n0)
    updated = set(range(0, 400, 2))
    v1, n1 = write_version(spark, uri, snapshot(range(400), updated))

    env = {**os.environ, "SYNC_URI": uri, "SYNC_VERSION": str(n1), "SYNC_PG_URL": pg_url}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT],
        cwd=REPO_ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        applied = 0
        while time.monotonic() < deadline and proc.poll() is None:
            with psycopg.connect(pg_url) as conn:
                applied = conn.execute(
                    "SELECT count(*) FROM cadastral.cadastro_consolidado"
                    " WHERE nome_completo LIKE '%ALTERADO'"
                ).fetchone()[0]
            if applied:
                time.sleep(2)  # let the other running partition commit too
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the sync subprocess ended before it could be killed"
        assert applied > 0, "no partition committed in time"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    with psycopg.connect(pg_url) as conn:
        partial = conn.execute(
            "SELECT count(*) FROM cadastral.cadastro_consolidado"
            " WHERE nome_completo LIKE '%ALTERADO'"
        ).fetchone()[0]
    assert 0 < partial < len(updated)
    assert state(pg_url)[0] == "in_progress"

    rerun = sync_to_postgres(spark, v1, pg_url, table=TABLE, delta_uri=uri, delta_version=n1)
    assert rerun.mode == "full"
    assert rerun.updated == len(updated) - partial
    assert_equal(spark, v1, pg_url)


def test_out_of_band_edits_are_caught(spark, pg_url: str) -> None:
    df = source_df(spark, snapshot(range(150)))
    sync_to_postgres(spark, df, pg_url, table=TABLE)
    assert verify_in_sync(spark, df, pg_url, table=TABLE).in_sync
    with psycopg.connect(pg_url) as conn:
        # content edited, row_hash left as it was: only recomputing in PG catches it
        conn.execute(
            "UPDATE cadastral.cadastro_consolidado SET valor_total_bens = valor_total_bens + 1"
            " WHERE chave_pessoa = %s",
            (key(10),),
        )
        conn.execute(
            "DELETE FROM cadastral.cadastro_consolidado WHERE chave_pessoa = %s", (key(20),)
        )
        conn.execute(
            "INSERT INTO cadastral.cadastro_consolidado (chave_pessoa, row_hash)"
            " VALUES ('ffff-extra', 'x')"
        )
    check = verify_in_sync(spark, df, pg_url, table=TABLE)
    assert not check.in_sync
    assert (check.changed, check.missing, check.extra, check.hash_differences) == (1, 1, 1, 3)
    assert check.pg_count == check.source_count == 150
    assert check.mismatched_buckets == 3

    # Only the stored row_hash edited: the columns still match the source, the hash is stale.
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM cadastral.cadastro_consolidado WHERE chave_pessoa = 'ffff-extra'")
        conn.execute(
            "UPDATE cadastral.cadastro_consolidado SET row_hash = md5('x') WHERE chave_pessoa = %s",
            (key(30),),
        )
    stale = verify_in_sync(spark, df, pg_url, table=TABLE)
    assert (stale.changed, stale.missing, stale.extra) == (2, 1, 0)
    # A full compare re-applies what differs by stored hash (key 20 and key 30's row).
    repaired = sync_to_postgres(spark, df, pg_url, table=TABLE, full_compare=True)
    assert (repaired.inserted, repaired.updated) == (1, 1)
    after = verify_in_sync(spark, df, pg_url, table=TABLE)
    assert (after.changed, after.missing, after.extra) == (1, 0, 0)  # key 10: hash unchanged


def test_baseline_reaches_the_same_end_state(spark, pg_url: str) -> None:
    v0 = source_df(spark, snapshot(range(150)))
    v1 = source_df(spark, snapshot([i for i in range(160) if i % 25], set(range(1, 150, 13))))
    for df in (v0, v1):
        fast = sync_to_postgres(spark, df, pg_url, table="fast")
        slow = collect_compare_sync(spark, df, pg_url, "slow")
        assert slow.mode == "collect"
        assert (fast.inserted, fast.updated, fast.deleted, fast.unchanged) == (
            slow.inserted,
            slow.updated,
            slow.deleted,
            slow.unchanged,
        )
        assert pg_rows(pg_url, "fast") == pg_rows(pg_url, "slow") == source_rows(df)
    assert (slow.inserted, slow.deleted) == (9, 6)
    with psycopg.connect(pg_url) as conn:
        status = conn.execute(
            "SELECT status FROM cadastral.sync_state WHERE table_name = 'slow'"
        ).fetchone()[0]
    assert status == "external"  # the next optimized sync of it compares in full


def test_password_never_logged_nor_raised(spark, pg_url: str, caplog) -> None:
    secret = "S3cr3t-Pa55-x9"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE sync_user LOGIN SUPERUSER PASSWORD '{secret}'")
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(netloc=f"sync_user:{secret}@{parts.hostname}:{parts.port}"))
    assert secret in url
    jdbc_url, props = jdbc_connection(url)
    assert secret not in jdbc_url and props["password"] == secret
    assert props["user"] == "sync_user" and props["driver"] == "org.postgresql.Driver"

    df = source_df(spark, snapshot(range(40)))
    with caplog.at_level(logging.DEBUG):
        sync_to_postgres(spark, df, url, table=TABLE)
        sync_to_postgres(spark, df, url, table=TABLE, full_compare=True)
        verify_in_sync(spark, df, url, table=TABLE)
        bad = url.rsplit("/", 1)[0] + "/no_such_database"
        with pytest.raises(Exception) as raised:
            sync_to_postgres(spark, df, bad, table=TABLE)
        with pytest.raises(SyncError) as wrong_schema:
            sync_to_postgres(spark, df.drop("email"), url, table=TABLE)
    assert secret not in caplog.text
    assert "sync_user:***@" in caplog.text
    for exc in (raised.value, wrong_schema.value):
        assert secret not in str(exc) and secret not in repr(exc)
        assert exc.__cause__ is None or secret not in str(exc.__cause__)
