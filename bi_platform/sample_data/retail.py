"""Deterministic generator of the raw retail ERP exports (one Parquet file per table).

Every table of :data:`bi_platform.retail.schema.TABLES` (plus, in the ``large`` profile,
:data:`~bi_platform.retail.schema.LARGE_FACT_TABLE`) is generated with exactly its
``raw_schema``. The data is synthetic but shaped like the real export: ~38 stores (UNE), a
product universe built from each segment's vocabulary, TECIDOS ~12.6% of ``admmat``, 12
months of seasonal sales with many zeros, weekly quantities consistent with their averages,
stock levels that make the critical-rupture filter select a few percent of rows, and the
stock/price columns of ``admmat`` exported as strings written the Brazilian way
(``"1.534,00"``, ``"1534"``, ``"12,5"``, ``"R$ 12,90"``) with a small share of junk.

Everything derives from ``numpy.random.default_rng`` seeded by ``(seed, table)``, and all
dates are relative to :data:`REFERENCE_DATE` (never today's date): the same profile and
seed always give identical files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from bi_platform.lib.files import atomic_path, write_bytes_atomic
from bi_platform.retail.schema import (
    ALL_TABLES,
    LARGE_FACT_TABLE,
    SEGMENTS,
    TABLES,
    RetailTable,
)

logger = logging.getLogger(__name__)

#: The snapshot date of the generated exports; every date is relative to it.
REFERENCE_DATE = date(2026, 10, 31)
#: Bumped whenever the generated data changes, so that old exports are rewritten.
GENERATOR_VERSION = 2
DEFAULT_SEED = 38
MANIFEST_NAME = "manifest.json"
#: Unparsable values of the raw string columns, as found in the real export.
JUNK_VALUES: tuple[str, ...] = ("N/D", "-", "", "1.234.5", "12,5,0", "#REF!", " ", "abc")
#: Share of junk values and of nulls per raw string column of ``admmat``.
JUNK_SHARE = 0.004
RAW_NULL_SHARE = 0.001
#: UNE of the distribution centre (origin of most transfers; not in ``admmat``).
CD_UNE = 1

_REF_DAY = (REFERENCE_DATE - date(1970, 1, 1)).days
_US_PER_DAY = 86_400_000_000
_HISTORY_DAYS = 730


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetailProfile:
    """Sizes of one generated data set (rows per table, universes)."""

    name: str
    admmat_rows: int
    stores: int
    products: int
    manufacturers: int
    vendas_diarias_rows: int
    pedidos_compra_rows: int
    transferencias_rows: int
    inventarios_rows: int
    precos_rows: int
    promocoes_rows: int
    devolucoes_rows: int
    include_large_fact: bool = False
    vendas_itens_rows: int = 0

    @property
    def tables(self) -> tuple[str, ...]:
        """Names of the tables this profile writes."""
        names = tuple(TABLES)
        return (*names, LARGE_FACT_TABLE.name) if self.include_large_fact else names


_DEFAULT = RetailProfile(
    name="default",
    admmat_rows=1_113_822,
    stores=38,
    products=58_000,
    manufacturers=1_800,
    vendas_diarias_rows=3_000_000,
    pedidos_compra_rows=250_000,
    transferencias_rows=400_000,
    inventarios_rows=300_000,
    precos_rows=600_000,
    promocoes_rows=40_000,
    devolucoes_rows=80_000,
)

PROFILES: dict[str, RetailProfile] = {
    "small": RetailProfile(
        name="small",
        admmat_rows=5_000,
        stores=8,
        products=1_000,
        manufacturers=60,
        vendas_diarias_rows=20_000,
        pedidos_compra_rows=2_000,
        transferencias_rows=2_000,
        inventarios_rows=2_000,
        precos_rows=3_000,
        promocoes_rows=500,
        devolucoes_rows=500,
    ),
    "default": _DEFAULT,
    # vendas_itens takes ~11 bytes per row on disk (zstd): 64M rows give ~720 MB.
    "large": replace(_DEFAULT, name="large", include_large_fact=True, vendas_itens_rows=64_000_000),
}


# --------------------------------------------------------------------------------------
# Vocabulary: stores, segment hierarchy, product names, manufacturers
# --------------------------------------------------------------------------------------
# (UNE, name, city, UF, region). The last two are closed stores (lojas only).
_STORES: tuple[tuple[int, str, str, str, str], ...] = (
    (261, "CAMPO GRANDE", "RIO DE JANEIRO", "RJ", "ZONA OESTE"),
    (2, "MADUREIRA", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (3, "CENTRO", "RIO DE JANEIRO", "RJ", "CENTRO"),
    (11, "TIJUCA", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (14, "MÉIER", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (35, "BANGU", "RIO DE JANEIRO", "RJ", "ZONA OESTE"),
    (37, "BONSUCESSO", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (42, "NOVA IGUAÇU", "NOVA IGUAÇU", "RJ", "BAIXADA FLUMINENSE"),
    (47, "DUQUE DE CAXIAS", "DUQUE DE CAXIAS", "RJ", "BAIXADA FLUMINENSE"),
    (53, "NITERÓI", "NITERÓI", "RJ", "LESTE FLUMINENSE"),
    (58, "SÃO GONÇALO", "SÃO GONÇALO", "RJ", "LESTE FLUMINENSE"),
    (64, "JACAREPAGUÁ", "RIO DE JANEIRO", "RJ", "ZONA OESTE"),
    (71, "BARRA DA TIJUCA", "RIO DE JANEIRO", "RJ", "ZONA OESTE"),
    (79, "COPACABANA", "RIO DE JANEIRO", "RJ", "ZONA SUL"),
    (86, "SANTA CRUZ", "RIO DE JANEIRO", "RJ", "ZONA OESTE"),
    (92, "PENHA", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (105, "ILHA DO GOVERNADOR", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (112, "SÃO JOÃO DE MERITI", "SÃO JOÃO DE MERITI", "RJ", "BAIXADA FLUMINENSE"),
    (118, "NILÓPOLIS", "NILÓPOLIS", "RJ", "BAIXADA FLUMINENSE"),
    (124, "BELFORD ROXO", "BELFORD ROXO", "RJ", "BAIXADA FLUMINENSE"),
    (131, "ALCÂNTARA", "SÃO GONÇALO", "RJ", "LESTE FLUMINENSE"),
    (137, "PETRÓPOLIS", "PETRÓPOLIS", "RJ", "SERRANA"),
    (143, "TERESÓPOLIS", "TERESÓPOLIS", "RJ", "SERRANA"),
    (150, "NOVA FRIBURGO", "NOVA FRIBURGO", "RJ", "SERRANA"),
    (158, "VOLTA REDONDA", "VOLTA REDONDA", "RJ", "SUL FLUMINENSE"),
    (163, "BARRA MANSA", "BARRA MANSA", "RJ", "SUL FLUMINENSE"),
    (170, "RESENDE", "RESENDE", "RJ", "SUL FLUMINENSE"),
    (176, "CABO FRIO", "CABO FRIO", "RJ", "REGIÃO DOS LAGOS"),
    (183, "MACAÉ", "MACAÉ", "RJ", "NORTE FLUMINENSE"),
    (189, "CAMPOS DOS GOYTACAZES", "CAMPOS DOS GOYTACAZES", "RJ", "NORTE FLUMINENSE"),
    (197, "ITABORAÍ", "ITABORAÍ", "RJ", "LESTE FLUMINENSE"),
    (204, "MARICÁ", "MARICÁ", "RJ", "LESTE FLUMINENSE"),
    (212, "QUEIMADOS", "QUEIMADOS", "RJ", "BAIXADA FLUMINENSE"),
    (219, "ITAGUAÍ", "ITAGUAÍ", "RJ", "COSTA VERDE"),
    (226, "ANGRA DOS REIS", "ANGRA DOS REIS", "RJ", "COSTA VERDE"),
    (233, "RECREIO", "RIO DE JANEIRO", "RJ", "ZONA OESTE"),
    (240, "VILA ISABEL", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (247, "IRAJÁ", "RIO DE JANEIRO", "RJ", "ZONA NORTE"),
    (254, "JUIZ DE FORA", "JUIZ DE FORA", "MG", "ZONA DA MATA"),
    (268, "VITÓRIA", "VITÓRIA", "ES", "GRANDE VITÓRIA"),
    (275, "VILA VELHA", "VILA VELHA", "ES", "GRANDE VITÓRIA"),
    (282, "RIO BONITO", "RIO BONITO", "RJ", "LESTE FLUMINENSE"),
)
_CLOSED_STORES = 2
MAX_STORES = len(_STORES) - _CLOSED_STORES
_CD = (CD_UNE, "CD SÃO CRISTÓVÃO", "RIO DE JANEIRO", "RJ", "CENTRO")

_COLORS = (
    "BRANCO",
    "PRETO",
    "AZUL",
    "VERMELHO",
    "VERDE",
    "AMARELO",
    "ROSA",
    "LILÁS",
    "BEGE",
    "CINZA",
    "MARINHO",
    "VINHO",
    "SORTIDO",
)


@dataclass(frozen=True)
class _Segment:
    """Vocabulary and behaviour of one segment."""

    share: float  # share of admmat's rows
    price: float  # median unit price (R$)
    packs: tuple[str, ...]  # EMBALAGEM values ("MT" sells in half metres)
    categories: dict[str, tuple[str, ...]]  # category -> groups (product nouns)
    kinds: tuple[str, ...]  # subgroup qualifiers
    variants: tuple[str, ...]
    sizes: tuple[str, ...]
    season: tuple[float, ...]  # sales multiplier per calendar month, Jan..Dec


_VOCAB: dict[str, _Segment] = {
    "TECIDOS": _Segment(
        0.126,
        24.9,
        ("MT",),
        {
            "TECIDOS PLANOS": ("TRICOLINE", "LINHO", "CETIM", "OXFORD", "CREPE"),
            "MALHAS": ("MALHA PV", "MOLETOM", "RIBANA", "SUPLEX"),
            "TECIDOS PARA DECORAÇÃO": ("JACQUARD", "VOIL", "GORGURÃO", "BLACKOUT"),
            "TECIDOS TÉCNICOS": ("TNT", "FELTRO", "LONA", "BRIM"),
        },
        ("LISO", "ESTAMPADO", "XADREZ", "LISTRADO"),
        (*_COLORS, "FLORAL", "POÁ", "CHITA"),
        ("LARG 1,40M", "LARG 1,50M", "LARG 1,60M", "LARG 2,80M", "LARG 3,00M"),
        (0.9, 1.25, 1.0, 0.95, 1.0, 1.2, 1.05, 0.95, 0.9, 0.95, 1.0, 1.1),
    ),
    "ARMARINHO E CONFECÇÃO": _Segment(
        0.118,
        9.9,
        ("UN", "UN", "PCT", "CX", "RL"),
        {
            "LINHAS": ("LINHA DE COSTURA", "LINHA DE CROCHÊ", "LINHA PARA BORDAR"),
            "LÃS E FIOS": ("FIO DE MALHA", "LÃ ACRÍLICA", "BARBANTE"),
            "AGULHAS": ("AGULHA DE MÃO", "AGULHA DE TRICÔ", "AGULHA DE CROCHÊ"),
            "CONFECÇÃO": ("MEIA", "CUECA", "CALCINHA", "CAMISETA"),
        },
        ("ALGODÃO", "POLIÉSTER", "MESCLA", "SORTIDO"),
        _COLORS,
        ("100M", "500M", "50G", "100G", "Nº 2", "Nº 4", "P", "M", "G"),
        (0.85, 0.95, 1.0, 1.05, 1.15, 1.2, 1.15, 1.0, 0.9, 0.95, 1.0, 1.1),
    ),
    "PAPELARIA": _Segment(
        0.105,
        7.9,
        ("UN", "UN", "PCT", "CX", "BL"),
        {
            "CADERNOS": ("CADERNO UNIVERSITÁRIO", "CADERNO BROCHURA", "CADERNO DE DESENHO"),
            "ESCRITA": ("CANETA ESFEROGRÁFICA", "LÁPIS GRAFITE", "MARCA-TEXTO", "LAPISEIRA"),
            "PAPÉIS": ("PAPEL SULFITE", "PAPEL CARTÃO", "CARTOLINA", "PAPEL CREPOM"),
            "ESCRITÓRIO": ("GRAMPEADOR", "PASTA CATÁLOGO", "FITA ADESIVA", "COLA BRANCA"),
        },
        ("ESCOLAR", "PROFISSIONAL", "INFANTIL", "ECONÔMICO"),
        ("AZUL", "PRETO", "VERMELHO", "ROSA", "VERDE", "SORTIDO", "NEON", "PASTEL"),
        ("A4", "OFÍCIO", "10 MATÉRIAS", "96 FLS", "200 FLS", "CX 50", "0,7MM"),
        (1.7, 1.9, 1.2, 0.85, 0.8, 0.75, 0.9, 1.0, 0.8, 0.8, 0.85, 0.9),
    ),
    "CASA E DECORAÇÃO": _Segment(
        0.088,
        39.9,
        ("UN", "PC", "CJ"),
        {
            "ILUMINAÇÃO": ("LUMINÁRIA", "ABAJUR", "CORDÃO DE LED"),
            "DECORAÇÃO": ("VASO", "QUADRO DECORATIVO", "PORTA-RETRATO", "ESPELHO"),
            "FLORES ARTIFICIAIS": ("ARRANJO", "GALHO", "FOLHAGEM"),
            "ORGANIZAÇÃO": ("CAIXA ORGANIZADORA", "CESTO", "CABIDE"),
        },
        ("CERÂMICA", "VIDRO", "MADEIRA", "METAL"),
        ("BRANCO", "PRETO", "DOURADO", "PRATA", "NATURAL", "ROSÉ", "VERDE"),
        ("P", "M", "G", "20CM", "30CM", "40X60CM"),
        (0.85, 0.8, 0.9, 0.95, 1.1, 0.95, 0.9, 0.95, 0.95, 1.0, 1.2, 1.6),
    ),
    "FESTAS": _Segment(
        0.082,
        8.9,
        ("UN", "PCT", "PCT"),
        {
            "BALÕES": ("BALÃO LÁTEX", "BALÃO METALIZADO", "BALÃO NÚMERO"),
            "DESCARTÁVEIS": ("COPO DESCARTÁVEL", "PRATO DESCARTÁVEL", "GUARDANAPO", "TALHER"),
            "DECORAÇÃO DE FESTA": ("PAINEL", "FAIXA", "TOPO DE BOLO", "VELA"),
            "LEMBRANCINHAS": ("SACOLA SURPRESA", "CAIXA MILK", "FORMINHA"),
        },
        ("INFANTIL", "ANIVERSÁRIO", "CASAMENTO", "TEMÁTICO"),
        ("SAFARI", "UNICÓRNIO", "FUNDO DO MAR", "DOURADO", "PRATA", "ROSA", "AZUL", "SORTIDO"),
        ("Nº 9", "Nº 11", "200ML", "PCT 50", "PCT 25", "20CM"),
        (0.9, 1.3, 0.95, 0.95, 1.0, 1.1, 0.95, 0.95, 0.95, 1.3, 1.0, 1.4),
    ),
    "ARTES": _Segment(
        0.071,
        12.9,
        ("UN", "CX", "KIT"),
        {
            "PINTURA": ("TINTA ACRÍLICA", "TINTA PVA", "PINCEL", "TELA PARA PINTURA"),
            "ARTESANATO": ("PEÇA MDF", "MASSA DE BISCUIT", "FOLHA DE EVA", "MIÇANGA"),
            "DESENHO": ("LÁPIS DE COR", "GIZ DE CERA", "CANETINHA", "BLOCO DE DESENHO"),
        },
        ("ESCOLAR", "PROFISSIONAL", "METÁLICO", "FOSCO"),
        (*_COLORS[:10], "CORES SORTIDAS"),
        ("37ML", "250ML", "12 CORES", "24 CORES", "30X40CM", "Nº 10"),
        (1.2, 1.3, 1.1, 1.0, 1.0, 0.95, 0.9, 1.0, 0.95, 1.0, 0.95, 0.9),
    ),
    "BRINQUEDOS": _Segment(
        0.064,
        49.9,
        ("UN", "CX"),
        {
            "BONECAS": ("BONECA", "CASINHA", "ACESSÓRIO DE BONECA"),
            "VEÍCULOS": ("CARRINHO", "PISTA", "CAMINHÃO"),
            "JOGOS": ("QUEBRA-CABEÇA", "JOGO DE TABULEIRO", "DOMINÓ"),
            "EDUCATIVOS": ("BLOCOS DE MONTAR", "MASSINHA DE MODELAR", "INSTRUMENTO MUSICAL"),
        },
        ("BEBÊ", "3+ ANOS", "6+ ANOS", "8+ ANOS"),
        ("SORTIDO", "ROSA", "AZUL", "COLORIDO", "VERMELHO"),
        ("P", "M", "G", "100 PÇS", "500 PÇS", "30CM"),
        (0.7, 0.7, 0.75, 0.8, 0.85, 0.8, 0.85, 0.9, 0.9, 1.9, 1.3, 2.3),
    ),
    "UTILIDADES DOMÉSTICAS": _Segment(
        0.058,
        24.9,
        ("UN", "CJ", "PC"),
        {
            "COZINHA": ("PANELA", "FRIGIDEIRA", "ESCORREDOR", "POTE HERMÉTICO"),
            "MESA": ("COPO", "XÍCARA", "PRATO RASO", "FAQUEIRO"),
            "LAVANDERIA": ("PRENDEDOR", "VARAL", "BALDE"),
        },
        ("ALUMÍNIO", "INOX", "PLÁSTICO", "VIDRO"),
        ("BRANCO", "PRETO", "VERMELHO", "TRANSPARENTE", "SORTIDO"),
        ("300ML", "500ML", "1L", "Nº 18", "Nº 22", "6 PÇS"),
        (0.9, 0.9, 0.95, 1.0, 1.2, 0.95, 0.95, 1.0, 0.95, 1.0, 1.1, 1.4),
    ),
    "BAZAR": _Segment(
        0.052,
        19.9,
        ("UN", "PCT"),
        {
            "PRESENTES": ("CANECA", "CHAVEIRO", "PORTA-JOIAS"),
            "BELEZA": ("ESCOVA DE CABELO", "PRESILHA", "ELÁSTICO DE CABELO", "ESPELHO DE BOLSA"),
            "ACESSÓRIOS": ("GUARDA-CHUVA", "CARTEIRA", "NECESSAIRE"),
        },
        ("FEMININO", "MASCULINO", "INFANTIL", "UNISSEX"),
        _COLORS,
        ("P", "M", "G", "PCT 6", "PCT 12"),
        (0.85, 0.85, 0.9, 0.95, 1.2, 1.0, 0.95, 1.05, 0.95, 1.0, 1.1, 1.5),
    ),
    "INFORMÁTICA": _Segment(
        0.043,
        59.9,
        ("UN", "CX"),
        {
            "PERIFÉRICOS": ("MOUSE", "TECLADO", "HEADSET", "WEBCAM"),
            "ARMAZENAMENTO": ("PENDRIVE", "CARTÃO DE MEMÓRIA", "HD EXTERNO"),
            "SUPRIMENTOS": ("CARTUCHO", "TONER", "PAPEL FOTOGRÁFICO"),
            "CABOS": ("CABO USB", "CABO HDMI", "ADAPTADOR"),
        },
        ("USB", "SEM FIO", "BLUETOOTH", "UNIVERSAL"),
        ("PRETO", "BRANCO", "CINZA", "AZUL"),
        ("16GB", "32GB", "64GB", "1,5M", "2M", "A4 20 FLS"),
        (1.1, 1.3, 1.1, 0.95, 0.95, 0.9, 0.95, 1.0, 0.95, 0.95, 1.2, 1.2),
    ),
    "ELETRÔNICOS": _Segment(
        0.039,
        49.9,
        ("UN", "CX", "CART"),
        {
            "ÁUDIO": ("FONE DE OUVIDO", "CAIXA DE SOM", "RÁDIO PORTÁTIL"),
            "ENERGIA": ("PILHA", "BATERIA", "CARREGADOR", "POWER BANK"),
            "ACESSÓRIOS DE CELULAR": ("CAPA DE CELULAR", "PELÍCULA", "SUPORTE VEICULAR"),
        },
        ("BLUETOOTH", "USB-C", "ALCALINA", "UNIVERSAL"),
        ("PRETO", "BRANCO", "AZUL", "TRANSPARENTE"),
        ("AA", "AAA", "9V", "10000MAH", "20W", "1M"),
        (0.9, 0.9, 0.9, 0.9, 1.0, 1.0, 0.95, 1.05, 0.95, 1.0, 1.35, 1.5),
    ),
    "CAMA MESA E BANHO": _Segment(
        0.036,
        69.9,
        ("UN", "JG", "PC"),
        {
            "CAMA": ("JOGO DE LENÇOL", "EDREDOM", "TRAVESSEIRO", "COLCHA"),
            "BANHO": ("TOALHA DE BANHO", "TOALHA DE ROSTO", "ROUPÃO", "TAPETE DE BANHEIRO"),
            "MESA": ("TOALHA DE MESA", "JOGO AMERICANO", "GUARDANAPO DE TECIDO"),
        },
        ("ALGODÃO", "MICROFIBRA", "PERCAL", "ESTAMPADO"),
        ("BRANCO", "BEGE", "AZUL", "CINZA", "ROSA", "FLORAL", "LISTRADO"),
        ("SOLTEIRO", "CASAL", "QUEEN", "KING", "70X140CM", "1,40X2,00M", "150 FIOS"),
        (0.9, 0.85, 0.9, 0.95, 1.25, 1.1, 1.1, 0.95, 0.9, 0.95, 1.1, 1.3),
    ),
    "AVIAMENTOS": _Segment(
        0.033,
        4.9,
        ("UN", "PCT", "RL", "MT"),
        {
            "BOTÕES": ("BOTÃO DE MASSA", "BOTÃO DE PRESSÃO", "BOTÃO FORRADO"),
            "ZÍPERES": ("ZÍPER COMUM", "ZÍPER INVISÍVEL", "ZÍPER DESTACÁVEL"),
            "FITAS E RENDAS": ("FITA DE CETIM", "RENDA", "VIÉS", "ELÁSTICO"),
            "APLIQUES": ("APLIQUE TERMOCOLANTE", "PATCH BORDADO", "STRASS"),
        },
        ("NYLON", "METAL", "POLIÉSTER", "ALGODÃO"),
        _COLORS,
        ("10MM", "15MM", "20CM", "50CM", "RL 10M", "PCT 12"),
        (0.9, 1.3, 1.0, 0.95, 1.0, 1.15, 1.0, 0.95, 0.95, 1.0, 1.0, 1.05),
    ),
    "EMBALAGENS": _Segment(
        0.029,
        6.9,
        ("PCT", "UN", "RL", "CX"),
        {
            "SACOLAS": ("SACOLA DE PAPEL", "SACOLA PLÁSTICA", "SACO KRAFT"),
            "CAIXAS": ("CAIXA DE PRESENTE", "CAIXA DE PAPELÃO", "CAIXA ACRÍLICA"),
            "PAPÉIS DE PRESENTE": ("PAPEL DE PRESENTE", "PAPEL DE SEDA", "CELOFANE"),
            "LAÇOS E FITAS": ("LAÇO PRONTO", "FITILHO", "FITA DE PRESENTE"),
        },
        ("KRAFT", "METALIZADO", "ESTAMPADO", "LISO"),
        ("NATURAL", "BRANCO", "DOURADO", "VERMELHO", "NATALINO", "SORTIDO"),
        ("P", "M", "G", "PCT 10", "PCT 50", "RL 5M"),
        (0.8, 0.8, 0.85, 0.9, 1.1, 0.9, 0.9, 1.0, 0.9, 1.0, 1.3, 1.8),
    ),
    "LIMPEZA": _Segment(
        0.024,
        11.9,
        ("UN", "FR", "PCT", "GL"),
        {
            "LIMPEZA GERAL": ("DETERGENTE", "DESINFETANTE", "ÁGUA SANITÁRIA", "MULTIUSO"),
            "UTENSÍLIOS DE LIMPEZA": ("VASSOURA", "RODO", "ESPONJA", "PANO DE CHÃO"),
            "LAVANDERIA": ("SABÃO EM PÓ", "AMACIANTE", "TIRA-MANCHAS"),
        },
        ("NEUTRO", "CONCENTRADO", "PERFUMADO", "ECONÔMICO"),
        ("LAVANDA", "LIMÃO", "FLORAL", "CAMPESTRE", "SEM CHEIRO"),
        ("500ML", "1L", "2L", "5L", "1KG"),
        (1.0, 0.95, 1.0, 1.0, 1.0, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1),
    ),
    "SAZONAIS": _Segment(
        0.032,
        19.9,
        ("UN", "PCT", "CJ"),
        {
            "NATAL": ("ÁRVORE DE NATAL", "BOLA DE NATAL", "PISCA-PISCA", "GUIRLANDA"),
            "PÁSCOA": ("FORMA DE OVO", "CESTA DE PÁSCOA", "ORELHA DE COELHO"),
            "CARNAVAL": ("FANTASIA", "CONFETE", "SERPENTINA", "MÁSCARA"),
            "FESTA JUNINA": ("BANDEIRINHA", "CHAPÉU DE PALHA", "VESTIDO CAIPIRA"),
        },
        ("TRADICIONAL", "LUXO", "INFANTIL", "ADULTO"),
        ("VERMELHO", "DOURADO", "PRATA", "VERDE", "COLORIDO", "SORTIDO"),
        ("P", "M", "G", "1,20M", "1,80M", "PCT 6", "100 LÂMPADAS"),
        (0.3, 1.6, 0.9, 1.2, 0.3, 1.7, 0.8, 0.2, 0.3, 0.9, 2.3, 3.2),
    ),
}
assert tuple(_VOCAB) == SEGMENTS, "the vocabulary must follow schema.SEGMENTS"

_SEG_SHARE = np.array([_VOCAB[s].share for s in SEGMENTS])
_SEG_SHARE = _SEG_SHARE / _SEG_SHARE.sum()
_SEASON = np.array([_VOCAB[s].season for s in SEGMENTS])  # (16, 12)
_BASE_SEASON = (_SEASON * _SEG_SHARE[:, None]).sum(axis=0)

_BRAND_HEADS = (
    "NOVA", "REAL", "PRIMA", "MEGA", "SUL", "NORTE", "BELA", "VIVA", "FORT", "LUX",
    "ARTE", "CASA", "FIO", "TEX", "PAPEL", "BRIN", "FLEX", "MAX", "STAR", "GOLD",
    "ECO", "ALFA", "RIO", "SANTA",
)  # fmt: skip
_BRAND_TAILS = (
    "TEC", "LAR", "MIX", "CORE", "PLAST", "BRAS", "COR", "LINE", "ART", "PEL",
    "TEXTIL", "FORM", "PACK", "LUZ", "KIDS", "FIX",
)  # fmt: skip
_COMPANY_SUFFIXES = (
    " IND. E COM. LTDA",
    " LTDA",
    " S.A.",
    " TÊXTIL LTDA",
    " COMERCIAL LTDA",
    " DISTRIBUIDORA LTDA",
    " IMPORTADORA LTDA",
    " EIRELI",
)
_MANUFACTURER_UF = ("SP", "RJ", "SC", "MG", "PR", "RS", "GO", "ES", "BA", "PE", "CE", "AM")
_MANUFACTURER_UF_P = (0.42, 0.14, 0.12, 0.09, 0.07, 0.05, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01)


@dataclass(frozen=True)
class _Hierarchy:
    """Flattened segment > category > group > subgroup table (one row per subgroup)."""

    code: np.ndarray  # COD_SUBGRUPO
    segment: np.ndarray  # segment index
    group: list[str]
    frame: pl.DataFrame  # the segmentos table
    kinds: list[str]  # subgroup qualifier (for product names)


@functools.cache
def _hierarchy() -> _Hierarchy:
    rows: list[tuple[int, int, str, str, str, str, str]] = []
    for s, seg_name in enumerate(SEGMENTS):
        vocab = _VOCAB[seg_name]
        for c, (category, groups) in enumerate(vocab.categories.items(), start=1):
            for g, group in enumerate(groups, start=1):
                for k, kind in enumerate(vocab.kinds, start=1):
                    code = (s + 1) * 1_000_000 + c * 10_000 + g * 100 + k
                    rows.append((code, s, seg_name, category, group, f"{group} {kind}", kind))
    frame = pl.DataFrame(
        {
            "COD_SUBGRUPO": [r[0] for r in rows],
            "NOMESEGMENTO": [r[2] for r in rows],
            "NOMECATEGORIA": [r[3] for r in rows],
            "NOMEGRUPO": [r[4] for r in rows],
            "NOMESUBGRUPO": [r[5] for r in rows],
        }
    )
    frame = _conform(frame, TABLES["segmentos"])
    return _Hierarchy(
        code=np.array([r[0] for r in rows], dtype=np.int32),
        segment=np.array([r[1] for r in rows], dtype=np.int16),
        group=[r[4] for r in rows],
        frame=frame,
        kinds=[r[6] for r in rows],
    )


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    """A generator derived from the seed and a stable name (crc32, not ``hash``)."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    entropy = [seed, *(zlib.crc32(p.encode()) if isinstance(p, str) else p for p in parts)]
    return np.random.default_rng(entropy)


