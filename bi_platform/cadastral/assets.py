"""Assets of the cadastral pipeline: the person registry from its raw exports
(``pedt001``/``002``/``003``/``205``, one full snapshot per ``dat_ref_carga``) through
PySpark transforms into Delta tables, then a hash-compare sync into PostgreSQL.

Every asset is partitioned by load date (``cadastral_load_dates``, dynamic partitions
``YYYY-MM-DD`` that ``cadastral_new_load_sensor`` adds when all four sources have the
date): a run processes exactly its partition's snapshot. Each Spark asset writes one new
Delta version through ``cadastral_delta_io_manager``, tagged with its load date; its
checks (unique keys, schema unchanged across versions, invalid-state rate) run in the
same step on the version just committed, so they see exactly what downstream assets
will read.
"""

import time
from collections.abc import Iterator
from datetime import date

import dagster as dg
from pydantic import Field

from bi_platform.cadastral import quality, transforms
from bi_platform.cadastral.delta import read_delta
from bi_platform.cadastral.pg_sync import sync_to_postgres
from bi_platform.cadastral.pipeline import KEY, consolidated_with_hash
from bi_platform.cadastral.reference import SOURCE_TABLES
from bi_platform.cadastral.resources import (
    CadastralSparkResource,
    stage_metrics_metadata,
    version_for_load_date,
)
from bi_platform.cadastral.sources import read_source
from bi_platform.cadastral.spark_metrics import StageMetricsCollector
from bi_platform.resources import PostgresResource, pg_table_schema
from bi_platform.settings import get_settings

GROUP = "cadastral"
OWNERS = ["team:cadastro"]
SPARK_DELTA = {"spark", "delta"}
IO_MANAGER = "cadastral_delta_io_manager"
PG_TABLE = "cadastro_consolidado"


#: One partition per load date (``dat_ref_carga``) that all four source tables have.
load_dates = dg.DynamicPartitionsDefinition(name="cadastral_load_dates")


def cadastral_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, "raw", table])


def delta_uri(key: dg.AssetKey) -> str:
    """The Delta table of an asset: ``$BI_PLATFORM_HOME/delta/<asset key path>``."""
    return str(get_settings().delta_dir.joinpath(*key.path))


P001, Q001 = cadastral_key("coletapedt001"), cadastral_key("coletapedt001_quarantine")
P002, Q002 = cadastral_key("coletapedt002"), cadastral_key("coletapedt002_quarantine")
P003, P205 = cadastral_key("coletapedt003"), cadastral_key("coletapedt205")
CONSOLIDADO = cadastral_key("cadastro_consolidado")
PG_SYNC = cadastral_key("cadastral_pg_sync")

_RAW_DESCRIPTIONS = {
    "pedt001": "Person records (document number, type, names, birth date, coded civil "
    "status/sex/occupation/state of birth/segment). Raw export, one snapshot per load date.",
    "pedt002": "Place of birth (naturalidade) and parents' names per person. Raw export.",
    "pedt003": "E-mails and residential/commercial addresses per person, with dates. Raw export.",
    "pedt205": "Assets declared per person (kind, value). Raw export.",
}

raw_sources = [
    dg.AssetSpec(
        key=raw_key(table),
        description=_RAW_DESCRIPTIONS[table]
        + " Hive partitions `dat_ref_carga=YYYY-MM-DD` under $BI_PLATFORM_HOME/raw/cadastral/.",
        group_name=GROUP,
        kinds={"parquet"},
        owners=OWNERS,
    )
    for table in SOURCE_TABLES
]


