"""Declared schemas of the retail tables: the contract between the raw exports, the
typed lake tables, the query battery and the schema-drift checks.

Every retail table has a *typed* schema (what the lake holds after cleaning). The raw
ERP exports use the same columns and types, except for :data:`RAW_STRING_COLUMNS` of
``admmat``: like the real export, its stock and price columns arrive as strings written
the Brazilian way (``"1.534,00"``, ``"12,5"``, ``"R$ 12,90"``), a small share of them
unparsable (``"N/D"``, ``"-"``, ``"1.2.3"``, ...). Each such column declares its
:class:`NumberFormat` (:data:`RAW_NUMBER_FORMATS`; pt-BR when not declared).

:data:`TEXT_KEY_COLUMNS` lists the text columns used for grouping, filtering and
row-level security (segment hierarchy, store and product names, classes, flags,
statuses): cleaning stores them in Unicode NFC without surrounding whitespace.

Column names follow the team's ERP export (Portuguese, upper case). ``UNE`` is a store
("unidade de negócio"), ``PRODUTO`` a product code, ``LV`` the sales floor ("loja de
venda"), ``CD`` the distribution centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from bi_platform.retail.rules import MONTHS, WEEK_LABELS

# --------------------------------------------------------------------------------------
# admmat: the product x store snapshot (one row per UNE x PRODUTO), ~97 columns
# --------------------------------------------------------------------------------------
_ADMMAT_KEYS: dict[str, pl.DataType] = {
    "UNE": pl.Int32(),
    "PRODUTO": pl.Int64(),
    "TIPO": pl.Int16(),
}
_ADMMAT_DESCRIPTIVE: dict[str, pl.DataType] = {
    "UNE_NOME": pl.String(),
    "NOME": pl.String(),
    "EMBALAGEM": pl.String(),
    "NOMESEGMENTO": pl.String(),
    "NOMECATEGORIA": pl.String(),
    "NOMEGRUPO": pl.String(),
    "NOMESUBGRUPO": pl.String(),
    "NOMEFABRICANTE": pl.String(),
    "EAN": pl.String(),
    "PROMOCIONAL": pl.String(),  # "S" / "N"
    "FORALINHA": pl.String(),  # "S" / "N": discontinued
}
_ADMMAT_PRICE: dict[str, pl.DataType] = {"LIQUIDO_38": pl.Float64()}
_ADMMAT_ABC: dict[str, pl.DataType] = {
    **{f"ABC_UNE_MES_{m:02d}": pl.String() for m in range(1, 5)},
    "ABC_UNE_30DD": pl.String(),
    "ABC_CACULA_90DD": pl.String(),
}
# MES_01 is the last closed month, MES_12 twelve months ago; MES_PARCIAL the current one.
_ADMMAT_MONTHLY: dict[str, pl.DataType] = {
    **{month: pl.Float64() for month in MONTHS},
    "MES_PARCIAL": pl.Float64(),
}
_ADMMAT_WEEKLY: dict[str, pl.DataType] = {}
for _week in reversed(WEEK_LABELS):  # SEMANA_ATUAL, SEMANA_ANTERIOR_2 .. _5
    _ADMMAT_WEEKLY[_week] = pl.Float64()
    _ADMMAT_WEEKLY[f"FREQ_{_week}"] = pl.Int32()
    _ADMMAT_WEEKLY[f"QTDE_{_week}"] = pl.Float64()
    _ADMMAT_WEEKLY[f"MEDIA_{_week}"] = pl.Float64()
_ADMMAT_SALES: dict[str, pl.DataType] = {"VENDA_30DD": pl.Float64()}
_ADMMAT_STOCK: dict[str, pl.DataType] = {
    "ESTOQUE_CD": pl.Float64(),
    "ESTOQUE_UNE": pl.Float64(),
    "ESTOQUE_LV": pl.Float64(),
    "ESTOQUE_GONDOLA_LV": pl.Float64(),
    "ESTOQUE_ILHA_LV": pl.Float64(),
    "LEADTIME_LV": pl.Int32(),  # days
    "PONTO_PEDIDO_LV": pl.Float64(),
    "MEDIA_TRAVADA": pl.String(),  # "S" / "N": average frozen by the planner
}
_ADMMAT_DATES: dict[str, pl.DataType] = {
    "ULTIMA_ENTRADA_DATA_CD": pl.Date(),
    "ULTIMA_ENTRADA_QTDE_CD": pl.Float64(),
    "ULTIMA_ENTRADA_CUSTO_CD": pl.Float64(),
    "ULTIMA_ENTRADA_DATA_UNE": pl.Date(),
    "ULTIMA_ENTRADA_QTDE_UNE": pl.Float64(),
    "ULTIMO_INVENTARIO_UNE": pl.Date(),
    "ULTIMA_VENDA_DATA_UNE": pl.Date(),
    "DATA_CADASTRO": pl.Date(),
}
_ADMMAT_LOGISTICS: dict[str, pl.DataType] = {
    "SOLICITACAO_PENDENTE": pl.String(),  # "S" / "N"
    "SOLICITACAO_PENDENTE_QTDE": pl.Float64(),
    "SOLICITACAO_PENDENTE_DATA": pl.Date(),
    "SOLICITACAO_PENDENTE_SITUACAO": pl.String(),
    "PICKLIST": pl.Int64(),
    "PICKLIST_SITUACAO": pl.String(),
    "PICKLIST_CONFERENCIA": pl.String(),
    "NOTA": pl.Int64(),
    "SERIE": pl.String(),
    "NOTA_EMISSAO": pl.Date(),
    "ROMANEIO_SOLICITACAO": pl.Int64(),
    "ROMANEIO_ENVIO": pl.Int64(),
    "ULTIMO_VOLUME": pl.Int64(),
    "VOLUME_QTDE": pl.Float64(),
    "ENDERECO_RESERVA": pl.String(),
    "ENDERECO_LINHA": pl.String(),
    "EXPOSICAO_MINIMA": pl.Float64(),
    "EXPOSICAO_MINIMA_UNE": pl.Float64(),
    "EXPOSICAO_MAXIMA_UNE": pl.Float64(),
    "MEDIA_CONSIDERADA_LV": pl.Float64(),
    "QTDE_EMBALAGEM_MASTER": pl.Int32(),
    "QTDE_EMBALAGEM_MULTIPLO": pl.Int32(),
    "PESO_BRUTO": pl.Float64(),
    "CUBAGEM": pl.Float64(),
    "FREQ_ULT_SEM": pl.Int32(),
    "ULTIMA_ATUALIZACAO": pl.Datetime("us"),
}

ADMMAT_SCHEMA: dict[str, pl.DataType] = {
    **_ADMMAT_KEYS,
    **_ADMMAT_DESCRIPTIVE,
    **_ADMMAT_PRICE,
    **_ADMMAT_ABC,
    **_ADMMAT_MONTHLY,
    **_ADMMAT_WEEKLY,
    **_ADMMAT_SALES,
    **_ADMMAT_STOCK,
    **_ADMMAT_DATES,
    **_ADMMAT_LOGISTICS,
}

#: Columns of the raw admmat export that arrive as strings and are cast when cleaning.
RAW_STRING_COLUMNS: tuple[str, ...] = (
    "LIQUIDO_38",
    "ESTOQUE_CD",
    "ESTOQUE_UNE",
    "ESTOQUE_LV",
    "ESTOQUE_GONDOLA_LV",
    "ESTOQUE_ILHA_LV",
)


@dataclass(frozen=True)
class NumberFormat:
    """How a string-typed numeric column writes its numbers.

    ``thousands`` groups the integer part in threes (optional, but when present every
    group after the first has exactly 3 digits), ``decimal`` starts the fraction,
    ``currency`` (if any) is an optional prefix, followed or not by one space. The
    default is the Brazilian convention of the ERP: ``"1.234,56"``.
    """

    locale: str = "pt-BR"
    thousands: str = "."
    decimal: str = ","
    currency: str | None = None

    def __post_init__(self) -> None:
        for name in ("thousands", "decimal"):
            sep = getattr(self, name)
            if len(sep) != 1 or sep.isalnum() or sep in "+-":
                raise ValueError(f"NumberFormat.{name} must be one non-alphanumeric character")
        if self.thousands == self.decimal:
            raise ValueError("NumberFormat.thousands and .decimal must differ")
        if self.currency is not None and (
            not self.currency.strip()
            or any(c.isdigit() or c.isspace() for c in self.currency)
            or self.thousands in self.currency
            or self.decimal in self.currency
        ):
            raise ValueError(f"invalid NumberFormat.currency {self.currency!r}")


#: Plain pt-BR numbers: ``"1.234"`` (= 1234), ``"1.234,56"``, ``"12,5"``.
PT_BR = NumberFormat()
#: pt-BR numbers optionally prefixed by ``"R$"``: ``"R$ 12,90"``, ``"R$12,90"``.
PT_BR_BRL = NumberFormat(currency="R$")

#: Declared format of each string-typed numeric column of admmat.
RAW_NUMBER_FORMATS: dict[str, NumberFormat] = {
    "LIQUIDO_38": PT_BR_BRL,
    **{c: PT_BR for c in RAW_STRING_COLUMNS if c != "LIQUIDO_38"},
}

#: Text columns used as grouping, filter or row-level-security keys, in any table that
#: has them. Cleaning stores them in Unicode NFC without leading or trailing whitespace
#: (see :func:`bi_platform.retail.cleaning.canonical_text_expr`).
TEXT_KEY_COLUMNS: tuple[str, ...] = (
    # product hierarchy, names, manufacturer, packaging
    "NOMESEGMENTO",
    "NOMECATEGORIA",
    "NOMEGRUPO",
    "NOMESUBGRUPO",
    "NOMEFABRICANTE",
    "NOME",
    "EMBALAGEM",
    # stores and geography
    "UNE_NOME",
    "CIDADE",
    "UF",
    "REGIAO",
    # classes and flags used as filters
    *(f"ABC_UNE_MES_{m:02d}" for m in range(1, 5)),
    "ABC_UNE_30DD",
    "ABC_CACULA_90DD",
    "PROMOCIONAL",
    "FORALINHA",
    "MEDIA_TRAVADA",
    "SOLICITACAO_PENDENTE",
    # statuses and reasons
    "SITUACAO",
    "SOLICITACAO_PENDENTE_SITUACAO",
    "PICKLIST_SITUACAO",
    "PICKLIST_CONFERENCIA",
    "MOTIVO",
    "FORMA_PAGAMENTO",
)

#: The 16 product segments of the export; TECIDOS holds ~12.6% of admmat's rows.
SEGMENTS: tuple[str, ...] = (
    "TECIDOS",
    "ARMARINHO E CONFECÇÃO",
    "PAPELARIA",
    "CASA E DECORAÇÃO",
    "FESTAS",
    "ARTES",
    "BRINQUEDOS",
    "UTILIDADES DOMÉSTICAS",
    "BAZAR",
    "INFORMÁTICA",
    "ELETRÔNICOS",
    "CAMA MESA E BANHO",
    "AVIAMENTOS",
    "EMBALAGENS",
    "LIMPEZA",
    "SAZONAIS",
)
ABC_CLASSES: tuple[str, ...] = ("A", "B", "C")


# --------------------------------------------------------------------------------------
# The other retail tables
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetailTable:
    """One retail table: its typed schema, key and the raw export's columns.

    ``raw_string_columns``: numeric columns the raw export ships as strings;
    ``number_formats``: the declared :class:`NumberFormat` of some of them (the others
    are :data:`PT_BR`).
    """

    name: str
    description: str
    schema: dict[str, pl.DataType]
    key: tuple[str, ...]
    raw_string_columns: tuple[str, ...] = field(default=())
    number_formats: dict[str, NumberFormat] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for column in self.raw_string_columns:
            if not self.schema[column].is_numeric():
                raise ValueError(f"{self.name}.{column}: a raw string column must be numeric")
        stray = set(self.number_formats) - set(self.raw_string_columns)
        if stray:
            raise ValueError(f"{self.name}: number formats for non-string columns {stray}")

    def number_format(self, column: str) -> NumberFormat:
        """The declared format of ``column`` (:data:`PT_BR` when none is declared).

        Args:
            column: A column of the table.

        Returns:
            Its number format.
        """
        return self.number_formats.get(column, PT_BR)

    @property
    def text_keys(self) -> tuple[str, ...]:
        """This table's string columns listed in :data:`TEXT_KEY_COLUMNS`."""
        return tuple(
            c for c, dtype in self.schema.items() if c in TEXT_KEY_COLUMNS and dtype == pl.String()
        )

    @property
    def raw_schema(self) -> dict[str, pl.DataType]:
        """The schema of the raw export: the string-typed columns as ``pl.String``."""
        return {
            name: (pl.String() if name in self.raw_string_columns else dtype)
            for name, dtype in self.schema.items()
        }

    @property
    def raw_file(self) -> str:
        """File name of the raw export under ``$BI_PLATFORM_HOME/raw/retail``."""
        return f"{self.name}.parquet"


