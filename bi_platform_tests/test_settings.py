"""Settings: defaults, environment, and the README's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bi_platform.settings import DERIVED_ENV_VARS, Settings, SettingsError, get_settings
from bi_platform_tests.conftest import REPO_ROOT


def _env_names() -> list[str]:
    return [name.upper() for name in Settings.model_fields]


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/somewhere/else")  # never mistaken for BI_PLATFORM_HOME
    settings = Settings()
    assert settings.bi_platform_home == Path(".bi_platform")
    assert settings.home_dir == Path.cwd() / ".bi_platform"
    assert settings.database_url is None and not settings.uses_external_database
    assert settings.dagster_home_dir == settings.home_dir / "dagster"
    assert settings.postgres_dir == settings.home_dir / "postgres"
    assert settings.bi_platform_pg_os_user == "postgres"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("BI_PLATFORM_PG_PORT", "6543")
    monkeypatch.setenv("BI_PLATFORM_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.home_dir == tmp_path
    assert settings.uses_external_database
    assert settings.bi_platform_pg_port == 6543
    assert settings.bi_platform_log_level == "DEBUG"


def test_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    assert Settings().database_url is None


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BI_PLATFORM_PG_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="BI_PLATFORM_PG_PORT='not-a-port'"):
        get_settings()


def test_readme_documents_every_variable() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    expected = set(_env_names()) | set(DERIVED_ENV_VARS) | {"DAGSTER_HOME"}
    assert expected <= documented, sorted(expected - documented)
