"""Deterministic generator of the raw exports of the person registry ("dados cadastrais").

Writes the four source tables ``pedt001`` (persons), ``pedt002`` (naturalidade and
parents), ``pedt003`` (contacts) and ``pedt205`` (assets) as Hive-style partitions
``<raw_root>/<table>/dat_ref_carga=YYYY-MM-DD/part-00000.parquet``. Every load date is a
full snapshot; the partition column is not stored inside the files.

The data is synthetic but shaped like the real export: Brazilian names (the child carries
the mother's and the father's surname), CPFs/CNPJs with valid check digits, cities of the
state of birth, raw case and stray spaces in free-text columns, and a controlled share of
dirty data (malformed document numbers, invalid codes, null dates, exact and conflicting
duplicates). :func:`generate_change_set` derives the next snapshot from an existing one
(updates, inserts, deletes) keeping the same dirty-data character.

Everything is vectorised with numpy/pyarrow and derives from ``numpy.random.default_rng``
seeded by the seed and the load date(s): the same call always gives identical files.
Partitions are written into a hidden temporary directory and renamed into place.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bi_platform.cadastral.reference import (
    ASSET_TYPES,
    CIVIL_STATUS,
    LOAD_DATE_COLUMN,
    OCCUPATIONS,
    SEGMENTS,
    SEXES,
    SOURCE_TABLES,
    STATES,
)

logger = logging.getLogger(__name__)

#: Number of persons of each sample profile.
CADASTRAL_PROFILES: dict[str, int] = {"small": 5_000, "medium": 100_000, "default": 1_000_000}

PART_FILE = "part-00000.parquet"
#: Low-cardinality columns written dictionary-encoded (the others are plain).
_DICTIONARY_COLUMNS: dict[str, tuple[str, ...]] = {
    "pedt001": (
        "petipper",
        "penomper",
        "pepriape",
        "pesegape",
        "peestciv",
        "pesexper",
        "petipocu",
        "penacper",
        "pesegmen",
        "peusualt",
    ),
    "pedt002": ("penomnat",),
    "pedt003": ("petipcon", "pecidade", "peuf"),
    "pedt205": ("petipbem",),
}
ROW_GROUP_SIZE = 128 * 1024
_EPOCH = date(1970, 1, 1)
_PARTITION_RE = re.compile(rf"^{LOAD_DATE_COLUMN}=(\d{{4}}-\d{{2}}-\d{{2}})$")
#: A well-formed document number: CPF (11 digits) or CNPJ (14 digits).
PENUMPER_PATTERN = r"^(\d{11}|\d{14})$"

# --------------------------------------------------------------------------------------
# Dirty-data rates (shares of rows; code rates of the rows the code applies to)
# --------------------------------------------------------------------------------------
LEGAL_PERSON_SHARE = 0.08
MALFORMED_PENUMPER_RATE = 0.0005
NULL_BIRTH_DATE_RATE = 0.005
EXACT_DUPLICATE_RATE = 0.003
CONFLICTING_DUPLICATE_RATE = 0.0005
NATURALIDADE_SHARE = 0.97
#: Natural persons without a father's name (legal persons never have parents).
FATHER_NULL_RATE = 0.022
#: Share of invalid codes per pedt001 code column.
INVALID_CODE_RATES: dict[str, float] = {
    "peestciv": 0.005,
    "pesexper": 0.002,
    "petipocu": 0.005,
    "penacper": 0.005,
    "pesegmen": 0.003,
}
#: The invalid values injected per code column (``None`` = null).
INVALID_CODE_VALUES: dict[str, tuple[str | None, ...]] = {
    "peestciv": ("2", "9", "Z", "", None),
    "pesexper": ("X", "I", "0", "", None),
    "petipocu": ("00", "18", "99", "1", "", None),
    "penacper": ("00", "29", "99", "", None),
    "pesegmen": ("ATACADO", "PREMIUM", "VAREJO PJ", "", "  ", None),
}
#: Columns whose invalid values only count on natural persons (legal persons carry null).
_NATURAL_ONLY = {"peestciv": tuple(CIVIL_STATUS), "pesexper": tuple(SEXES)}
#: Probability of 0..6 contacts and 0..8 assets per person (means ~2.55 and ~1.5).
CONTACTS_P = (0.10, 0.17, 0.25, 0.21, 0.14, 0.09, 0.04)
ASSETS_P = (0.35, 0.25, 0.17, 0.10, 0.06, 0.035, 0.02, 0.01, 0.005)

SCHEMAS: dict[str, pa.Schema] = {
    "pedt001": pa.schema(
        [
            ("penumper", pa.string()),
            ("petipper", pa.string()),
            ("penomper", pa.string()),
            ("pepriape", pa.string()),
            ("pesegape", pa.string()),
            ("pefecnac", pa.date32()),
            ("peestciv", pa.string()),
            ("pesexper", pa.string()),
            ("petipocu", pa.string()),
            ("penacper", pa.string()),
            ("pesegmen", pa.string()),
            ("peusualt", pa.string()),
        ]
    ),
    "pedt002": pa.schema(
        [
            ("penumper", pa.string()),
            ("penomnat", pa.string()),
            ("penommae", pa.string()),
            ("penompai", pa.string()),
        ]
    ),
    "pedt003": pa.schema(
        [
            ("penumper", pa.string()),
            ("pesequen", pa.int32()),
            ("petipcon", pa.string()),
            ("peemail", pa.string()),
            ("pelograd", pa.string()),
            ("pecidade", pa.string()),
            ("peuf", pa.string()),
            ("pecep", pa.string()),
            ("pedatalt", pa.date32()),
        ]
    ),
    "pedt205": pa.schema(
        [
            ("penumper", pa.string()),
            ("pecodbem", pa.string()),
            ("petipbem", pa.string()),
            ("pevalbem", pa.decimal128(18, 2)),
            ("pedatalt", pa.date32()),
        ]
    ),
}


# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------
def _words(text: str) -> pa.Array:
    return pa.array(text.split())


def _phrases(text: str) -> pa.Array:
    """``|``-separated phrases (line breaks and indentation ignored)."""
    return pa.array([p.strip() for p in text.replace("\n", " ").split("|")])


_MALE = _words(
    """JOSE JOAO ANTONIO FRANCISCO CARLOS PAULO PEDRO LUCAS LUIZ MARCOS LUIS GABRIEL RAFAEL
    DANIEL MARCELO BRUNO EDUARDO FELIPE RAIMUNDO RODRIGO MANOEL MATEUS ANDRE FERNANDO FABIO
    LEONARDO GUSTAVO GUILHERME LEANDRO TIAGO ANDERSON RICARDO MARCIO JORGE SEBASTIAO ALEXANDRE
    ROBERTO EDSON DIEGO VITOR SERGIO CLAUDIO JULIO RENATO ALEX IGOR MIGUEL ARTHUR HEITOR
    BERNARDO DAVI SAMUEL ENZO NICOLAS MURILO CAIO VINICIUS OTAVIO HENRIQUE THIAGO WAGNER
    ADRIANO JULIANO EMERSON WELLINGTON ROGERIO MAURICIO CESAR HUGO BENEDITO GERALDO OSVALDO
    AUGUSTO ARMANDO JOAQUIM ALBERTO ERNESTO"""
)
_FEMALE = _words(
    """MARIA ANA FRANCISCA ANTONIA ADRIANA JULIANA MARCIA FERNANDA PATRICIA ALINE SANDRA
    CAMILA AMANDA BRUNA JESSICA LETICIA JULIA LUCIANA VANESSA MARIANA GABRIELA VERA VITORIA
    LARISSA CLAUDIA BEATRIZ LUANA RITA SONIA RENATA ELIANE JOSEFA SIMONE NATALIA CRISTIANE
    CARLA DEBORA ROSANGELA JAQUELINE ROSA DANIELA ALICE HELENA LAURA VALENTINA SOPHIA ISABELA
    MANUELA LIVIA CECILIA LORENA HELOISA GIOVANNA RAQUEL TATIANE PRISCILA LUCIA TEREZA
    FABIANA KARINA MONICA DENISE ELAINE REGINA SILVIA LUIZA CAROLINA BIANCA TAIS MIRIAM IVONE
    APARECIDA CONCEICAO GLORIA"""
)
_SURNAMES = _words(
    """SILVA SANTOS OLIVEIRA SOUZA RODRIGUES FERREIRA ALVES PEREIRA LIMA GOMES COSTA RIBEIRO
    MARTINS CARVALHO ALMEIDA LOPES SOARES FERNANDES VIEIRA BARBOSA ROCHA DIAS NASCIMENTO
    ANDRADE MOREIRA NUNES MARQUES MACHADO MENDES FREITAS CARDOSO RAMOS GONCALVES SANTANA
    TEIXEIRA ARAUJO PINTO CAVALCANTI MONTEIRO MOURA CORREIA BATISTA CAMPOS CASTRO REIS MIRANDA
    PIRES FARIAS BEZERRA MELO AZEVEDO BARROS CUNHA RESENDE MATOS BRITO COELHO MEDEIROS TAVARES
    SALES LEITE FONSECA CRUZ GUIMARAES DUARTE MOTA PACHECO QUEIROZ AGUIAR BORGES SIQUEIRA
    VASCONCELOS BRANDAO MACEDO FIGUEIREDO XAVIER PRADO SAMPAIO NOGUEIRA PAIVA FRANCA ABREU
    MAIA TORRES VALENTE PEIXOTO BRAGA ASSIS"""
)
_FANTASY = _phrases(
    """NOVA ERA|BOA VISTA|SAO JORGE|SANTA LUZIA|PLANALTO|IPIRANGA|ALVORADA|PRIMAVERA|HORIZONTE|
    ESTRELA|AURORA|BANDEIRANTES|PIONEIRA|TROPICAL|ATLANTICO|SOL NASCENTE|UNIAO|PROGRESSO|
    CENTRAL|REAL|GUANABARA|CRUZEIRO|PANTANAL|SERRA AZUL"""
)
_ACTIVITIES = _phrases(
    """COMERCIO DE ALIMENTOS|TRANSPORTES|CONSTRUCOES|ENGENHARIA|CONSULTORIA|SERVICOS MEDICOS|
    INDUSTRIA METALURGICA|DISTRIBUIDORA DE BEBIDAS|AUTO PECAS|MATERIAIS DE CONSTRUCAO|
    TECNOLOGIA DA INFORMACAO|AGROPECUARIA|COMERCIO DE ROUPAS|FARMACIA|SUPERMERCADOS|LOGISTICA|
    EMPREENDIMENTOS IMOBILIARIOS|PARTICIPACOES|INDUSTRIA DE PLASTICOS|CONTABILIDADE|
    ADVOGADOS ASSOCIADOS|PADARIA E CONFEITARIA|RESTAURANTE|HOTELARIA|EDUCACIONAL|
    CLINICA ODONTOLOGICA|TEXTIL|MOVEIS|INSTALACOES ELETRICAS|INFORMATICA|PAPELARIA|CALCADOS|
    COMBUSTIVEIS|ALIMENTOS|IMPORTACAO E EXPORTACAO|SEGURANCA|SERVICOS DE LIMPEZA|
    GRAFICA E EDITORA|OTICA|VEICULOS"""
)
_COMPANY_SUFFIXES = pa.array(["LTDA", "S.A.", "LTDA ME", "LTDA EPP"])
_COMPANY_SUFFIX_P = (0.60, 0.20, 0.12, 0.08)
_STREET_TYPES = pa.array(["RUA", "AVENIDA", "TRAVESSA", "ALAMEDA", "ESTRADA"])
_STREET_TYPE_P = (0.70, 0.16, 0.05, 0.05, 0.04)
_STREETS = _phrases(
    """DAS FLORES|SETE DE SETEMBRO|XV DE NOVEMBRO|SAO JOAO|TIRADENTES|DOM PEDRO II|
    SANTOS DUMONT|BARAO DO RIO BRANCO|GETULIO VARGAS|JOSE BONIFACIO|DUQUE DE CAXIAS|
    MARECHAL DEODORO|RUI BARBOSA|CASTRO ALVES|DAS PALMEIRAS|DOS ANDRADAS|DA CONSOLACAO|AUGUSTA|
    VOLUNTARIOS DA PATRIA|DAS ACACIAS|DOS IPES|PRINCESA ISABEL|BENJAMIN CONSTANT|
    FLORIANO PEIXOTO|PRESIDENTE VARGAS|DA INDEPENDENCIA|DA REPUBLICA|DO COMERCIO|
    SANTA CATARINA|BAHIA|PARANA|AMAZONAS|DOS BANDEIRANTES|DAS AMERICAS|BRASIL|PAULISTA|
    ATLANTICA|NOSSA SENHORA DE COPACABANA|DOS GUARARAPES|CARLOS GOMES|MACHADO DE ASSIS|
    MONTEIRO LOBATO|OSWALDO CRUZ|VINTE E UM DE ABRIL|PADRE ANCHIETA|SAO BENTO|DA LIBERDADE|
    DAS MANGUEIRAS|DOS PINHEIROS|JOAO PESSOA|PEDRO ALVARES CABRAL|DAS LARANJEIRAS"""
)
_EMAIL_DOMAINS = pa.array(
    [
        "gmail.com",
        "hotmail.com",
        "yahoo.com.br",
        "outlook.com",
        "uol.com.br",
        "bol.com.br",
        "terra.com.br",
        "icloud.com",
    ]
)
_EMAIL_DOMAIN_P = (0.45, 0.20, 0.08, 0.10, 0.05, 0.04, 0.03, 0.05)
_COMPANY_MAILBOXES = pa.array(["contato", "financeiro", "comercial", "adm", "atendimento"])

#: Cities per state code (``28`` = abroad).
_CITIES: dict[str, tuple[str, ...]] = {
    "01": ("RIO BRANCO", "CRUZEIRO DO SUL", "SENA MADUREIRA"),
    "02": ("MACEIO", "ARAPIRACA", "PALMEIRA DOS INDIOS"),
    "03": ("MACAPA", "SANTANA", "LARANJAL DO JARI"),
    "04": ("MANAUS", "PARINTINS", "ITACOATIARA", "MANACAPURU"),
    "05": ("SALVADOR", "FEIRA DE SANTANA", "VITORIA DA CONQUISTA", "CAMACARI", "ITABUNA"),
    "06": ("FORTALEZA", "CAUCAIA", "JUAZEIRO DO NORTE", "SOBRAL", "MARACANAU"),
    "07": ("BRASILIA", "TAGUATINGA", "CEILANDIA"),
    "08": ("VITORIA", "VILA VELHA", "SERRA", "CARIACICA", "CACHOEIRO DE ITAPEMIRIM"),
    "09": ("GOIANIA", "APARECIDA DE GOIANIA", "ANAPOLIS", "RIO VERDE"),
    "10": ("SAO LUIS", "IMPERATRIZ", "CAXIAS", "TIMON"),
    "11": ("CUIABA", "VARZEA GRANDE", "RONDONOPOLIS", "SINOP"),
    "12": ("CAMPO GRANDE", "DOURADOS", "TRES LAGOAS", "CORUMBA"),
    "13": (
        "BELO HORIZONTE",
        "UBERLANDIA",
        "CONTAGEM",
        "JUIZ DE FORA",
        "BETIM",
        "MONTES CLAROS",
        "UBERABA",
    ),
    "14": ("BELEM", "ANANINDEUA", "SANTAREM", "MARABA"),
    "15": ("JOAO PESSOA", "CAMPINA GRANDE", "SANTA RITA", "PATOS"),
    "16": ("CURITIBA", "LONDRINA", "MARINGA", "PONTA GROSSA", "CASCAVEL", "FOZ DO IGUACU"),
    "17": ("RECIFE", "JABOATAO DOS GUARARAPES", "OLINDA", "CARUARU", "PETROLINA"),
    "18": ("TERESINA", "PARNAIBA", "PICOS"),
    "19": (
        "RIO DE JANEIRO",
        "NITEROI",
        "SAO GONCALO",
        "DUQUE DE CAXIAS",
        "NOVA IGUACU",
        "PETROPOLIS",
        "CAMPOS DOS GOYTACAZES",
    ),
    "20": ("NATAL", "MOSSORO", "PARNAMIRIM"),
    "21": ("PORTO ALEGRE", "CAXIAS DO SUL", "PELOTAS", "CANOAS", "SANTA MARIA", "PASSO FUNDO"),
    "22": ("PORTO VELHO", "JI-PARANA", "ARIQUEMES"),
    "23": ("BOA VISTA", "RORAINOPOLIS", "CARACARAI"),
    "24": ("FLORIANOPOLIS", "JOINVILLE", "BLUMENAU", "CHAPECO", "ITAJAI", "CRICIUMA"),
    "25": (
        "SAO PAULO",
        "GUARULHOS",
        "CAMPINAS",
        "SAO BERNARDO DO CAMPO",
        "SANTO ANDRE",
        "OSASCO",
        "RIBEIRAO PRETO",
        "SOROCABA",
        "SANTOS",
        "SAO JOSE DOS CAMPOS",
    ),
    "26": ("ARACAJU", "NOSSA SENHORA DO SOCORRO", "LAGARTO"),
    "27": ("PALMAS", "ARAGUAINA", "GURUPI"),
    "28": ("LISBOA", "PORTO", "BUENOS AIRES", "MONTEVIDEU", "ASSUNCAO", "MIAMI", "ROMA"),
}
_STATE_CODES = tuple(STATES)
#: Rough population shares of the states of birth (``28`` = abroad).
_STATE_WEIGHTS = np.array(
    [
        *(0.4, 1.6, 0.4, 2.0, 7.0, 4.3, 1.5, 2.0, 3.3, 3.3, 1.7, 1.3, 10.0, 4.0),
        *(2.0, 5.5, 4.5, 1.6, 8.0, 1.7, 5.5, 0.8, 0.3, 3.5, 22.0, 1.1, 0.8, 1.0),
    ]
)
_STATE_P = _STATE_WEIGHTS / _STATE_WEIGHTS.sum()
_ADDRESS_STATE_P = np.append(_STATE_WEIGHTS[:-1], 0.0) / _STATE_WEIGHTS[:-1].sum()
_CITY_NAMES = pa.array([c for code in _STATE_CODES for c in _CITIES[code]])
_CITY_UF = pa.array([STATES[code][0] for code in _STATE_CODES for _ in _CITIES[code]])
_CITY_COUNT = np.array([len(_CITIES[code]) for code in _STATE_CODES])
_CITY_OFFSET = np.concatenate([[0], np.cumsum(_CITY_COUNT)[:-1]])

_CIVIL_CODES = pa.array(list(CIVIL_STATUS))
_CIVIL_W = np.array([40, 20, 7, 4, 2, 3, 0.5, 12, 5, 2, 0.5, 2, 1, 0.5, 0.5])
_CIVIL_P = _CIVIL_W / _CIVIL_W.sum()
_OCCUPATION_CODES = pa.array(list(OCCUPATIONS))
_OCC_F_W = np.array([30, 10, 4, 6, 10, 12, 3, 8, 5, 2, 3, 2, 1, 1, 1, 1, 1])
_OCC_F_P = _OCC_F_W / _OCC_F_W.sum()
_OCC_J_W = np.array([0, 0, 50, 5, 0, 0, 0, 0, 0, 0, 10, 0, 0, 10, 15, 0, 10])
_OCC_J_P = _OCC_J_W / _OCC_J_W.sum()
_SEGMENTS = pa.array(list(SEGMENTS))
_SEGMENT_F_P = (0.86, 0.10, 0.01, 0.03)
_SEGMENT_J_P = (0.40, 0.0, 0.25, 0.35)
_ASSET_TYPES = pa.array(list(ASSET_TYPES))
_ASSET_W = np.array([20, 5, 6, 3, 25, 8, 1, 0.2, 18, 5, 6, 2.8])
_ASSET_P = _ASSET_W / _ASSET_W.sum()
#: Median value (R$) per asset type; values are log-normal around it.
_ASSET_MEDIAN = np.array(
    [350e3, 600e3, 150e3, 800e3, 60e3, 12e3, 120e3, 2.5e6, 40e3, 200e3, 80e3, 10e3]
)
_CONTACT_TYPES = pa.array(["E", "R", "C"])
_CONTACT_F_CDF = np.cumsum([0.42, 0.40, 0.18])
_CONTACT_J_CDF = np.cumsum([0.35, 0.10, 0.55])
#: Last users: ``U`` + 6 digits drawn from this range (conflicts use 900000+).
_USER_RANGE = (100_000, 100_000 + 2_500)


# --------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CadastralSourceSummary:
    """What one load date's snapshot holds, measured from its rows."""

    path: Path
    load_date: date
    persons: int
    rows: dict[str, int]
    malformed_penumper: int
    invalid_codes: dict[str, int]
    null_birth_dates: int
    exact_duplicates: dict[str, int]
    conflicting_duplicates: int
    generated: bool
    seconds: float

    def partition_dir(self, table: str) -> Path:
        """The ``dat_ref_carga=`` directory of ``table`` for this load date."""
        return partition_dir(self.path, table, self.load_date)