def partition_date(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    """The load date of the run: its partition key ``YYYY-MM-DD``."""
    return date.fromisoformat(context.partition_key)


def _source(spark: CadastralSparkResource, table: str, load_date: date):
    return read_source(spark.spark_session, get_settings().cadastral_raw_dir, table, load_date)


def _version(key: dg.AssetKey, load_date: date) -> int | None:
    """The Delta version of ``key``'s table written for ``load_date``."""
    return version_for_load_date(delta_uri(key), load_date.isoformat())


def _selected(context: dg.AssetExecutionContext, key: dg.AssetKey, check: str) -> bool:
    return dg.AssetCheckKey(key, check) in context.selected_asset_check_keys


def _table_checks(
    context: dg.AssetExecutionContext, spark: CadastralSparkResource, key: dg.AssetKey
) -> Iterator[dg.AssetCheckResult]:
    """Unique keys and an unchanged schema, on the Delta version just committed for the
    run's load date (only the checks selected in this run: a subset without the table
    has none)."""
    uri = delta_uri(key)
    if _selected(context, key, "unique_chave_pessoa"):
        version = _version(key, partition_date(context))
        yield _unique_keys_result(spark, key, uri, version)
    if _selected(context, key, "schema_unchanged"):
        yield _schema_result(key, uri)


def _unique_keys_result(
    spark: CadastralSparkResource, key: dg.AssetKey, uri: str, version: int | None
) -> dg.AssetCheckResult:
    keys = quality.key_uniqueness(read_delta(spark.spark_session, uri, version), KEY)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="unique_chave_pessoa",
        passed=keys.ok,
        metadata={
            "rows": keys.rows,
            "distinct_keys": keys.distinct_keys,
            "null_keys": keys.null_keys,
            "duplicates": keys.duplicates,
        },
    )


def _schema_result(key: dg.AssetKey, uri: str) -> dg.AssetCheckResult:
    schema = quality.compare_with_previous_version(uri)
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="schema_unchanged",
        passed=schema.unchanged,
        metadata={
            "delta_version": schema.version,
            "previous_version": schema.previous_version
            if schema.previous_version is not None
            else -1,
            "added": ", ".join(schema.added) or "-",
            "removed": ", ".join(schema.removed) or "-",
            "retyped": ", ".join(schema.retyped) or "-",
        },
    )


def _table_check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            "unique_chave_pessoa", asset=key, description="Every chave_pessoa appears once."
        ),
        dg.AssetCheckSpec(
            "schema_unchanged",
            asset=key,
            description="Same columns and types as the table's previous Delta version.",
        ),
    ]


@dg.multi_asset(
    outs={
        "coletapedt001": dg.AssetOut(
            key=P001,
            io_manager_key=IO_MANAGER,
            description=(
                "Core person record, one row per person, in one consolidated select: "
                "sha256 key (no document numbers), person type, full name, birth date, age "
                "at the load date, civil status / sex / occupation decoded through broadcast "
                "lookups, normalised segment, state-of-birth code."
            ),
            kinds=SPARK_DELTA,
            owners=OWNERS,
            is_required=False,
        ),
        "coletapedt001_quarantine": dg.AssetOut(
            key=Q001,
            io_manager_key=IO_MANAGER,
            description=(
                "pedt001 rows set aside with the reason: malformed document numbers and "
                "conflicting duplicates (same person, different content)."
            ),
            kinds=SPARK_DELTA,
            owners=OWNERS,
            is_required=False,
        ),
    },
    deps=[raw_key("pedt001")],
    group_name=GROUP,
    partitions_def=load_dates,
    check_specs=_table_check_specs(P001),
    can_subset=True,
)
def coletapedt001(context: dg.AssetExecutionContext, spark: CadastralSparkResource):
    load_date = partition_date(context)
    outputs = transforms.coletapedt001_outputs(
        _source(spark, "pedt001", load_date), transforms.lookup_tables(spark.spark_session)
    )
    context.log.info("coletapedt001 from dat_ref_carga=%s", load_date)
    meta = {"dat_ref_carga": load_date.isoformat()}
    selected = context.op_execution_context.selected_output_names
    if "coletapedt001" in selected:
        yield dg.Output(outputs.rows, output_name="coletapedt001", metadata=meta)
    if "coletapedt001_quarantine" in selected:
        yield dg.Output(outputs.quarantine, output_name="coletapedt001_quarantine", metadata=meta)
    outputs.shared.unpersist()  # the persisted per-person table both outputs derive from
    yield from _table_checks(context, spark, P001)


