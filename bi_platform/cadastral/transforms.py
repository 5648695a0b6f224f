"""Optimized transforms of the person registry (contract §3).

One consolidated ``select`` per stage, the code tables of
:mod:`bi_platform.cadastral.reference` as broadcast joins (no ``when()`` chains), one
aggregation per person for "latest contact per type" (``max`` over a
``struct(pedatalt, pesequen, ...)``, no windows or self-joins) and for the asset set
(the set of the person's distinct rows, then ``array_sort`` + ``slice`` of their types),
no UDFs and no ``collect()``.

Shuffles: every stage repartitions its well-formed rows by the raw ``penumper`` once
(as :data:`PERSON`), into exactly ``spark.sql.shuffle.partitions`` partitions; the
per-person aggregation (and any exact-duplicate removal) then runs without another
shuffle, and ``chave_pessoa`` (``sha2(penumper, 256)``) is computed once per output row,
not once per source row. Stage outputs built for the stages after them in the same run
(:func:`bi_platform.cadastral.pipeline.run_pipeline`) carry :data:`PERSON` in place of
``chave_pessoa`` (the 64-character key is derived only when a table is written, never
persisted) and are hash-partitioned alike, so joins of outputs that are still persisted
(``coletapedt002`` on the persons, ``cadastro_consolidado``) need no shuffle.

The raw document number never leaves: what is written carries ``chave_pessoa`` only
(:func:`published` replaces :data:`PERSON` by it), and quarantine ``value`` is null for
``penumper``. Inside a run the number exists where Spark keeps intermediate data (shuffle
files, persisted blocks, under ``spark.local.dir``), as the source rows themselves do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F  # noqa: N812
from pyspark.sql import types as T  # noqa: N812

from bi_platform.cadastral.reference import (
    CIVIL_STATUS,
    LOAD_DATE_COLUMN,
    OCCUPATIONS,
    PERSON_TYPES,
    SEGMENTS,
    SEXES,
    STATES,
)
from bi_platform.cadastral.row_hash import ROW_HASH
from bi_platform.cadastral.spark_session import CACHE_LEVEL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

KEY = "chave_pessoa"
#: The in-run key: the raw document number, carried by stage outputs only while they are
#: handed to the stages after them in one run; never written (see :func:`published`).
PERSON = "_penumper"
DATE = LOAD_DATE_COLUMN
PENUMPER_PATTERN = r"^(\d{11}|\d{14})$"

#: Output columns with too many distinct values for a Parquet dictionary: nearly unique
#: per person (the key, names, e-mail, street addresses, the total asset value, the
#: consolidated row's hash) or spread over tens of thousands of values (dates of birth,
#: postal codes). Written without dictionary encoding (``plain_columns`` of
#: :func:`bi_platform.cadastral.delta.write_delta`): the writer would fill a dictionary
#: page with them only to fall back to plain values on the first page.
HIGH_CARDINALITY_COLUMNS = (
    KEY,
    "nome_completo",
    "nome_mae",
    "nome_pai",
    "email",
    "endereco_residencial",
    "endereco_comercial",
    "valor_total_bens",
    ROW_HASH,
    "data_nascimento",
    "cep_residencial",
    "cep_comercial",
)

REASON_MALFORMED = "penumper malformado"
REASON_CONFLICT = "penumper duplicado com conteudo divergente"
REASON_INVALID_UF = "codigo de UF invalido"

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("source_table", T.StringType()),
        T.StructField("chave_pessoa", T.StringType()),
        T.StructField("field", T.StringType()),
        T.StructField("value", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("dat_ref_carga", T.DateType()),
    ]
)

#: pedt001 columns besides the key, in source order.
PEDT001_FIELDS = (
    "petipper",
    "penomper",
    "pepriape",
    "pesegape",
    "pefecnac",
    "peestciv",
    "pesexper",
    "petipocu",
    "penacper",
    "pesegmen",
    "peusualt",
)


@dataclass(frozen=True)
class Lookups:
    """Small code tables, each joined with ``F.broadcast`` on its first column."""

    person_types: DataFrame  # petipper -> tipo_pessoa
    civil_status: DataFrame  # peestciv -> estado_civil
    sexes: DataFrame  # pesexper -> sexo
    occupations: DataFrame  # petipocu -> ocupacao
    states: DataFrame  # cod_uf_nascimento -> uf/estado/regiao_nascimento


def _code_table(spark: SparkSession, code: str, names: list[str], rows: list[tuple]) -> DataFrame:
    """A code table as an inline ``VALUES`` table (the values bound as SQL parameters):
    a local relation of non-null strings, read from the driver's memory. (Built with
    ``createDataFrame``, from tuples or Arrow, it is an RDD the Python side serializes,
    and each broadcast of it deserializes it again.)"""
    columns = [code, *names]
    args = {f"v{i}_{j}": value for i, row in enumerate(rows) for j, value in enumerate(row)}
    values = ", ".join(
        "(" + ", ".join(f":v{i}_{j}" for j in range(len(row))) + ")" for i, row in enumerate(rows)
    )
    return spark.sql(f"SELECT * FROM VALUES {values} AS t({', '.join(columns)})", args=args)


def lookup_tables(spark: SparkSession) -> Lookups:
    """The reference code tables as tiny local relations (broadcast at join time)."""
    return Lookups(
        person_types=_code_table(spark, "petipper", ["tipo_pessoa"], list(PERSON_TYPES.items())),
        civil_status=_code_table(spark, "peestciv", ["estado_civil"], list(CIVIL_STATUS.items())),
        sexes=_code_table(spark, "pesexper", ["sexo"], list(SEXES.items())),
        occupations=_code_table(spark, "petipocu", ["ocupacao"], list(OCCUPATIONS.items())),
        states=_code_table(
            spark,
            "cod_uf_nascimento",
            ["uf_nascimento", "estado_nascimento", "regiao_nascimento"],
            [(code, *values) for code, values in STATES.items()],
        ),
    )


def _valid_penumper(column: str = "penumper") -> Column:
    return F.col(column).isNotNull() & F.col(column).rlike(PENUMPER_PATTERN)


def _chave(column: str = "penumper") -> Column:
    return F.sha2(F.col(column), 256)


def _quarantine(
    source_table: str, chave: Column, field: str, value: Column, reason: str | Column
) -> list[Column]:
    return [
        F.lit(source_table).alias("source_table"),
        chave.cast("string").alias("chave_pessoa"),
        F.lit(field).alias("field"),
        value.cast("string").alias("value"),
        (F.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
        F.col(DATE).cast("date").alias(DATE),
    ]


def key_partitions(df: DataFrame) -> int:
    """Partitions of every by-key shuffle: ``spark.sql.shuffle.partitions``, explicit, so
    AQE never coalesces them and all stages come out co-partitioned (joins of their
    outputs on ``chave_pessoa`` then need no shuffle)."""
    return int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))


def published(df: DataFrame) -> DataFrame:
    """``df`` as it is written: ``chave_pessoa`` first instead of the in-run key
    :data:`PERSON` (derived from it when ``df`` does not have it yet)."""
    if PERSON in df.columns and KEY not in df.columns:
        return df.select(_chave(PERSON).alias(KEY), *(c for c in df.columns if c != PERSON))
    return df.drop(PERSON)


def _keyed(df: DataFrame, *columns: str | Column, key: str = PERSON) -> DataFrame:
    """Rows with a well-formed penumper, keyed by ``key`` (the raw number as
    :data:`PERSON`, or its hash as ``chave_pessoa``) and hash-partitioned by it into
    :func:`key_partitions` partitions (the stage's only shuffle)."""
    keyed = F.col("penumper").alias(PERSON) if key == PERSON else _chave().alias(KEY)
    return df.where(_valid_penumper()).select(keyed, *columns).repartition(key_partitions(df), key)


def _trimmed_or_null(column: str) -> Column:
    trimmed = F.trim(F.col(column))
    return F.when(trimmed != "", trimmed)


@dataclass(frozen=True)
class Coletapedt001:
    """The outputs of ``coletapedt001`` and ``shared``, the persisted per-person table
    both derive from (release it with ``shared.unpersist()`` once both are written;
    nothing else is persisted). ``keyed_rows`` is ``shared`` without its conflicting
    persons: a filter over the cache, hash-partitioned by :data:`PERSON` like it, for the
    stages after it in the same run; ``rows`` is the same as written (:func:`published`:
    ``chave_pessoa`` in place of :data:`PERSON`)."""

    rows: DataFrame
    quarantine: DataFrame
    shared: DataFrame
    keyed_rows: DataFrame


_UNIQUE = "_unico"


def coletapedt001_outputs(pedt001: DataFrame, lookups: Lookups) -> Coletapedt001:
    """Persons (decoded) and the pedt001 quarantine (malformed / conflicting penumper).

    One aggregation per person after the by-key shuffle: the smallest and the greatest
    row (``min``/``max`` of the struct of every column). Equal means every row of the
    person is the same row (exact duplicates collapse); different means a conflicting
    duplicate, quarantined once per distinct row. No duplicate removal over the million
    rows and no window. Every person is decoded once into the persisted ``shared``
    table (flat output columns plus a uniqueness flag), which both outputs read.
    """
    record = F.struct(*PEDT001_FIELDS, DATE)
    decoded = (
        _keyed(pedt001, *PEDT001_FIELDS, DATE)
        .groupBy(PERSON)
        .agg(F.min(record).alias("_lo"), F.max(record).alias("_hi"))
        .select(PERSON, (F.col("_lo") == F.col("_hi")).alias(_UNIQUE), "_lo.*")
        .join(F.broadcast(lookups.person_types), "petipper", "left")
        .join(F.broadcast(lookups.civil_status), "peestciv", "left")
        .join(F.broadcast(lookups.sexes), "pesexper", "left")
        .join(F.broadcast(lookups.occupations), "petipocu", "left")
    )
    segment = F.upper(F.trim(F.col("pesegmen")))
    shared = decoded.select(
        PERSON,
        "tipo_pessoa",
        F.concat_ws(
            " ", *(_trimmed_or_null(c) for c in ("penomper", "pepriape", "pesegape"))
        ).alias("nome_completo"),
        F.col("pefecnac").alias("data_nascimento"),
        F.floor(F.months_between(F.col(DATE), F.col("pefecnac")) / 12).cast("int").alias("idade"),
        "estado_civil",
        "sexo",
        "ocupacao",
        F.when(segment.isin(*SEGMENTS), segment).alias("segmento"),
        F.trim(F.col("penacper")).alias("cod_uf_nascimento"),
        F.col("peusualt").alias("usuario_alteracao"),
        DATE,
        _UNIQUE,
    ).persist(CACHE_LEVEL)
    # The quarantine, in one more pass over the source: every malformed row and every row
    # of a conflicting person (their keys are few: broadcast), once per distinct row.
    valid = _valid_penumper()
    conflicting = shared.where(~F.col(_UNIQUE)).select(PERSON, F.lit(True).alias("_conflito"))
    # a conflicting person's rows are distinct by the columns the transform reads; a
    # malformed row by all of its columns
    extra = [c for c in pedt001.columns if c not in ("penumper", *PEDT001_FIELDS, DATE)]
    quarantine = (
        pedt001.select(
            valid.alias("_valido"),
            F.when(valid, F.col("penumper")).alias(PERSON),
            "penumper",
            *PEDT001_FIELDS,
            DATE,
            *(F.when(~valid, F.col(c)).alias(c) for c in extra),
        )
        .join(F.broadcast(conflicting), PERSON, "left")
        .where(~F.col("_valido") | F.col("_conflito").isNotNull())
        .dropDuplicates(["penumper", *PEDT001_FIELDS, DATE, *extra])
        .select(
            *_quarantine(
                "pedt001",
                F.when(F.col("_valido"), _chave()),
                "penumper",
                F.lit(None),
                F.when(F.col("_valido"), REASON_CONFLICT).otherwise(REASON_MALFORMED),
            )
        )
    )
    keyed_rows = shared.where(F.col(_UNIQUE)).drop(_UNIQUE)
    return Coletapedt001(published(keyed_rows), quarantine, shared, keyed_rows)


def coletapedt001(pedt001: DataFrame, lookups: Lookups) -> tuple[DataFrame, DataFrame]:
    """``(rows, quarantine)`` of :func:`coletapedt001_outputs`; the per-person table
    they share stays persisted (callers release it with ``spark.catalog.clearCache()``
    once both are written)."""
    outputs = coletapedt001_outputs(pedt001, lookups)
    return outputs.rows, outputs.quarantine


def coletapedt002(
    pedt002: DataFrame, pessoas: DataFrame, lookups: Lookups
) -> tuple[DataFrame, DataFrame]:
    """State of birth (broadcast join), naturalidade and parents of every person; persons
    with an invalid state code go to quarantine instead.

    ``pessoas`` handed over in the same run (``keyed_rows`` of
    :func:`coletapedt001_outputs`) carries :data:`PERSON` and no ``chave_pessoa``: the
    parents are keyed by it and the rows keep it in place of ``chave_pessoa``. Read back
    from its table, the persons have ``chave_pessoa`` only, and the parents are keyed by
    its hash.
    """
    key = PERSON if PERSON in pessoas.columns else KEY
    people = pessoas.select(key, "cod_uf_nascimento", DATE).join(
        F.broadcast(lookups.states), "cod_uf_nascimento", "left"
    )
    chave = _chave(PERSON) if key == PERSON else F.col(KEY)
    quarantine = people.where(F.col("uf_nascimento").isNull()).select(
        *_quarantine("pedt001", chave, "penacper", F.col("cod_uf_nascimento"), REASON_INVALID_UF)
    )
    # Exact duplicates collapse and divergent ones keep the greatest triple: one max.
    parents = (
        _keyed(pedt002, "penomnat", "penommae", "penompai", key=key)
        .groupBy(key)
        .agg(F.max(F.struct("penomnat", "penommae", "penompai")).alias("_p"))
    )
    rows = (
        people.where(F.col("uf_nascimento").isNotNull())
        .join(parents, key, "left")
        .select(
            key,
            "uf_nascimento",
            "estado_nascimento",
            "regiao_nascimento",
            F.upper(F.trim(F.col("_p.penomnat"))).alias("naturalidade"),
            F.trim(F.col("_p.penommae")).alias("nome_mae"),
            F.trim(F.col("_p.penompai")).alias("nome_pai"),
            DATE,
        )
    )
    return rows, quarantine


_ADDRESS = ("pelograd", "pecidade", "peuf", "pecep")


def _candidate(contact_type: str, *payload: Column) -> Column:
    """A contact row as a candidate for the latest contact of one type: the struct
    ``(pedatalt, pesequen, *payload)`` when the row is of that type and dated (undated
    ones never win), else null. Built before the shuffle, so each row carries only the
    payload of its own type."""
    wanted = (F.col("petipcon") == contact_type) & F.col("pedatalt").isNotNull()
    return F.when(wanted, F.struct("pedatalt", "pesequen", *payload)).alias(contact_type)


def coletapedt003(pedt003: DataFrame, *, keep_person: bool = False) -> DataFrame:
    """Latest e-mail, residential and commercial address of every person with contacts:
    the greatest ``(pedatalt, pesequen)`` candidate of each type, one ``max`` each.
    ``keep_person``: the rows carry :data:`PERSON` in place of ``chave_pessoa`` (for the
    stages after it in a run)."""
    candidates = _keyed(
        pedt003,
        _candidate("E", F.lower(F.trim(F.col("peemail"))).alias("email")),
        _candidate("R", *_ADDRESS),
        _candidate("C", *_ADDRESS),
        DATE,
    )
    latest = candidates.groupBy(PERSON).agg(
        *(F.max(code).alias(code) for code in ("E", "R", "C")), F.max(DATE).alias(DATE)
    )
    rows = latest.select(
        PERSON,
        F.col("E.email").alias("email"),
        F.col("E.pedatalt").alias("data_email"),
        *(
            F.col(f"{code}.{source}").alias(f"{target}_{suffix}")
            for code, suffix in (("R", "residencial"), ("C", "comercial"))
            for source, target in zip(_ADDRESS, ("endereco", "cidade", "uf", "cep"), strict=True)
        ),
        F.col("R.pedatalt").alias("data_endereco_residencial"),
        F.col("C.pedatalt").alias("data_endereco_comercial"),
        DATE,
    ).select(PERSON, *COLETAPEDT003_COLUMNS[1:])
    return rows if keep_person else published(rows)


COLETAPEDT003_COLUMNS = (
    KEY,
    "email",
    "data_email",
    "endereco_residencial",
    "cidade_residencial",
    "uf_residencial",
    "cep_residencial",
    "data_endereco_residencial",
    "endereco_comercial",
    "cidade_comercial",
    "uf_comercial",
    "cep_comercial",
    "data_endereco_comercial",
    DATE,
)


def coletapedt205(
    pedt205: DataFrame, max_asset_types: int, *, keep_person: bool = False
) -> DataFrame:
    """Asset types (sorted distinct, capped), count and total value per person.

    One aggregation after the by-key shuffle: the set of each person's distinct rows
    (exact duplicates collapse in it), from which the count, the total value and the
    load date are computed, and the set of their types. ``keep_person``: the rows carry
    :data:`PERSON` in place of ``chave_pessoa`` (for the stages after it in a run).
    """
    if max_asset_types < 1:
        raise ValueError(f"max_asset_types must be >= 1, got {max_asset_types}")
    row = F.struct("pecodbem", "petipbem", "pevalbem", "pedatalt", DATE)
    distinct_rows = (
        _keyed(pedt205, "petipbem", row.alias("_row"))
        .groupBy(PERSON)
        .agg(F.collect_set("_row").alias("_rows"), F.collect_set("petipbem").alias("_tipos"))
    )
    valued = F.filter("_rows", lambda r: r["pevalbem"].isNotNull())
    # the sum of the values that are not null, null when none is (as SQL's sum)
    total = F.when(
        F.size(valued) > 0,
        F.aggregate(
            valued,
            F.lit(0).cast(_TOTAL),
            lambda acc, r: (acc + r["pevalbem"]).cast(_TOTAL),
        ),
    )
    assets = distinct_rows.select(
        PERSON,
        F.array_sort("_tipos").alias("_tipos"),
        F.size("_rows").alias("qtd_bens"),
        total.alias("_total"),
        F.array_max(F.transform("_rows", lambda r: r[DATE])).alias(DATE),
    )
    rows = assets.select(
        PERSON,
        F.slice("_tipos", 1, max_asset_types).alias("tipos_bens"),
        (F.size("_tipos") > max_asset_types).alias("tipos_bens_truncado"),
        F.col("qtd_bens").cast("long").alias("qtd_bens"),
        F.col("_total").cast("decimal(18,2)").alias("valor_total_bens"),
        DATE,
    )
    return rows if keep_person else published(rows)


#: The type a person's total asset value is summed in: SQL's ``sum`` of decimal(18,2),
#: before it is cast to the column's decimal(18,2).
_TOTAL = "decimal(28,2)"


def cadastro_consolidado(
    p001: DataFrame, p002: DataFrame, p003: DataFrame, p205: DataFrame
) -> DataFrame:
    """One row per person of ``coletapedt001`` with the columns of 002, 003 and 205.

    The current state of each person, without ``dat_ref_carga``: the load date belongs to
    the snapshot (the Delta version's metadata), not to the row. Kept in the row, it would
    change every row's hash on every load and turn each daily sync into a full rewrite.

    Inputs handed over in the same run carry :data:`PERSON` and join on it; tables read
    back join on ``chave_pessoa``. The result never carries :data:`PERSON`: its
    ``chave_pessoa`` is that of ``p001`` (derived from :data:`PERSON` for in-run inputs).
    """
    parts = (p002, p003, p205)
    in_run = all(PERSON in df.columns for df in (p001, *parts))
    consolidated = p001.drop("cod_uf_nascimento", DATE)
    for part in parts:
        # co-partitioned inputs (the pipeline's persisted stage outputs) join in place;
        # Spark picks the join (a sort-merge join spills where a hash map cannot)
        if in_run:
            consolidated = consolidated.join(part.drop(DATE), PERSON, "left")
        else:
            consolidated = consolidated.join(published(part).drop(DATE), KEY, "left")
    return published(consolidated)