def _allocate(total: int, weights: np.ndarray, caps: np.ndarray | None = None) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder),
    never above ``caps``."""
    w = np.asarray(weights, dtype=np.float64) + 1e-12
    raw = total * w / w.sum()
    out = np.floor(raw).astype(np.int64)
    out[np.argsort(-(raw - out), kind="stable")[: total - int(out.sum())]] += 1
    if caps is None:
        return out
    caps = np.asarray(caps, dtype=np.int64)
    if caps.sum() < total:
        raise ValueError(f"cannot place {total} rows in {int(caps.sum())} slots")
    out = np.minimum(out, caps)
    while (deficit := total - int(out.sum())) > 0:
        room = caps - out
        out += np.minimum(_allocate(deficit, np.where(room > 0, w, 0.0)), room)
    return out


def _conform(frame: pl.DataFrame, table: RetailTable) -> pl.DataFrame:
    """Select and cast the columns to exactly the table's raw schema."""
    return frame.select([pl.col(c).cast(t) for c, t in table.raw_schema.items()])


def _nullable(values: np.ndarray | pl.Series, null_mask: np.ndarray | None) -> pl.Series:
    series = values if isinstance(values, pl.Series) else pl.Series(values)
    if null_mask is None or not null_mask.any():
        return series
    return series.scatter(np.flatnonzero(null_mask), None)