@dataclass(frozen=True)
class CadastralChangeSummary:
    """Persons inserted/updated/deleted between two snapshots, and the new snapshot."""

    path: Path
    from_date: date
    to_date: date
    inserted: int
    updated: int
    deleted: int
    snapshot: CadastralSourceSummary
    generated: bool
    seconds: float

    @property
    def rows(self) -> dict[str, int]:
        """Rows per table of the ``to_date`` snapshot."""
        return self.snapshot.rows


# --------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------
def partition_dir(raw_root: Path, table: str, load_date: date) -> Path:
    """``<raw_root>/<table>/dat_ref_carga=YYYY-MM-DD``."""
    return Path(raw_root) / table / f"{LOAD_DATE_COLUMN}={load_date.isoformat()}"


def load_dates(raw_root: Path, table: str = "pedt001") -> list[date]:
    """The load dates (sorted) for which ``table`` has a partition with Parquet files."""
    table_dir = Path(raw_root) / table
    if not table_dir.is_dir():
        return []
    found = []
    for child in table_dir.iterdir():
        match = _PARTITION_RE.match(child.name)
        if match and child.is_dir() and any(child.glob("*.parquet")):
            found.append(date.fromisoformat(match.group(1)))
    return sorted(found)


def _complete(raw_root: Path, load_date: date) -> bool:
    return all(any(partition_dir(raw_root, t, load_date).glob("*.parquet")) for t in SOURCE_TABLES)


