"""The BI warehouse: one DuckDB file built from the retail Parquet lake, swapped in atomically.

:func:`build_warehouse` loads every retail table (the typed tables and the marts) into
*native* DuckDB tables -- a per-request scan of the Parquet files serves ~70 req/s, a
native table an order of magnitude more -- adds pre-aggregated tables for the dashboard
metrics (:data:`AGGREGATES`), and records what it built in ``warehouse_meta``
(``data_version``, ``built_at``, one row per table with its row count).
The aggregates' business rules (critical rupture, stock value, shortfall, daily demand,
growth, the calendar) are the SQL forms of :mod:`bi_platform.retail.rules`.

The build writes a NEW file next to the target (``.<name>.<uuid>.building``),
checkpoints and closes it, then publishes it with :func:`os.replace`: a reader that holds
the old file keeps reading the old inode; a reader that opens the path afterwards sees
the new one; nobody ever sees a half-built file. A failed build removes its temp file
and leaves the published warehouse untouched.

DuckDB caches open database instances by path within a process, so a second
``duckdb.connect(path)`` after a swap may return the *old* file: readers open the
warehouse with :func:`open_read_only` (a fresh in-memory instance that ATTACHes the file
read-only), which always opens what is at the path now.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from bi_platform.io_managers.engines import parquet_files, parquet_row_count
from bi_platform.lib.files import replace_durably
from bi_platform.retail.marts import MARTS
from bi_platform.retail.rules import (
    CRITICAL_RUPTURE,
    DAILY_DEMAND,
    DISCONTINUED_IN_STOCK,
    HAS_DEMAND,
    HAS_REORDER_POINT,
    IN_STORE_STOCK,
    MONTH_ROWS,
    MONTHS,
    NO_SALES_90D,
    QUARTER_SALES,
    SHORTFALL,
    STOCK_VALUE,
    WEEK_LABELS,
    flag_sql,
    growth_sql,
    ratio_sql,
    sql_ident,
)
from bi_platform.retail.schema import TABLES

logger = logging.getLogger(__name__)

#: File name of the warehouse under ``$BI_PLATFORM_HOME/warehouse``.
WAREHOUSE_FILE = "bi_warehouse.duckdb"
#: Name under which readers ATTACH the warehouse (see :func:`open_read_only`).
CATALOG_ALIAS = "warehouse"
META_TABLE = "warehouse_meta"
#: Sub-directory of the lake holding the retail tables (asset keys ``retail/<table>``).
RETAIL_PREFIX = "retail"
#: Retail lake tables loaded natively: the typed tables, then the marts.
SOURCE_TABLES: tuple[str, ...] = (*TABLES, *MARTS)

_CRITICAL = CRITICAL_RUPTURE.sql
_STOCK_VALUE = STOCK_VALUE.sql
#: The per-store sums of the store-grain aggregates: items, sales, stock, stock value.
_STORE_SUMS = f"""count(*) AS "ITENS",
               sum("VENDA_30DD") AS "VENDA_30DD",
               sum("MES_01") AS "MES_01",
               sum("MES_PARCIAL") AS "MES_PARCIAL",
               sum("ESTOQUE_UNE") AS "ESTOQUE_UNE",
               sum({_STOCK_VALUE}) AS "VALOR_ESTOQUE\""""
#: One row per admmat row and month (MES_01 first): segment, store, month, sales.
_MONTH_UNION = " UNION ALL ".join(
    f'SELECT "NOMESEGMENTO", "UNE", "UNE_NOME", \'{m}\' AS "MES", '
    f'{months_ago} AS "MESES_ATRAS", "{m}" AS "VENDAS" FROM admmat'
    for m, months_ago in reversed(MONTH_ROWS)
)