TABLES: dict[str, RetailTable] = {
    t.name: t
    for t in (
        RetailTable(
            "admmat",
            "Product x store (UNE) snapshot: prices, ABC classes, 12 months and 5 weeks "
            "of sales, stock at DC and store, logistics. The team's main table.",
            ADMMAT_SCHEMA,
            key=("UNE", "PRODUTO"),
            raw_string_columns=RAW_STRING_COLUMNS,
            number_formats=RAW_NUMBER_FORMATS,
        ),
        RetailTable(
            "lojas",
            "Stores (UNE): name, city, state, region, sales area, opening date.",
            {
                "UNE": pl.Int32(),
                "UNE_NOME": pl.String(),
                "CIDADE": pl.String(),
                "UF": pl.String(),
                "REGIAO": pl.String(),
                "AREA_VENDA_M2": pl.Float64(),
                "DATA_ABERTURA": pl.Date(),
                "ATIVA": pl.Boolean(),
            },
            key=("UNE",),
        ),
        RetailTable(
            "produtos",
            "Product master: name, packaging, EAN, segment hierarchy, manufacturer.",
            {
                "PRODUTO": pl.Int64(),
                "NOME": pl.String(),
                "EMBALAGEM": pl.String(),
                "EAN": pl.String(),
                "NOMESEGMENTO": pl.String(),
                "NOMECATEGORIA": pl.String(),
                "NOMEGRUPO": pl.String(),
                "NOMESUBGRUPO": pl.String(),
                "COD_FABRICANTE": pl.Int32(),
                "DATA_CADASTRO": pl.Date(),
                "FORALINHA": pl.String(),
            },
            key=("PRODUTO",),
        ),
        RetailTable(
            "fabricantes",
            "Manufacturers and suppliers: name, CNPJ, state, contractual lead time.",
            {
                "COD_FABRICANTE": pl.Int32(),
                "NOMEFABRICANTE": pl.String(),
                "CNPJ": pl.String(),
                "UF": pl.String(),
                "LEADTIME_DIAS": pl.Int32(),
            },
            key=("COD_FABRICANTE",),
        ),
        RetailTable(
            "segmentos",
            "Product hierarchy: segment > category > group > subgroup, with codes.",
            {
                "COD_SUBGRUPO": pl.Int32(),
                "NOMESEGMENTO": pl.String(),
                "NOMECATEGORIA": pl.String(),
                "NOMEGRUPO": pl.String(),
                "NOMESUBGRUPO": pl.String(),
            },
            key=("COD_SUBGRUPO",),
        ),
        RetailTable(
            "vendas_diarias",
            "Daily sales per store and product: quantity and net value.",
            {
                "DATA": pl.Date(),
                "UNE": pl.Int32(),
                "PRODUTO": pl.Int64(),
                "QTDE": pl.Float64(),
                "VALOR_LIQUIDO": pl.Float64(),
            },
            key=("DATA", "UNE", "PRODUTO"),
        ),
        RetailTable(
            "pedidos_compra",
            "Purchase orders to manufacturers: product, quantity, value, dates, status.",
            {
                "PEDIDO": pl.Int64(),
                "ITEM": pl.Int32(),
                "COD_FABRICANTE": pl.Int32(),
                "PRODUTO": pl.Int64(),
                "QTDE": pl.Float64(),
                "VALOR": pl.Float64(),
                "DATA_PEDIDO": pl.Date(),
                "DATA_PREVISTA": pl.Date(),
                "SITUACAO": pl.String(),
            },
            key=("PEDIDO", "ITEM"),
        ),
        RetailTable(
            "transferencias",
            "Stock transfers between the DC and stores (UNE): origin, destination, quantity.",
            {
                "TRANSFERENCIA": pl.Int64(),
                "DATA": pl.Date(),
                "UNE_ORIGEM": pl.Int32(),
                "UNE_DESTINO": pl.Int32(),
                "PRODUTO": pl.Int64(),
                "QTDE": pl.Float64(),
                "SITUACAO": pl.String(),
            },
            key=("TRANSFERENCIA",),
        ),
        RetailTable(
            "inventarios",
            "Stock counts per store and product: system vs counted quantity.",
            {
                "DATA_INVENTARIO": pl.Date(),
                "UNE": pl.Int32(),
                "PRODUTO": pl.Int64(),
                "QTDE_SISTEMA": pl.Float64(),
                "QTDE_CONTADA": pl.Float64(),
            },
            key=("DATA_INVENTARIO", "UNE", "PRODUTO"),
        ),
        RetailTable(
            "precos",
            "Price history per product and store: price and the date it took effect.",
            {
                "PRODUTO": pl.Int64(),
                "UNE": pl.Int32(),
                "DATA_VIGENCIA": pl.Date(),
                "PRECO": pl.Float64(),
            },
            key=("PRODUTO", "UNE", "DATA_VIGENCIA"),
        ),
        RetailTable(
            "promocoes",
            "Promotions: product, period and discount.",
            {
                "PROMOCAO": pl.Int64(),
                "PRODUTO": pl.Int64(),
                "INICIO": pl.Date(),
                "FIM": pl.Date(),
                "DESCONTO_PCT": pl.Float64(),
            },
            key=("PROMOCAO", "PRODUTO"),
        ),
        RetailTable(
            "devolucoes",
            "Customer returns per store and product, with the reason.",
            {
                "DEVOLUCAO": pl.Int64(),
                "DATA": pl.Date(),
                "UNE": pl.Int32(),
                "PRODUTO": pl.Int64(),
                "QTDE": pl.Float64(),
                "MOTIVO": pl.String(),
            },
            key=("DEVOLUCAO",),
        ),
    )
}

#: Only in the `large` profile: sale line items, a fact table over 600 MB on disk.
LARGE_FACT_TABLE = RetailTable(
    "vendas_itens",
    "Sale line items (coupon x item) for a year: the fact table that routes to Dask.",
    {
        "CUPOM": pl.Int64(),
        "ITEM": pl.Int16(),
        "DATA_HORA": pl.Datetime("us"),
        "UNE": pl.Int32(),
        "PRODUTO": pl.Int64(),
        "QTDE": pl.Float64(),
        "PRECO_UNITARIO": pl.Float64(),
        "DESCONTO": pl.Float64(),
        "VALOR_LIQUIDO": pl.Float64(),
        "FORMA_PAGAMENTO": pl.String(),
        "OPERADOR": pl.Int32(),
        "PDV": pl.Int16(),
    },
    key=("CUPOM", "ITEM"),
)

ALL_TABLES: dict[str, RetailTable] = {**TABLES, LARGE_FACT_TABLE.name: LARGE_FACT_TABLE}
