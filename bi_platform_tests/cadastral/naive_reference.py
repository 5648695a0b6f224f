"""The plan's "before" code: a deliberately naive, independent implementation of the
cadastral transforms, used only to check that the optimized ones give identical output.

Sequential ``withColumn`` chains, ``when()`` chains for every code table (28 for the
states), self-joins for "latest contact per type", ``collect_list`` + distinct for the
assets. Shares nothing with :mod:`bi_platform.cadastral.transforms` except the reference
data and the contract's business rules.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F  # noqa: N812

from bi_platform.cadastral.reference import (
    CIVIL_STATUS,
    OCCUPATIONS,
    PERSON_TYPES,
    SEGMENTS,
    SEXES,
    STATES,
)

_MALFORMED = "penumper malformado"
_CONFLICT = "penumper duplicado com conteudo divergente"
_BAD_UF = "codigo de UF invalido"


def _when_chain(column: str, mapping: dict[str, str]):
    expression = None
    for code, description in mapping.items():
        if expression is None:
            expression = F.when(F.col(column) == code, F.lit(description))
        else:
            expression = expression.when(F.col(column) == code, F.lit(description))
    return expression


def _well_formed(df: DataFrame) -> DataFrame:
    df = df.withColumn("_len", F.length("penumper"))
    df = df.withColumn(
        "_ok",
        F.col("penumper").isNotNull()
        & F.col("_len").isin(11, 14)
        & (F.regexp_replace("penumper", "[0-9]", "") == ""),
    )
    return df


def _quarantine_rows(df: DataFrame, source: str, field: str, value, reason: str) -> DataFrame:
    out = df.withColumn("source_table", F.lit(source))
    out = out.withColumn("field", F.lit(field))
    out = out.withColumn("value", value)
    out = out.withColumn("reason", F.lit(reason))
    return out.select(
        "source_table",
        F.col("chave_pessoa").cast("string"),
        "field",
        F.col("value").cast("string"),
        "reason",
        "dat_ref_carga",
    )


def naive_coletapedt001(pedt001: DataFrame) -> tuple[DataFrame, DataFrame]:
    df = pedt001.dropDuplicates()
    df = _well_formed(df)
    malformed = df.filter(~F.col("_ok")).withColumn("chave_pessoa", F.lit(None))
    good = df.filter(F.col("_ok"))
    counts = good.groupBy("penumper").agg(F.count("*").alias("_versions"))
    good = good.join(counts, "penumper")
    conflicting = good.filter(F.col("_versions") > 1)
    conflicting = conflicting.withColumn("chave_pessoa", F.sha2("penumper", 256))
    quarantine = _quarantine_rows(
        malformed, "pedt001", "penumper", F.lit(None), _MALFORMED
    ).unionByName(_quarantine_rows(conflicting, "pedt001", "penumper", F.lit(None), _CONFLICT))

    df = good.filter(F.col("_versions") == 1)
    df = df.withColumn("chave_pessoa", F.sha2("penumper", 256))
    df = df.withColumn("tipo_pessoa", _when_chain("petipper", PERSON_TYPES))
    df = df.withColumn("_n1", F.trim("penomper"))
    df = df.withColumn("_n1", F.when(F.col("_n1") == "", None).otherwise(F.col("_n1")))
    df = df.withColumn("_n2", F.trim("pepriape"))
    df = df.withColumn("_n2", F.when(F.col("_n2") == "", None).otherwise(F.col("_n2")))
    df = df.withColumn("_n3", F.trim("pesegape"))
    df = df.withColumn("_n3", F.when(F.col("_n3") == "", None).otherwise(F.col("_n3")))
    df = df.withColumn("nome_completo", F.concat_ws(" ", "_n1", "_n2", "_n3"))
    df = df.withColumn("data_nascimento", F.col("pefecnac"))
    df = df.withColumn("_meses", F.months_between("dat_ref_carga", "pefecnac"))
    df = df.withColumn("idade", F.floor(F.col("_meses") / 12).cast("int"))
    df = df.withColumn("estado_civil", _when_chain("peestciv", CIVIL_STATUS))
    df = df.withColumn("sexo", _when_chain("pesexper", SEXES))
    df = df.withColumn("ocupacao", _when_chain("petipocu", OCCUPATIONS))
    df = df.withColumn("_seg", F.upper(F.trim("pesegmen")))
    df = df.withColumn("segmento", _when_chain("_seg", {s: s for s in SEGMENTS}))
    df = df.withColumn("cod_uf_nascimento", F.trim("penacper"))
    df = df.withColumn("usuario_alteracao", F.col("peusualt"))
    rows = df.select(
        "chave_pessoa",
        "tipo_pessoa",
        "nome_completo",
        "data_nascimento",
        "idade",
        "estado_civil",
        "sexo",
        "ocupacao",
        "segmento",
        "cod_uf_nascimento",
        "usuario_alteracao",
        "dat_ref_carga",
    )
    return rows, quarantine


def naive_coletapedt002(pedt002: DataFrame, pessoas: DataFrame) -> tuple[DataFrame, DataFrame]:
    df = pessoas.select("chave_pessoa", "cod_uf_nascimento", "dat_ref_carga")
    df = df.withColumn(
        "uf_nascimento", _when_chain("cod_uf_nascimento", {c: v[0] for c, v in STATES.items()})
    )
    df = df.withColumn(
        "estado_nascimento", _when_chain("cod_uf_nascimento", {c: v[1] for c, v in STATES.items()})
    )
    df = df.withColumn(
        "regiao_nascimento", _when_chain("cod_uf_nascimento", {c: v[2] for c, v in STATES.items()})
    )
    bad = df.filter(F.col("uf_nascimento").isNull())
    quarantine = _quarantine_rows(bad, "pedt001", "penacper", F.col("cod_uf_nascimento"), _BAD_UF)
    good = df.filter(F.col("uf_nascimento").isNotNull())

    parents = _well_formed(pedt002.dropDuplicates()).filter(F.col("_ok"))
    order = Window.partitionBy("penumper").orderBy(
        F.col("penomnat").desc_nulls_last(),
        F.col("penommae").desc_nulls_last(),
        F.col("penompai").desc_nulls_last(),
    )
    parents = parents.withColumn("_rank", F.row_number().over(order))
    parents = parents.filter(F.col("_rank") == 1)
    parents = parents.withColumn("chave_pessoa", F.sha2("penumper", 256))
    parents = parents.withColumn("naturalidade", F.upper(F.trim("penomnat")))
    parents = parents.withColumn("nome_mae", F.trim("penommae"))
    parents = parents.withColumn("nome_pai", F.trim("penompai"))
    parents = parents.select("chave_pessoa", "naturalidade", "nome_mae", "nome_pai")
    rows = good.join(parents, "chave_pessoa", "left").select(
        "chave_pessoa",
        "uf_nascimento",
        "estado_nascimento",
        "regiao_nascimento",
        "naturalidade",
        "nome_mae",
        "nome_pai",
        "dat_ref_carga",
    )
    return rows, quarantine


def _latest_by_self_join(contacts: DataFrame, kind: str) -> DataFrame:
    df = contacts.filter((F.col("petipcon") == kind) & F.col("pedatalt").isNotNull())
    newest = df.groupBy("penumper").agg(F.max("pedatalt").alias("_max_data"))
    df = df.join(
        newest,
        (df["penumper"] == newest["penumper"]) & (df["pedatalt"] == newest["_max_data"]),
    ).drop(newest["penumper"])
    last_seq = df.groupBy("penumper").agg(F.max("pesequen").alias("_max_seq"))
    df = df.join(
        last_seq,
        (df["penumper"] == last_seq["penumper"]) & (df["pesequen"] == last_seq["_max_seq"]),
    ).drop(last_seq["penumper"])
    return df


def naive_coletapedt003(pedt003: DataFrame) -> DataFrame:
    df = _well_formed(pedt003.dropDuplicates()).filter(F.col("_ok"))
    persons = df.groupBy("penumper").agg(F.max("dat_ref_carga").alias("dat_ref_carga"))
    email = _latest_by_self_join(df, "E")
    email = email.withColumn("email", F.lower(F.trim("peemail")))
    email = email.withColumn("data_email", F.col("pedatalt"))
    email = email.select("penumper", "email", "data_email")
    out = persons.join(email, "penumper", "left")
    for kind, suffix in (("R", "residencial"), ("C", "comercial")):
        address = _latest_by_self_join(df, kind)
        address = address.withColumn(f"endereco_{suffix}", F.col("pelograd"))
        address = address.withColumn(f"cidade_{suffix}", F.col("pecidade"))
        address = address.withColumn(f"uf_{suffix}", F.col("peuf"))
        address = address.withColumn(f"cep_{suffix}", F.col("pecep"))
        address = address.withColumn(f"data_endereco_{suffix}", F.col("pedatalt"))
        address = address.select(
            "penumper",
            f"endereco_{suffix}",
            f"cidade_{suffix}",
            f"uf_{suffix}",
            f"cep_{suffix}",
            f"data_endereco_{suffix}",
        )
        out = out.join(address, "penumper", "left")
    out = out.withColumn("chave_pessoa", F.sha2("penumper", 256))
    return out.select(
        "chave_pessoa",
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
        "dat_ref_carga",
    )


def naive_coletapedt205(pedt205: DataFrame, max_asset_types: int) -> DataFrame:
    df = _well_formed(pedt205.dropDuplicates()).filter(F.col("_ok"))
    df = df.groupBy("penumper").agg(
        F.collect_list("petipbem").alias("_lista"),
        F.count("*").alias("qtd_bens"),
        F.sum("pevalbem").alias("_soma"),
        F.max("dat_ref_carga").alias("dat_ref_carga"),
    )
    df = df.withColumn("_tipos", F.array_sort(F.array_distinct("_lista")))
    df = df.withColumn("tipos_bens", F.slice("_tipos", 1, max_asset_types))
    df = df.withColumn("tipos_bens_truncado", F.size("_tipos") > max_asset_types)
    df = df.withColumn("valor_total_bens", F.col("_soma").cast("decimal(18,2)"))
    df = df.withColumn("chave_pessoa", F.sha2("penumper", 256))
    return df.select(
        "chave_pessoa",
        "tipos_bens",
        "tipos_bens_truncado",
        F.col("qtd_bens").cast("long").alias("qtd_bens"),
        "valor_total_bens",
        "dat_ref_carga",
    )


def naive_cadastro_consolidado(
    p001: DataFrame, p002: DataFrame, p003: DataFrame, p205: DataFrame
) -> DataFrame:
    df = p001.drop("cod_uf_nascimento").drop("dat_ref_carga")
    df = df.join(p002.drop("dat_ref_carga"), "chave_pessoa", "left")
    df = df.join(p003.drop("dat_ref_carga"), "chave_pessoa", "left")
    df = df.join(p205.drop("dat_ref_carga"), "chave_pessoa", "left")
    return df