def _dates(days: np.ndarray, null_mask: np.ndarray | None = None) -> pl.Series:
    """Epoch-day integers as a ``pl.Date`` series."""
    return _nullable(np.asarray(days, dtype=np.int32), null_mask).cast(pl.Date)


def _pick(values: tuple[str, ...] | list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(idx, dtype=np.int64))


def _choice(
    rng: np.random.Generator, values: tuple[str, ...], p: tuple[float, ...], n: int
) -> pl.Series:
    probs = np.asarray(p, dtype=np.float64)
    return _pick(values, rng.choice(len(values), size=n, p=probs / probs.sum()))


def _sn(mask: np.ndarray) -> pl.Series:
    """Boolean mask as the ERP's "S" / "N" flags."""
    return _pick(("N", "S"), mask.astype(np.int64))


def _round2(x: np.ndarray) -> np.ndarray:
    return np.round(x, 2)


def _retail_price(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Prices ending in ,99 / ,90 / ,49 / ,00 like a shelf tag."""
    cents = np.array([0.99, 0.90, 0.49, 0.00])[rng.choice(4, x.size, p=[0.55, 0.25, 0.1, 0.1])]
    return np.maximum(np.floor(x), 0) + cents


def _grouped(digits: pl.Expr) -> pl.Expr:
    """Digits grouped in threes with "." from the right: "1534567" -> "1.534.567"."""
    return (
        digits.str.reverse()
        .str.replace_all(r"([0-9]{3})", "$1.")
        .str.strip_chars_end(".")
        .str.reverse()
    )


def _format_numbers(
    values: np.ndarray, rng: np.random.Generator, *, currency: bool = False
) -> pl.Series:
    """Numbers as the Brazilian ERP writes them, rounded to cents: "1.534,00", "1534,00",
    "1.534", "0", "12,5", "15,0" (and, with ``currency``, ~1/4 of them prefixed "R$ " or
    "R$"), a few padded with spaces, ~0.4% junk from :data:`JUNK_VALUES` and ~0.1% nulls.

    Draws exactly what the English-format version did from ``rng`` (so every other
    column of the table is unchanged); vectorised, no Python loop per value.
    """
    n = values.size
    rounded = np.round(values, 2)
    style = rng.integers(0, 100, n)
    cents = np.round(np.abs(rounded) * 100).astype(np.int64)
    units, inverse = np.unique(cents // 100, return_inverse=True)  # group each value once
    grouped = pl.select(_grouped(pl.Series(units).cast(pl.String))).to_series()
    frame = pl.DataFrame(
        {
            "cents": cents,
            "negative": rounded < 0,
            "style": style,
            "grouped": grouped.gather(inverse.ravel()),
        }
    )
    whole = (pl.col("cents") % 100 == 0).alias("whole")
    digits = (pl.col("cents") // 100).cast(pl.String).alias("digits")
    cents2 = (pl.col("cents") % 100).cast(pl.String).str.zfill(2).alias("cents2")
    frame = frame.with_columns(whole, digits, cents2).with_columns(
        pl.col("cents2").str.strip_chars_end("0").replace("", "0").alias("short"),
    )
    s, whole = pl.col("style"), pl.col("whole")
    digits, grouped, cents2, short = (pl.col(c) for c in ("digits", "grouped", "cents2", "short"))
    number = (
        pl.when(s < 25)
        .then(pl.concat_str(grouped, pl.lit(","), cents2))  # "1.534,00"
        .when(s < 45)
        .then(pl.concat_str(digits, pl.lit(","), cents2))  # "1534,00"
        .when(whole & (s < 60))
        .then(grouped)  # "1.534", "0"
        .when(whole & (s < 85))
        .then(digits)  # "1534", "15"
        .when(s >= 95)
        .then(pl.concat_str(grouped, pl.lit(","), short))  # "1.534,5"
        .otherwise(pl.concat_str(digits, pl.lit(","), short))  # "12,5", "15,0"
    )
    prefix = pl.when(pl.col("negative")).then(pl.lit("-")).otherwise(pl.lit(""))
    if currency:
        prefix = pl.concat_str(
            prefix,
            pl.when(s % 8 == 1)
            .then(pl.lit("R$ "))
            .when(s % 8 == 5)
            .then(pl.lit("R$"))
            .otherwise(pl.lit("")),
        )
    text = frame.select(pl.concat_str(prefix, number)).to_series()
    padded = np.flatnonzero(rng.random(n) < 0.002)
    text = text.scatter(padded, " " + text.gather(padded) + " ")
    junk = np.flatnonzero(rng.random(n) < JUNK_SHARE)
    text = text.scatter(junk, _pick(JUNK_VALUES, rng.integers(0, len(JUNK_VALUES), junk.size)))
    return text.scatter(np.flatnonzero(rng.random(n) < RAW_NULL_SHARE), None)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` for int64 via a sort (numpy's hash-based unique is much slower)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]]


def _unique_codes(
    rng: np.random.Generator, target: int, draw: Callable[[int], np.ndarray]
) -> np.ndarray:
    """Exactly ``target`` distinct int64 codes (sorted) from repeated draws; fewer only if
    the code space is exhausted."""
    codes = _sorted_unique(draw(int(target * 1.15) + 16))
    for _ in range(30):
        if codes.size >= target:
            break
        codes = _sorted_unique(np.concatenate([codes, draw(2 * (target - codes.size) + 16)]))
    if codes.size > target:
        codes = np.sort(rng.choice(codes, size=target, replace=False))
    elif codes.size < target:
        logger.warning("only %d distinct keys for %d requested rows", codes.size, target)
    return codes


def _draw_days(rng: np.random.Generator, n: int, first: int, last: int) -> np.ndarray:
    """Epoch days in [first, last], weighted by season and weekday (Sunday quiet)."""
    day = np.arange(first, last + 1)
    month = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    w = _BASE_SEASON[month] * np.array([0.95, 0.9, 0.95, 1.0, 1.15, 1.35, 0.45])[weekday]
    return day[rng.choice(day.size, size=n, p=w / w.sum())]


def _seasonal_days(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """Epoch days within the last ``days`` days up to the reference date."""
    return _draw_days(rng, n, _REF_DAY - days + 1, _REF_DAY)


# --------------------------------------------------------------------------------------
# The shared universe: stores, products, manufacturers and the admmat (UNE, PRODUTO) pairs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Universe:
    store_row: np.ndarray  # index into _STORES, per active store
    store_id: np.ndarray  # int32
    store_weight: np.ndarray  # relative size (mean 1)
    prod_id: np.ndarray  # int64, sorted
    prod_seg: np.ndarray
    prod_sub: np.ndarray  # index into the hierarchy
    prod_name: pl.Series
    prod_pack: pl.Series
    prod_unit: np.ndarray  # 0.5 for products sold by the metre, else 1
    prod_basket: np.ndarray  # units per sale
    prod_ean: pl.Series
    prod_manu: np.ndarray
    prod_price: np.ndarray
    prod_cost: np.ndarray
    prod_pop: np.ndarray
    prod_cadastro: np.ndarray  # epoch days
    prod_foralinha: np.ndarray  # bool
    prod_tipo: np.ndarray
    prod_master: np.ndarray
    prod_multiple: np.ndarray
    manu_id: np.ndarray
    manu_name: list[str]
    manu_brand: list[str]
    manu_cnpj: list[str]
    manu_uf: pl.Series
    manu_leadtime: np.ndarray
    pair_store: np.ndarray  # store index; pairs sorted by (store index, PRODUTO)
    pair_prod: np.ndarray  # product index
    pair_demand: np.ndarray  # expected units per day
    pair_price: np.ndarray

    @property
    def n_products(self) -> int:
        return int(self.prod_id.size)


def _default_products(rows: int, stores: int) -> int:
    return max(60, math.ceil(1.7 * rows / stores))


def _cnpj(base: int) -> str:
    digits = [int(c) for c in f"{base:08d}0001"]
    for weights in ((5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2), (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)):
        r = sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
        digits.append(0 if r < 2 else 11 - r)
    s = "".join(map(str, digits))
    return f"{s[:2]}.{s[2:5]}.{s[5:8]}/{s[8:12]}-{s[12:]}"


def _ean13(base12: np.ndarray) -> np.ndarray:
    """Append the EAN-13 check digit to 12-digit integers."""
    digits = (base12[:, None] // 10 ** np.arange(11, -1, -1)) % 10
    total = (digits * np.tile([1, 3], 6)).sum(axis=1)
    return base12 * 10 + (10 - total % 10) % 10


@functools.lru_cache(maxsize=2)
def _universe(rows: int, stores: int, products: int, manufacturers: int, seed: int) -> _Universe:
    """Everything the tables share, derived from the sizes and the seed only."""
    if not 1 <= stores <= MAX_STORES:
        raise ValueError(f"stores must be between 1 and {MAX_STORES}, got {stores}")
    if rows > 0.9 * stores * products:
        raise ValueError(f"{rows} admmat rows need more than {products} products")
    hier = _hierarchy()

    # Stores: the first `stores` entries, with uneven sizes.
    rng = _rng(seed, "universe", "stores")
    store_row = np.arange(stores)
    store_weight = 0.6 + 0.8 * rng.beta(2.0, 2.0, stores)
    store_weight /= store_weight.mean()
    store_id = np.array([_STORES[i][0] for i in store_row], dtype=np.int32)

    # Manufacturers: unique invented names, a home segment each.
    rng = _rng(seed, "universe", "manufacturers")
    combos = len(_BRAND_HEADS) * len(_BRAND_TAILS) * 2 * len(_COMPANY_SUFFIXES)
    if manufacturers > combos:
        raise ValueError(f"at most {combos} manufacturers, got {manufacturers}")
    picked = rng.choice(combos, size=manufacturers, replace=False)
    head, rest = np.divmod(picked, len(_BRAND_TAILS) * 2 * len(_COMPANY_SUFFIXES))
    tail, rest = np.divmod(rest, 2 * len(_COMPANY_SUFFIXES))
    brasil, suffix = np.divmod(rest, len(_COMPANY_SUFFIXES))
    manu_brand = [_BRAND_HEADS[h] + _BRAND_TAILS[t] for h, t in zip(head, tail, strict=True)]
    manu_name = [
        b + (" DO BRASIL" if x else "") + _COMPANY_SUFFIXES[s]
        for b, x, s in zip(manu_brand, brasil, suffix, strict=True)
    ]
    manu_id = 1_000 + np.sort(rng.choice(99_000, manufacturers, replace=False))
    manu_cnpj = [_cnpj(int(b)) for b in rng.choice(10**8, manufacturers, replace=False)]
    manu_uf = _choice(rng, _MANUFACTURER_UF, _MANUFACTURER_UF_P, manufacturers)
    manu_leadtime = np.clip(np.round(rng.gamma(4.0, 6.0, manufacturers)), 5, 90).astype(np.int32)
    manu_seg = rng.choice(len(SEGMENTS), manufacturers, p=_SEG_SHARE)
    manu_seg[: len(SEGMENTS)] = np.arange(min(len(SEGMENTS), manufacturers))  # none left out
    manu_size = rng.pareto(1.2, manufacturers) + 0.05

    # Products: exact segment shares, subgroup, name parts, price, manufacturer.
    rng = _rng(seed, "universe", "products")
    prod_id = 100_000 + np.sort(rng.choice(9_900_000, products, replace=False))
    prod_seg = rng.permutation(np.repeat(np.arange(len(SEGMENTS)), _allocate(products, _SEG_SHARE)))
    prod_sub = np.empty(products, dtype=np.int64)
    prod_manu = np.empty(products, dtype=np.int64)
    variant = np.empty(products, dtype=np.int64)
    size = np.empty(products, dtype=np.int64)
    pack_idx = np.empty(products, dtype=np.int64)
    pack_names: list[str] = []
    variant_names: list[str] = []
    size_names: list[str] = []
    median_price = np.empty(len(SEGMENTS))
    for s, seg_name in enumerate(SEGMENTS):
        vocab = _VOCAB[seg_name]
        members = np.flatnonzero(prod_seg == s)
        subs = np.flatnonzero(hier.segment == s)
        sub_w = rng.pareto(1.5, subs.size) + 0.2
        prod_sub[members] = subs[rng.choice(subs.size, members.size, p=sub_w / sub_w.sum())]
        makers = np.flatnonzero(manu_seg == s)
        if makers.size == 0:
            makers = np.arange(manufacturers)
        mw = manu_size[makers]
        prod_manu[members] = makers[rng.choice(makers.size, members.size, p=mw / mw.sum())]
        variant[members] = len(variant_names) + rng.integers(0, len(vocab.variants), members.size)
        size[members] = len(size_names) + rng.integers(0, len(vocab.sizes), members.size)
        pack_idx[members] = len(pack_names) + rng.integers(0, len(vocab.packs), members.size)
        variant_names += vocab.variants
        size_names += vocab.sizes
        pack_names += vocab.packs
        median_price[s] = vocab.price
    brand_flag = rng.random(products) < 0.5
    prod_name = (
        pl.DataFrame(
            {
                "g": _pick(hier.group, prod_sub),
                "k": _pick(hier.kinds, prod_sub),
                "v": _pick(variant_names, variant),
                "s": _pick(size_names, size),
                "b": _pick(manu_brand, prod_manu),
                "has_b": brand_flag,
            }
        )
        .select(
            pl.concat_str(
                [
                    pl.concat_str(["g", "k", "v", "s"], separator=" "),
                    pl.when("has_b").then(pl.concat_str([pl.lit(" "), "b"])).otherwise(pl.lit("")),
                ]
            )
        )
        .to_series()
    )
    prod_pack = _pick(pack_names, pack_idx)
    prod_unit = np.where((prod_pack == "MT").to_numpy(), 0.5, 1.0)
    prod_basket = np.where(prod_unit < 1, 3.0 + rng.gamma(2.0, 1.5, products), 1.0)
    prod_basket += rng.exponential(0.3, products)
    prod_price = _retail_price(median_price[prod_seg] * rng.lognormal(0.0, 0.55, products), rng)
    prod_price[rng.random(products) < 0.002] = 0.0  # gifts and display items
    prod_cost = _round2(prod_price * rng.uniform(0.42, 0.68, products))
    prod_pop = rng.lognormal(0.0, 1.0, products)
    age = np.where(
        rng.random(products) < 0.75,
        rng.integers(365, _HISTORY_DAYS, products),
        rng.integers(0, 365, products),
    )
    prod_cadastro = (_REF_DAY - age).astype(np.int32)
    prod_foralinha = rng.random(products) < 0.06
    prod_tipo = rng.choice([1, 2, 3, 4], products, p=[0.88, 0.05, 0.04, 0.03]).astype(np.int16)
    masters = np.array([1, 6, 10, 12, 20, 24, 36, 48, 50, 60, 100, 144])
    prod_master = np.where(
        prod_unit < 1,
        rng.choice([10, 25, 50, 100], products),
        masters[rng.choice(masters.size, products)],
    )
    divisor = rng.choice([1, 2, 3, 4, 6, 12], products)
    prod_multiple = np.where(
        (prod_unit < 1) | (prod_master % divisor != 0) | (rng.random(products) < 0.6),
        1,
        prod_master // divisor,
    )
    ean = _ean13(789_000_000_000 + rng.choice(10**9, products, replace=False))
    prod_ean = _nullable(pl.Series(ean).cast(pl.String), rng.random(products) < 0.01)

    # Pairs: per segment and store, the quota of products, chosen by popularity.
    rng = _rng(seed, "universe", "pairs")
    seg_rows = _allocate(rows, _SEG_SHARE)
    stores_out: list[np.ndarray] = []
    prods_out: list[np.ndarray] = []
    for s in range(len(SEGMENTS)):
        members = np.flatnonzero(prod_seg == s)
        quota = _allocate(int(seg_rows[s]), store_weight, np.full(stores, members.size))
        keys = np.log(prod_pop[members])[None, :] + rng.gumbel(size=(stores, members.size))
        order = np.argsort(-keys, axis=1)
        chosen = order[np.arange(members.size)[None, :] < quota[:, None]]
        stores_out.append(np.repeat(np.arange(stores), quota))
        prods_out.append(members[chosen])
    pair_store = np.concatenate(stores_out)
    pair_prod = np.concatenate(prods_out)
    order = np.argsort(pair_store.astype(np.int64) * products + pair_prod, kind="stable")
    pair_store = pair_store[order].astype(np.int32)
    pair_prod = pair_prod[order].astype(np.int32)

    # Demand (units of the product's unit per day) and the store's price.
    n = pair_store.size
    cheapness = (15.0 / np.maximum(prod_price[pair_prod], 1.0)) ** 0.35
    demand = (
        0.11
        * prod_pop[pair_prod] ** 0.9
        * store_weight[pair_store]
        * cheapness
        * rng.lognormal(0.0, 0.6, n)
        / prod_unit[pair_prod]
    )
    dead = rng.random(n) < np.where(prod_foralinha[pair_prod], 0.7, 0.2)
    demand[dead] = 0.0
    price = prod_price[pair_prod].copy()
    local = rng.random(n) < 0.12
    price[local] = _retail_price(price[local] * rng.uniform(0.9, 1.1, int(local.sum())), rng)
    price[prod_price[pair_prod] == 0] = 0.0
    return _Universe(
        store_row=store_row,
        store_id=store_id,
        store_weight=store_weight,
        prod_id=prod_id.astype(np.int64),
        prod_seg=prod_seg,
        prod_sub=prod_sub,
        prod_name=prod_name,
        prod_pack=prod_pack,
        prod_unit=prod_unit,
        prod_basket=prod_basket,
        prod_ean=prod_ean,
        prod_manu=prod_manu,
        prod_price=prod_price,
        prod_cost=prod_cost,
        prod_pop=prod_pop,
        prod_cadastro=prod_cadastro,
        prod_foralinha=prod_foralinha,
        prod_tipo=prod_tipo,
        prod_master=prod_master.astype(np.int32),
        prod_multiple=prod_multiple.astype(np.int32),
        manu_id=manu_id.astype(np.int32),
        manu_name=manu_name,
        manu_brand=manu_brand,
        manu_cnpj=manu_cnpj,
        manu_uf=manu_uf,
        manu_leadtime=manu_leadtime,
        pair_store=pair_store,
        pair_prod=pair_prod,
        pair_demand=demand,
        pair_price=price,
    )


def _profile_universe(profile: RetailProfile, seed: int) -> _Universe:
    return _universe(
        profile.admmat_rows, profile.stores, profile.products, profile.manufacturers, seed
    )


def _store_label(row: int) -> str:
    une, name, *_ = _STORES[row]
    return f"UNE {une} - {name}"


def _demand_pairs(u: _Universe, rng: np.random.Generator, n: int) -> np.ndarray:
    """Pair indices drawn proportionally to their demand (sold pairs only)."""
    cum = np.cumsum(u.pair_demand)
    return np.searchsorted(cum, rng.random(n) * cum[-1], side="right")


# --------------------------------------------------------------------------------------
# admmat
# --------------------------------------------------------------------------------------
def _months() -> list[tuple[int, int, int]]:
    """(first epoch day, number of days, calendar month 0-11) of MES_PARCIAL, MES_01..12."""
    out = []
    y, m = REFERENCE_DATE.year, REFERENCE_DATE.month
    for k in range(13):
        yy, mm = divmod((y * 12 + m - 1) - k, 12)
        first = date(yy, mm + 1, 1)
        nxt = date(yy + (mm + 1) // 12, (mm + 1) % 12 + 1, 1)
        days = REFERENCE_DATE.day if k == 0 else (nxt - first).days
        out.append(((first - date(1970, 1, 1)).days, days, mm))
    return out


def _week_spans() -> list[tuple[int, int]]:
    """(first, last) epoch day of SEMANA_ATUAL (Monday to the reference date) and of the
    four weeks before it."""
    monday = _REF_DAY - REFERENCE_DATE.weekday()
    return [(monday, _REF_DAY), *((monday - 7 * k, monday - 7 * k + 6) for k in range(1, 5))]


def _window_units(
    rng: np.random.Generator,
    week_units: list[np.ndarray],
    spans: list[tuple[int, int]],
    first: int,
    daily: np.ndarray,
) -> np.ndarray:
    """Units sold from ``first`` to the reference date: each week's units thinned by its
    overlap with the window, plus Poisson sales for days before the oldest week."""
    total = np.zeros(week_units[0].size, dtype=np.int64)
    covered = 0
    for units, (a, b) in zip(week_units, spans, strict=True):
        overlap = max(0, min(b, _REF_DAY) - max(a, first) + 1)
        if overlap:
            total += rng.binomial(units, overlap / (b - a + 1))
            covered += overlap
    uncovered = _REF_DAY - first + 1 - covered
    return total + (rng.poisson(daily * uncovered) if uncovered > 0 else 0)


def _abc(value: np.ndarray, group: np.ndarray) -> np.ndarray:
    """ABC class per row within each group: A up to 60% of the value, B up to 85%, C the
    rest and every row without value. Returns 0/1/2."""
    order = np.lexsort((-value, group))
    v, g = value[order], group[order]
    cum = np.cumsum(v)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, v.size])
    before = np.r_[0.0, cum[starts[1:] - 1]]
    totals = np.add.reduceat(v, starts)
    share = (cum - v - np.repeat(before, counts)) / np.maximum(np.repeat(totals, counts), 1e-9)
    cls = np.where(share < 0.6, 0, np.where(share < 0.85, 1, 2))
    cls[v <= 0] = 2
    out = np.empty_like(cls)
    out[order] = cls
    return out


def _admmat_frame(u: _Universe, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "admmat")
    sp, pp = u.pair_store, u.pair_prod
    n = sp.size
    d = u.pair_demand
    unit = u.prod_unit[pp]
    basket = u.prod_basket[pp]
    price = u.pair_price
    seg = u.prod_seg[pp]
    cadastro = u.prod_cadastro[pp]
    cols: dict[str, pl.Series | np.ndarray] = {}

    cols["UNE"] = u.store_id[sp]
    cols["PRODUTO"] = u.prod_id[pp]
    cols["TIPO"] = u.prod_tipo[pp]
    cols["UNE_NOME"] = _pick([_store_label(r) for r in u.store_row], sp)
    cols["NOME"] = u.prod_name.gather(pp)
    cols["EMBALAGEM"] = u.prod_pack.gather(pp)
    hier = _hierarchy().frame
    sub = u.prod_sub[pp]
    for c in ("NOMESEGMENTO", "NOMECATEGORIA", "NOMEGRUPO", "NOMESUBGRUPO"):
        cols[c] = hier[c].gather(sub)
    cols["NOMEFABRICANTE"] = _pick(u.manu_name, u.prod_manu[pp])
    cols["EAN"] = u.prod_ean.gather(pp)
    promo = rng.random(n) < 0.06
    cols["PROMOCIONAL"] = _sn(promo)
    cols["FORALINHA"] = _sn(u.prod_foralinha[pp])
    cols["LIQUIDO_38"] = _format_numbers(price, rng, currency=True)
    net_price = price * np.where(promo, 0.85, 1.0)

    # Weekly columns: FREQ sales, QTDE quantity, MEDIA = QTDE / FREQ, value in R$.
    season_now = _SEASON[seg, REFERENCE_DATE.month - 1]
    spans = _week_spans()
    weeks = ["SEMANA_ATUAL", *(f"SEMANA_ANTERIOR_{k}" for k in range(2, 6))]
    week_units: list[np.ndarray] = []
    for week, (first, last) in zip(weeks, spans, strict=True):
        freq = rng.poisson(d / basket * (last - first + 1) * season_now)
        freq[cadastro > last] = 0
        units = freq + rng.poisson(freq * (basket - 1.0))
        qty = units * unit
        week_units.append(units)
        cols[week] = _round2(qty * net_price)
        cols[f"FREQ_{week}"] = freq.astype(np.int32)
        cols[f"QTDE_{week}"] = qty
        cols[f"MEDIA_{week}"] = _round2(np.where(freq > 0, qty / np.maximum(freq, 1), 0.0))
    venda_30 = _window_units(rng, week_units, spans, _REF_DAY - 29, d * season_now) * unit
    cols["VENDA_30DD"] = venda_30

    # Monthly sales: seasonal Poisson counts, nothing before the product existed; the
    # current month (MES_PARCIAL) is the weeks' sales that fall into it.
    months = _months()
    monthly: list[np.ndarray] = []
    for k, (first, days, cal) in enumerate(months):
        if k == 0:
            qty = _window_units(rng, week_units, spans, first, d * season_now) * unit
        else:
            qty = rng.poisson(d * days * _SEASON[seg, cal]) * unit
            qty[cadastro > first + days - 1] = 0.0
        monthly.append(qty)
        cols["MES_PARCIAL" if k == 0 else f"MES_{k:02d}"] = qty

    # ABC classes: per store on monthly value, and network-wide over 90 days.
    abc_null_day = np.array([m[0] + m[1] - 1 for m in months[1:5]])
    for k in range(1, 5):
        cls = _abc(monthly[k] * price, sp)
        cols[f"ABC_UNE_MES_{k:02d}"] = _nullable(
            _pick(("A", "B", "C"), cls), cadastro > abc_null_day[k - 1]
        )
    cols["ABC_UNE_30DD"] = _nullable(
        _pick(("A", "B", "C"), _abc(venda_30 * price, sp)), cadastro > _REF_DAY - 30
    )
    value_90 = np.bincount(pp, (monthly[1] + monthly[2] + monthly[3]) * price, u.n_products)
    cols["ABC_CACULA_90DD"] = _nullable(
        _pick(("A", "B", "C"), _abc(value_90, np.zeros(u.n_products, np.int64))[pp]),
        cadastro > _REF_DAY - 90,
    )

    # Stock: the DC's per product, the store's against its target level (LV).
    p_rng = _rng(seed, "admmat", "dc")
    network = np.bincount(pp, d, u.n_products)
    cd_zero = p_rng.random(u.n_products) < np.where(u.prod_foralinha, 0.6, 0.13)
    cd_units = np.ceil(network * p_rng.uniform(15, 90, u.n_products)) + p_rng.integers(
        1, 40, u.n_products
    )
    cd = np.where(cd_zero, 0.0, cd_units)[pp] * unit
    leadtime = np.clip(
        np.round(1 + 4 * u.store_weight[sp] ** -1 + rng.gamma(1.5, 2.0, n)), 2, 30
    ).astype(np.int32)
    expo_min = rng.choice([2, 3, 4, 5, 6, 10, 12], n).astype(np.float64)
    expo_min = np.where(unit < 1, expo_min * 4, expo_min)  # fabric: half metres on display
    gondola = np.maximum(expo_min, np.ceil(d * (leadtime + 7)))
    island = np.where(rng.random(n) < np.where(promo, 0.5, 0.05), expo_min * 2, 0.0)
    lv = gondola + island
    below = rng.random(n) < np.where(cd == 0, 0.3, 0.08)
    une = np.where(
        below,
        np.floor(lv * rng.random(n)),
        lv + np.floor(lv * rng.gamma(1.2, 0.9, n)),
    )
    negative = rng.random(n) < 0.003
    une[negative] = -rng.integers(1, 6, int(negative.sum()))
    reorder = np.ceil(d * leadtime) + expo_min
    cols["ESTOQUE_CD"] = _format_numbers(cd, rng)
    cols["ESTOQUE_UNE"] = _format_numbers(une * unit, rng)
    cols["ESTOQUE_LV"] = _format_numbers(lv * unit, rng)
    cols["ESTOQUE_GONDOLA_LV"] = _format_numbers(gondola * unit, rng)
    cols["ESTOQUE_ILHA_LV"] = _format_numbers(island * unit, rng)
    cols["LEADTIME_LV"] = leadtime
    cols["PONTO_PEDIDO_LV"] = reorder * unit
    frozen = rng.random(n) < 0.03
    cols["MEDIA_TRAVADA"] = _sn(frozen)

    # Dates.
    last_cd = p_rng.integers(0, 120, u.n_products) + np.floor(
        p_rng.exponential(20, u.n_products)
    ).astype(np.int64)
    cols["ULTIMA_ENTRADA_DATA_CD"] = _dates(
        np.maximum(_REF_DAY - last_cd, u.prod_cadastro)[pp],
        (p_rng.random(u.n_products) < 0.03)[pp],
    )
    master = u.prod_master[pp]
    multiple = u.prod_multiple[pp]
    cols["ULTIMA_ENTRADA_QTDE_CD"] = (
        u.prod_master * (1 + p_rng.poisson(8, u.n_products)) * u.prod_unit
    )[pp]
    cols["ULTIMA_ENTRADA_CUSTO_CD"] = u.prod_cost[pp]
    no_entry = rng.random(n) < 0.06
    entry_day = np.maximum(
        _REF_DAY - np.floor(rng.exponential(25, n)).astype(np.int64), cadastro
    ).astype(np.int64)
    cols["ULTIMA_ENTRADA_DATA_UNE"] = _dates(entry_day, no_entry)
    cols["ULTIMA_ENTRADA_QTDE_UNE"] = _nullable(
        multiple * (1 + rng.poisson(np.maximum(d * 10 / multiple, 0.5))) * unit, no_entry
    )
    inventory = np.maximum(_REF_DAY - rng.integers(0, 540, n), cadastro)
    cols["ULTIMO_INVENTARIO_UNE"] = _dates(inventory, rng.random(n) < 0.12)
    cols["ULTIMA_VENDA_DATA_UNE"] = _dates(*_last_sale(rng, week_units, monthly, months, cadastro))
    cols["DATA_CADASTRO"] = _dates(cadastro)

    # Logistics: replenishment requests, picking, invoices, addresses, packaging.
    pending = rng.random(n) < np.where(une < reorder, 0.35, 0.02)
    pending_qty = np.maximum(multiple, np.ceil(np.maximum(lv - une, 1) / multiple) * multiple)
    cols["SOLICITACAO_PENDENTE"] = _sn(pending)
    cols["SOLICITACAO_PENDENTE_QTDE"] = _nullable(pending_qty * unit, ~pending)
    cols["SOLICITACAO_PENDENTE_DATA"] = _dates(_REF_DAY - rng.integers(0, 12, n), ~pending)
    situation = _choice(
        rng, ("ABERTA", "EM SEPARAÇÃO", "PARCIALMENTE ATENDIDA"), (0.55, 0.3, 0.15), n
    )
    situation = (
        pl.DataFrame({"s": situation, "wait": cd == 0})
        .select(pl.when("wait").then(pl.lit("AGUARDANDO ESTOQUE CD")).otherwise("s"))
        .to_series()
    )
    cols["SOLICITACAO_PENDENTE_SITUACAO"] = _nullable(situation, ~pending)
    has_pick = rng.random(n) < 0.55
    cols["PICKLIST"] = _nullable(rng.integers(4_000_000, 4_900_000, n), ~has_pick)
    cols["PICKLIST_SITUACAO"] = _nullable(
        _choice(rng, ("FINALIZADA", "EM SEPARAÇÃO", "GERADA"), (0.86, 0.09, 0.05), n), ~has_pick
    )
    cols["PICKLIST_CONFERENCIA"] = _nullable(
        _choice(rng, ("CONFERIDO", "PENDENTE", "DIVERGENTE"), (0.88, 0.09, 0.03), n), ~has_pick
    )
    cols["NOTA"] = _nullable(rng.integers(100_000, 1_000_000, n), no_entry)
    cols["SERIE"] = _nullable(_choice(rng, ("1", "2", "3"), (0.85, 0.12, 0.03), n), no_entry)
    cols["NOTA_EMISSAO"] = _dates(entry_day - rng.integers(0, 4, n), no_entry)
    no_romaneio = no_entry | (rng.random(n) < 0.2)
    cols["ROMANEIO_SOLICITACAO"] = _nullable(rng.integers(700_000, 999_999, n), no_romaneio)
    cols["ROMANEIO_ENVIO"] = _nullable(rng.integers(1_200_000, 1_800_000, n), no_romaneio)
    cols["ULTIMO_VOLUME"] = _nullable(rng.integers(10_000_000, 99_999_999, n), no_romaneio)
    cols["VOLUME_QTDE"] = _nullable(multiple * (1 + rng.poisson(2, n)) * unit, no_romaneio)
    cols["ENDERECO_RESERVA"] = _nullable(
        _address(rng, n, ("R", 2, 40), ("P", 2, 30), ("N", 1, 6), ("A", 2, 12)),
        rng.random(n) < 0.25,
    )
    cols["ENDERECO_LINHA"] = _nullable(
        _address(rng, n, ("C", 2, 24), ("G", 2, 40), ("P", 1, 6)), rng.random(n) < 0.15
    )
    expo_product = rng.choice([1, 2, 3, 4, 6, 10], u.n_products).astype(np.float64) * u.prod_unit
    cols["EXPOSICAO_MINIMA"] = expo_product[pp]
    cols["EXPOSICAO_MINIMA_UNE"] = expo_min * unit
    cols["EXPOSICAO_MAXIMA_UNE"] = expo_min * rng.choice([2, 3, 4, 6], n) * unit
    cols["MEDIA_CONSIDERADA_LV"] = _round2(
        np.where(frozen, d * unit * rng.uniform(0.5, 2.0, n), venda_30 / 30.0)
    )
    cols["QTDE_EMBALAGEM_MASTER"] = master
    cols["QTDE_EMBALAGEM_MULTIPLO"] = multiple
    weight = np.round(p_rng.lognormal(-1.6, 1.0, u.n_products), 3)
    cols["PESO_BRUTO"] = weight[pp]
    cols["CUBAGEM"] = np.round(weight * p_rng.uniform(0.002, 0.02, u.n_products), 5)[pp]
    cols["FREQ_ULT_SEM"] = cols["FREQ_SEMANA_ANTERIOR_2"]
    store_minute = _rng(seed, "admmat", "stores").integers(0, 180, u.store_id.size)
    stale = rng.random(n) < 0.02
    stamp = (_REF_DAY - stale.astype(np.int64)) * _US_PER_DAY + (
        3 * 3600 + store_minute[sp] * 60 + rng.integers(0, 60, n)
    ) * 1_000_000
    cols["ULTIMA_ATUALIZACAO"] = pl.Series(stamp).cast(pl.Datetime("us"))
    return _conform(pl.DataFrame(cols), TABLES["admmat"])


def _address(rng: np.random.Generator, n: int, *parts: tuple[str, int, int]) -> pl.Series:
    """Addresses like "R03-P12-N2-A04" (prefix, digits, max) joined by "-"."""
    frame = pl.DataFrame(
        {f"p{i}": rng.integers(1, top + 1, n) for i, (_, _, top) in enumerate(parts)}
    )
    exprs = [
        pl.concat_str([pl.lit(prefix), pl.col(f"p{i}").cast(pl.String).str.zfill(width)])
        for i, (prefix, width, _) in enumerate(parts)
    ]
    return frame.select(pl.concat_str(exprs, separator="-").alias("a")).to_series()


def _last_sale(
    rng: np.random.Generator,
    week_units: list[np.ndarray],
    monthly: list[np.ndarray],
    months: list[tuple[int, int, int]],
    cadastro: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Date of the most recent sale (within the latest week / month with sales, never before
    the product's registration) and the mask of rows never sold."""
    day = np.full(week_units[0].size, -1, dtype=np.int64)
    spans = zip(week_units, _week_spans(), strict=True)
    periods = [(u, last, last - first + 1) for u, (first, last) in spans]
    periods += [(monthly[k], months[k][0] + months[k][1] - 1, months[k][1]) for k in range(1, 13)]
    for sold, last, span in periods:
        todo = (day < 0) & (sold > 0)
        day[todo] = last - rng.integers(0, span, int(todo.sum()))
    never = day < 0
    return np.maximum(day, cadastro), never


# --------------------------------------------------------------------------------------
# The other tables
# --------------------------------------------------------------------------------------
def _lojas(u: _Universe, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "lojas")
    rows = [_STORES[i] for i in u.store_row] + list(_STORES[-_CLOSED_STORES:]) + [_CD]
    k = len(u.store_row)
    area = np.round(350 + 900 * u.store_weight * rng.uniform(0.85, 1.15, k), -1)
    opened = _REF_DAY - rng.integers(365, 40 * 365, len(rows))
    frame = pl.DataFrame(
        {
            "UNE": [r[0] for r in rows],
            "UNE_NOME": [f"UNE {r[0]} - {r[1]}" for r in rows],
            "CIDADE": [r[2] for r in rows],
            "UF": [r[3] for r in rows],
            "REGIAO": [r[4] for r in rows],
            "AREA_VENDA_M2": [*area.tolist(), 420.0, 380.0, None],
            "DATA_ABERTURA": _dates(opened),
            "ATIVA": [True] * k + [False] * _CLOSED_STORES + [True],
        }
    )
    return _conform(frame.sort("UNE"), TABLES["lojas"])


def _produtos(u: _Universe, seed: int) -> pl.DataFrame:
    hier = _hierarchy().frame
    frame = pl.DataFrame(
        {
            "PRODUTO": u.prod_id,
            "NOME": u.prod_name,
            "EMBALAGEM": u.prod_pack,
            "EAN": u.prod_ean,
            **{c: hier[c].gather(u.prod_sub) for c in hier.columns if c != "COD_SUBGRUPO"},
            "COD_FABRICANTE": u.manu_id[u.prod_manu],
            "DATA_CADASTRO": _dates(u.prod_cadastro),
            "FORALINHA": _sn(u.prod_foralinha),
        }
    )
    return _conform(frame, TABLES["produtos"])


def _fabricantes(u: _Universe, seed: int) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "COD_FABRICANTE": u.manu_id,
            "NOMEFABRICANTE": u.manu_name,
            "CNPJ": u.manu_cnpj,
            "UF": u.manu_uf,
            "LEADTIME_DIAS": u.manu_leadtime,
        }
    )
    return _conform(frame, TABLES["fabricantes"])


