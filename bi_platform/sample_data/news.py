"""Deterministic generator of the news sources: the initial HF dataset and the scraper inbox.

Two things stand in for the real DestaquesGovBr sources:

* the **initial dataset**: ``n`` news records with exactly
  :data:`~bi_platform.news.records.HF_SCHEMA`, published over the 24 months ending at
  :data:`REFERENCE_DATE`, written as one Parquet shard per publication month
  (``data/YYYY-MM.parquet``, São Paulo months) like the HuggingFace repository;
* the **inbox**: one ``YYYY-MM-DD.jsonl`` batch per day after the reference date, as the
  scraper sends them: new stories, edits of existing ones, exact duplicates and malformed
  lines at the fixed rates documented below (:data:`INBOX_NEW_SHARE` ...).

Records use the real agency keys of ``agencies.yaml`` and theme codes of
``themes_tree.yaml``; titles, leads and ~2 KB bodies are assembled from a Portuguese
vocabulary (per-theme sentence banks). ``unique_id`` and ``content_hash`` are computed
with :mod:`bi_platform.news.records`, so the pipeline recomputes the same values.

Everything derives from ``numpy.random.default_rng`` seeded by ``(seed, name)`` and all
dates are relative to :data:`REFERENCE_DATE` (never today's date): the same profile and
seed always give identical files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bi_platform.lib.files import atomic_path, write_bytes_atomic
from bi_platform.news.records import HF_SCHEMA, TIMESTAMP, TIMEZONE
from bi_platform.news.reference_data import (
    AGENCIES_FILE,
    THEMES_FILE,
    load_agencies,
    load_themes,
)

logger = logging.getLogger(__name__)

#: The snapshot date of the initial dataset; every date is relative to it.
REFERENCE_DATE = date(2026, 10, 31)
#: Months of history in the initial dataset (ending with REFERENCE_DATE's month).
HISTORY_MONTHS = 24
#: Bumped whenever the generated data changes, so that old files are rewritten.
GENERATOR_VERSION = 1
DEFAULT_SEED = 2
MANIFEST_NAME = ".seed_manifest.json"
SHARD_DIR = "data"

#: Share of records with a theme (the rest have null theme columns).
THEMED_SHARE = 0.965
#: Level of the most specific theme of a themed record: P(1), P(2), P(3).
THEME_LEVEL_P = (0.08, 0.27, 0.65)

# Inbox composition (per daily batch). New records are a share of the existing dataset
# (at least INBOX_MIN_NEW); edits and duplicates are relative to the new records;
# malformed lines are a share of all lines, at least one of each kind.
INBOX_NEW_SHARE = 0.001
INBOX_MIN_NEW = 40
INBOX_EDIT_RATE = 0.10
INBOX_DUP_BATCH_RATE = 0.03
INBOX_DUP_EXISTING_RATE = 0.05
INBOX_MALFORMED_RATE = 0.02
#: Existing records published within this many days before the batch are edit candidates.
INBOX_EDIT_WINDOW_DAYS = 45

# Kinds of inbox lines (see InboxBatch.kinds).
NEW = "new"
EDIT = "edit"
DUPLICATE_IN_BATCH = "duplicate_in_batch"
DUPLICATE_OF_EXISTING = "duplicate_of_existing"
#: Malformed lines: ``missing_title`` (key absent or empty), ``bad_published_at`` (not
#: ISO-8601), ``unknown_agency`` (key not in agencies.yaml), ``broken_json`` (the line is
#: cut short: not valid JSON), ``bad_tags_type`` (tags is a string, number or object).
MALFORMED_KINDS: tuple[str, ...] = (
    "missing_title",
    "bad_published_at",
    "unknown_agency",
    "broken_json",
    "bad_tags_type",
)
#: Fields of an inbox line: HF_SCHEMA without the ids the pipeline computes.
INBOX_FIELDS: tuple[str, ...] = tuple(
    name for name in HF_SCHEMA.names if name not in ("unique_id", "content_hash")
)
UNKNOWN_AGENCIES: tuple[str, ...] = (
    "ministerio-da-magia",
    "orgao-desconhecido",
    "secretaria-extinta",
    "mec_antigo",
    "agencia-x",
)
BAD_TIMESTAMPS: tuple[str, ...] = (
    "2026-13-45T25:61:00-03:00",
    "ontem às 18h",
    "31/02/2026 14h30",
    "não informado",
    "0000-00-00 00:00:00",
)

_US_PER_SECOND = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_SECOND
_US_PER_DAY = 86_400 * _US_PER_SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_CHUNK_ROWS = 25_000
_BANK_PER_GROUP = 384
_SLUG_CHARS = 80
_SHARD_NAME = re.compile(r"^\d{4}-\d{2}\.parquet$")


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewsProfile:
    """Size of one generated data set."""

    name: str
    records: int
    inbox_days: int
    months: int = HISTORY_MONTHS


PROFILES: dict[str, NewsProfile] = {
    "small": NewsProfile("small", records=5_000, inbox_days=3),
    "default": NewsProfile("default", records=300_000, inbox_days=7),
}


def history_window(months: int = HISTORY_MONTHS) -> tuple[date, date]:
    """First and last publication day (São Paulo) of the initial dataset."""
    index = REFERENCE_DATE.year * 12 + REFERENCE_DATE.month - 1 - (months - 1)
    return date(index // 12, index % 12 + 1, 1), REFERENCE_DATE


def inbox_days(days: int) -> list[date]:
    """The ``days`` batch days following the reference date."""
    return [REFERENCE_DATE + timedelta(days=d) for d in range(1, days + 1)]


# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------
# (title form, lead form with article) of the thing announced.
_OBJECTS: tuple[tuple[str, str], ...] = (
    ("programa", "o programa"),
    ("edital", "um novo edital"),
    ("campanha nacional", "a campanha nacional"),
    ("projeto", "o projeto"),
    ("ação integrada", "uma ação integrada"),
    ("chamada pública", "a chamada pública"),
    ("consulta pública", "uma consulta pública"),
    ("mutirão", "um mutirão"),
    ("relatório anual", "o relatório anual"),
    ("balanço", "o balanço"),
    ("portaria", "uma portaria"),
    ("curso gratuito", "um curso gratuito"),
    ("seminário", "um seminário"),
    ("nova etapa", "uma nova etapa"),
    ("força-tarefa", "uma força-tarefa"),
    ("painel de dados", "um painel de dados"),
    ("estratégia nacional", "a estratégia nacional"),
    ("política nacional", "a política nacional"),
    ("guia prático", "um guia prático"),
    ("plano de ação", "um plano de ação"),
)
# (headline verb, past tense for the lead)
_VERBS: tuple[tuple[str, str], ...] = (
    ("lança", "lançou"),
    ("anuncia", "anunciou"),
    ("amplia", "ampliou"),
    ("divulga", "divulgou"),
    ("apresenta", "apresentou"),
    ("publica", "publicou"),
    ("abre inscrições para", "abriu inscrições para"),
    ("prorroga prazo de", "prorrogou as inscrições para"),
    ("inaugura", "inaugurou"),
    ("assina acordo para", "assinou acordo para"),
    ("reforça", "reforçou"),
    ("investe em", "anunciou investimentos para"),
    ("debate", "debateu"),
    ("promove", "promoveu"),
    ("entrega", "entregou"),
    ("regulamenta", "regulamentou"),
    ("moderniza", "modernizou"),
    ("retoma", "retomou"),
    ("expande", "expandiu"),
    ("conclui", "concluiu"),
)
_CONNECTORS = ("de", "de", "sobre", "para", "de apoio a")
_SUBJECTS = ("Governo Federal", "Governo do Brasil")
_SUBJECT_P = (0.62, 0.26, 0.12)  # agency name, then _SUBJECTS
_STATES = (
    "no Acre", "em Alagoas", "no Amapá", "no Amazonas", "na Bahia", "no Ceará",
    "no Distrito Federal", "no Espírito Santo", "em Goiás", "no Maranhão", "em Mato Grosso",
    "em Mato Grosso do Sul", "em Minas Gerais", "no Pará", "na Paraíba", "no Paraná",
    "em Pernambuco", "no Piauí", "no Rio de Janeiro", "no Rio Grande do Norte",
    "no Rio Grande do Sul", "em Rondônia", "em Roraima", "em Santa Catarina", "em São Paulo",
    "em Sergipe", "no Tocantins",
)  # fmt: skip
_STATE_TAGS = tuple(s.split(" ", 1)[1] for s in _STATES)
_STATE_P = np.array(
    [1, 2, 1, 2, 5, 4, 4, 2, 3, 3, 2, 2, 9, 4, 2, 5, 4, 2, 8, 2, 5, 1, 1, 3, 12, 1, 1], dtype=float
)
_REGIONS = (
    "na região Norte", "no Nordeste", "no Centro-Oeste", "no Sudeste", "na região Sul",
    "no Semiárido", "na Amazônia Legal", "em todo o país", "nas capitais",
    "em municípios de pequeno porte",
)  # fmt: skip
# (prefix, suffix, low, high): a complement with a number drawn in [low, high].
_NUMBERED: tuple[tuple[str, str, int, int], ...] = (
    ("em ", " municípios", 12, 980),
    ("com investimento de R$ ", " milhões", 2, 950),
    ("para ", " mil famílias", 3, 400),
    ("em ", " escolas públicas", 40, 5_000),
    ("com ", " novas vagas", 100, 20_000),
    ("até ", "", 2026, 2030),
    ("em ", " unidades de atendimento", 10, 800),
)
_WHEN = (
    "nesta segunda-feira", "nesta terça-feira", "nesta quarta-feira", "nesta quinta-feira",
    "nesta sexta-feira", "neste sábado", "neste domingo",
)  # fmt: skip
_MONTHS_PT = (
    "janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro",
    "outubro", "novembro", "dezembro",
)  # fmt: skip
_CATEGORIES = ("Notícias", "Últimas Notícias", "Comunicados", "Notas Oficiais")
_CATEGORY_P = (0.42, 0.16, 0.06, 0.04)  # the rest (0.32): the record's level-1 theme label
_GENERIC_TOPICS = (
    "Serviços Públicos", "Atendimento ao Cidadão", "Gestão Pública", "Políticas Públicas",
    "Cooperação Federativa", "Transparência", "Participação Social",
    "Desenvolvimento Regional",
)  # fmt: skip
_GENERIC_TAGS = (
    "Governo Federal", "Brasil", "Novo PAC", "Serviços Públicos", "Políticas Públicas",
    "Investimento", "Parceria", "Municípios", "Estados", "Cidadania", "Edital", "Inscrições",
    "Balanço", "Dados Abertos", "Inovação", "Sustentabilidade", "Juventude", "Agenda 2030",
)  # fmt: skip
_TAG_COUNT_P = (0.06, 0.12, 0.2, 0.26, 0.18, 0.11, 0.07)  # 0..6 tags
_IMAGE_FILES = (
    "foto.jpg", "imagem-destaque.jpeg", "capa.png", "foto-divulgacao.jpg", "whatsapp-image.jpeg",
)  # fmt: skip
_VIDEO_ID_CHARS = np.frombuffer(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8
)
_WEEKDAY_W = np.array([1.0, 1.05, 1.05, 1.0, 0.95, 0.33, 0.22])  # Monday..Sunday
_HOUR_W = np.array(
    [0.35, 0.15, 0.08, 0.05, 0.05, 0.12, 0.5, 1.3, 2.6, 4.2, 5.4, 5.6,
     4.8, 5.0, 5.8, 6.0, 5.6, 5.0, 3.9, 2.8, 2.0, 1.5, 1.0, 0.7]
)  # fmt: skip
_TYPE_W = {
    "ministerio": 6.0,
    "orgao_presidencia": 4.0,
    "agencia_reguladora": 2.6,
    "autarquia": 2.0,
    "orgao": 1.6,
    "secretaria": 1.6,
    "fundacao": 1.5,
    "forca_armada": 1.8,
    "unidade_pesquisa": 0.6,
    "empresa_publica": 0.9,
    "sociedade_economia_mista": 0.9,
    "universidade": 0.45,
    "instituto_federal": 0.3,
}
_AGENCY_BOOST = {"planalto": 3.0, "saude": 1.8, "mec": 1.6, "fazenda": 1.4, "ibge": 2.0}

# Preferred level-1 theme of an agency: first keyword (accent-free, lower case) found in
# its name. Agencies without a hint draw themes at random.
_THEME_HINTS: tuple[tuple[str, str], ...] = (
    ("indigena", "Minorias e Grupos Especiais"),
    ("igualdade racial", "Minorias e Grupos Especiais"),
    ("mulheres", "Minorias e Grupos Especiais"),
    ("palmares", "Minorias e Grupos Especiais"),
    ("vigilancia sanitaria", "Saúde"),
    ("saude", "Saúde"),
    ("hospita", "Saúde"),
    ("cancer", "Saúde"),
    ("oswaldo cruz", "Saúde"),
    ("evandro chagas", "Saúde"),
    ("traumatologia", "Saúde"),
    ("hemoderivados", "Saúde"),
    ("seguranca publica", "Segurança Pública"),
    ("policia", "Segurança Pública"),
    ("penais", "Segurança Pública"),
    ("inteligencia", "Segurança Pública"),
    ("educacao", "Educação"),
    ("universidade", "Educação"),
    ("instituto federal", "Educação"),
    ("aperfeicoamento de pessoal", "Educação"),
    ("colegio", "Educação"),
    ("surdos", "Educação"),
    ("benjamin constant", "Educação"),
    ("joaquim nabuco", "Educação"),
    ("meio ambiente", "Meio Ambiente e Sustentabilidade"),
    ("biodiversidade", "Meio Ambiente e Sustentabilidade"),
    ("florestal", "Meio Ambiente e Sustentabilidade"),
    ("aguas", "Meio Ambiente e Sustentabilidade"),
    ("jardim botanico", "Meio Ambiente e Sustentabilidade"),
    ("mata atlantica", "Meio Ambiente e Sustentabilidade"),
    ("desastres", "Habitação e Urbanismo"),
    ("defesa civil", "Habitação e Urbanismo"),
    ("cidades", "Habitação e Urbanismo"),
    ("trens urbanos", "Infraestrutura e Transportes"),
    ("transporte", "Infraestrutura e Transportes"),
    ("portos", "Infraestrutura e Transportes"),
    ("portuaria", "Infraestrutura e Transportes"),
    ("docas", "Infraestrutura e Transportes"),
    ("aeroportuaria", "Infraestrutura e Transportes"),
    ("aviacao", "Infraestrutura e Transportes"),
    ("infra s.a.", "Infraestrutura e Transportes"),
    ("espacia", "Ciência, Tecnologia e Inovação"),
    ("ciencia", "Ciência, Tecnologia e Inovação"),
    ("tecnologi", "Ciência, Tecnologia e Inovação"),
    ("pesquisas", "Ciência, Tecnologia e Inovação"),
    ("cientific", "Ciência, Tecnologia e Inovação"),
    ("observatorio", "Ciência, Tecnologia e Inovação"),
    ("astrofisica", "Ciência, Tecnologia e Inovação"),
    ("museu paraense", "Ciência, Tecnologia e Inovação"),
    ("semiarido", "Ciência, Tecnologia e Inovação"),
    ("estudos e projetos", "Ciência, Tecnologia e Inovação"),
    ("cultura", "Cultura, Artes e Patrimônio"),
    ("cinema", "Cultura, Artes e Patrimônio"),
    ("museus", "Cultura, Artes e Patrimônio"),
    ("patrimonio historico", "Cultura, Artes e Patrimônio"),
    ("artes", "Cultura, Artes e Patrimônio"),
    ("biblioteca", "Cultura, Artes e Patrimônio"),
    ("rui barbosa", "Cultura, Artes e Patrimônio"),
    ("arquivo", "Cultura, Artes e Patrimônio"),
    ("esporte", "Esportes e Lazer"),
    ("agrari", "Agricultura, Pecuária e Abastecimento"),
    ("agricultura", "Agricultura, Pecuária e Abastecimento"),
    ("agropecuaria", "Agricultura, Pecuária e Abastecimento"),
    ("abastecimento", "Agricultura, Pecuária e Abastecimento"),
    ("entrepostos", "Agricultura, Pecuária e Abastecimento"),
    ("pesca", "Agricultura, Pecuária e Abastecimento"),
    ("meteorologia", "Agricultura, Pecuária e Abastecimento"),
    ("vales do sao francisco", "Agricultura, Pecuária e Abastecimento"),
    ("industria, comercio", "Indústria e Comércio"),
    ("microempresa", "Indústria e Comércio"),
    ("metrologia", "Indústria e Comércio"),
    ("propriedade industrial", "Indústria e Comércio"),
    ("defesa economica", "Indústria e Comércio"),
    ("zona franca", "Indústria e Comércio"),
    ("desenvolvimento economico", "Indústria e Comércio"),
    ("relacoes exteriores", "Relações Internacionais e Diplomacia"),
    ("cooperacao", "Relações Internacionais e Diplomacia"),
    ("gusmao", "Relações Internacionais e Diplomacia"),
    ("direitos humanos", "Justiça e Direitos Humanos"),
    ("advocacia", "Justiça e Direitos Humanos"),
    ("controladoria", "Justiça e Direitos Humanos"),
    ("trabalho", "Trabalho e Emprego"),
    ("assistencia social", "Desenvolvimento Social"),
    ("seguro social", "Desenvolvimento Social"),
    ("previdencia social", "Desenvolvimento Social"),
    ("informacoes da previdencia", "Desenvolvimento Social"),
    ("turismo", "Turismo"),
    ("nuclear", "Energia e Recursos Minerais"),
    ("energ", "Energia e Recursos Minerais"),
    ("petroleo", "Energia e Recursos Minerais"),
    ("pre-sal", "Energia e Recursos Minerais"),
    ("minera", "Energia e Recursos Minerais"),
    ("geologico", "Energia e Recursos Minerais"),
    ("nuclebras", "Energia e Recursos Minerais"),
    ("comunicacoes", "Comunicações e Telecomunicações"),
    ("telecomunicacoes", "Comunicações e Telecomunicações"),
    ("correios", "Comunicações e Telecomunicações"),
    ("comunicacao", "Comunicações e Telecomunicações"),
    ("defesa", "Defesa e Forças Armadas"),
    ("exercito", "Defesa e Forças Armadas"),
    ("marinha", "Defesa e Forças Armadas"),
    ("forca aerea", "Defesa e Forças Armadas"),
    ("forcas armadas", "Defesa e Forças Armadas"),
    ("guerra", "Defesa e Forças Armadas"),
    ("amazonia azul", "Defesa e Forças Armadas"),
    ("projetos navais", "Defesa e Forças Armadas"),
    ("material belico", "Defesa e Forças Armadas"),
    ("protecao da amazonia", "Defesa e Forças Armadas"),
    ("geografia e estatistica", "Estatísticas e Dados Públicos"),
    ("economica aplicada", "Estatísticas e Dados Públicos"),
    ("fazenda", "Economia e Finanças"),
    ("receita", "Economia e Finanças"),
    ("tesouro", "Economia e Finanças"),
    ("banco", "Economia e Finanças"),
    ("caixa", "Economia e Finanças"),
    ("valores mobiliarios", "Economia e Finanças"),
    ("seguros", "Economia e Finanças"),
    ("previdencia complementar", "Economia e Finanças"),
    ("moeda", "Economia e Finanças"),
    ("processamento de dados", "Economia e Finanças"),
    ("orcamento", "Economia e Finanças"),
    ("integracao e do desenvolvimento regional", "Habitação e Urbanismo"),
    ("desenvolvimento do", "Habitação e Urbanismo"),
    ("obras contra as secas", "Meio Ambiente e Sustentabilidade"),
    ("gestao", "Políticas Públicas e Governança"),
    ("governo digital", "Políticas Públicas e Governança"),
    ("administracao publica", "Políticas Públicas e Governança"),
    ("patrimonio da uniao", "Políticas Públicas e Governança"),
    ("casa civil", "Políticas Públicas e Governança"),
    ("secretaria-geral", "Políticas Públicas e Governança"),
    ("relacoes institucionais", "Políticas Públicas e Governança"),
    ("imprensa nacional", "Legislação e Regulamentação"),
    ("agencia nacional", "Legislação e Regulamentação"),
    ("presidencia da republica", "Eventos Oficiais e Cerimônias"),
)
_HINT_SHARE = 0.7

# Body sentences: {name} placeholders are filled from _FRAGMENTS (recursively), {n}, {d} and
# {dd} with numbers, {pct} with a percentage and {topic} with a label of the record's theme
# subtree.
_TEMPLATES: tuple[str, ...] = (
    "{opener} {actor} {said} que a política de {topic} {pred}.",
    "A iniciativa deve beneficiar {benef} {place} e {pred2}.",
    "Segundo {speaker}, o trabalho em {topic} {pred}.",
    "{opener} foram destinados R$ {n},{d} milhões para {topic} {place}.",
    "O plano prevê {action} de {topic} {place}, com metas anuais de acompanhamento.",
    "As inscrições {deadline} e podem ser feitas {channel}.",
    "{data} mostram que o número de atendimentos em {topic} {trend} {pct}% {period}.",
    "Durante a reunião, {participants} discutiram {topic} e {next}.",
    "A medida faz parte do esforço do governo federal para {verb_inf} {topic} {place}.",
    "Mais informações sobre {topic} estão disponíveis {channel}.",
    "{opener} {participants} acompanharam a apresentação dos resultados de {topic}.",
    "O investimento em {topic} {pred} e {pred2}.",
    "De acordo com {speaker}, o objetivo é {verb_inf} {topic} e {pred2}.",
    "A expectativa é alcançar {benef} {place} até o fim do próximo ano.",
    "O cronograma inclui visitas técnicas, oficinas e reuniões com {participants}.",
)
_FRAGMENTS: dict[str, tuple[str, ...]] = {
    "opener": (
        "", "", "", "Nesta semana,", "De acordo com o levantamento,", "Além disso,",
        "Ao mesmo tempo,", "Com a medida,", "No total,", "Desde o início do ano,", "Na prática,",
        "Em nota,", "Ainda segundo o órgão,", "Até o momento,", "No primeiro semestre,",
    ),
    "actor": (
        "o governo federal", "a pasta", "o órgão", "a equipe técnica",
        "a secretaria responsável", "a coordenação do programa", "os gestores locais",
        "as prefeituras parceiras", "os estados participantes",
    ),
    "said": (
        "informou", "destacou", "ressaltou", "explicou", "reforçou", "afirmou", "lembrou",
        "anunciou",
    ),
    "pred": (
        "segue como prioridade da gestão", "terá reforço de recursos no próximo ciclo",
        "avançou de forma consistente nos últimos meses",
        "deve alcançar mais municípios até o fim do ano",
        "passa a contar com novas regras de acompanhamento",
        "ganhou um painel público de monitoramento",
        "recebeu contribuições da sociedade civil",
        "passará por uma avaliação independente",
        "integra o planejamento para os próximos quatro anos",
        "tem impacto direto na vida da população",
    ),
    "pred2": (
        "prevê investimentos ao longo dos próximos anos",
        "conta com o apoio de universidades federais",
        "será executada em parceria com estados e municípios",
        "tem prioridade para as regiões mais vulneráveis",
        "deve gerar empregos diretos e indiretos",
        "inclui ações de capacitação de servidores",
        "segue as diretrizes aprovadas pelo conselho nacional",
    ),
    "benef": (
        "cerca de {n} mil pessoas", "{n} municípios", "mais de {n} famílias",
        "{n} escolas públicas", "{n} unidades de atendimento", "profissionais de todos os estados",
        "{n} mil estudantes", "pequenos produtores de {n} municípios",
    ),
    "speaker": (
        "a ministra", "o ministro", "o secretário-executivo", "a secretária nacional",
        "o presidente do órgão", "a diretora do departamento", "o coordenador-geral",
        "a especialista da área",
    ),
    "place": (*_STATES, *_REGIONS),
    "channel": (
        "pelo portal gov.br", "no aplicativo oficial", "nas unidades de atendimento",
        "pelo sistema eletrônico do órgão", "presencialmente, nas superintendências regionais",
    ),
    "deadline": (
        "seguem abertas até o dia {dd}", "vão até o fim do mês",
        "começam na próxima segunda-feira", "foram prorrogadas por mais {dd} dias",
    ),
    "data": (
        "Dados do levantamento", "Os números mais recentes", "Indicadores oficiais",
        "Os dados do painel", "As estatísticas do órgão",
    ),
    "trend": ("cresceu", "aumentou", "recuou", "avançou", "caiu", "subiu"),
    "period": (
        "no último trimestre", "em relação ao ano anterior", "nos últimos doze meses",
        "desde o início da série histórica", "no acumulado do ano",
    ),
    "participants": (
        "representantes dos estados", "técnicos do governo federal", "gestores municipais",
        "especialistas e pesquisadores", "integrantes da sociedade civil",
        "parlamentares e prefeitos",
    ),
    "next": (
        "definiram os próximos passos", "acertaram um cronograma de trabalho",
        "aprovaram a criação de um grupo técnico", "pactuaram metas para o próximo ano",
    ),
    "action": (
        "a ampliação", "o fortalecimento", "a modernização", "a expansão", "a qualificação",
        "a reestruturação", "o monitoramento",
    ),
    "verb_inf": ("ampliar", "fortalecer", "modernizar", "qualificar", "expandir", "integrar"),
}  # fmt: skip
_SUBTITLES: tuple[tuple[str, str], ...] = (
    ("Iniciativa prevê investimentos em ", " e deve beneficiar milhares de pessoas"),
    ("Medida amplia o acesso a ", " e entra em vigor nos próximos dias"),
    ("Ação reúne estados e municípios para fortalecer ", ""),
    ("Proposta sobre ", " fica disponível para contribuições da sociedade"),
    ("Resultados de ", " foram apresentados a gestores de todo o país"),
)
_UPDATE_PREFIX = "Atualização em {day}: "
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_ARTICLES = {
    "Agência": "A", "Universidade": "A", "Fundação": "A", "Secretaria": "A", "Empresa": "A",
    "Comissão": "A", "Superintendência": "A", "Companhia": "A", "Polícia": "A", "Receita": "A",
    "Procuradoria": "A", "Casa": "A", "Presidência": "A", "Controladoria": "A",
    "Advocacia": "A", "Imprensa": "A", "Escola": "A", "Marinha": "A", "Força": "A",
    "Autoridade": "A", "Financiadora": "A", "Infra": "A", "Pré": "A", "Petróleo": "A",
    "Telecomunicações": "A", "Eletrobras": "A", "Caixa": "A", "Coordenação": "A",
    "Nuclebrás": "A", "Amazônia": "A", "Indústrias": "As", "Indústria": "A",
}  # fmt: skip


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    """A generator derived from the seed and a stable name (crc32, not ``hash``)."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    entropy = [seed, *(zlib.crc32(p.encode()) if isinstance(p, str) else p for p in parts)]
    return np.random.default_rng(entropy)


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def _pick(values: Sequence[str | None], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(idx, dtype=np.int64))


