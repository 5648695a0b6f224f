"""The plan's old CompareData, kept as the benchmark baseline.

Everything goes through the driver: ``source.collect()``, PostgreSQL's keys and hashes
fetched with psycopg, the comparison in Python dicts, and the changes applied from the
driver over one connection (same temp-table COPY + upsert/delete SQL as
:mod:`.pg_sync`). Correct, but memory and time grow with the table on a single core.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from bi_platform.cadastral.pg_sync import (
    SCHEMA,
    SyncResult,
    _connect,
    apply_rows,
    ensure_table,
    mark_done,
    table_columns,
)
from bi_platform.cadastral.row_hash import ROW_HASH, quote_ident

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def collect_compare_sync(
    spark: SparkSession,
    source: DataFrame,
    pg_url: str,
    table: str,
    key: str = "chave_pessoa",
) -> SyncResult:
    """Sync ``cadastral.<table>`` to ``source`` the old way (mode ``"collect"``).

    Leaves ``sync_state`` as ``external`` so the next optimized sync does a full compare.
    """
    started = time.monotonic()
    columns = table_columns(source, key)
    names = [n for n, _ in columns]
    key_at = names.index(key)
    hash_at = names.index(ROW_HASH)
    rows = source.select(*names).collect()  # the old bottleneck, on purpose
    source_rows = {row[key_at]: tuple(row) for row in rows}

    with _connect(pg_url, autocommit=True) as conn:
        ensure_table(conn, table, columns, key)
        target = f"{quote_ident(SCHEMA)}.{quote_ident(table)}"
        pg_hashes = dict(
            conn.execute(f"SELECT {quote_ident(key)}, {quote_ident(ROW_HASH)} FROM {target}")
        )
        changes: list[tuple] = []
        counts = {"I": 0, "U": 0, "D": 0, "N": 0}
        for k, row in source_rows.items():
            old = pg_hashes.get(k)
            op = "I" if old is None else "U" if old != row[hash_at] else "N"
            counts[op] += 1
            if op != "N":
                changes.append((op, *row))
        empty = (None,) * len(names)
        for k in pg_hashes.keys() - source_rows.keys():
            counts["D"] += 1
            changes.append(("D", *empty[:key_at], k, *empty[key_at + 1 :]))
        if changes:
            apply_rows(conn, table, columns, key, changes)
        mark_done(conn, table, None, None, "collect", counts, status="external")

    result = SyncResult(
        inserted=counts["I"],
        updated=counts["U"],
        deleted=counts["D"],
        unchanged=counts["N"],
        seconds=round(time.monotonic() - started, 3),
        mode="collect",
        source_version=None,
        partitions=1,
        retries=0,
    )
    log.info("collect sync %s.%s done: %s", SCHEMA, table, result)
    return result