#: Pre-aggregated tables for dashboard metrics: name -> SELECT over the native tables.
#: Fixed SQL (no parameter of any kind); the queries filter them by segment.
AGGREGATES: dict[str, str] = {
    "agg_sales_by_month_segment_une": f"""
        SELECT "NOMESEGMENTO", "UNE", "UNE_NOME", "MES", "MESES_ATRAS",
               sum("VENDAS") AS "VENDAS", count(*) AS "ITENS"
        FROM ({_MONTH_UNION})
        GROUP BY ALL
        ORDER BY "NOMESEGMENTO", "UNE", "MESES_ATRAS" DESC
    """,
    "agg_sales_by_segment_une": f"""
        SELECT "NOMESEGMENTO", "UNE", "UNE_NOME",
               {_STORE_SUMS},
               count(*) FILTER (WHERE {_CRITICAL}) AS "ITENS_RUPTURA_CRITICA"
        FROM admmat
        GROUP BY ALL
        ORDER BY "NOMESEGMENTO", "UNE"
    """,
    "agg_top_products_by_segment": """
        WITH products AS (
            SELECT "NOMESEGMENTO", "PRODUTO", "NOME",
                   sum("VENDA_30DD") AS "VENDA_30DD",
                   sum("MES_01") AS "MES_01",
                   sum("ESTOQUE_UNE") AS "ESTOQUE_UNE",
                   count(*) AS "UNES"
            FROM admmat
            GROUP BY ALL
        )
        SELECT * FROM (
            SELECT *, row_number() OVER (
                PARTITION BY "NOMESEGMENTO" ORDER BY "VENDA_30DD" DESC NULLS LAST, "PRODUTO"
            ) AS "POSICAO"
            FROM products
        )
        WHERE "POSICAO" <= 1000
        ORDER BY "NOMESEGMENTO", "POSICAO"
    """,
    "agg_critical_rupture_by_segment_une": f"""
        SELECT "NOMESEGMENTO", "UNE", "UNE_NOME",
               count(*) AS "ITENS_RUPTURA",
               sum({SHORTFALL.sql}) AS "NECESSIDADE",
               sum("VENDA_30DD") AS "VENDA_30DD_EM_RISCO"
        FROM admmat
        WHERE {_CRITICAL}
        GROUP BY ALL
        ORDER BY "NOMESEGMENTO", "UNE"
    """,
}


_Q3 = QUARTER_SALES.sql
_SEGMENT_SUMS = ",\n".join(
    [f'sum("{m}") AS "{m}"' for m in MONTHS]
    + [f'sum("QTDE_{w}") AS "QTDE_{w}"' for w in WEEK_LABELS]
    + [f'sum(CAST("FREQ_{w}" AS DOUBLE)) AS "FREQ_{w}"' for w in WEEK_LABELS]
)

_PER_PRODUCT = f"""count(*) AS "ITENS",
    coalesce(sum("VENDA_30DD"), 0) AS "VENDA_30DD",
    coalesce(sum("MES_01"), 0) AS "MES_01",
    coalesce(sum({_STOCK_VALUE}), 0) AS "VALOR_ESTOQUE\""""
_MANUFACTURER = """count(*) AS "PRODUTOS",
    coalesce(sum("ITENS"), 0) AS "ITENS",
    coalesce(sum("VENDA_30DD"), 0) AS "VENDA_30DD",
    coalesce(sum("MES_01"), 0) AS "MES_01",
    coalesce(sum("VALOR_ESTOQUE"), 0) AS "VALOR_ESTOQUE\""""


def _coverage_rows(order_by: str, extra: str = "") -> str:
    """Items with demand (last 3 months / 90 days), their stock and days of coverage,
    stored in ``order_by`` (``extra``: more columns, with their leading comma)."""
    return f"""
        SELECT "UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO",
               "ESTOQUE_UNE", "DEMANDA_DIARIA",
               {ratio_sql('"ESTOQUE_UNE"', '"DEMANDA_DIARIA"')} AS "COBERTURA_DIAS"{extra}
        FROM (SELECT *, {DAILY_DEMAND.sql} AS "DEMANDA_DIARIA" FROM admmat)
        WHERE {HAS_DEMAND.sql}
        ORDER BY {order_by}
    """