def _choice(rng: np.random.Generator, p: Sequence[float], n: int) -> np.ndarray:
    probs = np.asarray(p, dtype=np.float64)
    return rng.choice(probs.size, size=n, p=probs / probs.sum())


def _masked(series: pl.Series, keep: np.ndarray) -> pl.Series:
    """``series`` with nulls where ``keep`` is False."""
    return series.scatter(np.flatnonzero(~keep), None) if not keep.all() else series


@functools.cache
def _accent_map() -> dict[str, str]:
    """Latin-1 and Latin Extended-A characters whose normalised form (NFKD, combining marks
    dropped, lower case) is not just their lower case: "Ç" -> "c", "ã" -> "a", ..."""
    chars = (chr(c) for c in range(0xA0, 0x180))
    return {ch: _plain(ch) for ch in chars if _plain(ch) != ch.lower()}


def normalised_text(col: str) -> pl.Expr:
    """:func:`bi_platform.news.records.normalise_text` of the generator's text, vectorised.

    Exact for text made of ASCII and Latin-1/Latin Extended-A characters, single spaces
    and ``"\\n\\n"`` paragraph breaks, with no leading or trailing whitespace: what this
    module writes (the tests compare every record with ``records.content_hash``).
    """
    return (
        pl.col(col)
        .fill_null("")
        .str.replace_many(_accent_map())
        .str.to_lowercase()
        .str.replace_all("\n\n", " ", literal=True)
    )


