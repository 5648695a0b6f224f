"""Lookup tables of the person registry ("dados cadastrais"): the codes of the source
tables ``pedt001``/``pedt002`` and what they decode to.

Pure data, no Spark and no Dagster: the optimized transforms broadcast these as small
DataFrames, the naive reference implementation (tests) spells them out as ``when()``
chains, and the sample-data generator draws valid codes from them.
"""

from __future__ import annotations

from typing import Final

#: ``peestciv``: civil-status code -> description (codes 1, 3-8 and A-H; 2 and 9 retired).
CIVIL_STATUS: Final[dict[str, str]] = {
    "1": "SOLTEIRO",
    "3": "CASADO",
    "4": "DIVORCIADO",
    "5": "VIUVO",
    "6": "SEPARADO JUDICIALMENTE",
    "7": "UNIAO ESTAVEL",
    "8": "DESQUITADO",
    "A": "CASADO COMUNHAO PARCIAL",
    "B": "CASADO COMUNHAO UNIVERSAL",
    "C": "CASADO SEPARACAO TOTAL DE BENS",
    "D": "CASADO PARTICIPACAO FINAL NOS AQUESTOS",
    "E": "CASADO REGIME NAO INFORMADO",
    "F": "SEPARADO DE FATO",
    "G": "NAO INFORMADO",
    "H": "OUTROS",
}

#: ``petipocu``: occupation code -> description (17 codes).
OCCUPATIONS: Final[dict[str, str]] = {
    "01": "ASSALARIADO",
    "02": "SERVIDOR PUBLICO",
    "03": "EMPRESARIO",
    "04": "PROFISSIONAL LIBERAL",
    "05": "AUTONOMO",
    "06": "APOSENTADO",
    "07": "PENSIONISTA",
    "08": "ESTUDANTE",
    "09": "DO LAR",
    "10": "MILITAR",
    "11": "PRODUTOR RURAL",
    "12": "ESTAGIARIO",
    "13": "BOLSISTA",
    "14": "MICROEMPREENDEDOR INDIVIDUAL",
    "15": "INVESTIDOR",
    "16": "SEM OCUPACAO",
    "17": "OUTROS",
}

#: ``pesexper``: sex code -> description (legal persons carry none).
SEXES: Final[dict[str, str]] = {"M": "MASCULINO", "F": "FEMININO"}

#: ``petipper``: person type -> description.
PERSON_TYPES: Final[dict[str, str]] = {"F": "FISICA", "J": "JURIDICA"}

#: ``pesegmen``: the four business segments (raw values are matched after
#: ``upper(trim(...))``; anything else decodes to null).
SEGMENTS: Final[tuple[str, ...]] = ("VAREJO", "PRIVATE", "CORPORATE", "MIDDLE MARKET")

#: ``penacper``: state-of-birth code -> (UF, state name, region). 28 rows: the 27 units of
#: the federation plus ``28`` for persons born abroad.
STATES: Final[dict[str, tuple[str, str, str]]] = {
    "01": ("AC", "ACRE", "NORTE"),
    "02": ("AL", "ALAGOAS", "NORDESTE"),
    "03": ("AP", "AMAPA", "NORTE"),
    "04": ("AM", "AMAZONAS", "NORTE"),
    "05": ("BA", "BAHIA", "NORDESTE"),
    "06": ("CE", "CEARA", "NORDESTE"),
    "07": ("DF", "DISTRITO FEDERAL", "CENTRO-OESTE"),
    "08": ("ES", "ESPIRITO SANTO", "SUDESTE"),
    "09": ("GO", "GOIAS", "CENTRO-OESTE"),
    "10": ("MA", "MARANHAO", "NORDESTE"),
    "11": ("MT", "MATO GROSSO", "CENTRO-OESTE"),
    "12": ("MS", "MATO GROSSO DO SUL", "CENTRO-OESTE"),
    "13": ("MG", "MINAS GERAIS", "SUDESTE"),
    "14": ("PA", "PARA", "NORTE"),
    "15": ("PB", "PARAIBA", "NORDESTE"),
    "16": ("PR", "PARANA", "SUL"),
    "17": ("PE", "PERNAMBUCO", "NORDESTE"),
    "18": ("PI", "PIAUI", "NORDESTE"),
    "19": ("RJ", "RIO DE JANEIRO", "SUDESTE"),
    "20": ("RN", "RIO GRANDE DO NORTE", "NORDESTE"),
    "21": ("RS", "RIO GRANDE DO SUL", "SUL"),
    "22": ("RO", "RONDONIA", "NORTE"),
    "23": ("RR", "RORAIMA", "NORTE"),
    "24": ("SC", "SANTA CATARINA", "SUL"),
    "25": ("SP", "SAO PAULO", "SUDESTE"),
    "26": ("SE", "SERGIPE", "NORDESTE"),
    "27": ("TO", "TOCANTINS", "NORTE"),
    "28": ("EX", "EXTERIOR", "EXTERIOR"),
}

#: ``petipcon`` of ``pedt003``: E-mail, Residential address, Commercial address.
CONTACT_TYPES: Final[dict[str, str]] = {"E": "EMAIL", "R": "RESIDENCIAL", "C": "COMERCIAL"}

#: ``petipbem`` of ``pedt205``: kinds of asset a person declares.
ASSET_TYPES: Final[tuple[str, ...]] = (
    "IMOVEL RESIDENCIAL",
    "IMOVEL COMERCIAL",
    "TERRENO",
    "IMOVEL RURAL",
    "AUTOMOVEL",
    "MOTOCICLETA",
    "EMBARCACAO",
    "AERONAVE",
    "APLICACAO FINANCEIRA",
    "PARTICIPACAO SOCIETARIA",
    "PREVIDENCIA PRIVADA",
    "OUTROS BENS",
)

#: Load dates are partitions ``dat_ref_carga=YYYY-MM-DD`` of every source table.
LOAD_DATE_COLUMN: Final[str] = "dat_ref_carga"

#: The source tables (directories under ``$BI_PLATFORM_HOME/raw/cadastral/``).
SOURCE_TABLES: Final[tuple[str, ...]] = ("pedt001", "pedt002", "pedt003", "pedt205")
