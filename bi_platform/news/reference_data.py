"""Reference data of the news platform: the agencies (news sources) and the theme tree.

Both ship with the package as YAML (``bi_platform/news/data/``) and are validated on
load; any problem raises :class:`ReferenceDataError` naming the file and the offending
key or code. The module is pure (no Dagster, no database).

* ``agencies.yaml``: ``sources: {<key>: {name, type, parent, url}}``.
* ``themes_tree.yaml``: ``themes: [{code, label, children: [...]}]``, three levels with
  codes ``"01"`` / ``"01.01"`` / ``"01.01.01"``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"
AGENCIES_FILE = DATA_DIR / "agencies.yaml"
THEMES_FILE = DATA_DIR / "themes_tree.yaml"

#: The kinds of federal body an agency can be.
AGENCY_TYPES: frozenset[str] = frozenset(
    {
        "ministerio",
        "orgao_presidencia",
        "secretaria",
        "orgao",
        "autarquia",
        "agencia_reguladora",
        "fundacao",
        "empresa_publica",
        "sociedade_economia_mista",
        "unidade_pesquisa",
        "universidade",
        "instituto_federal",
        "forca_armada",
    }
)
AGENCY_FIELDS: tuple[str, ...] = ("name", "type", "parent", "url")
_REQUIRED_AGENCY_FIELDS: tuple[str, ...] = ("name", "type", "url")
MAX_THEME_LEVEL = 3

_AGENCY_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_THEME_CODE = re.compile(r"^\d{2}(?:\.\d{2})*$")
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")


class ReferenceDataError(ValueError):
    """A reference-data file is unreadable or inconsistent."""


@dataclass(frozen=True)
class Agency:
    """A federal body whose news is collected."""

    key: str
    name: str
    type: str
    parent: str | None
    url: str


@dataclass(frozen=True)
class Theme:
    """A node of the theme tree (level 1 to 3)."""

    code: str
    label: str
    level: int
    parent_code: str | None


# --------------------------------------------------------------------------------------
# YAML reading with duplicate-key detection
# --------------------------------------------------------------------------------------
class _DuplicateKeyError(Exception):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(key, line)
        self.key = key
        self.line = line


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """A safe loader that refuses duplicate mapping keys (pyyaml keeps the last one)."""


def _construct_strict_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise _DuplicateKeyError(key, key_node.start_mark.line + 1)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_strict_mapping
)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReferenceDataError(f"{path}: cannot read reference data ({exc})") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _DuplicateKeyError as exc:
        raise ReferenceDataError(f"{path}: duplicate key {exc.key!r} (line {exc.line})") from exc
    except yaml.YAMLError as exc:
        raise ReferenceDataError(f"{path}: invalid YAML ({exc})") from exc


# --------------------------------------------------------------------------------------
# Agencies
# --------------------------------------------------------------------------------------
def _check_url(path: Path, key: str, url: object) -> str:
    if not isinstance(url, str) or any(ch.isspace() for ch in url):
        raise ReferenceDataError(f"{path}: agency {key!r} has a bad url {url!r}")
    parts = urlsplit(url)
    if parts.scheme != "https" or not _HOST.match(parts.hostname or "") or parts.port:
        raise ReferenceDataError(
            f"{path}: agency {key!r} has a bad url {url!r} (expected https://<host>/...)"
        )
    return url


def _parse_agency(path: Path, key: object, entry: object) -> Agency:
    if not isinstance(key, str):
        raise ReferenceDataError(
            f"{path}: bad agency key {key!r}: not a string (quote it; YAML reads "
            "on/off/yes/no as booleans and digits as numbers)"
        )
    if not _AGENCY_KEY.match(key):
        raise ReferenceDataError(
            f"{path}: bad agency key {key!r} (lowercase letters, digits, '-' and '_')"
        )
    if not isinstance(entry, Mapping):
        raise ReferenceDataError(f"{path}: agency {key!r} must be a mapping of {AGENCY_FIELDS}")
    unknown = sorted(set(entry) - set(AGENCY_FIELDS), key=str)
    if unknown:
        raise ReferenceDataError(f"{path}: agency {key!r} has unknown fields {unknown}")
    for name in _REQUIRED_AGENCY_FIELDS:
        value = entry.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ReferenceDataError(f"{path}: agency {key!r} is missing required field {name!r}")
    if entry["type"] not in AGENCY_TYPES:
        raise ReferenceDataError(
            f"{path}: agency {key!r} has unknown type {entry['type']!r}; "
            f"expected one of {sorted(AGENCY_TYPES)}"
        )
    parent = entry.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise ReferenceDataError(f"{path}: agency {key!r} has a non-string parent {parent!r}")
    return Agency(
        key=key,
        name=entry["name"].strip(),
        type=entry["type"],
        parent=parent or None,
        url=_check_url(path, key, entry["url"]),
    )


def _check_parents(path: Path, agencies: Mapping[str, Agency]) -> None:
    for agency in agencies.values():
        if agency.parent is not None and agency.parent not in agencies:
            raise ReferenceDataError(
                f"{path}: agency {agency.key!r} has unknown parent {agency.parent!r}"
            )
    done: set[str] = set()
    for start in agencies:
        chain: list[str] = []
        key: str | None = start
        while key is not None and key not in done:
            if key in chain:
                cycle = " -> ".join([*chain[chain.index(key) :], key])
                raise ReferenceDataError(f"{path}: cycle in agency parents at {key!r}: {cycle}")
            chain.append(key)
            key = agencies[key].parent
        done.update(chain)


def parse_agencies(data: object, path: Path) -> dict[str, Agency]:
    """Validate the parsed content of an agencies file (``path`` is for messages)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("sources"), Mapping):
        raise ReferenceDataError(f"{path}: expected a top-level 'sources:' mapping")
    agencies = {
        agency.key: agency
        for agency in (_parse_agency(path, k, v) for k, v in data["sources"].items())
    }
    if not agencies:
        raise ReferenceDataError(f"{path}: no agencies under 'sources:'")
    _check_parents(path, agencies)
    return agencies


