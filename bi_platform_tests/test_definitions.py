"""The code location: one Definitions merging every domain, each domain laid out alike."""

from __future__ import annotations

import importlib

import dagster as dg

from bi_platform import definitions
from bi_platform.resources import PostgresResource
from bi_platform_tests.conftest import REPO_ROOT

DOMAINS = ("retail", "serving", "news", "cadastral", "etl")


def test_definitions_load_and_resolve() -> None:
    defs = definitions.defs
    assert isinstance(defs, dg.Definitions)
    defs.validate_loadable(defs)
    assert isinstance(defs.resources["postgres"], PostgresResource)


def test_every_domain_has_its_definitions_module_and_is_merged() -> None:
    merged = {module.__name__ for module in definitions.DOMAINS}
    for domain in DOMAINS:
        module = importlib.import_module(f"bi_platform.{domain}.definitions")
        assert isinstance(module.defs, dg.Definitions)
        assert module.__name__ in merged
        assert (REPO_ROOT / "bi_platform" / domain / "definitions.py").is_file()


def test_package_layout() -> None:
    for path in (
        "pyproject.toml",
        "Makefile",
        ".ci/run",
        "dagster.yaml",
        "workspace.yaml",
        "docker-compose.yml",
        "Dockerfile",
        "README.md",
        "bi_platform/settings.py",
        "bi_platform/cli/__init__.py",
        "bi_platform/resources/__init__.py",
        "bi_platform/io_managers/__init__.py",
    ):
        assert (REPO_ROOT / path).exists(), path