#: Pre-aggregates the serving API's SQL reads (:mod:`bi_platform.serving.sql`), each at
#: the grain its queries need and always with ``NOMESEGMENTO`` in the grain (row-level
#: security filters them by segment). Sums keep SQL's NULL for groups without values.
SERVING_AGGREGATES: dict[str, str] = {
    "srv_segment": f"""
        SELECT "NOMESEGMENTO", count(*) AS "ITENS",
               {_SEGMENT_SUMS},
               sum({_Q3}) AS "VENDA_TRIMESTRE",
               sum("VENDA_30DD") AS "VENDA_30DD",
               sum("MES_PARCIAL") AS "MES_PARCIAL",
               sum("ESTOQUE_UNE") AS "ESTOQUE_UNE",
               sum({_STOCK_VALUE}) AS "VALOR_ESTOQUE",
               sum({flag_sql(_CRITICAL)}) AS "ITENS_RUPTURA",
               sum(CASE WHEN {_CRITICAL} THEN "VENDA_30DD" ELSE 0.0 END) AS "VENDA_EM_RISCO"
        FROM admmat GROUP BY ALL ORDER BY ALL
    """,
    "srv_segment_une_abc": f"""
        SELECT "NOMESEGMENTO", "UNE", "UNE_NOME", "ABC_UNE_30DD",
               {_STORE_SUMS},
               sum({flag_sql(IN_STORE_STOCK.sql)}) AS "ITENS_COM_ESTOQUE"
        FROM admmat GROUP BY ALL ORDER BY "NOMESEGMENTO", "UNE", "UNE_NOME", "ABC_UNE_30DD"
    """,
    "srv_segment_promo_leadtime": """
        SELECT "NOMESEGMENTO", "PROMOCIONAL", "LEADTIME_LV",
               count(*) AS "ITENS",
               sum("VENDA_30DD") AS "VENDA_30DD", count("VENDA_30DD") AS "N_VENDA_30DD",
               sum("MES_01") AS "MES_01",
               sum("ESTOQUE_UNE") AS "ESTOQUE_UNE", count("ESTOQUE_UNE") AS "N_ESTOQUE_UNE"
        FROM admmat GROUP BY ALL ORDER BY ALL
    """,
    "srv_segment_product": """
        SELECT *, row_number() OVER (
            PARTITION BY "NOMESEGMENTO" ORDER BY "VENDA_30DD" DESC NULLS LAST, "PRODUTO"
        ) AS "__POS"
        FROM (
            SELECT "NOMESEGMENTO", "PRODUTO", "NOME",
                   count(*) AS "ITENS",
                   coalesce(sum("VENDA_30DD"), 0) AS "VENDA_30DD",
                   coalesce(sum("MES_01"), 0) AS "MES_01",
                   coalesce(sum("MES_02"), 0) AS "MES_02",
                   coalesce(sum("ESTOQUE_UNE"), 0) AS "ESTOQUE_UNE"
            FROM admmat GROUP BY ALL
        )
        ORDER BY "__POS", "NOMESEGMENTO"
    """,
    "srv_segment_growth": f"""
        SELECT *, row_number() OVER (
            PARTITION BY "NOMESEGMENTO" ORDER BY "CRESCIMENTO" DESC NULLS LAST, "PRODUTO"
        ) AS "__POS"
        FROM (
            SELECT "NOMESEGMENTO", "PRODUTO", "NOME", "MES_01", "MES_02",
                   {growth_sql('"MES_01"', '"MES_02"')} AS "CRESCIMENTO"
            FROM (
                SELECT "NOMESEGMENTO", "PRODUTO", "NOME",
                       coalesce(sum("MES_01"), 0) AS "MES_01",
                       coalesce(sum("MES_02"), 0) AS "MES_02"
                FROM admmat GROUP BY ALL
            )
            WHERE "MES_02" > 0
        )
        ORDER BY "__POS", "NOMESEGMENTO"
    """,
    "srv_segment_manufacturer_product": f"""
        SELECT "NOMESEGMENTO", "NOMEFABRICANTE", "PRODUTO",
               count(*) AS "ITENS",
               sum("VENDA_30DD") AS "VENDA_30DD",
               sum("MES_01") AS "MES_01",
               sum({_STOCK_VALUE}) AS "VALOR_ESTOQUE"
        FROM admmat GROUP BY ALL ORDER BY ALL
    """,
    "srv_segment_manufacturer": f"""
        SELECT "NOMESEGMENTO", "NOMEFABRICANTE", {_MANUFACTURER}
        FROM (
            SELECT "NOMESEGMENTO", "NOMEFABRICANTE", "PRODUTO", {_PER_PRODUCT}
            FROM admmat GROUP BY ALL
        )
        GROUP BY ALL ORDER BY ALL
    """,
    "srv_manufacturer": f"""
        SELECT "NOMEFABRICANTE", {_MANUFACTURER}
        FROM (
            SELECT "NOMEFABRICANTE", "PRODUTO", {_PER_PRODUCT}
            FROM admmat GROUP BY ALL
        )
        GROUP BY ALL ORDER BY ALL
    """,
    "srv_segment_category": f"""
        SELECT "NOMESEGMENTO", "NOMECATEGORIA",
               coalesce(sum("VENDA_30DD"), 0) AS "VENDA_30DD",
               coalesce(sum("VENDA_TRIMESTRE"), 0) AS "VENDA_TRIMESTRE",
               count(*) AS "PRODUTOS"
        FROM (
            SELECT "NOMESEGMENTO", "NOMECATEGORIA", "PRODUTO",
                   coalesce(sum("VENDA_30DD"), 0) AS "VENDA_30DD",
                   coalesce(sum({_Q3}), 0) AS "VENDA_TRIMESTRE"
            FROM admmat GROUP BY ALL
        )
        GROUP BY ALL ORDER BY ALL
    """,
    "srv_totals": f"""
        SELECT count(*) AS "ITENS",
               count(DISTINCT "PRODUTO") + max(CASE WHEN "PRODUTO" IS NULL THEN 1 ELSE 0 END)
                   AS "PRODUTOS",
               count(DISTINCT "UNE") + max(CASE WHEN "UNE" IS NULL THEN 1 ELSE 0 END) AS "UNES",
               count(DISTINCT "NOMESEGMENTO")
                   + max(CASE WHEN "NOMESEGMENTO" IS NULL THEN 1 ELSE 0 END) AS "SEGMENTOS",
               coalesce(sum("VENDA_30DD"), 0) AS "VENDA_30DD",
               coalesce(sum("MES_01"), 0) AS "MES_01",
               coalesce(sum("ESTOQUE_UNE"), 0) AS "ESTOQUE_UNE",
               coalesce(sum({_STOCK_VALUE}), 0) AS "VALOR_ESTOQUE",
               coalesce(sum({flag_sql(_CRITICAL)}), 0) AS "ITENS_RUPTURA"
        FROM admmat
    """,
    # row-level tables: narrow, pre-filtered by the parameter-free conditions and stored
    # in the order of their query (or of a bound of it), whose LIMIT then stops the scan
    # early (readers preserve insertion order, see open_read_only) or zone maps prune.
    # "__POS" is a row's rank within its segment in the query's order: the top n of any
    # set of segments have __POS <= n, a prefix of the table (sorted by it).
    "srv_rows_by_une": """
        SELECT "UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO",
               "VENDA_30DD", "MES_01", "ESTOQUE_UNE"
        FROM admmat ORDER BY "UNE", "VENDA_30DD" DESC NULLS LAST, "PRODUTO"
    """,
    "srv_rows_demand": _coverage_rows(
        '"DEMANDA_DIARIA" DESC NULLS LAST, "UNE", "PRODUTO"', extra=', "VENDA_30DD"'
    ),
    "srv_rows_stock": _coverage_rows('"ESTOQUE_UNE" DESC NULLS LAST, "UNE", "PRODUTO"'),
    "srv_rows_stock_by_segment": _coverage_rows(
        '"NOMESEGMENTO", "ESTOQUE_UNE" DESC NULLS LAST, "UNE", "PRODUTO"'
    ),
    "srv_rows_reorder": f"""
        SELECT "UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO",
               "ESTOQUE_UNE", "PONTO_PEDIDO_LV",
               {ratio_sql('"ESTOQUE_UNE"', '"PONTO_PEDIDO_LV"')} AS "RAZAO_PONTO_PEDIDO",
               "LEADTIME_LV", "VENDA_30DD"
        FROM admmat WHERE {HAS_REORDER_POINT.sql}
        ORDER BY "RAZAO_PONTO_PEDIDO" NULLS LAST, "UNE", "PRODUTO"
    """,
    "srv_rows_critical": f"""
        SELECT *, row_number() OVER (
            PARTITION BY "NOMESEGMENTO" ORDER BY "VENDA_30DD" DESC NULLS LAST, "UNE", "PRODUTO"
        ) AS "__POS"
        FROM (SELECT "UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO",
               "ESTOQUE_CD", "ESTOQUE_UNE", "ESTOQUE_LV",
               {SHORTFALL.sql} AS "NECESSIDADE", "VENDA_30DD", "LEADTIME_LV"
        FROM admmat WHERE {_CRITICAL})
        ORDER BY "__POS", "NOMESEGMENTO"
    """,
    "srv_rows_no_sales_90d": f"""
        SELECT *, row_number() OVER (
            PARTITION BY "NOMESEGMENTO" ORDER BY "VALOR_ESTOQUE" DESC NULLS LAST, "UNE", "PRODUTO"
        ) AS "__POS"
        FROM (SELECT "UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO",
               "ESTOQUE_UNE", {_STOCK_VALUE} AS "VALOR_ESTOQUE",
               "ULTIMA_VENDA_DATA_UNE"
        FROM admmat WHERE {NO_SALES_90D.sql})
        ORDER BY "__POS", "NOMESEGMENTO"
    """,
    "srv_rows_discontinued": f"""
        SELECT *, row_number() OVER (
            PARTITION BY "NOMESEGMENTO" ORDER BY "VALOR_ESTOQUE" DESC NULLS LAST, "UNE", "PRODUTO"
        ) AS "__POS"
        FROM (SELECT "UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO", "NOMEFABRICANTE",
               "ESTOQUE_UNE", "ESTOQUE_CD", "VENDA_30DD",
               {_STOCK_VALUE} AS "VALOR_ESTOQUE"
        FROM admmat WHERE {DISCONTINUED_IN_STOCK.sql})
        ORDER BY "__POS", "NOMESEGMENTO"
    """,
}
AGGREGATES.update(SERVING_AGGREGATES)


