"""Data files shipped inside the package (word lists, vocabularies), read with
:mod:`importlib.resources` so they work from a wheel as from a checkout."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def read_json(package: str, name: str) -> Any:
    """The JSON document ``name`` of ``package`` (e.g. ``read_json(__package__, "x.json")``)."""
    return json.loads(resources.files(package).joinpath(name).read_text(encoding="utf-8"))


def frozen(value: Any) -> Any:
    """``value`` with every JSON list turned into a tuple, recursively (dict values too):
    the immutable shape the generators declared in code."""
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: frozen(v) for k, v in value.items()}
    return value