def _segmentos(u: _Universe, seed: int) -> pl.DataFrame:
    return _hierarchy().frame


def _vendas_diarias(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "vendas_diarias")
    npairs = u.pair_store.size
    days = 365

    def draw(k: int) -> np.ndarray:
        day = _seasonal_days(rng, k, days) - (_REF_DAY - days + 1)
        return day.astype(np.int64) * npairs + _demand_pairs(u, rng, k)

    codes = _unique_codes(rng, rows, draw)
    day, pair = np.divmod(codes, npairs)
    pp = u.pair_prod[pair]
    units = 1 + rng.poisson(u.pair_demand[pair] + u.prod_basket[pp] - 1.0)
    qty = units * u.prod_unit[pp]
    discount = np.where(rng.random(codes.size) < 0.1, rng.uniform(0.05, 0.3, codes.size), 0.0)
    frame = pl.DataFrame(
        {
            "DATA": _dates(day + _REF_DAY - days + 1),
            "UNE": u.store_id[u.pair_store[pair]],
            "PRODUTO": u.prod_id[pp],
            "QTDE": qty,
            "VALOR_LIQUIDO": _round2(qty * u.pair_price[pair] * (1 - discount)),
        }
    )
    return _conform(frame, TABLES["vendas_diarias"])


def _pedidos_compra(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "pedidos_compra")
    n_prod = u.n_products
    by_manu = np.argsort(u.prod_manu, kind="stable")
    counts = np.bincount(u.prod_manu, minlength=u.manu_id.size)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    n_orders = max(1, math.ceil(rows / 6 * 1.1))
    lines = 1 + rng.poisson(5, n_orders)
    keep = np.searchsorted(np.cumsum(lines), rows) + 1
    lines = lines[:keep]
    lines[-1] -= max(0, int(lines.sum()) - rows)
    n_orders = lines.size
    manu = rng.choice(counts.size, n_orders, p=counts / counts.sum())
    order_day = np.sort(_REF_DAY - rng.integers(0, _HISTORY_DAYS, n_orders))
    line_order = np.repeat(np.arange(n_orders), lines)
    line_manu = manu[line_order]
    prod = by_manu[
        starts[line_manu] + (rng.random(line_order.size) * counts[line_manu]).astype(int)
    ]
    code = _sorted_unique(line_order.astype(np.int64) * n_prod + prod)  # one line per product
    line_order, prod = np.divmod(code, n_prod)
    first = np.searchsorted(line_order, line_order, side="left")
    item = np.arange(line_order.size) - first + 1
    expected = order_day + u.manu_leadtime[manu] + rng.integers(-2, 6, n_orders)
    old = expected < _REF_DAY - 10
    status = np.where(
        old,
        rng.choice(3, n_orders, p=[0.9, 0.05, 0.05]),
        3 + rng.choice(3, n_orders, p=[0.5, 0.35, 0.15]),
    )
    labels = ("RECEBIDO", "RECEBIDO PARCIAL", "CANCELADO", "PENDENTE", "EM TRÂNSITO", "CONFIRMADO")
    no_forecast = (status == 2) & (rng.random(n_orders) < 0.3)
    qty = u.prod_master[prod] * (1 + rng.poisson(3, prod.size)) * u.prod_unit[prod]
    frame = pl.DataFrame(
        {
            "PEDIDO": 5_000_000 + line_order,
            "ITEM": item,
            "COD_FABRICANTE": u.manu_id[manu[line_order]],
            "PRODUTO": u.prod_id[prod],
            "QTDE": qty,
            "VALOR": _round2(qty * u.prod_cost[prod]),
            "DATA_PEDIDO": _dates(order_day[line_order]),
            "DATA_PREVISTA": _dates(expected[line_order], no_forecast[line_order]),
            "SITUACAO": _pick(labels, status[line_order]),
        }
    )
    return _conform(frame, TABLES["pedidos_compra"])