@dg.multi_asset(
    outs={
        "coletapedt002": dg.AssetOut(
            key=P002,
            io_manager_key=IO_MANAGER,
            description=(
                "State of birth (UF, name, region) through a broadcast join to the 28-row "
                "state table, with naturalidade and parents' names from pedt002."
            ),
            kinds=SPARK_DELTA,
            owners=OWNERS,
            is_required=False,
        ),
        "coletapedt002_quarantine": dg.AssetOut(
            key=Q002,
            io_manager_key=IO_MANAGER,
            description="Persons whose state-of-birth code is not one of the 28, with the reason.",
            kinds=SPARK_DELTA,
            owners=OWNERS,
            is_required=False,
        ),
    },
    ins={"pessoas": dg.AssetIn(P001)},
    deps=[raw_key("pedt002")],
    group_name=GROUP,
    partitions_def=load_dates,
    can_subset=True,
    check_specs=[
        *_table_check_specs(P002),
        dg.AssetCheckSpec(
            "invalid_state_rate",
            asset=P002,
            description=(
                f"At most {quality.MAX_INVALID_STATE_RATE:.0%} of persons have an invalid "
                "state-of-birth code."
            ),
        ),
    ],
)
def coletapedt002(
    context: dg.AssetExecutionContext,
    spark: CadastralSparkResource,
    pessoas,
):
    load_date = partition_date(context)
    rows, quarantine = transforms.coletapedt002(
        _source(spark, "pedt002", load_date), pessoas, transforms.lookup_tables(spark.spark_session)
    )
    meta = {"dat_ref_carga": load_date.isoformat()}
    selected = context.op_execution_context.selected_output_names
    if "coletapedt002" in selected:
        yield dg.Output(rows, output_name="coletapedt002", metadata=meta)
    if "coletapedt002_quarantine" in selected:
        yield dg.Output(quarantine, output_name="coletapedt002_quarantine", metadata=meta)
    yield from _table_checks(context, spark, P002)
    if not _selected(context, P002, "invalid_state_rate"):
        return
    persons = quality.delta_rows(delta_uri(P001), _version(P001, load_date))
    invalid = quality.delta_rows(delta_uri(Q002), _version(Q002, load_date))
    rate = invalid / persons if persons else 0.0
    context.log.info("invalid state codes: %d of %d persons (%.3f%%)", invalid, persons, 100 * rate)
    yield dg.AssetCheckResult(
        asset_key=P002,
        check_name="invalid_state_rate",
        passed=rate <= quality.MAX_INVALID_STATE_RATE,
        metadata={"invalid": invalid, "persons": persons, "rate": round(rate, 6)},
    )


@dg.asset(
    key=P003,
    deps=[raw_key("pedt003")],
    group_name=GROUP,
    owners=OWNERS,
    partitions_def=load_dates,
    kinds=SPARK_DELTA,
    io_manager_key=IO_MANAGER,
    check_specs=_table_check_specs(P003),
)
def coletapedt003(context: dg.AssetExecutionContext, spark: CadastralSparkResource):
    """Latest e-mail, residential and commercial address per person (greatest update
    date, ties by sequence), with aggregate functions over one shuffle instead of
    self-joins."""
    load_date = partition_date(context)
    rows = transforms.coletapedt003(_source(spark, "pedt003", load_date))
    yield dg.Output(rows, metadata={"dat_ref_carga": load_date.isoformat()})
    yield from _table_checks(context, spark, P003)


@dg.asset(
    key=P205,
    deps=[raw_key("pedt205")],
    group_name=GROUP,
    owners=OWNERS,
    partitions_def=load_dates,
    kinds=SPARK_DELTA,
    io_manager_key=IO_MANAGER,
    check_specs=_table_check_specs(P205),
)
def coletapedt205(context: dg.AssetExecutionContext, spark: CadastralSparkResource):
    """Assets per person: the sorted set of asset kinds (capped at
    CADASTRAL_MAX_ASSET_TYPES, with a truncation flag), their count and total value."""
    load_date = partition_date(context)
    cap = get_settings().cadastral_max_asset_types
    rows = transforms.coletapedt205(_source(spark, "pedt205", load_date), cap)
    yield dg.Output(rows, metadata={"dat_ref_carga": load_date.isoformat(), "asset_type_cap": cap})
    yield from _table_checks(context, spark, P205)