def _join_groups(values: pl.Series, counts: np.ndarray, sep: str) -> pl.Series:
    """Consecutive runs of ``values`` (lengths ``counts``) joined with ``sep``."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), values.to_arrow())
    return pl.Series(pl.from_arrow(lists)).list.join(sep)


def _published_strings(local_us: np.ndarray) -> pl.Series:
    """``str(datetime)`` of São Paulo timestamps (the form hashed into ``unique_id``)."""
    return _local_timestamps(local_us).dt.strftime("%Y-%m-%d %H:%M:%S%:z")


def _local_timestamps(local_us: np.ndarray) -> pl.Series:
    """Naive São Paulo wall-clock microseconds as tz-aware timestamps."""
    naive = pl.Series(np.asarray(local_us, dtype=np.int64)).cast(pl.Datetime("us"))
    return naive.dt.replace_time_zone(TIMEZONE, ambiguous="earliest")


def _day_of_month(epoch_days: np.ndarray) -> np.ndarray:
    d = np.asarray(epoch_days, dtype="datetime64[D]")
    return (d - d.astype("datetime64[M]")).astype(np.int64) + 1


def _local_us(day: date, seconds: int = 0) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * _US_PER_DAY + seconds * _US_PER_SECOND


# --------------------------------------------------------------------------------------
# Reference data as arrays
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Reference:
    agency_key: list[str]
    agency_name: list[str]  # with its article ("O Ministério da Saúde")
    agency_plain_name: list[str]
    agency_url: list[str]
    agency_p: np.ndarray
    agency_hint: np.ndarray  # level-1 index, -1 without hint
    l1_code: list[str]
    l1_label: list[str]
    l2_code: list[str]
    l2_label: list[str]
    l2_start: np.ndarray  # per level-1 theme: first level-2 index and count
    l2_count: np.ndarray
    l3_code: list[str]
    l3_label: list[str]
    l3_start: np.ndarray  # per level-2 theme
    l3_count: np.ndarray

    def topics(self, l1: int) -> list[str]:
        """Labels of a level-1 theme's subtree (for the sentence bank)."""
        labels = [self.l1_label[l1]]
        for j in range(self.l2_start[l1], self.l2_start[l1] + self.l2_count[l1]):
            labels.append(self.l2_label[j])
            start, count = self.l3_start[j], self.l3_count[j]
            labels.extend(self.l3_label[start : start + count])
        return labels