@functools.cache
def _load_agencies(path: Path) -> dict[str, Agency]:
    return parse_agencies(_read_yaml(path), path)


def load_agencies(path: Path | str | None = None) -> dict[str, Agency]:
    """Agencies by key, from ``path`` or the packaged ``agencies.yaml`` (file order)."""
    resolved = Path(path) if path is not None else AGENCIES_FILE
    if path is None:
        return dict(_load_agencies(resolved))
    return parse_agencies(_read_yaml(resolved), resolved)


# --------------------------------------------------------------------------------------
# Themes
# --------------------------------------------------------------------------------------
def _parse_theme_list(
    path: Path,
    nodes: object,
    parent: Theme | None,
    out: dict[str, Theme],
) -> None:
    level = 1 if parent is None else parent.level + 1
    where = "'themes:'" if parent is None else f"children of theme {parent.code!r}"
    if not isinstance(nodes, list):
        raise ReferenceDataError(f"{path}: {where} must be a list")
    for node in nodes:
        if not isinstance(node, Mapping):
            raise ReferenceDataError(f"{path}: {where}: each theme must be a mapping")
        unknown = sorted(set(node) - {"code", "label", "children"}, key=str)
        code = node.get("code")
        if code is None:
            raise ReferenceDataError(
                f"{path}: {where}: theme {node.get('label')!r} is missing required field 'code'"
            )
        if not isinstance(code, str) or not _THEME_CODE.match(code):
            raise ReferenceDataError(
                f'{path}: bad theme code {code!r} (quoted two-digit parts, e.g. "01.02")'
            )
        if unknown:
            raise ReferenceDataError(f"{path}: theme {code!r} has unknown fields {unknown}")
        depth = code.count(".") + 1
        if level > MAX_THEME_LEVEL:
            raise ReferenceDataError(
                f"{path}: bad level for theme {code!r}: the tree has at most "
                f"{MAX_THEME_LEVEL} levels ({where})"
            )
        if depth != level:
            raise ReferenceDataError(
                f"{path}: bad level for theme {code!r}: a level-{depth} code at level {level}"
            )
        if parent is not None and not code.startswith(parent.code + "."):
            raise ReferenceDataError(
                f"{path}: bad level for theme {code!r}: not prefixed by its parent {parent.code!r}"
            )
        label = node.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ReferenceDataError(f"{path}: theme {code!r} is missing required field 'label'")
        if code in out:
            raise ReferenceDataError(f"{path}: duplicate theme code {code!r}")
        theme = Theme(
            code=code,
            label=label.strip(),
            level=level,
            parent_code=None if parent is None else parent.code,
        )
        out[code] = theme
        children = node.get("children")
        if children is not None:
            _parse_theme_list(path, children, theme, out)


def parse_themes(data: object, path: Path) -> dict[str, Theme]:
    """Validate the parsed content of a theme-tree file (``path`` is for messages)."""
    if not isinstance(data, Mapping) or "themes" not in data:
        raise ReferenceDataError(f"{path}: expected a top-level 'themes:' list")
    themes: dict[str, Theme] = {}
    _parse_theme_list(path, data["themes"], None, themes)
    if not themes:
        raise ReferenceDataError(f"{path}: no themes under 'themes:'")
    return themes


@functools.cache
def _load_themes(path: Path) -> dict[str, Theme]:
    return parse_themes(_read_yaml(path), path)


def load_themes(path: Path | str | None = None) -> dict[str, Theme]:
    """Themes by code, from ``path`` or the packaged ``themes_tree.yaml`` (depth-first)."""
    resolved = Path(path) if path is not None else THEMES_FILE
    if path is None:
        return dict(_load_themes(resolved))
    return parse_themes(_read_yaml(resolved), resolved)


def theme_path(
    code: str, themes: Mapping[str, Theme] | None = None
) -> tuple[Theme, Theme | None, Theme | None]:
    """The (level 1, level 2, level 3) themes leading to ``code`` (None below its level)."""
    tree = themes if themes is not None else _load_themes(THEMES_FILE)
    if code not in tree:
        raise KeyError(f"unknown theme code {code!r}")
    chain: list[Theme] = []
    node: Theme | None = tree[code]
    while node is not None:
        chain.append(node)
        node = tree[node.parent_code] if node.parent_code is not None else None
    chain.reverse()
    levels: list[Theme | None] = [*chain, None, None][:MAX_THEME_LEVEL]
    return levels[0], levels[1], levels[2]  # type: ignore[return-value]