@dg.asset(
    key=CONSOLIDADO,
    ins={
        "pessoas": dg.AssetIn(P001),
        "naturalidade": dg.AssetIn(P002),
        "contatos": dg.AssetIn(P003),
        "bens": dg.AssetIn(P205),
    },
    group_name=GROUP,
    owners=OWNERS,
    partitions_def=load_dates,
    kinds=SPARK_DELTA,
    io_manager_key=IO_MANAGER,
    check_specs=_table_check_specs(CONSOLIDADO),
)
def cadastro_consolidado(
    context: dg.AssetExecutionContext,
    spark: CadastralSparkResource,
    pessoas,
    naturalidade,
    contatos,
    bens,
):
    """One row per person: the core record left-joined with state of birth, latest
    contacts and assets, plus ``row_hash`` (md5 of the canonical row) that the
    PostgreSQL sync compares."""
    yield dg.Output(
        consolidated_with_hash(pessoas, naturalidade, contatos, bens),
        metadata={"dat_ref_carga": partition_date(context).isoformat()},
    )
    yield from _table_checks(context, spark, CONSOLIDADO)


class PgSyncConfig(dg.Config):
    full_compare: bool = Field(
        default=False,
        description=(
            "Compare against every key and hash read from PostgreSQL instead of the last "
            "synced Delta version (always done after an interrupted sync)."
        ),
    )


@dg.asset(
    key=PG_SYNC,
    deps=[CONSOLIDADO],
    group_name=GROUP,
    owners=OWNERS,
    partitions_def=load_dates,
    kinds={"spark", "postgres"},
)
def cadastral_pg_sync(
    context: dg.AssetExecutionContext,
    config: PgSyncConfig,
    spark: CadastralSparkResource,
    postgres: PostgresResource,
) -> dg.MaterializeResult:
    """``cadastral.cadastro_consolidado`` in PostgreSQL, synchronised from the Delta table
    by a distributed hash compare: changed keys found in Spark (diff against the last
    synced Delta version, or a parallel JDBC read of PostgreSQL's keys and hashes),
    applied per partition with COPY + upsert/delete, retried with backoff."""
    uri = delta_uri(CONSOLIDADO)
    load_date = partition_date(context)
    version = _version(CONSOLIDADO, load_date)
    if version is None:
        raise dg.Failure(
            f"{CONSOLIDADO.to_user_string()} has no Delta version for dat_ref_carga="
            f"{load_date.isoformat()}: materialize it for that load date first"
        )
    session = spark.spark_session
    started = time.perf_counter()
    with StageMetricsCollector(session).measure(PG_SYNC.to_user_string()) as metrics:
        result = sync_to_postgres(
            session,
            read_delta(session, uri, version),
            postgres.resolved_url(),
            table=PG_TABLE,
            key=KEY,
            delta_uri=uri,
            delta_version=version,
            full_compare=config.full_compare,
            retries=get_settings().cadastral_sync_retries,
        )
    with postgres.connection() as conn:
        pg_schema = pg_table_schema(conn, PG_TABLE, schema="cadastral")
    context.log.info(
        "synced Delta v%s into cadastral.%s (%s): +%d ~%d -%d =%d in %.1f s",
        version,
        PG_TABLE,
        result.mode,
        result.inserted,
        result.updated,
        result.deleted,
        result.unchanged,
        time.perf_counter() - started,
    )
    return dg.MaterializeResult(
        metadata={
            "mode": result.mode,
            "dat_ref_carga": load_date.isoformat(),
            "delta_version": version,
            "inserted": result.inserted,
            "updated": result.updated,
            "deleted": result.deleted,
            "unchanged": result.unchanged,
            "seconds": round(result.seconds, 3),
            "partitions": result.partitions,
            "retries": result.retries,
            "dagster/row_count": result.inserted + result.updated + result.unchanged,
            "dagster/column_schema": pg_schema,
            "pg_table": f"cadastral.{PG_TABLE}",
            "database": postgres.masked_url,
            **stage_metrics_metadata(metrics),
        }
    )


cadastral_assets = [
    *raw_sources,
    coletapedt001,
    coletapedt002,
    coletapedt003,
    coletapedt205,
    cadastro_consolidado,
    cadastral_pg_sync,
]