def _article(name: str) -> str:
    return _ARTICLES.get(re.split(r"[ -]", name, maxsplit=1)[0], "O")


@functools.cache
def _reference() -> _Reference:
    agencies = load_agencies()
    themes = load_themes()
    l1 = [t for t in themes.values() if t.level == 1]
    l2 = sorted((t for t in themes.values() if t.level == 2), key=lambda t: t.code)
    l3 = sorted((t for t in themes.values() if t.level == 3), key=lambda t: t.code)
    l1 = sorted(l1, key=lambda t: t.code)
    l1_index = {t.code: i for i, t in enumerate(l1)}
    l2_index = {t.code: i for i, t in enumerate(l2)}
    l2_parent = np.array([l1_index[str(t.parent_code)] for t in l2], dtype=np.int64)
    l3_parent = np.array([l2_index[str(t.parent_code)] for t in l3], dtype=np.int64)
    by_label = {_plain(t.label): i for i, t in enumerate(l1)}
    keys = list(agencies)
    hints = []
    for key in keys:
        plain = _plain(agencies[key].name)
        hint = next((lab for word, lab in _THEME_HINTS if word in plain), None)
        hints.append(by_label.get(_plain(hint), -1) if hint else -1)
    noise = _rng(0, "agency-weights").lognormal(0.0, 0.45, len(keys))
    weights = np.array(
        [_TYPE_W.get(agencies[k].type, 1.0) * _AGENCY_BOOST.get(k, 1.0) for k in keys]
    )
    weights = weights * noise
    return _Reference(
        agency_key=keys,
        agency_name=[f"{_article(agencies[k].name)} {agencies[k].name}" for k in keys],
        agency_plain_name=[agencies[k].name for k in keys],
        agency_url=[agencies[k].url.rstrip("/") for k in keys],
        agency_p=weights / weights.sum(),
        agency_hint=np.array(hints, dtype=np.int64),
        l1_code=[t.code for t in l1],
        l1_label=[t.label for t in l1],
        l2_code=[t.code for t in l2],
        l2_label=[t.label for t in l2],
        l2_start=np.searchsorted(l2_parent, np.arange(len(l1))),
        l2_count=np.bincount(l2_parent, minlength=len(l1)),
        l3_code=[t.code for t in l3],
        l3_label=[t.label for t in l3],
        l3_start=np.searchsorted(l3_parent, np.arange(len(l2))),
        l3_count=np.bincount(l3_parent, minlength=len(l2)),
    )