def read_snapshot(raw_root: Path, load_date: date) -> dict[str, pa.Table]:
    """All four tables of one load date (every part file, in name order)."""
    tables = {}
    for table in SOURCE_TABLES:
        files = sorted(partition_dir(raw_root, table, load_date).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(
                f"no {table} snapshot for {load_date.isoformat()} under {raw_root}"
            )
        parts = [pq.ParquetFile(f).read() for f in files]
        tables[table] = pa.concat_tables(parts).combine_chunks()
    return tables


def _write_snapshot(raw_root: Path, load_date: date, tables: dict[str, pa.Table]) -> None:
    """Write the four partitions into hidden temp dirs, then rename them into place
    (``pedt001`` last, so a complete ``pedt001`` partition means a complete snapshot)."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staged: dict[str, Path] = {}
    trash: list[Path] = []
    try:
        for table in SOURCE_TABLES:
            tmp = Path(raw_root) / table / f".tmp-{load_date.isoformat()}-{token}"
            tmp.mkdir(parents=True)
            staged[table] = tmp
        with ThreadPoolExecutor(max_workers=len(SOURCE_TABLES)) as pool:
            writes = [
                pool.submit(
                    pq.write_table,
                    tables[table],
                    staged[table] / PART_FILE,
                    compression="snappy",
                    row_group_size=ROW_GROUP_SIZE,
                    use_dictionary=list(_DICTIONARY_COLUMNS[table]),
                )
                for table in SOURCE_TABLES
            ]
            for write in writes:
                write.result()
        for table in reversed(SOURCE_TABLES):
            target = partition_dir(raw_root, table, load_date)
            if target.exists():
                old = target.with_name(f".old-{load_date.isoformat()}-{token}")
                target.rename(old)
                trash.append(old)
            staged.pop(table).rename(target)
    finally:
        for leftover in [*staged.values(), *trash]:
            shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Vectorised helpers
# --------------------------------------------------------------------------------------
def _day(d: date) -> int:
    return (d - _EPOCH).days


def _count(rng: np.random.Generator, rate: float, n: int, exact: bool) -> int:
    """How many rows get a trait: round(rate*n) (at least 1) for a fresh snapshot,
    stochastic rounding for the small batches of a change set."""
    if n <= 0:
        return 0
    if exact:
        return min(n, max(1, round(rate * n)))
    return min(n, int(np.floor(rate * n + rng.random())))


def _take(values: pa.Array, idx: np.ndarray) -> pa.Array:
    return values.take(pa.array(idx, type=pa.int64()))


def _pick(rng: np.random.Generator, values: pa.Array, n: int, p=None) -> pa.Array:
    if p is None:
        return _take(values, rng.integers(0, len(values), n))
    return _take(values, rng.choice(len(values), n, p=p))


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _scatter(arr: pa.Array, positions: np.ndarray, values: pa.Array) -> pa.Array:
    """``arr`` with ``arr[positions] = values``."""
    if len(positions) == 0:
        return arr
    arr, values = _flat(arr), _flat(values)
    n = len(arr)
    idx = np.arange(n, dtype=np.int64)
    idx[positions] = n + np.arange(len(positions))
    return _take(pa.concat_arrays([arr, values.cast(arr.type)]), idx)


def _spread(values: pa.Array, positions: np.ndarray, n: int) -> pa.Array:
    """A length-``n`` array holding ``values`` at ``positions`` and null elsewhere."""
    idx = np.zeros(n, dtype=np.int64)
    idx[positions] = np.arange(len(positions))
    missing = np.ones(n, dtype=bool)
    missing[positions] = False
    return _flat(values).take(pa.array(idx, mask=missing))


def _padded(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pa.array(values, type=pa.int64()).cast(pa.string()), width, "0")


def _join(*parts, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


def _dates(days: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(days.astype(np.int32), type=pa.date32(), mask=null_mask)


def _decimal(cents: np.ndarray) -> pa.Array:
    """decimal128(18,2) from non-negative int64 cents (little-endian 128-bit buffer)."""
    buf = np.zeros((len(cents), 2), dtype=np.int64)
    buf[:, 0] = cents
    return pa.Array.from_buffers(pa.decimal128(18, 2), len(cents), [None, pa.py_buffer(buf)])


def _raw_case(rng: np.random.Generator, arr: pa.Array, *, lower: bool = False) -> pa.Array:
    """Free text as typed by hand: mostly as-is, some title/lower/upper case, a few stray
    leading/trailing spaces."""
    arr = _flat(arr)
    n = len(arr)
    u = rng.random(n)
    title, other = np.flatnonzero(u < 0.08), np.flatnonzero((u >= 0.08) & (u < 0.13))
    out = _scatter(arr, title, pc.utf8_title(_take(arr, title)))
    alt = pc.utf8_upper if lower else pc.utf8_lower
    out = _scatter(out, other, alt(_take(arr, other)))
    s = rng.random(n)
    lead = pc.if_else(pa.array(s < 0.03), " ", "")
    trail = pc.if_else(pa.array((s >= 0.03) & (s < 0.06)), "  ", "")
    return _join(lead, out, trail)


def _users(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(*_USER_RANGE, n)


def _user_codes(numbers: np.ndarray) -> pa.Array:
    return _join("U", _padded(numbers, 6))


def _unique_new(rng: np.random.Generator, n: int, high: int, taken: np.ndarray) -> np.ndarray:
    """``n`` distinct integers in ``[0, high)`` not in ``taken`` (deterministic)."""
    taken = np.sort(taken)
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        cand = rng.integers(0, high, int((n - len(out)) * 1.05) + 16)
        cand = np.concatenate([out, cand])
        _, first = np.unique(cand, return_index=True)
        cand = cand[np.sort(first)]
        at = np.searchsorted(taken, cand).clip(0, max(len(taken) - 1, 0))
        out = cand[taken[at] != cand] if len(taken) else cand
    return out[:n]


def _check_digit(digits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    r = (digits * weights).sum(axis=1) % 11
    return np.where(r < 2, 0, 11 - r)


def _cpf(base: np.ndarray) -> np.ndarray:
    """11-digit CPF numbers (with valid check digits) from 9-digit bases."""
    d = (base[:, None] // 10 ** np.arange(8, -1, -1)) % 10
    dv1 = _check_digit(d, np.arange(10, 1, -1))
    dv2 = _check_digit(np.column_stack([d, dv1]), np.arange(11, 1, -1))
    return base * 100 + dv1 * 10 + dv2


def _cnpj(base: np.ndarray) -> np.ndarray:
    """14-digit CNPJ numbers (head office ``0001``, valid check digits) from 8-digit bases."""
    root = base * 10_000 + 1
    d = (root[:, None] // 10 ** np.arange(11, -1, -1)) % 10
    w1 = np.array([5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    dv1 = _check_digit(d, w1)
    dv2 = _check_digit(np.column_stack([d, dv1]), np.concatenate([[6], w1]))
    return root * 100 + dv1 * 10 + dv2


def _taken_bases(pedt001: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """CPF and CNPJ bases already in use by the well-formed document numbers."""
    pen = pedt001["penumper"].combine_chunks()
    ok = pc.fill_null(pc.match_substring_regex(pen, PENUMPER_PATTERN), False)
    valid = pen.filter(ok)
    lengths = pc.utf8_length(valid).to_numpy()
    numbers = pc.cast(valid, pa.int64()).to_numpy()
    return numbers[lengths == 11] // 100, numbers[lengths == 14] // 1_000_000


def _penumpers(
    rng: np.random.Generator, is_j: np.ndarray, taken: tuple[np.ndarray, np.ndarray]
) -> pa.Array:
    numbers = np.empty(len(is_j), dtype=np.int64)
    numbers[~is_j] = _cpf(_unique_new(rng, int((~is_j).sum()), 10**9, taken[0]))
    numbers[is_j] = _cnpj(_unique_new(rng, int(is_j.sum()), 10**8, taken[1]))
    text = pa.array(numbers).cast(pa.string())
    return pc.if_else(pa.array(is_j), pc.utf8_lpad(text, 14, "0"), pc.utf8_lpad(text, 11, "0"))


def _malformed(rng: np.random.Generator, valid: pa.Array) -> pa.Array:
    """Broken variants of document numbers: null, empty, one digit short, one too many,
    letters, punctuation."""
    k = len(valid)
    kind = rng.integers(0, 6, k)
    variants = [
        pa.nulls(k, pa.string()),
        pa.array([""] * k, pa.string()),
        pc.utf8_slice_codeunits(valid, 0, -1),
        _join(valid, "0"),
        _join("AB", pc.utf8_slice_codeunits(valid, 2)),
        _join(
            pc.utf8_slice_codeunits(valid, 0, 3),
            ".",
            pc.utf8_slice_codeunits(valid, 3, 6),
            ".",
            pc.utf8_slice_codeunits(valid, 6, 9),
            "-",
            pc.utf8_slice_codeunits(valid, 9),
        ),
    ]
    out = variants[0]
    for i, variant in enumerate(variants[1:], start=1):
        out = pc.if_else(pa.array(kind == i), variant, out)
    return out


def _inject(
    rng: np.random.Generator,
    arr: pa.Array,
    eligible: np.ndarray,
    rate: float,
    bad: tuple[str | None, ...],
    exact: bool,
) -> pa.Array:
    k = _count(rng, rate, len(eligible), exact)
    if k == 0:
        return arr
    pos = rng.choice(eligible, k, replace=False)
    values = _pick(rng, pa.array(bad, pa.string()), k)
    return _scatter(arr, pos, values)


def _company_names(rng: np.random.Generator, n: int) -> pa.Array:
    u = rng.random(n)
    single = _pick(rng, _SURNAMES, n)
    pair = _join(single, " & ", _pick(rng, _SURNAMES, n))
    prefix = pc.if_else(pa.array(u < 0.30), _pick(rng, _FANTASY, n), single)
    prefix = pc.if_else(pa.array(u >= 0.90), pair, prefix)
    activity = _pick(rng, _ACTIVITIES, n)
    suffix = _pick(rng, _COMPANY_SUFFIXES, n, p=_COMPANY_SUFFIX_P)
    return _join(prefix, activity, suffix, sep=" ")


def _cities_of(rng: np.random.Generator, state_idx: np.ndarray) -> np.ndarray:
    """A city index of each state."""
    within = np.floor(rng.random(len(state_idx)) * _CITY_COUNT[state_idx]).astype(np.int64)
    return _CITY_OFFSET[state_idx] + within


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------
@dataclass
class _People:
    """Per-person arrays a snapshot's child tables are derived from."""

    pedt001: pa.Table
    is_j: np.ndarray
    state_idx: np.ndarray
    well_formed: np.ndarray


def _persons(
    rng: np.random.Generator,
    n: int,
    day: int,
    taken: tuple[np.ndarray, np.ndarray],
    exact: bool,
) -> _People:
    """``n`` persons (one pedt001 row each) with malformed numbers and invalid codes."""
    is_j = rng.random(n) < LEGAL_PERSON_SHARE
    j_mask = pa.array(is_j)
    female = rng.random(n) < 0.51
    natural = np.flatnonzero(~is_j)

    penumper = _penumpers(rng, is_j, taken)
    malformed = rng.choice(n, _count(rng, MALFORMED_PENUMPER_RATE, n, exact), replace=False)
    penumper = _scatter(penumper, malformed, _malformed(rng, _take(penumper, malformed)))
    well_formed = np.ones(n, dtype=bool)
    well_formed[malformed] = False

    first = pc.if_else(pa.array(female), _pick(rng, _FEMALE, n), _pick(rng, _MALE, n))
    blank = pc.if_else(pa.array(rng.random(n) < 0.5), "", pa.scalar(None, pa.string()))
    penomper = pc.if_else(j_mask, _company_names(rng, n), first)
    pepriape = pc.if_else(j_mask, blank, _pick(rng, _SURNAMES, n))
    pesegape = pc.if_else(j_mask, blank, _pick(rng, _SURNAMES, n))

    age = np.where(is_j, rng.integers(180, 60 * 365, n), rng.integers(18 * 365, 90 * 365, n))
    birth_null = np.zeros(n, dtype=bool)
    birth_null[rng.choice(n, _count(rng, NULL_BIRTH_DATE_RATE, n, exact), replace=False)] = True
    pefecnac = _dates(day - age, birth_null)

    null = pa.scalar(None, pa.string())
    columns = {
        "peestciv": pc.if_else(j_mask, null, _pick(rng, _CIVIL_CODES, n, p=_CIVIL_P)),
        "pesexper": pc.if_else(j_mask, null, pc.if_else(pa.array(female), "F", "M")),
        "petipocu": pc.if_else(
            j_mask,
            _pick(rng, _OCCUPATION_CODES, n, p=_OCC_J_P),
            _pick(rng, _OCCUPATION_CODES, n, p=_OCC_F_P),
        ),
    }
    state_idx = rng.choice(len(_STATE_CODES), n, p=_STATE_P)
    columns["penacper"] = _take(pa.array(_STATE_CODES), state_idx)
    segment = pc.if_else(
        j_mask, _pick(rng, _SEGMENTS, n, p=_SEGMENT_J_P), _pick(rng, _SEGMENTS, n, p=_SEGMENT_F_P)
    )
    columns["pesegmen"] = _raw_case(rng, segment)
    everyone = np.arange(n)
    for column, rate in INVALID_CODE_RATES.items():
        eligible = natural if column in _NATURAL_ONLY else everyone
        columns[column] = _inject(
            rng, columns[column], eligible, rate, INVALID_CODE_VALUES[column], exact
        )

    table = pa.Table.from_arrays(
        [
            penumper,
            pc.if_else(j_mask, "J", "F"),
            penomper,
            pepriape,
            pesegape,
            pefecnac,
            columns["peestciv"],
            columns["pesexper"],
            columns["petipocu"],
            columns["penacper"],
            columns["pesegmen"],
            _user_codes(_users(rng, n)),
        ],
        schema=SCHEMAS["pedt001"],
    )
    return _People(table, is_j, state_idx, well_formed)


def _with_person_duplicates(
    rng: np.random.Generator, people: _People, day: int, exact: bool
) -> pa.Table:
    """pedt001 plus exact duplicate rows and conflicting rows (same penumper, other
    birth date and last user) of distinct well-formed persons."""
    n = people.pedt001.num_rows
    candidates = np.flatnonzero(people.well_formed)
    k_exact = _count(rng, EXACT_DUPLICATE_RATE, n, exact)
    k_conflict = _count(rng, CONFLICTING_DUPLICATE_RATE, n, exact)
    chosen = rng.choice(candidates, min(len(candidates), k_exact + k_conflict), replace=False)
    exact_rows = people.pedt001.take(chosen[:k_exact])
    conflict = people.pedt001.take(chosen[k_exact:])
    m = conflict.num_rows
    birth = conflict["pefecnac"].combine_chunks()
    days = pc.fill_null(birth.cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
    shifted = np.where(birth.is_null().to_numpy(zero_copy_only=False), day - 40 * 365, days)
    shifted = shifted - rng.integers(1, 400, m)
    conflict = conflict.set_column(5, "pefecnac", _dates(shifted))
    conflict = conflict.set_column(11, "peusualt", _user_codes(rng.integers(900_000, 1_000_000, m)))
    return pa.concat_tables([people.pedt001, exact_rows, conflict])


def _pedt002(rng: np.random.Generator, people: _People, exact: bool) -> pa.Table:
    """Naturalidade (a city of the true state of birth) and parents' names."""
    n = people.pedt001.num_rows
    idx = np.flatnonzero(rng.random(n) < NATURALIDADE_SHARE)
    m = len(idx)
    t = people.pedt001.take(idx)
    j_mask = pa.array(people.is_j[idx])
    city = _take(_CITY_NAMES, _cities_of(rng, people.state_idx[idx]))
    null = pa.scalar(None, pa.string())
    mother = _join(_pick(rng, _FEMALE, m), _pick(rng, _SURNAMES, m), t["pepriape"], sep=" ")
    father = _join(_pick(rng, _MALE, m), _pick(rng, _SURNAMES, m), t["pesegape"], sep=" ")
    no_father = pa.array(people.is_j[idx] | (rng.random(m) < FATHER_NULL_RATE))
    return pa.Table.from_arrays(
        [
            t["penumper"].combine_chunks(),
            _raw_case(rng, city),
            pc.if_else(j_mask, null, mother),
            pc.if_else(no_father, null, father),
        ],
        schema=SCHEMAS["pedt002"],
    )


def _contacts(
    rng: np.random.Generator,
    persons: pa.Table,
    is_j: np.ndarray,
    counts: np.ndarray,
    seq_start: np.ndarray,
    day_lo: int,
    day_hi: int,
) -> pa.Table:
    """``counts[i]`` contacts of person ``i`` (pedt001 rows), numbered from
    ``seq_start[i]``, updated on a day in ``[day_lo, day_hi]``."""
    owner = np.repeat(np.arange(len(counts)), counts)
    m = len(owner)
    starts = np.cumsum(counts) - counts
    seq = np.arange(m) - np.repeat(starts, counts) + np.repeat(seq_start, counts)
    u = rng.random(m)
    cdf = np.where(is_j[owner][:, None], _CONTACT_J_CDF, _CONTACT_F_CDF)
    kind = (u[:, None] > cdf).sum(axis=1).clip(0, 2)
    petipcon = _take(_CONTACT_TYPES, kind)

    emails = np.flatnonzero((kind == 0) & ~is_j[owner])
    who = persons.select(["penomper", "pesegape"]).take(owner[emails])
    k = len(emails)
    style = rng.integers(0, 3, k)
    sep = _take(pa.array([".", "", "_"]), style)
    number = pc.if_else(
        pa.array(style == 0), "", _padded(rng.integers(0, 100, k), 2)
    )  # e.g. maria.silva / mariasilva07 / maria_silva81
    natural_mail = _join(
        pc.utf8_lower(who["penomper"]),
        sep,
        pc.utf8_lower(pc.fill_null(who["pesegape"], "")),
        number,
        "@",
        _pick(rng, _EMAIL_DOMAINS, k, p=_EMAIL_DOMAIN_P),
    )
    company = np.flatnonzero((kind == 0) & is_j[owner])
    name = _flat(persons["penomper"]).take(pa.array(owner[company]))
    slug = pc.utf8_lower(pc.replace_substring_regex(name, r"^(\S+).*$", r"\1"))
    slug = pc.replace_substring_regex(slug, r"[^a-z0-9]", "")
    company_mail = _join(_pick(rng, _COMPANY_MAILBOXES, len(company)), "@", slug, ".com.br")
    emails = np.concatenate([emails, company])
    mail = pa.concat_arrays([_flat(natural_mail), _flat(company_mail)])
    peemail = _spread(_raw_case(rng, mail, lower=True), emails, m)

    addresses = np.flatnonzero(kind != 0)
    a = len(addresses)
    number = pa.array(rng.integers(1, 4000, a)).cast(pa.string())
    unit_kind = rng.integers(0, 5, a)
    commercial = kind[addresses] == 2
    unit_label = pc.if_else(pa.array(commercial), " SALA ", " APTO ")
    unit = pc.if_else(
        pa.array(unit_kind < 2),
        _join(
            unit_label,
            pa.array(rng.integers(1, 40, a) * 100 + rng.integers(1, 9, a)).cast(pa.string()),
        ),
        "",
    )
    street = _join(
        _pick(rng, _STREET_TYPES, a, p=_STREET_TYPE_P), " ", _pick(rng, _STREETS, a), ", ", number
    )
    city = _cities_of(rng, rng.choice(len(_STATE_CODES), a, p=_ADDRESS_STATE_P))
    columns = {
        "pelograd": _join(street, unit),
        "pecidade": _take(_CITY_NAMES, city),
        "peuf": _take(_CITY_UF, city),
        "pecep": _padded(rng.integers(1_000_000, 99_999_999, a), 8),
    }
    for name, values in columns.items():
        columns[name] = _spread(values, addresses, m)

    days = day_hi - rng.integers(0, max(1, day_hi - day_lo + 1), m)
    tie = (seq > np.repeat(seq_start, counts)) & (rng.random(m) < 0.04)
    days[tie] = days[np.flatnonzero(tie) - 1]
    return pa.Table.from_arrays(
        [
            _take(persons["penumper"].combine_chunks(), owner),
            pa.array(seq, type=pa.int32()),
            petipcon,
            peemail,
            columns["pelograd"],
            columns["pecidade"],
            columns["peuf"],
            columns["pecep"],
            _dates(days),
        ],
        schema=SCHEMAS["pedt003"],
    )


def _assets(rng: np.random.Generator, penumper: pa.Array, day: int) -> pa.Table:
    """0..8 assets per person: code unique per person, log-normal value per type."""
    counts = rng.choice(len(ASSETS_P), len(penumper), p=ASSETS_P)
    owner = np.repeat(np.arange(len(penumper)), counts)
    m = len(owner)
    seq = np.arange(m) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    kind = rng.choice(len(ASSET_TYPES), m, p=_ASSET_P)
    value = _ASSET_MEDIAN[kind] * rng.lognormal(0.0, 0.8, m)
    cents = np.round(value * 100).astype(np.int64)
    return pa.Table.from_arrays(
        [
            _take(penumper, owner),
            _padded(rng.integers(0, 10**8, m) * 100 + seq, 10),
            _take(_ASSET_TYPES, kind),
            _decimal(cents),
            _dates(day - rng.integers(1, 15 * 365, m)),
        ],
        schema=SCHEMAS["pedt205"],
    )


def _with_exact_duplicates(rng: np.random.Generator, table: pa.Table, exact: bool) -> pa.Table:
    k = _count(rng, EXACT_DUPLICATE_RATE, table.num_rows, exact)
    if k == 0:
        return table
    return pa.concat_tables([table, table.take(rng.choice(table.num_rows, k, replace=False))])


def _new_persons(
    rng: np.random.Generator,
    n: int,
    day: int,
    taken: tuple[np.ndarray, np.ndarray],
    exact: bool,
) -> dict[str, pa.Table]:
    """``n`` new persons and their rows in all four tables, dirty data included."""
    people = _persons(rng, n, day, taken, exact)
    penumper = people.pedt001["penumper"].combine_chunks()
    counts = rng.choice(len(CONTACTS_P), n, p=CONTACTS_P)
    tables = {
        "pedt001": _with_person_duplicates(rng, people, day, exact),
        "pedt002": _with_exact_duplicates(rng, _pedt002(rng, people, exact), exact),
        "pedt003": _with_exact_duplicates(
            rng,
            _contacts(
                rng, people.pedt001, people.is_j, counts, np.ones(n, np.int64), day - 3650, day - 1
            ),
            exact,
        ),
        "pedt205": _with_exact_duplicates(rng, _assets(rng, penumper, day), exact),
    }
    return tables


# --------------------------------------------------------------------------------------
# Measuring a snapshot
# --------------------------------------------------------------------------------------
def _well_formed(penumper: pa.Array) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(penumper, PENUMPER_PATTERN), False)


#: Columns identifying a row of each table; exact duplicates necessarily share them.
_ROW_KEYS: dict[str, tuple[str, ...]] = {
    "pedt001": ("penumper",),
    "pedt002": ("penumper",),
    "pedt003": ("penumper", "pesequen"),
    "pedt205": ("penumper", "pecodbem"),
}


def _distinct_rows(table: pa.Table) -> pa.Table:
    return table.group_by(table.column_names, use_threads=False).aggregate([])


def _codes(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dense int64 codes of a column (equal values, nulls included, share a code)."""
    encoded = _flat(values).dictionary_encode()
    return pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64) + 1


def _shared_key_rows(name: str, table: pa.Table) -> pa.Table:
    """The rows whose key occurs more than once (the only candidates for duplicates)."""
    key = np.zeros(table.num_rows, dtype=np.int64)
    for column in _ROW_KEYS[name]:
        codes = _codes(table[column])
        key = key * (int(codes.max(initial=0)) + 1) + codes
    key_array = pa.array(key)
    counts = pc.value_counts(key_array)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    return table.filter(pc.is_in(key_array, value_set=repeated))


def _person_keys(pedt001: pa.Table) -> pa.Array:
    """Distinct well-formed document numbers (first-appearance order)."""
    pen = pedt001["penumper"].combine_chunks()
    return pc.unique(pen.filter(_well_formed(pen)))


def _persons_count(pedt001: pa.Table) -> int:
    """Distinct well-formed persons plus one person per malformed row."""
    pen = pedt001["penumper"].combine_chunks()
    ok = _well_formed(pen)
    return len(pc.unique(pen.filter(ok))) + (len(pen) - pc.sum(ok).as_py())


def _measure(
    raw_root: Path, load_date: date, tables: dict[str, pa.Table], generated: bool, started: float
) -> CadastralSourceSummary:
    t = tables["pedt001"]
    pen = t["penumper"].combine_chunks()
    ok = _well_formed(pen)
    natural = pc.fill_null(pc.equal(t["petipper"], "F"), False)
    invalid = {}
    for column in INVALID_CODE_RATES:
        values = t[column]
        if column == "pesegmen":
            values = pc.utf8_upper(pc.utf8_trim_whitespace(values))
            valid_codes: tuple[str, ...] = SEGMENTS
        elif column in _NATURAL_ONLY:
            valid_codes = _NATURAL_ONLY[column]
        else:
            valid_codes = tuple(OCCUPATIONS) if column == "petipocu" else tuple(STATES)
        bad = pc.invert(pc.is_in(values, value_set=pa.array(valid_codes)))
        if column in _NATURAL_ONLY:
            bad = pc.or_(pc.and_(natural, bad), pc.and_(pc.invert(natural), pc.is_valid(values)))
        invalid[column] = pc.sum(bad).as_py() or 0
    shared = {name: _shared_key_rows(name, table) for name, table in tables.items()}
    distinct = {name: _distinct_rows(table) for name, table in shared.items()}
    distinct001 = distinct["pedt001"]
    keyed = distinct001.filter(_well_formed(distinct001["penumper"].combine_chunks()))
    per_key = keyed.group_by("penumper", use_threads=False).aggregate([("penumper", "count")])
    conflicting = pc.sum(pc.greater(per_key["penumper_count"], 1)).as_py() or 0
    return CadastralSourceSummary(
        path=Path(raw_root),
        load_date=load_date,
        persons=_persons_count(t),
        rows={name: table.num_rows for name, table in tables.items()},
        malformed_penumper=len(pen) - (pc.sum(ok).as_py() or 0),
        invalid_codes=invalid,
        null_birth_dates=t["pefecnac"].null_count,
        exact_duplicates={
            name: shared[name].num_rows - distinct[name].num_rows for name in SOURCE_TABLES
        },
        conflicting_duplicates=conflicting,
        generated=generated,
        seconds=time.perf_counter() - started,
    )


def _write_and_measure(
    raw_root: Path, load_date: date, tables: dict[str, pa.Table], started: float
) -> CadastralSourceSummary:
    """Write the snapshot while measuring it in a second thread (both release the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        measured = pool.submit(_measure, raw_root, load_date, tables, True, started)
        _write_snapshot(raw_root, load_date, tables)
        summary = measured.result()
    return replace(summary, seconds=time.perf_counter() - started)


def _row_keys(table: pa.Table) -> pa.Array:
    parts = [pc.cast(table[c], pa.string()) for c in table.column_names]
    return pc.binary_join_element_wise(
        *parts, "\x1f", null_handling="replace", null_replacement="\\N"
    ).combine_chunks()


def _changes(old001: pa.Table, new001: pa.Table) -> tuple[int, int, int]:
    """(inserted, updated, deleted) persons between two pedt001 snapshots."""
    old_keys, new_keys = _person_keys(old001), _person_keys(new001)
    deleted = pc.sum(pc.invert(pc.is_in(old_keys, value_set=new_keys))).as_py() or 0
    inserted = _persons_count(new001) - _persons_count(old001) + deleted
    pen = new001["penumper"].combine_chunks()
    changed = pc.and_(
        pc.is_in(pen, value_set=old_keys),
        pc.invert(pc.is_in(_row_keys(new001), value_set=_row_keys(old001))),
    )
    updated = len(pc.unique(pen.filter(changed)))
    return inserted, updated, deleted


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def generate_cadastral_sources(
    raw_root: Path, *, persons: int, load_date: date, seed: int = 3, force: bool = False
) -> CadastralSourceSummary:
    """Write the full snapshot of the four source tables for ``load_date``.

    An existing complete snapshot is kept unless ``force`` (the summary is then measured
    from its files)."""
    started = time.perf_counter()
    raw_root = Path(raw_root)
    if persons < 1:
        raise ValueError(f"persons must be positive, got {persons}")
    if _complete(raw_root, load_date) and not force:
        logger.info("cadastral snapshot %s already present under %s", load_date, raw_root)
        return _measure(raw_root, load_date, read_snapshot(raw_root, load_date), False, started)
    rng = np.random.default_rng([seed, load_date.toordinal(), persons])
    empty = np.empty(0, dtype=np.int64)
    tables = _new_persons(rng, persons, _day(load_date), (empty, empty), exact=True)
    summary = _write_and_measure(raw_root, load_date, tables, started)
    logger.info(
        "cadastral snapshot %s: %d persons, rows %s in %.1fs",
        load_date,
        summary.persons,
        summary.rows,
        summary.seconds,
    )
    return summary


def generate_change_set(
    raw_root: Path,
    *,
    from_date: date,
    to_date: date,
    update_rate: float = 0.01,
    insert_rate: float = 0.005,
    delete_rate: float = 0.005,
    seed: int = 4,
    force: bool = False,
) -> CadastralChangeSummary:
    """Derive the ``to_date`` snapshot from the ``from_date`` one.

    ``round(rate * persons)`` persons (persons = distinct well-formed document numbers of
    ``from_date``) are deleted from all four tables, updated (new last user, sometimes a new
    civil status/segment, a new contact or revalued assets) and inserted (new document
    numbers with their contacts and assets, same dirty-data rates)."""
    started = time.perf_counter()
    raw_root = Path(raw_root)
    if to_date <= from_date:
        raise ValueError(f"to_date {to_date} must be after from_date {from_date}")
    for rate in (update_rate, insert_rate, delete_rate):
        if not 0 <= rate <= 1:
            raise ValueError(f"change rates must be within [0, 1], got {rate}")
    if not _complete(raw_root, from_date):
        raise FileNotFoundError(
            f"no complete cadastral snapshot for {from_date.isoformat()} under {raw_root}"
        )
    old = read_snapshot(raw_root, from_date)
    if _complete(raw_root, to_date) and not force:
        logger.info("cadastral snapshot %s already present under %s", to_date, raw_root)
        new = read_snapshot(raw_root, to_date)
        return _change_summary(raw_root, from_date, to_date, old, new, False, started)

    rng = np.random.default_rng([seed, from_date.toordinal(), to_date.toordinal()])
    from_day, to_day = _day(from_date), _day(to_date)
    keys = _person_keys(old["pedt001"])
    n_keys = len(keys)
    n_delete = round(delete_rate * n_keys)
    n_update = min(round(update_rate * n_keys), n_keys - n_delete)
    n_insert = round(insert_rate * n_keys)
    order = rng.permutation(n_keys)
    deleted = _take(keys, order[:n_delete])
    updated = _take(keys, order[n_delete : n_delete + n_update])

    new = {
        name: table.filter(pc.invert(pc.is_in(table["penumper"], value_set=deleted)))
        for name, table in old.items()
    }
    new = _apply_updates(rng, new, updated, from_day, to_day)
    inserts = _new_persons(rng, n_insert, to_day, _taken_bases(old["pedt001"]), exact=False)
    new = {name: pa.concat_tables([new[name], inserts[name]]) for name in SOURCE_TABLES}
    snapshot = _write_and_measure(raw_root, to_date, new, started)
    summary = CadastralChangeSummary(
        path=raw_root,
        from_date=from_date,
        to_date=to_date,
        inserted=n_insert,
        updated=n_update,
        deleted=n_delete,
        snapshot=snapshot,
        generated=True,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "cadastral change set %s -> %s: +%d ~%d -%d persons in %.1fs",
        from_date,
        to_date,
        summary.inserted,
        summary.updated,
        summary.deleted,
        summary.seconds,
    )
    return summary


def _apply_updates(
    rng: np.random.Generator,
    tables: dict[str, pa.Table],
    updated: pa.Array,
    from_day: int,
    to_day: int,
) -> dict[str, pa.Table]:
    """Change a few fields of the ``updated`` persons (the same way on all their rows)."""
    k = len(updated)
    if k == 0:
        return tables
    t001 = tables["pedt001"]
    pen = t001["penumper"].combine_chunks()
    who = pc.fill_null(pc.index_in(pen, value_set=updated), -1).to_numpy()
    rows = who >= 0
    at = np.where(rows, who, 0)

    old_user = pc.cast(pc.utf8_slice_codeunits(t001["peusualt"], 1), pa.int64()).to_numpy()
    new_user = _users(rng, k)[at]
    new_user = np.where(new_user == old_user, new_user + 1, new_user)
    natural = pc.fill_null(pc.equal(t001["petipper"], "F"), False).to_numpy(zero_copy_only=False)
    civil = rng.random(k) < 0.4
    civil_codes = _pick(rng, _CIVIL_CODES, k, p=_CIVIL_P)
    segment = rng.random(k) < 0.3
    segments = _raw_case(rng, _pick(rng, _SEGMENTS, k, p=_SEGMENT_F_P))
    columns = {
        "peestciv": pc.if_else(
            pa.array(rows & natural & civil[at]), _take(civil_codes, at), t001["peestciv"]
        ),
        "pesegmen": pc.if_else(pa.array(rows & segment[at]), _take(segments, at), t001["pesegmen"]),
        "peusualt": pc.if_else(pa.array(rows), _user_codes(new_user), t001["peusualt"]),
    }
    for name, values in columns.items():
        t001 = t001.set_column(t001.schema.get_field_index(name), name, values)
    out = dict(tables, pedt001=t001)

    # a new contact for some of them, numbered after their last one
    contact = updated.filter(pa.array(rng.random(k) < 0.35))
    if len(contact):
        persons = t001.take(pc.index_in(contact, value_set=pen))
        t003 = tables["pedt003"]
        mine = t003.filter(pc.is_in(t003["penumper"], value_set=contact))
        last = mine.group_by("penumper", use_threads=False).aggregate([("pesequen", "max")])
        at_last = pc.index_in(contact, value_set=last["penumper"])
        seq_start = pc.fill_null(_take(last["pesequen_max"].combine_chunks(), at_last), 0)
        is_j = pc.equal(persons["petipper"], "J").to_numpy(zero_copy_only=False)
        added = _contacts(
            rng,
            persons,
            is_j,
            np.ones(len(contact), dtype=np.int64),
            seq_start.to_numpy().astype(np.int64) + 1,
            from_day + 1,
            to_day,
        )
        out["pedt003"] = pa.concat_tables([t003, added])

    # revalued assets for some of them
    revalued = updated.filter(pa.array(rng.random(k) < 0.25))
    if len(revalued):
        t205 = tables["pedt205"]
        owner = pc.fill_null(pc.index_in(t205["penumper"], value_set=revalued), -1).to_numpy()
        hit = owner >= 0
        factor = rng.uniform(0.8, 1.25, len(revalued))
        when = to_day - rng.integers(0, max(1, to_day - from_day), len(revalued))
        value = pc.cast(t205["pevalbem"], pa.float64()).to_numpy(zero_copy_only=False)
        cents = np.round(value * 100).astype(np.int64)
        cents = np.where(hit, np.round(cents * factor[np.where(hit, owner, 0)]), cents)
        days = pc.cast(t205["pedatalt"], pa.int32()).to_numpy(zero_copy_only=False)
        days = np.where(hit, when[np.where(hit, owner, 0)], days)
        t205 = t205.set_column(3, "pevalbem", _decimal(cents.astype(np.int64)))
        out["pedt205"] = t205.set_column(4, "pedatalt", _dates(days))
    return out


def _change_summary(
    raw_root: Path,
    from_date: date,
    to_date: date,
    old: dict[str, pa.Table],
    new: dict[str, pa.Table],
    generated: bool,
    started: float,
) -> CadastralChangeSummary:
    inserted, updated, deleted = _changes(old["pedt001"], new["pedt001"])
    snapshot = _measure(raw_root, to_date, new, generated, started)
    return CadastralChangeSummary(
        path=raw_root,
        from_date=from_date,
        to_date=to_date,
        inserted=inserted,
        updated=updated,
        deleted=deleted,
        snapshot=snapshot,
        generated=generated,
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "CADASTRAL_PROFILES",
    "SCHEMAS",
    "CadastralChangeSummary",
    "CadastralSourceSummary",
    "generate_cadastral_sources",
    "generate_change_set",
    "load_dates",
    "partition_dir",
    "read_snapshot",
]