class WarehouseBuildError(RuntimeError):
    """The warehouse could not be built (a lake table is missing, unreadable, ...)."""


@dataclass(frozen=True)
class WarehouseInfo:
    """What :func:`build_warehouse` published."""

    path: Path
    data_version: str
    #: Every table of the warehouse (sources and aggregates) with its row count.
    tables: dict[str, int] = field(default_factory=dict)
    size_mb: float = 0.0
    seconds: float = 0.0
    built_at: str = ""


def lake_table_path(lake_dir: Path, table: str) -> Path:
    """Where the retail IO manager stores ``retail/<table>``.

    Args:
        lake_dir: Root of the Parquet lake.
        table: Retail table name.

    Returns:
        The table's Parquet path.
    """
    return Path(lake_dir) / RETAIL_PREFIX / f"{table}.parquet"


#: A DuckDB identifier, double-quoted (names come from code, never from clients).
quote_ident = sql_ident


def default_threads() -> int:
    """DuckDB worker threads for this machine: its usable cores.

    Returns:
        The number of cores this process may run on (at least 1).
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _load_table(con: duckdb.DuckDBPyConnection, name: str, path: Path) -> int:
    try:
        files = [str(f) for f in parquet_files(path)]
    except FileNotFoundError as exc:
        raise WarehouseBuildError(
            f"warehouse: lake table {RETAIL_PREFIX}/{name} not found at {path} "
            f"(materialize the retail assets first): {exc}"
        ) from None
    try:
        con.read_parquet(files).create(name)
    except duckdb.Error as exc:
        raise WarehouseBuildError(
            f"warehouse: cannot load lake table {RETAIL_PREFIX}/{name} from {path}: {exc}"
        ) from exc
    return _count(con, name)


def _count(con: duckdb.DuckDBPyConnection, name: str) -> int:
    ((rows,),) = con.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchall()
    return int(rows)


def _write_meta(
    con: duckdb.DuckDBPyConnection,
    data_version: str,
    built_at: dt.datetime,
    tables: Mapping[str, int],
    sources: Mapping[str, Path],
) -> None:
    con.execute(
        f"""CREATE TABLE {META_TABLE} (
            data_version VARCHAR NOT NULL,
            built_at TIMESTAMPTZ NOT NULL,
            table_name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            row_count BIGINT NOT NULL,
            source VARCHAR
        )"""
    )
    con.executemany(
        f"INSERT INTO {META_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                data_version,
                built_at,
                name,
                "source" if name in sources else "aggregate",
                rows,
                str(sources[name]) if name in sources else None,
            )
            for name, rows in tables.items()
        ],
    )


def build_warehouse(
    lake_dir: Path | str,
    target_path: Path | str,
    data_version: str,
    *,
    threads: int | None = None,
    tables: Iterable[str] | Mapping[str, Path] = SOURCE_TABLES,
) -> WarehouseInfo:
    """Build the warehouse from the retail tables under ``lake_dir`` into a new file and
    publish it atomically at ``target_path`` (see the module docstring).

    ``tables`` are the retail lake tables to load, by name (found under ``lake_dir`` as
    the retail IO manager lays them out) or as ``{name: parquet path}``; ``admmat`` is
    required (the query battery and the aggregates read it). Raises
    :class:`WarehouseBuildError` naming the table and file when one cannot be loaded; the
    published warehouse is then unchanged.

    Args:
        lake_dir: Root of the Parquet lake.
        target_path: Where the warehouse file is published.
        data_version: Version recorded in ``warehouse_meta`` (non-empty).
        threads: DuckDB threads for the build (``None``: :func:`default_threads`).
        tables: Lake tables to load, by name or ``{name: parquet path}``.

    Returns:
        What was published.

    Raises:
        ValueError: Empty ``data_version`` or no ``admmat`` in ``tables``.
        WarehouseBuildError: A lake table is missing or cannot be loaded.
    """
    if not data_version or not data_version.strip():
        raise ValueError("warehouse: data_version must be a non-empty string")
    lake_dir, target = Path(lake_dir), Path(target_path)
    if isinstance(tables, Mapping):
        sources = {name: Path(path) for name, path in tables.items()}
    else:
        sources = {name: lake_table_path(lake_dir, name) for name in dict.fromkeys(tables)}
    if "admmat" not in sources:
        raise ValueError("warehouse: the table list must include 'admmat'")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.building")
    start = time.perf_counter()
    built_at = dt.datetime.now(dt.UTC)
    counts: dict[str, int] = {}
    try:
        con = duckdb.connect(str(temp), config={"threads": threads or default_threads()})
        try:
            for name, path in sources.items():
                counts[name] = _load_table(con, name, path)
                logger.info("warehouse: loaded %s (%d rows) from %s", name, counts[name], path)
            for name, select in AGGREGATES.items():
                con.execute(f"CREATE TABLE {quote_ident(name)} AS {select}")
                counts[name] = _count(con, name)
            _write_meta(con, data_version, built_at, counts, sources)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        replace_durably(temp, target)  # data on disk, then os.replace, then the directory
    except BaseException:
        for leftover in (temp, temp.with_name(temp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    info = WarehouseInfo(
        path=target,
        data_version=data_version,
        tables=counts,
        size_mb=round(target.stat().st_size / 2**20, 3),
        seconds=round(time.perf_counter() - start, 3),
        built_at=built_at.isoformat(),
    )
    logger.info(
        "warehouse %s: data_version %s, %d tables, %.1f MB in %.2f s",
        target,
        data_version,
        len(counts),
        info.size_mb,
        info.seconds,
    )
    return info


def open_read_only(path: Path | str, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A connection to a fresh in-memory DuckDB instance with the warehouse at ``path``
    ATTACHed read-only as :data:`CATALOG_ALIAS` (and made the default catalog).

    Unlike ``duckdb.connect(path, read_only=True)``, which reuses an instance already
    open on the same path in this process, this always opens the file now at ``path``.
    File system access is then disabled and the configuration locked, so nothing run on
    it (or its cursors) can read other files or attach databases.

    Args:
        path: The warehouse file.
        threads: DuckDB threads (``None``: :func:`default_threads`).

    Returns:
        The locked-down connection.

    Raises:
        FileNotFoundError: No warehouse at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no DuckDB warehouse at {path} (materialize serving/bi_warehouse)")
    con = duckdb.connect(":memory:", config={"threads": threads or default_threads()})
    try:
        con.execute(f"ATTACH ? AS {CATALOG_ALIAS} (READ_ONLY)", [str(path)])
        con.execute(f"USE {CATALOG_ALIAS}")
        # scans return rows in table order (the serving SQL's LIMITs rely on it)
        con.execute("SET preserve_insertion_order = true")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def read_meta(con: duckdb.DuckDBPyConnection) -> tuple[str, dict[str, int]]:
    """``(data_version, {table: rows})`` from an open warehouse's ``warehouse_meta``.

    Args:
        con: A connection to the warehouse.

    Returns:
        The data version and the row count of every table.

    Raises:
        WarehouseBuildError: The meta table is empty or holds several versions.
    """
    rows = con.execute(
        f"SELECT data_version, table_name, row_count FROM {META_TABLE} ORDER BY table_name"
    ).fetchall()
    if not rows:
        raise WarehouseBuildError(f"warehouse: {META_TABLE} is empty")
    versions = {r[0] for r in rows}
    if len(versions) != 1:
        raise WarehouseBuildError(f"warehouse: {META_TABLE} holds several versions {versions}")
    return rows[0][0], {r[1]: int(r[2]) for r in rows}


def read_data_version(path: Path | str) -> str:
    """The ``data_version`` recorded in the warehouse at ``path``.

    Args:
        path: The warehouse file.

    Returns:
        Its data version.
    """
    con = open_read_only(path, threads=1)
    try:
        return read_meta(con)[0]
    finally:
        con.close()


@dataclass(frozen=True)
class RowCountCheck:
    """One source table: rows in the warehouse, in its meta record and in the lake."""

    table: str
    source: str
    warehouse_rows: int
    recorded_rows: int
    lake_rows: int | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_row_counts(con: duckdb.DuckDBPyConnection) -> list[RowCountCheck]:
    """Compare every source table of an open warehouse with the Parquet data it was
    loaded from (row counts from the footers, recorded paths from ``warehouse_meta``).

    Args:
        con: A connection to the warehouse.

    Returns:
        One check per source table (``problem`` set where the counts disagree).

    Raises:
        WarehouseBuildError: The meta table lists no source table.
    """
    records = con.execute(
        f"SELECT table_name, row_count, source FROM {META_TABLE} "
        "WHERE kind = 'source' ORDER BY table_name"
    ).fetchall()
    if not records:
        raise WarehouseBuildError(f"warehouse: {META_TABLE} lists no source table")
    results = []
    for table, recorded, source in records:
        actual = _count(con, table)
        try:
            lake: int | None = parquet_row_count(Path(source))
        except FileNotFoundError:
            lake = None
        if lake is None:
            problem = f"{table}: lake file {source} is gone"
        elif not actual == recorded == lake:
            problem = (
                f"{table}: {actual} rows in the warehouse, {recorded} recorded, "
                f"{lake} in the lake file {source}"
            )
        else:
            problem = None
        results.append(RowCountCheck(table, source, actual, int(recorded), lake, problem))
    return results