def _fill(template: str, rng: np.random.Generator, topics: Sequence[str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "topic":
            return topics[int(rng.integers(len(topics)))]
        if name == "n":
            return str(int(rng.integers(2, 30) if rng.random() < 0.6 else rng.integers(30, 900)))
        if name == "d":
            return f"{int(rng.integers(0, 10))}"
        if name == "dd":
            return f"{int(rng.integers(2, 29))}"
        if name == "pct":
            return f"{rng.uniform(0.5, 38.0):.1f}".replace(".", ",")
        values = _FRAGMENTS[name]
        return values[int(rng.integers(len(values)))]

    text = template
    while "{" in text:
        text = _PLACEHOLDER.sub(repl, text)
    text = " ".join(text.split())
    return text[0].upper() + text[1:]


@functools.cache
def _sentence_bank(seed: int) -> pl.Series:
    """``_BANK_PER_GROUP`` sentences per group: group 0 generic, group g the level-1 theme
    g - 1 (sentences about labels of its subtree)."""
    ref = _reference()
    rng = _rng(seed, "sentence-bank")
    groups = [list(_GENERIC_TOPICS)] + [ref.topics(i) for i in range(len(ref.l1_code))]
    sentences = [
        _fill(_TEMPLATES[int(rng.integers(len(_TEMPLATES)))], rng, topics)
        for topics in groups
        for _ in range(_BANK_PER_GROUP)
    ]
    return pl.Series("sentence", sentences, dtype=pl.String)


# --------------------------------------------------------------------------------------
# Record generation
# --------------------------------------------------------------------------------------
def _draw_local_us(rng: np.random.Generator, n: int, first: date, last: date) -> np.ndarray:
    """Naive São Paulo wall-clock microseconds (whole minutes) in [first, last], weighted by
    weekday, hour of day, a slow growth and the year-end lull."""
    ordinals = np.arange(first.toordinal(), last.toordinal() + 1)
    weekday = (ordinals - 1) % 7  # date.fromordinal(1) is a Monday
    trend = np.linspace(0.85, 1.15, ordinals.size) if ordinals.size > 1 else np.ones(1)
    lull = np.array(
        [0.45 if (d.month, d.day) >= (12, 24) or (d.month, d.day) == (1, 1) else 1.0
         for d in map(date.fromordinal, ordinals.tolist())]
    )  # fmt: skip
    w = _WEEKDAY_W[weekday] * trend * lull
    day = ordinals[rng.choice(ordinals.size, size=n, p=w / w.sum())] - _EPOCH_ORDINAL
    minute = rng.choice(24, size=n, p=_HOUR_W / _HOUR_W.sum()) * 60 + rng.integers(0, 60, n)
    return day.astype(np.int64) * _US_PER_DAY + minute.astype(np.int64) * _US_PER_MINUTE


def _unique_ids(agency: pl.Series, local_us: np.ndarray, title: pl.Series) -> list[str]:
    published = _published_strings(local_us)
    return [
        hashlib.md5(f"{a}_{p}_{t}".encode()).hexdigest()
        for a, p, t in zip(agency.to_list(), published.to_list(), title.to_list(), strict=True)
    ]


def _resolve_collisions(
    agency: pl.Series, local_us: np.ndarray, title: pl.Series, taken: set[str]
) -> tuple[np.ndarray, list[str]]:
    """Shift records whose ``unique_id`` repeats (same agency, minute and title) or is in
    ``taken`` by one minute until all ids are distinct."""
    local_us = local_us.copy()
    for _ in range(1000):
        ids = _unique_ids(agency, local_us, title)
        seen = set(taken)
        clash = []
        for i, uid in enumerate(ids):
            if uid in seen:
                clash.append(i)
            seen.add(uid)
        if not clash:
            return local_us, ids
        day_start = local_us[clash] - local_us[clash] % _US_PER_DAY
        local_us[clash] = day_start + (local_us[clash] - day_start + _US_PER_MINUTE) % _US_PER_DAY
    raise RuntimeError("could not make unique_id values distinct")


def _complements(rng: np.random.Generator, n: int) -> pl.Series:
    """ " em 120 municípios", " na Bahia", ... or "" (leading space included)."""
    kind = _choice(rng, (0.45, 0.2, 0.15, 0.2), n)  # numbered, state, region, none
    t = rng.integers(0, len(_NUMBERED), n)
    lo = np.array([c[2] for c in _NUMBERED])[t]
    hi = np.array([c[3] for c in _NUMBERED])[t]
    num = lo + (rng.random(n) * (hi - lo + 1)).astype(np.int64)
    frame = pl.DataFrame(
        {
            "kind": kind,
            "pre": _pick([c[0] for c in _NUMBERED], t),
            "suf": _pick([c[1] for c in _NUMBERED], t),
            "num": num,
            "state": _pick(_STATES, _choice(rng, _STATE_P, n)),
            "region": _pick(_REGIONS, rng.integers(0, len(_REGIONS), n)),
        }
    )
    return frame.select(
        pl.when(pl.col("kind") == 0)
        .then(pl.concat_str([pl.lit(" "), "pre", pl.col("num").cast(pl.String), "suf"]))
        .when(pl.col("kind") == 1)
        .then(pl.lit(" ") + pl.col("state"))
        .when(pl.col("kind") == 2)
        .then(pl.lit(" ") + pl.col("region"))
        .otherwise(pl.lit(""))
    ).to_series()


@dataclass(frozen=True)
class _Draws:
    """Per-record choices made before any text is built (sorted by publication time)."""

    local_us: np.ndarray
    agency: np.ndarray
    themed: np.ndarray
    level: np.ndarray  # 0 for unthemed records
    l1: np.ndarray
    l2: np.ndarray  # -1 when above the record's level
    l3: np.ndarray

    def take(self, order: np.ndarray) -> _Draws:
        """The draws in another record order."""
        return _Draws(*(getattr(self, f.name)[order] for f in fields(self)))


def _draw_themes(
    rng: np.random.Generator, ref: _Reference, agency: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = agency.size
    themed = rng.random(n) < THEMED_SHARE
    hint = ref.agency_hint[agency]
    use_hint = (hint >= 0) & (rng.random(n) < _HINT_SHARE)
    l1 = np.where(use_hint, hint, rng.integers(0, len(ref.l1_code), n))
    level = np.where(themed, 1 + _choice(rng, THEME_LEVEL_P, n), 0)
    l2 = ref.l2_start[l1] + (rng.random(n) * ref.l2_count[l1]).astype(np.int64)
    has_l2 = (level >= 2) & (ref.l2_count[l1] > 0)
    l2 = np.where(has_l2, l2, -1)
    safe_l2 = np.maximum(l2, 0)
    l3 = ref.l3_start[safe_l2] + (rng.random(n) * ref.l3_count[safe_l2]).astype(np.int64)
    has_l3 = has_l2 & (level >= 3) & (ref.l3_count[safe_l2] > 0)
    l3 = np.where(has_l3, l3, -1)
    level = np.where(themed, 1 + has_l2.astype(np.int64) + has_l3.astype(np.int64), 0)
    return themed, level, l1, l2, l3


def _titles(
    rng: np.random.Generator, ref: _Reference, d: _Draws, topic: pl.Series
) -> tuple[pl.Series, np.ndarray, np.ndarray, pl.Series]:
    """Headlines, plus the verb and object indices and the complement the lead reuses."""
    n = d.agency.size
    verb = rng.integers(0, len(_VERBS), n)
    obj = rng.integers(0, len(_OBJECTS), n)
    subject = _choice(rng, _SUBJECT_P, n)
    subject_idx = np.where(subject == 0, d.agency, len(ref.agency_key) + subject - 1)
    frame = pl.DataFrame(
        {
            "subject": _pick([*ref.agency_plain_name, *_SUBJECTS], subject_idx),
            "verb": _pick([v[0] for v in _VERBS], verb),
            "obj": _pick([o[0] for o in _OBJECTS], obj),
            "conn": _pick(_CONNECTORS, rng.integers(0, len(_CONNECTORS), n)),
            "topic": topic,
            "comp": _complements(rng, n),
        }
    )
    title = frame.select(
        pl.concat_str(["subject", "verb", "obj", "conn", "topic"], separator=" ") + pl.col("comp")
    ).to_series()
    return title, verb, obj, frame["comp"]


def _draw(n: int, seed: int, tag: str, first: date, last: date) -> _Draws:
    ref = _reference()
    rng = _rng(seed, tag, "draws")
    local_us = np.sort(_draw_local_us(rng, n, first, last))
    agency = _choice(rng, ref.agency_p, n)
    themed, level, l1, l2, l3 = _draw_themes(rng, ref, agency)
    return _Draws(local_us, agency, themed, level, l1, l2, l3)


def _theme_columns(ref: _Reference, d: _Draws) -> dict[str, pl.Series]:
    l1 = _masked(_pick(ref.l1_code, d.l1), d.themed), _masked(_pick(ref.l1_label, d.l1), d.themed)
    has2, has3 = d.l2 >= 0, d.l3 >= 0
    l2 = (
        _masked(_pick(ref.l2_code, np.maximum(d.l2, 0)), has2),
        _masked(_pick(ref.l2_label, np.maximum(d.l2, 0)), has2),
    )
    l3 = (
        _masked(_pick(ref.l3_code, np.maximum(d.l3, 0)), has3),
        _masked(_pick(ref.l3_label, np.maximum(d.l3, 0)), has3),
    )
    specific = pl.DataFrame({"c1": l1[0], "c2": l2[0], "c3": l3[0]}).select(
        code=pl.coalesce("c3", "c2", "c1")
    )
    specific_label = pl.DataFrame({"c1": l1[1], "c2": l2[1], "c3": l3[1]}).select(
        label=pl.coalesce("c3", "c2", "c1")
    )
    return {
        "theme_1_level_1_code": l1[0],
        "theme_1_level_1_label": l1[1],
        "theme_1_level_2_code": l2[0],
        "theme_1_level_2_label": l2[1],
        "theme_1_level_3_code": l3[0],
        "theme_1_level_3_label": l3[1],
        "most_specific_theme_code": specific.to_series(),
        "most_specific_theme_label": specific_label.to_series(),
    }


def _slugs(title: pl.Series) -> pl.Series:
    return (
        pl.DataFrame({"t": title})
        .select(normalised_text("t").str.replace_all(r"[^a-z0-9]+", "-").str.strip_chars("-"))
        .select(  # at most _SLUG_CHARS, cut at a word boundary
            pl.when(pl.col("t").str.len_chars() > _SLUG_CHARS)
            .then(pl.col("t").str.slice(0, _SLUG_CHARS + 1).str.replace(r"-[^-]*$", ""))
            .otherwise("t")
        )
        .to_series()
    )


def _text_chunk(
    rng: np.random.Generator,
    ref: _Reference,
    bank: pl.Series,
    frame: pl.DataFrame,
) -> pl.DataFrame:
    """subtitle, editorial_lead, content and summary of one chunk of records.

    ``frame`` has: agency (index), l1, l1_label, l2_label, themed, topic, verb, obj, comp
    (the headline's complement), weekday, day (of month).
    """
    n = frame.height
    themed = frame["themed"].to_numpy()
    group = np.where(themed, frame["l1"].to_numpy() + 1, 0)
    lead_frame = frame.select(
        name=_pick(ref.agency_name, frame["agency"].to_numpy()),
        verb=_pick([v[1] for v in _VERBS], frame["verb"].to_numpy()),
        when=_pick(_WHEN, frame["weekday"].to_numpy()),
        day=pl.col("day").cast(pl.String),
        obj=_pick([o[1] for o in _OBJECTS], frame["obj"].to_numpy()),
        topic=pl.col("topic"),
        comp=pl.col("comp"),
    )
    lead = lead_frame.select(
        pl.concat_str(
            [
                "name",
                pl.lit(" "),
                "verb",
                pl.lit(" "),
                "obj",
                pl.lit(" de "),
                "topic",
                "comp",
                pl.lit(" "),
                "when",
                pl.lit(" ("),
                "day",
                pl.lit(")."),
            ]
        )
    ).to_series()
    # Body: 13 + Poisson(4) sentences in paragraphs of 2 to 4 sentences.
    sentences = 13 + rng.poisson(4.0, n)
    per_para = rng.integers(2, 5, n)
    paragraphs = -(-sentences // per_para)
    para_rec = np.repeat(np.arange(n), paragraphs)
    para_pos = np.arange(para_rec.size) - np.repeat(np.cumsum(paragraphs) - paragraphs, paragraphs)
    para_size = np.minimum(per_para[para_rec], sentences[para_rec] - para_pos * per_para[para_rec])
    sent_rec = np.repeat(np.arange(n), sentences)
    generic = rng.random(sent_rec.size) < 0.15  # some generic sentences in every story
    sent_group = np.where(generic, 0, group[sent_rec])
    sent_idx = sent_group * _BANK_PER_GROUP + rng.integers(0, _BANK_PER_GROUP, sent_rec.size)
    paras = _join_groups(bank.gather(sent_idx), para_size, " ")
    body = _join_groups(paras, paragraphs, "\n\n")
    del paras
    first_sentence = bank.gather(group * _BANK_PER_GROUP + rng.integers(0, _BANK_PER_GROUP, n))
    sub_t = rng.integers(0, len(_SUBTITLES), n)
    texts = pl.DataFrame(
        {
            "lead": lead,
            "body": body,
            "extra": first_sentence,
            "sub_pre": _pick([s[0] for s in _SUBTITLES], sub_t),
            "sub_suf": _pick([s[1] for s in _SUBTITLES], sub_t),
            "topic": frame["topic"],
            "l1_label": frame["l1_label"],
            "l2_label": frame["l2_label"],
        }
    )
    out = texts.select(
        subtitle=pl.concat_str(["sub_pre", "topic", "sub_suf"]),
        editorial_lead=pl.coalesce("l2_label", "l1_label"),
        content=pl.concat_str(["lead", "body"], separator="\n\n"),
        summary=pl.concat_str(["lead", "extra"], separator=" "),
    )
    return out.with_columns(
        subtitle=pl.when(pl.Series(rng.random(n) < 0.72)).then("subtitle"),
        editorial_lead=pl.when(pl.Series(rng.random(n) < 0.45)).then("editorial_lead"),
        summary=pl.when(pl.Series(rng.random(n) < 0.9)).then("summary"),
    )


def _heads(rng: np.random.Generator, ref: _Reference, d: _Draws) -> pl.DataFrame:
    """Per record: agency key, topic (most specific theme label, or a generic topic),
    headline, and the verb and object indices and complement the lead reuses."""
    n = d.agency.size
    specific = (
        pl.DataFrame(
            {
                "c1": _pick(ref.l1_label, d.l1),
                "c2": _masked(_pick(ref.l2_label, np.maximum(d.l2, 0)), d.l2 >= 0),
                "c3": _masked(_pick(ref.l3_label, np.maximum(d.l3, 0)), d.l3 >= 0),
            }
        )
        .select(pl.coalesce("c3", "c2", "c1"))
        .to_series()
    )
    generic_topic = _pick(_GENERIC_TOPICS, rng.integers(0, len(_GENERIC_TOPICS), n))
    topic = _masked(specific, d.themed).fill_null(generic_topic)
    title, verb, obj, comp = _titles(rng, ref, d, topic)
    return pl.DataFrame(
        {
            "agency": _pick(ref.agency_key, d.agency),
            "topic": topic,
            "title": title,
            "verb": verb,
            "obj": obj,
            "comp": comp,
        }
    )


def _texts(
    seed: int, tag: str, ref: _Reference, d: _Draws, heads: pl.DataFrame, themes: pl.DataFrame
) -> tuple[dict[str, pa.ChunkedArray], list[str]]:
    """subtitle, editorial_lead, content and summary, chunk by chunk (bounded memory), and
    the content hashes computed on the way."""
    bank = _sentence_bank(seed)
    local_days = d.local_us // _US_PER_DAY
    chunks: dict[str, list[pa.Array]] = {
        k: [] for k in ("subtitle", "editorial_lead", "content", "summary")
    }
    hashes: list[str] = []
    for c, start in enumerate(range(0, d.agency.size, _CHUNK_ROWS)):
        sl = slice(start, start + _CHUNK_ROWS)
        days = local_days[sl]
        frame = pl.DataFrame(
            {
                "agency": d.agency[sl],
                "l1": d.l1[sl],
                "l1_label": themes["theme_1_level_1_label"][sl],
                "l2_label": themes["theme_1_level_2_label"][sl],
                "themed": d.themed[sl],
                "topic": heads["topic"][sl],
                "verb": heads["verb"][sl],
                "obj": heads["obj"][sl],
                "comp": heads["comp"][sl],
                "weekday": (days + 3) % 7,  # 1970-01-01 was a Thursday; 0 = Monday
                "day": _day_of_month(days),
            }
        )
        text = _text_chunk(_rng(seed, tag, "text", c), ref, bank, frame)
        norm = pl.DataFrame({"t": heads["title"][sl], "c": text["content"]}).select(
            normalised_text("t"), normalised_text("c")
        )
        hashes.extend(
            hashlib.sha256(f"{t}\n{c}".encode()).hexdigest()
            for t, c in zip(norm["t"].to_list(), norm["c"].to_list(), strict=True)
        )
        for k, values in chunks.items():
            values.append(text[k].to_arrow().cast(pa.string()))
    return {k: pa.chunked_array(v, pa.string()) for k, v in chunks.items()}, hashes


def _links(
    rng: np.random.Generator,
    ref: _Reference,
    d: _Draws,
    title: pl.Series,
    url_ids: Sequence[str],
) -> pl.DataFrame:
    """url (``{agency url}/{slug}-{id}``), image_url (82%) and video_url (5%)."""
    n = d.agency.size
    url = (
        pl.DataFrame(
            {
                "base": _pick(ref.agency_url, d.agency),
                "slug": _slugs(title),
                "id": pl.Series(list(url_ids), dtype=pl.String),
            }
        )
        .select(pl.concat_str([pl.col("base"), pl.lit("/"), "slug", pl.lit("-"), "id"]))
        .to_series()
    )
    image = (
        pl.DataFrame(
            {"url": url, "file": _pick(_IMAGE_FILES, rng.integers(0, len(_IMAGE_FILES), n))}
        )
        .select(pl.concat_str(["url", "file"], separator="/"))
        .to_series()
    )
    codes = _VIDEO_ID_CHARS[rng.integers(0, _VIDEO_ID_CHARS.size, (n, 11))]
    video = pl.Series(
        ["https://www.youtube.com/watch?v=" + row.tobytes().decode() for row in codes],
        dtype=pl.String,
    )
    return pl.DataFrame(
        {
            "url": url,
            "image_url": _masked(image, rng.random(n) < 0.82),
            "video_url": _masked(video, rng.random(n) < 0.05),
        }
    )


def _categories(rng: np.random.Generator, l1_label: pl.Series) -> pl.Series:
    """The site's category: a generic section, or the record's level-1 theme label."""
    n = l1_label.len()
    kind = _choice(rng, (*_CATEGORY_P, 1 - sum(_CATEGORY_P)), n)
    section = _pick([*_CATEGORIES, _CATEGORIES[0]], kind)
    return (
        pl.DataFrame({"section": section, "theme": l1_label, "use_theme": kind == len(_CATEGORIES)})
        .select(pl.when("use_theme").then(pl.coalesce("theme", "section")).otherwise("section"))
        .to_series()
    )


def _generate(
    n: int,
    *,
    seed: int,
    tag: str,
    first: date,
    last: date,
    url_ids: Sequence[str] | None = None,
    taken: set[str] | None = None,
) -> pa.Table:
    """``n`` records published between ``first`` and ``last`` (São Paulo days), ordered by
    (published_at, unique_id); ``unique_id`` avoids the ids in ``taken``."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    ref = _reference()
    d = _draw(n, seed, tag, first, last)
    rng = _rng(seed, tag, "titles")
    heads = _heads(rng, ref, d)
    local_us, ids = _resolve_collisions(heads["agency"], d.local_us, heads["title"], taken or set())
    order = np.lexsort((np.array(ids, dtype=str), local_us))  # as month_shards sorts
    d = replace(d, local_us=local_us).take(order)
    heads = heads[order]
    ids = [ids[i] for i in order]
    themes = pl.DataFrame(_theme_columns(ref, d))
    texts, hashes = _texts(seed, tag, ref, d, heads, themes)
    rng = _rng(seed, tag, "extras")
    links = _links(rng, ref, d, heads["title"], url_ids or [str(i) for i in range(n)])
    end_us = _local_us(last + timedelta(days=1)) - _US_PER_SECOND
    delay = rng.integers(10 * _US_PER_MINUTE, 3 * _US_PER_DAY, n)
    updated_us = np.minimum(d.local_us + delay, end_us) // _US_PER_SECOND * _US_PER_SECOND
    delay = rng.integers(5 * _US_PER_MINUTE, 6 * 60 * _US_PER_MINUTE, n)
    extracted_us = np.minimum(d.local_us + delay, end_us) // _US_PER_SECOND * _US_PER_SECOND
    columns: dict[str, Any] = {
        "unique_id": pa.array(ids, pa.string()),
        "agency": heads["agency"].to_arrow(),
        "published_at": _local_timestamps(d.local_us).to_arrow(),
        "updated_datetime": _masked(_local_timestamps(updated_us), rng.random(n) < 0.3).to_arrow(),
        "extracted_at": _local_timestamps(extracted_us).to_arrow(),
        "title": heads["title"].to_arrow(),
        **{k: links[k].to_arrow() for k in links.columns},
        "category": _categories(rng, themes["theme_1_level_1_label"]).to_arrow(),
        "tags": _tags(rng, themes).to_arrow(),
        **texts,
        **{k: themes[k].to_arrow() for k in themes.columns},
        "content_hash": pa.array(hashes, pa.string()),
    }
    return pa.table({name: columns[name] for name in HF_SCHEMA.names}).cast(HF_SCHEMA)


def _tags(rng: np.random.Generator, themes: pl.DataFrame) -> pl.Series:
    """0 to 6 distinct tags: theme labels, a state, generic tags."""
    n = themes.height
    generic = {
        f"t{i}": _pick(_GENERIC_TAGS, rng.integers(0, len(_GENERIC_TAGS), n)) for i in range(3, 7)
    }
    frame = pl.DataFrame(
        {
            "t0": themes["most_specific_theme_label"],
            "t1": themes["theme_1_level_1_label"],
            "t2": _masked(_pick(_STATE_TAGS, _choice(rng, _STATE_P, n)), rng.random(n) < 0.5),
            **generic,
            "k": _choice(rng, _TAG_COUNT_P, n),
        }
    )
    return frame.select(
        pl.concat_list([f"t{i}" for i in range(7)])
        .list.drop_nulls()
        .list.unique(maintain_order=True)
        .list.head(pl.col("k"))
    ).to_series()


def generate_news(n: int, *, seed: int = DEFAULT_SEED) -> pa.Table:
    """``n`` records over the 24 months ending at :data:`REFERENCE_DATE`, ordered by
    ``published_at``, with exactly :data:`~bi_platform.news.records.HF_SCHEMA`."""
    first, last = history_window()
    started = time.perf_counter()
    table = _generate(n, seed=seed, tag="initial", first=first, last=last)
    logger.info("generated %d news records in %.1fs", n, time.perf_counter() - started)
    return table


# --------------------------------------------------------------------------------------
# Month shards and the initial dataset
# --------------------------------------------------------------------------------------
def month_shards(table: pa.Table) -> dict[str, pa.Table]:
    """The table split by publication month in São Paulo time (``"YYYY-MM"`` -> rows
    ordered by ``published_at``, then ``unique_id``), months in ascending order."""
    if table.num_rows == 0:
        return {}
    column = table.column("published_at")
    if not pa.types.is_timestamp(column.type) or column.type.tz is None:
        raise ValueError(f"published_at must be a tz-aware timestamp, got {column.type}")
    if column.null_count:
        raise ValueError(f"{column.null_count} records have no published_at")
    keys = [("published_at", "ascending")]
    if "unique_id" in table.column_names:
        keys.append(("unique_id", "ascending"))
    order = pc.sort_indices(table, sort_keys=keys).to_numpy()
    ordered = table if np.array_equal(order, np.arange(order.size)) else table.take(order)
    months = (
        pl.Series(pl.from_arrow(ordered.column("published_at")))
        .dt.convert_time_zone(TIMEZONE)
        .dt.strftime("%Y-%m")
    )
    values = months.to_numpy()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    stops = np.r_[starts[1:], values.size]
    return {
        str(values[a]): ordered.slice(int(a), int(b - a))
        for a, b in zip(starts, stops, strict=True)
    }


def schema_hash() -> str:
    """Hash of the generator version, HF schema, reference date and reference data."""
    payload = {
        "generator_version": GENERATOR_VERSION,
        "schema": str(HF_SCHEMA),
        "reference_date": REFERENCE_DATE.isoformat(),
        "agencies": hashlib.sha256(AGENCIES_FILE.read_bytes()).hexdigest(),
        "themes": hashlib.sha256(THEMES_FILE.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _profile(profile: str | NewsProfile) -> NewsProfile:
    if isinstance(profile, NewsProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return PROFILES[profile]


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path, durable=False) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _initial_is_current(
    repo_dir: Path, prof: NewsProfile, seed: int, digest: str
) -> dict[str, Any] | None:
    data = _read_manifest(repo_dir / MANIFEST_NAME)
    if data is None:
        return None
    if (data.get("profile"), data.get("seed"), data.get("records"), data.get("schema_hash")) != (
        prof.name,
        seed,
        prof.records,
        digest,
    ):
        return None
    for entry in data.get("shards", {}).values():
        path = repo_dir / entry.get("file", "")
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None
    return data


def _write_initial(
    repo_dir: Path, prof: NewsProfile, seed: int, force: bool
) -> tuple[dict[str, Any], pa.Table | None]:
    repo_dir.mkdir(parents=True, exist_ok=True)
    digest = schema_hash()
    if not force and (current := _initial_is_current(repo_dir, prof, seed, digest)) is not None:
        logger.info("news dataset in %s is current (%s, seed %d)", repo_dir, prof.name, seed)
        return current, None
    (repo_dir / MANIFEST_NAME).unlink(missing_ok=True)
    started = time.perf_counter()
    table = generate_news(prof.records, seed=seed)
    shards = month_shards(table)
    data_dir = repo_dir / SHARD_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.iterdir():
        if _SHARD_NAME.match(stale.name) and stale.stem not in shards:
            stale.unlink()
            logger.info("removed stale shard %s", stale)
    entries: dict[str, dict[str, Any]] = {}
    for month, shard in shards.items():
        path = data_dir / f"{month}.parquet"
        _write_parquet(shard, path)
        entries[month] = {
            "file": f"{SHARD_DIR}/{path.name}",
            "rows": shard.num_rows,
            "bytes": path.stat().st_size,
        }
    published = table.column("published_at")
    manifest: dict[str, Any] = {
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "records": table.num_rows,
        "reference_date": REFERENCE_DATE.isoformat(),
        "schema_hash": digest,
        "first_published_at": pc.min(published).as_py().isoformat() if table.num_rows else None,
        "last_published_at": pc.max(published).as_py().isoformat() if table.num_rows else None,
        "shards": entries,
    }
    payload = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(repo_dir / MANIFEST_NAME, payload.encode(), durable=False)
    logger.info(
        "news dataset (%s, seed %d): %d records in %d shards written to %s in %.1fs",
        prof.name,
        seed,
        table.num_rows,
        len(entries),
        repo_dir,
        time.perf_counter() - started,
    )
    return manifest, table


def write_initial_dataset(
    repo_dir: Path, profile: str = "default", *, seed: int = DEFAULT_SEED, force: bool = False
) -> dict[str, Any]:
    """Write the initial dataset as ``repo_dir/data/YYYY-MM.parquet`` (HF_SCHEMA, one shard
    per São Paulo publication month) plus ``repo_dir/.seed_manifest.json``; return the
    manifest.

    Idempotent: when the manifest matches (profile, seed, schema hash) and the shards have
    the recorded sizes, nothing is written unless ``force``. Each file is written to a
    temporary name and renamed. Shard files of months no longer produced are removed.
    """
    manifest, _ = _write_initial(Path(repo_dir), _profile(profile), seed, force)
    return manifest


def read_initial_dataset(repo_dir: Path) -> pa.Table:
    """The shards listed in ``repo_dir``'s manifest, concatenated in month order."""
    repo_dir = Path(repo_dir)
    data = _read_manifest(repo_dir / MANIFEST_NAME)
    if data is None:
        raise FileNotFoundError(f"no readable {MANIFEST_NAME} in {repo_dir}")
    tables = [
        pq.ParquetFile(repo_dir / entry["file"]).read().cast(HF_SCHEMA)
        for _, entry in sorted(data["shards"].items())
    ]
    return pa.concat_tables(tables) if tables else HF_SCHEMA.empty_table()


# --------------------------------------------------------------------------------------
# Inbox batches
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InboxBatch:
    """One day of scraper output: the JSON lines and what each line is."""

    day: date
    lines: tuple[str, ...]
    kinds: tuple[str, ...]  # NEW, EDIT, DUPLICATE_*, or one of MALFORMED_KINDS
    new_records: pa.Table  # the distinct valid new records (HF_SCHEMA)
    edited_ids: tuple[str, ...]  # unique_id of the existing records edited

    def counts(self) -> dict[str, int]:
        """Number of lines per kind."""
        return dict(Counter(self.kinds))


def inbox_counts(existing_rows: int) -> dict[str, int]:
    """Lines per kind of a batch for a dataset of ``existing_rows`` records."""
    new = max(INBOX_MIN_NEW, round(INBOX_NEW_SHARE * existing_rows))
    counts = {
        NEW: new,
        EDIT: max(1, round(INBOX_EDIT_RATE * new)) if existing_rows else 0,
        DUPLICATE_IN_BATCH: max(1, round(INBOX_DUP_BATCH_RATE * new)),
        DUPLICATE_OF_EXISTING: max(1, round(INBOX_DUP_EXISTING_RATE * new)) if existing_rows else 0,
    }
    valid = sum(counts.values())
    malformed = max(
        len(MALFORMED_KINDS), round(INBOX_MALFORMED_RATE * valid / (1 - INBOX_MALFORMED_RATE))
    )
    for i, kind in enumerate(MALFORMED_KINDS):
        counts[kind] = malformed // len(MALFORMED_KINDS) + (i < malformed % len(MALFORMED_KINDS))
    return counts


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _scraper_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as the scraper sends them: ISO-8601 timestamps, no unique_id/content_hash."""
    return [
        {k: _json_value(row[k]) for k in INBOX_FIELDS}
        for row in table.select(list(INBOX_FIELDS)).to_pylist()
    ]


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def _malform(kind: str, row: dict[str, Any], rng: np.random.Generator, i: int) -> str:
    row = dict(row)
    if kind == "missing_title":
        if i % 2:
            row["title"] = ""
        else:
            del row["title"]
    elif kind == "bad_published_at":
        row["published_at"] = BAD_TIMESTAMPS[i % len(BAD_TIMESTAMPS)]
    elif kind == "unknown_agency":
        row["agency"] = UNKNOWN_AGENCIES[i % len(UNKNOWN_AGENCIES)]
    elif kind == "bad_tags_type":
        tags = row.get("tags") or ["Governo Federal"]
        row["tags"] = (", ".join(tags), len(tags), {"tags": tags})[i % 3]
    line = _dumps(row)
    if kind == "broken_json":
        cut = int(rng.integers(10, len(line) - 1))
        line = line[:cut]
    return line


def _local_datetime(day: date, seconds: int = 0) -> datetime:
    """A São Paulo wall-clock time as a tz-aware datetime."""
    return _local_timestamps(np.array([_local_us(day, seconds)])).to_list()[0]


def _edit(row: dict[str, Any], day: date, sentence: str, rng: np.random.Generator) -> None:
    when = _local_datetime(day, int(rng.integers(7 * 3600, 20 * 3600)) // 60 * 60).isoformat()
    if rng.random() < 0.5:
        row["content"] = (
            f"{row['content']}\n\n{_UPDATE_PREFIX.format(day=day.strftime('%d/%m/%Y'))}{sentence}"
        )
    else:
        row["summary"] = f"{sentence} {row['summary'] or ''}".strip()
    row["updated_datetime"] = when
    row["extracted_at"] = when


def inbox_batch(day: date, *, existing: pa.Table, seed: int = DEFAULT_SEED) -> InboxBatch:
    """The scraper's batch for ``day`` given the ``existing`` dataset (HF_SCHEMA rows).

    Contents (see :func:`inbox_counts`): new records published on ``day``, edits of
    existing records (same agency, published_at and title, hence the same unique_id;
    changed content or summary), exact copies of new lines and of existing records,
    and malformed lines of each of :data:`MALFORMED_KINDS`; in a shuffled order.
    """
    counts = inbox_counts(existing.num_rows)
    n_malformed = sum(counts[k] for k in MALFORMED_KINDS)
    tag = f"inbox-{day.isoformat()}"
    taken: set[str] = set()
    if existing.num_rows and "unique_id" in existing.column_names:
        published = existing.column("published_at")
        day_start = pa.scalar(_local_datetime(day), TIMESTAMP).cast(published.type)
        same_day = pc.greater_equal(published, day_start)
        taken = set(existing.filter(same_day).column("unique_id").to_pylist())
    url_ids = [f"{day:%Y%m%d}{i:05d}" for i in range(counts[NEW] + n_malformed)]
    fresh = _generate(
        counts[NEW] + n_malformed,
        seed=seed,
        tag=tag,
        first=day,
        last=day,
        url_ids=url_ids,
        taken=taken,
    )
    rng = _rng(seed, tag, "mix")
    order = rng.permutation(fresh.num_rows)
    new_records = fresh.take(np.sort(order[: counts[NEW]]))
    malformed_base = _scraper_rows(fresh.take(np.sort(order[counts[NEW] :])))
    new_rows = _scraper_rows(new_records)
    lines: list[str] = [_dumps(r) for r in new_rows]
    kinds: list[str] = [NEW] * len(lines)
    for i in rng.choice(len(new_rows), size=counts[DUPLICATE_IN_BATCH], replace=True):
        lines.append(lines[int(i)])
        kinds.append(DUPLICATE_IN_BATCH)
    edited_ids: list[str] = []
    wanted = counts[EDIT] + counts[DUPLICATE_OF_EXISTING]
    if existing.num_rows and wanted:
        published = existing.column("published_at")
        window_start = pa.scalar(
            _local_datetime(day - timedelta(days=INBOX_EDIT_WINDOW_DAYS)), TIMESTAMP
        ).cast(published.type)
        recent = np.flatnonzero(pc.greater_equal(published, window_start).to_numpy(False))
        pool = recent if recent.size >= wanted else np.arange(existing.num_rows)
        chosen = rng.choice(pool, size=min(wanted, pool.size), replace=False)
        picked = existing.take(chosen)
        rows = _scraper_rows(picked)
        ids = picked.column("unique_id").to_pylist() if "unique_id" in picked.column_names else []
        bank = _sentence_bank(seed)
        l1_index = {code: i for i, code in enumerate(_reference().l1_code)}
        l1_codes = picked.column("theme_1_level_1_code").to_pylist()
        for j, row in enumerate(rows):
            if j < counts[EDIT]:
                group = l1_index.get(l1_codes[j], -1) + 1
                sentence = bank[int(group * _BANK_PER_GROUP + rng.integers(0, _BANK_PER_GROUP))]
                _edit(row, day, sentence, rng)
                kinds.append(EDIT)
                if ids:
                    edited_ids.append(ids[j])
            else:
                kinds.append(DUPLICATE_OF_EXISTING)
            lines.append(_dumps(row))
    for i, row in enumerate(malformed_base):
        kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
        lines.append(_malform(kind, row, rng, i // len(MALFORMED_KINDS)))
        kinds.append(kind)
    shuffle = rng.permutation(len(lines))
    return InboxBatch(
        day=day,
        lines=tuple(lines[i] for i in shuffle),
        kinds=tuple(kinds[i] for i in shuffle),
        new_records=new_records,
        edited_ids=tuple(edited_ids),
    )


def inbox_file(inbox_dir: Path, day: date) -> Path:
    """Path of the batch of ``day``: ``inbox_dir/YYYY-MM-DD.jsonl``."""
    return Path(inbox_dir) / f"{day.isoformat()}.jsonl"


def _write_batch(inbox_dir: Path, batch: InboxBatch) -> Path:
    inbox_dir.mkdir(parents=True, exist_ok=True)
    path = inbox_file(inbox_dir, batch.day)
    write_bytes_atomic(path, ("\n".join(batch.lines) + "\n").encode(), durable=False)
    return path


def write_inbox(
    inbox_dir: Path, day: date, *, existing: pa.Table, seed: int = DEFAULT_SEED
) -> Path:
    """Write :func:`inbox_batch` of ``day`` as ``inbox_dir/YYYY-MM-DD.jsonl`` (atomically)."""
    return _write_batch(Path(inbox_dir), inbox_batch(day, existing=existing, seed=seed))


# --------------------------------------------------------------------------------------
# Everything for a profile
# --------------------------------------------------------------------------------------
def news_source_dirs(home: Path) -> tuple[Path, Path]:
    """(initial dataset repo dir, inbox dir) under the platform home."""
    home = Path(home)
    return home / "raw" / "news" / "initial", home / "news" / "inbox"


def write_news_sources(
    home: Path,
    profile: str = "default",
    *,
    seed: int = DEFAULT_SEED,
    days: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the initial shards to ``home/raw/news/initial/data/`` and the inbox batches of
    the ``days`` (default: the profile's) days after :data:`REFERENCE_DATE` to
    ``home/news/inbox/``. Returns ``{"initial": manifest, "inbox": manifest}``.

    Idempotent: the initial dataset as in :func:`write_initial_dataset`; a batch already
    recorded in ``home/news/inbox/.seed_manifest.json`` for the same profile, seed and
    schema is not written again, even if the pipeline has since consumed (moved) its
    file, unless ``force``. Each day's batch is generated against the initial dataset
    plus the new records of the previous days.
    """
    prof = _profile(profile)
    days = prof.inbox_days if days is None else days
    if days < 0:
        raise ValueError(f"days must be non-negative, got {days}")
    initial_dir, inbox_dir = news_source_dirs(home)
    initial, table = _write_initial(initial_dir, prof, seed, force)
    inbox_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = inbox_dir / MANIFEST_NAME
    params = {
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "schema_hash": initial["schema_hash"],
    }
    previous = _read_manifest(manifest_path) or {}
    recorded: dict[str, Any] = (
        dict(previous.get("batches", {}))
        if not force and all(previous.get(k) == v for k, v in params.items())
        else {}
    )
    wanted = inbox_days(days)
    if all(d.isoformat() in recorded for d in wanted):
        logger.info("news inbox in %s is current (%d days)", inbox_dir, days)
        return {"initial": initial, "inbox": {**params, "batches": recorded}}
    existing = table if table is not None else read_initial_dataset(initial_dir)
    for day in wanted:
        batch = inbox_batch(day, existing=existing, seed=seed)
        if day.isoformat() not in recorded:
            path = _write_batch(inbox_dir, batch)
            recorded[day.isoformat()] = {
                "file": path.name,
                "lines": len(batch.lines),
                "bytes": path.stat().st_size,
                "counts": batch.counts(),
            }
            logger.info("wrote inbox batch %s: %d lines", path.name, len(batch.lines))
        existing = pa.concat_tables([existing, batch.new_records])
    inbox_manifest = {**params, "batches": dict(sorted(recorded.items()))}
    payload = json.dumps(inbox_manifest, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(manifest_path, payload.encode(), durable=False)
    return {"initial": initial, "inbox": inbox_manifest}