def _transferencias(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "transferencias")
    pair = _demand_pairs(u, rng, rows)
    dest = u.pair_store[pair]
    pp = u.pair_prod[pair]
    day = np.sort(_seasonal_days(rng, rows, 365))
    k = u.store_id.size
    other = (dest + rng.integers(1, max(k, 2), rows)) % k
    from_cd = (rng.random(rows) < 0.85) | (k == 1)
    origin = np.where(from_cd, CD_UNE, u.store_id[other])
    recent = day > _REF_DAY - 3
    status = np.where(
        recent,
        3 + rng.choice(2, rows, p=[0.4, 0.6]),
        rng.choice(3, rows, p=[0.96, 0.03, 0.01]),
    )
    labels = ("CONCLUÍDA", "CANCELADA", "DIVERGENTE", "PENDENTE", "EM TRÂNSITO")
    frame = pl.DataFrame(
        {
            "TRANSFERENCIA": 10_000_000 + np.arange(rows),
            "DATA": _dates(day),
            "UNE_ORIGEM": origin,
            "UNE_DESTINO": u.store_id[dest],
            "PRODUTO": u.prod_id[pp],
            "QTDE": u.prod_multiple[pp] * (1 + rng.poisson(3, rows)) * u.prod_unit[pp],
            "SITUACAO": _pick(labels, status),
        }
    )
    return _conform(frame, TABLES["transferencias"])


