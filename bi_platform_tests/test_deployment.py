"""docker-compose.yml, Dockerfile, dagster.yaml and the workspaces agree with each other.

No Docker engine runs here, so the files are parsed and cross-checked: what one file
names (a service, a port, a path, an environment variable), the others provide.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import pytest
import yaml

from bi_platform.settings import Settings
from bi_platform_tests.conftest import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DAGSTER_YAML = (REPO_ROOT / "dagster.yaml").read_text()
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def _service_running(*prefix: str) -> tuple[str, dict[str, Any]]:
    matches = [(n, s) for n, s in SERVICES.items() if _command(s)[: len(prefix)] == list(prefix)]
    assert len(matches) == 1, f"expected one service running {prefix}, found {matches}"
    return matches[0]


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _dockerfile_env() -> dict[str, str]:
    block = re.search(r"^ENV (.+?)(?=^\S)", DOCKERFILE, flags=re.MULTILINE | re.DOTALL)
    assert block
    return dict(re.findall(r"(\w+)=(\S+)", block.group(1).replace("\\\n", " ")))


CODE_NAME, CODE = _service_running("dagster", "api", "grpc")
WEB_NAME, WEB = _service_running("dagster-webserver")
DAEMON_NAME, DAEMON = _service_running("dagster-daemon", "run")
DAGSTER_SERVICES = {CODE_NAME: CODE, WEB_NAME: WEB, DAEMON_NAME: DAEMON}


def test_infrastructure_images() -> None:
    images = {service.get("image") for service in SERVICES.values()}
    assert {"postgres:15", "redis:7"} <= images


@pytest.mark.parametrize("name", sorted(DAGSTER_SERVICES))
def test_dagster_services_share_image_and_instance(name: str) -> None:
    service = DAGSTER_SERVICES[name]
    assert service["image"] == CODE["image"]
    assert service["build"]["dockerfile"] == "Dockerfile"
    assert (REPO_ROOT / service["build"]["context"] / "Dockerfile").is_file()
    env = service["environment"]
    assert env["DAGSTER_HOME"] == _dockerfile_env()["DAGSTER_HOME"]
    for variable in re.findall(r"\{env: (\w+)\}", DAGSTER_YAML):
        assert variable in env, f"{name} lacks {variable}, which dagster.yaml reads"


def test_dockerfile_installs_the_instance_and_workspace() -> None:
    home = _dockerfile_env()["DAGSTER_HOME"]
    assert "cp dagster.yaml $DAGSTER_HOME/dagster.yaml" in DOCKERFILE
    assert "COPY deploy/workspace.yaml $DAGSTER_HOME/workspace.yaml" in DOCKERFILE
    for command in (_command(WEB), _command(DAEMON)):
        assert _arg(command, "-w") == f"{home}/workspace.yaml"


def test_workspaces_point_at_the_code_location() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    module = pyproject["tool"]["dagster"]["module_name"]
    local = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"][0]
    deployed = yaml.safe_load((REPO_ROOT / "deploy" / "workspace.yaml").read_text())
    grpc = deployed["load_from"][0]["grpc_server"]
    code_command = _command(CODE)
    assert local["python_module"]["module_name"] == module == _arg(code_command, "-m")
    assert grpc["host"] == CODE_NAME
    assert str(grpc["port"]) == _arg(code_command, "-p")
    assert grpc["location_name"] == local["python_module"]["location_name"]
    healthcheck = CODE["healthcheck"]["test"]
    assert "grpc-health-check" in healthcheck and _arg(healthcheck, "-p") == str(grpc["port"])


def test_storage_wiring_matches_the_postgres_service() -> None:
    pg_name = next(n for n, s in SERVICES.items() if s.get("image") == "postgres:15")
    pg_env = SERVICES[pg_name]["environment"]
    init_sql = "".join(
        (REPO_ROOT / volume.split(":")[0]).read_text()
        for volume in SERVICES[pg_name]["volumes"]
        if volume.startswith("./")
    )
    for name, service in DAGSTER_SERVICES.items():
        env = service["environment"]
        assert env["DAGSTER_PG_HOST"] == pg_name, name
        assert env["DAGSTER_PG_USERNAME"] == pg_env["POSTGRES_USER"], name
        assert env["DAGSTER_PG_PASSWORD"] == pg_env["POSTGRES_PASSWORD"], name
        database = env["DAGSTER_PG_DB"]
        assert database == pg_env["POSTGRES_DB"] or f"CREATE DATABASE {database}" in init_sql
        assert f"@{pg_name}:5432/{pg_env['POSTGRES_DB']}" in env["DATABASE_URL"]
        assert env["DAGSTER_DATABASE_URL"].endswith(f"@{pg_name}:5432/{database}")


def test_every_platform_variable_is_one_settings_reads() -> None:
    known = {name.upper() for name in Settings.model_fields}
    dagster_vars = set(re.findall(r"\{env: (\w+)\}", DAGSTER_YAML))
    for name, service in DAGSTER_SERVICES.items():
        unknown = set(service["environment"]) - known - dagster_vars
        assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"


def test_dependencies_exist_and_health_conditions_have_healthchecks() -> None:
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"
    for name in (WEB_NAME, DAEMON_NAME):
        assert SERVICES[name]["depends_on"][CODE_NAME]["condition"] == "service_healthy"


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
            else:
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".bi_platform", ".git"} <= set(ignored)


def test_the_query_api_service_serves_the_shared_warehouse() -> None:
    name, api = _service_running("bi-platform", "serve")
    command = _command(api)
    assert _arg(command, "--host") == "0.0.0.0"
    port = _arg(command, "--port")
    assert any(str(mapping).endswith(f":{port}") for mapping in api["ports"])
    assert api["image"] == CODE["image"]
    env = api["environment"]
    assert env["BI_PLATFORM_HOME"] == CODE["environment"]["BI_PLATFORM_HOME"]
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert env["SERVING_AUTH"] == "true"
    assert set(api["volumes"]) & set(CODE["volumes"]), f"{name} must see the warehouse volume"
    settings = set(Settings.model_fields)
    assert {variable.lower() for variable in env} <= settings