def _inventarios(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "inventarios")
    npairs = u.pair_store.size

    def draw(k: int) -> np.ndarray:
        day = rng.integers(0, _HISTORY_DAYS, k)
        return day * npairs + rng.integers(0, npairs, k)

    day, pair = np.divmod(_unique_codes(rng, rows, draw), npairs)
    pp = u.pair_prod[pair]
    n = pair.size
    system = np.floor(rng.lognormal(2.0, 1.0, n))
    diff = np.where(rng.random(n) < 0.28, np.round(rng.normal(0, 0.15 * system + 1.5)), 0.0)
    frame = pl.DataFrame(
        {
            "DATA_INVENTARIO": _dates(_REF_DAY - _HISTORY_DAYS + 1 + day),
            "UNE": u.store_id[u.pair_store[pair]],
            "PRODUTO": u.prod_id[pp],
            "QTDE_SISTEMA": system * u.prod_unit[pp],
            "QTDE_CONTADA": np.maximum(system + diff, 0) * u.prod_unit[pp],
        }
    )
    return _conform(frame, TABLES["inventarios"])


def _precos(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "precos")
    npairs = u.pair_store.size

    def draw(k: int) -> np.ndarray:
        return rng.integers(0, npairs, k) * _HISTORY_DAYS + rng.integers(0, _HISTORY_DAYS, k)

    pair, day = np.divmod(_unique_codes(rng, rows, draw), _HISTORY_DAYS)
    ago = _HISTORY_DAYS - 1 - day
    base = u.pair_price[pair] * (1 - 0.05 * ago / 365) * rng.uniform(0.95, 1.05, pair.size)
    frame = pl.DataFrame(
        {
            "PRODUTO": u.prod_id[u.pair_prod[pair]],
            "UNE": u.store_id[u.pair_store[pair]],
            "DATA_VIGENCIA": _dates(_REF_DAY - ago),
            "PRECO": np.where(u.pair_price[pair] > 0, _retail_price(base, rng), 0.0),
        }
    )
    return _conform(frame.sort("PRODUTO", "UNE", "DATA_VIGENCIA"), TABLES["precos"])


def _promocoes(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "promocoes")
    n_prod = u.n_products
    n_promos = max(1, rows // 40)
    promo_seg = rng.choice(len(SEGMENTS), n_promos, p=_SEG_SHARE)
    by_seg = np.argsort(u.prod_seg, kind="stable")
    counts = np.bincount(u.prod_seg, minlength=len(SEGMENTS))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    size_w = rng.lognormal(0, 0.7, n_promos)

    def draw(k: int) -> np.ndarray:
        promo = rng.choice(n_promos, k, p=size_w / size_w.sum())
        g = promo_seg[promo]
        prod = by_seg[starts[g] + (rng.random(k) * counts[g]).astype(np.int64)]
        return promo.astype(np.int64) * n_prod + prod

    promo, prod = np.divmod(_unique_codes(rng, rows, draw), n_prod)
    begin = np.sort(_REF_DAY - rng.integers(0, _HISTORY_DAYS, n_promos))
    end = begin + rng.choice([7, 10, 14, 15, 21, 30], n_promos)
    pct = rng.choice([10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0], n_promos)
    tweak = np.where(rng.random(promo.size) < 0.2, rng.choice([-5.0, 5.0], promo.size), 0.0)
    frame = pl.DataFrame(
        {
            "PROMOCAO": 20_000 + promo,
            "PRODUTO": u.prod_id[prod],
            "INICIO": _dates(begin[promo]),
            "FIM": _dates(end[promo]),
            "DESCONTO_PCT": np.clip(pct[promo] + tweak, 5.0, 70.0),
        }
    )
    return _conform(frame, TABLES["promocoes"])


def _devolucoes(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "devolucoes")
    pair = _demand_pairs(u, rng, rows)
    pp = u.pair_prod[pair]
    units = np.where(u.prod_unit[pp] < 1, 1 + rng.poisson(3, rows), 1 + rng.poisson(0.2, rows))
    reasons = (
        "DEFEITO DE FABRICAÇÃO",
        "TAMANHO/MEDIDA INCORRETA",
        "ARREPENDIMENTO",
        "PRODUTO AVARIADO",
        "COR DIFERENTE DA ESPERADA",
        "TROCA DE PRESENTE",
    )
    frame = pl.DataFrame(
        {
            "DEVOLUCAO": 300_000 + np.arange(rows),
            "DATA": _dates(np.sort(_seasonal_days(rng, rows, 365))),
            "UNE": u.store_id[u.pair_store[pair]],
            "PRODUTO": u.prod_id[pp],
            "QTDE": units * u.prod_unit[pp],
            "MOTIVO": _choice(rng, reasons, (0.3, 0.2, 0.15, 0.15, 0.08, 0.12), rows),
        }
    )
    return _conform(frame, TABLES["devolucoes"])


_MASTER_TABLES: dict[str, Callable[[_Universe, int], pl.DataFrame]] = {
    "lojas": _lojas,
    "produtos": _produtos,
    "fabricantes": _fabricantes,
    "segmentos": _segmentos,
}
_FACT_TABLES: dict[str, Callable[[_Universe, int, int], pl.DataFrame]] = {
    "vendas_diarias": _vendas_diarias,
    "pedidos_compra": _pedidos_compra,
    "transferencias": _transferencias,
    "inventarios": _inventarios,
    "precos": _precos,
    "promocoes": _promocoes,
    "devolucoes": _devolucoes,
}


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def generate_admmat(
    rows: int, *, stores: int = 38, products: int | None = None, seed: int = DEFAULT_SEED
) -> pl.DataFrame:
    """The raw ``admmat`` export: ``rows`` unique (UNE, PRODUTO) rows, raw schema."""
    products = products or _default_products(rows, stores)
    manufacturers = max(20, products // 32)
    return _admmat_frame(_universe(rows, stores, products, manufacturers, seed), seed)


def generate_table(name: str, profile: RetailProfile, *, seed: int = DEFAULT_SEED) -> pl.DataFrame:
    """One table of :data:`TABLES` for the profile, with its raw schema."""
    u = _profile_universe(profile, seed)
    if name == "admmat":
        return _admmat_frame(u, seed)
    if name in _MASTER_TABLES:
        return _MASTER_TABLES[name](u, seed)
    if name in _FACT_TABLES:
        return _FACT_TABLES[name](u, getattr(profile, f"{name}_rows"), seed)
    if name == LARGE_FACT_TABLE.name:
        raise ValueError(f"{name} is written in chunks: use write_large_fact()")
    raise KeyError(f"unknown retail table {name!r}")


def _vendas_itens_chunk(
    u: _Universe, rng: np.random.Generator, rows: int, first_cupom: int, day0: int, day1: int
) -> pl.DataFrame:
    """``rows`` sale lines of coupons issued on epoch days [day0, day1], in time order."""
    k = np.empty(0, dtype=np.int64)
    while k.sum() < rows:
        k = np.r_[k, 1 + rng.poisson(1.8, max(16, int((rows - k.sum()) / 2.6)))]
    k = k[: np.searchsorted(np.cumsum(k), rows) + 1]
    k[-1] -= int(k.sum()) - rows
    n_cupons = k.size
    weights = u.store_weight / u.store_weight.sum()
    store = rng.choice(weights.size, n_cupons, p=weights)
    day = _draw_days(rng, n_cupons, day0, day1)
    second = 8 * 3600 + (13 * 3600 * rng.beta(2.2, 2.0, n_cupons)).astype(np.int64)  # 8h-21h
    stamp = day * _US_PER_DAY + second * 1_000_000
    order = np.argsort(stamp, kind="stable")
    store, stamp = store[order], stamp[order]
    pdv = rng.integers(1, 4 + np.round(12 * u.store_weight[store]).astype(np.int64))
    operator = u.store_id[store].astype(np.int64) * 1000 + rng.integers(1, 60, n_cupons)
    payment = rng.choice(5, n_cupons, p=[0.12, 0.28, 0.32, 0.26, 0.02])
    line_cupom = np.repeat(np.arange(n_cupons), k)
    item = np.arange(rows) - np.repeat(np.cumsum(k) - k, k) + 1
    # Products: drawn within the coupon's store, proportionally to demand.
    cum = np.cumsum(u.pair_demand)
    bounds = np.searchsorted(u.pair_store, np.arange(u.store_id.size + 1))
    lo = np.r_[0.0, cum][bounds[:-1]]
    hi = np.r_[0.0, cum][bounds[1:]]
    line_store = store[line_cupom]
    target = lo[line_store] + rng.random(rows) * (hi[line_store] - lo[line_store])
    pair = np.minimum(np.searchsorted(cum, target, side="right"), cum.size - 1)
    pp = u.pair_prod[pair]
    unit = u.prod_unit[pp]
    qty = np.where(unit < 1, 1 + rng.poisson(4, rows), 1 + rng.poisson(0.35, rows)) * unit
    unit_price = u.pair_price[pair]
    gross = qty * unit_price
    discount = _round2(np.where(rng.random(rows) < 0.15, gross * rng.uniform(0.05, 0.3, rows), 0.0))
    payments = ("DINHEIRO", "CARTÃO DÉBITO", "CARTÃO CRÉDITO", "PIX", "VALE-PRESENTE")
    frame = pl.DataFrame(
        {
            "CUPOM": first_cupom + line_cupom,
            "ITEM": item,
            "DATA_HORA": pl.Series(stamp[line_cupom]).cast(pl.Datetime("us")),
            "UNE": u.store_id[line_store],
            "PRODUTO": u.prod_id[pp],
            "QTDE": qty,
            "PRECO_UNITARIO": unit_price,
            "DESCONTO": discount,
            "VALOR_LIQUIDO": _round2(gross - discount),
            "FORMA_PAGAMENTO": _pick(payments, payment[line_cupom]),
            "OPERADOR": operator[line_cupom],
            "PDV": pdv[line_cupom],
        }
    )
    return _conform(frame, LARGE_FACT_TABLE)


def write_large_fact(
    path: Path,
    rows: int,
    *,
    seed: int = DEFAULT_SEED,
    chunk_rows: int = 2_000_000,
    profile: RetailProfile | str = "default",
) -> Path:
    """Write ``rows`` lines of ``vendas_itens`` (a year of coupons, in time order) to one
    Parquet file, one row group per chunk, atomically; memory stays ~one chunk."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    u = _profile_universe(prof, seed)
    path = Path(path)
    with atomic_path(path, durable=False) as tmp:
        n_chunks = max(1, math.ceil(rows / chunk_rows))
        next_cupom = 1_000_000_001
        writer: pq.ParquetWriter | None = None
        try:
            for c in range(n_chunks):
                n = min(chunk_rows, rows - c * chunk_rows)
                day0 = _REF_DAY - 364 + 365 * c // n_chunks
                day1 = max(day0, _REF_DAY - 365 + 365 * (c + 1) // n_chunks)
                chunk = _vendas_itens_chunk(
                    u, _rng(seed, "vendas_itens", c), n, next_cupom, day0, day1
                )
                next_cupom = int(chunk["CUPOM"][-1]) + 1 if n else next_cupom
                table = chunk.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=max(n, 1))
                logger.debug("vendas_itens: chunk %d/%d written", c + 1, n_chunks)
            if writer is None:  # rows == 0: an empty file with the right schema
                empty = pl.DataFrame(schema=LARGE_FACT_TABLE.raw_schema).to_arrow()
                writer = pq.ParquetWriter(tmp, empty.schema, compression="zstd")
                writer.write_table(empty)
            writer.close()
            writer = None
        finally:
            if writer is not None:
                writer.close()
    return path


def schema_hash(tables: tuple[str, ...]) -> str:
    """Hash of the raw schemas of ``tables`` and of the generator version."""
    payload = {
        "generator_version": GENERATOR_VERSION,
        "tables": {
            name: [[c, str(t)] for c, t in _table(name).raw_schema.items()] for name in tables
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _table(name: str) -> RetailTable:
    return ALL_TABLES[name]


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path, durable=False) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)


def _manifest_is_current(
    out_dir: Path, profile: RetailProfile, seed: int, digest: str
) -> dict[str, Path] | None:
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if (data.get("profile"), data.get("seed"), data.get("schema_hash")) != (
        profile.name,
        seed,
        digest,
    ) or set(data.get("tables", {})) != set(profile.tables):
        return None
    paths = {}
    for name, entry in data["tables"].items():
        path = out_dir / _table(name).raw_file
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None
        paths[name] = path
    return paths


def write_retail_exports(
    out_dir: Path, profile: str = "default", *, seed: int = DEFAULT_SEED, force: bool = False
) -> dict[str, Path]:
    """Write every table of the profile as ``out_dir/<table>.parquet`` plus a manifest.

    Idempotent: when the manifest matches (profile, seed, schema hash) and the files are
    there with the recorded sizes, nothing is written unless ``force``. Returns the paths.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = schema_hash(prof.tables)
    if not force and (paths := _manifest_is_current(out_dir, prof, seed, digest)) is not None:
        logger.info("retail exports in %s are current (%s, seed %d)", out_dir, profile, seed)
        return {name: paths[name] for name in prof.tables}
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    stale = out_dir / LARGE_FACT_TABLE.raw_file
    if not prof.include_large_fact and stale.exists():
        stale.unlink()
        logger.info("removed %s: not part of profile %s", stale, profile)
    started = time.perf_counter()
    entries: dict[str, dict[str, object]] = {}
    paths: dict[str, Path] = {}
    for name in prof.tables:
        t0 = time.perf_counter()
        path = out_dir / _table(name).raw_file
        if name == LARGE_FACT_TABLE.name:
            write_large_fact(path, prof.vendas_itens_rows, seed=seed, profile=prof)
            rows = pq.ParquetFile(path).metadata.num_rows
        else:
            frame = generate_table(name, prof, seed=seed)
            _write_parquet(frame, path)
            rows = frame.height
            del frame
        size = path.stat().st_size
        entries[name] = {"file": path.name, "rows": rows, "bytes": size}
        paths[name] = path
        logger.info(
            "wrote %s: %d rows, %.1f MB in %.1fs",
            path.name,
            rows,
            size / 1e6,
            time.perf_counter() - t0,
        )
    manifest = {
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "reference_date": REFERENCE_DATE.isoformat(),
        "schema_hash": digest,
        "sizes": {f.name: getattr(prof, f.name) for f in fields(prof) if f.name != "name"},
        "tables": entries,
    }
    write_bytes_atomic(
        out_dir / MANIFEST_NAME,
        (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode(),
        durable=False,
    )
    logger.info(
        "retail exports (%s, seed %d) written to %s in %.1fs",
        profile,
        seed,
        out_dir,
        time.perf_counter() - started,
    )
    return paths
