"""Shared fixtures of the serving tests: a real Redis server for the session, and real
uvicorn servers of the query API on loopback (started in a thread on a bound socket).

``lake`` and ``warehouse`` are module-scoped: each module gets its own warehouse file,
whose data_version is ``v-<module name>``.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bi_platform.serving.app import ServingConfig, create_app
from bi_platform.serving.auth import ApiKeyStore
from bi_platform.serving.warehouse import build_warehouse
from bi_platform_tests.serving import SmallLake, small_lake
from bi_platform_tests.serving.redis_server import redis_server, redis_url

__all__ = ["LiveServer", "redis_server", "redis_url"]

#: Generous rate for servers whose tests are not about rate limiting.
UNLIMITED = "1000000/minute"


class LiveServer:
    """A uvicorn server of ``app`` on 127.0.0.1 (a socket bound to a free port)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]


@dataclass
class Deployment:
    """A running API with its warehouse, key store and keys (secrets by name)."""

    server: LiveServer
    config: ServingConfig
    warehouse: Path
    store: ApiKeyStore
    secrets: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self) -> FastAPI:
        return self.server.app

    def headers(self, key: str = "full") -> dict[str, str]:
        return {"X-API-Key": self.secrets[key]}

    def add_key(self, name: str, segments: tuple[str, ...] | None) -> str:
        key, secret = self.store.create(name, segments)
        self.secrets[name] = secret
        self.key_ids[name] = key.key_id
        return secret


#: The keys every deployment gets: unrestricted, one segment, two segments.
DEFAULT_KEYS: dict[str, tuple[str, ...] | None] = {
    "full": None,
    "tecidos": ("TECIDOS",),
    "two": ("TECIDOS", "PAPELARIA"),
}


@pytest.fixture(scope="module")
def lake() -> SmallLake:
    return small_lake()


@pytest.fixture(scope="module")
def warehouse(
    lake: SmallLake, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    """A warehouse built from the small lake for this module (data_version ``v-<module>``)."""
    target = tmp_path_factory.mktemp("wh") / "bi_warehouse.duckdb"
    build_warehouse(lake.lake_dir, target, module_version(request.module.__name__))
    return target


def module_version(module_name: str) -> str:
    return f"v-{module_name.rsplit('.', 1)[-1]}"


@pytest.fixture(scope="session")
def serving_lake() -> SmallLake:
    return small_lake()


def build_test_warehouse(lake: SmallLake, path: Path, version: str | None = None) -> str:
    version = version or f"test-{uuid.uuid4().hex[:12]}"
    build_warehouse(lake.lake_dir, path, version, threads=2)
    return version


Deploy = Callable[..., Deployment]


@pytest.fixture(scope="module")
def deploy(serving_lake: SmallLake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploy]:
    """``deploy(backend="memory"|"redis"|"off", redis=url, **config)``: a warehouse of its
    own, a key store with :data:`DEFAULT_KEYS`, and a live server; stopped at module end."""
    started: list[LiveServer] = []

    def _deploy(
        backend: str = "memory",
        *,
        redis: str | None = None,
        warehouse: Path | None = None,
        **overrides: object,
    ) -> Deployment:
        root = tmp_path_factory.mktemp("api")
        if warehouse is None:
            warehouse = root / "bi_warehouse.duckdb"
            build_test_warehouse(serving_lake, warehouse)
        if backend == "redis" and not redis:
            raise ValueError("backend 'redis' needs the redis URL")
        settings: dict[str, object] = {
            "warehouse_path": warehouse,
            "pool_size": 4,
            "pool_timeout": 5.0,
            "duckdb_threads": 2,
            "auth": True,
            "api_keys_file": root / "api_keys.json",
            "rate_limit": UNLIMITED,
            "cache": backend != "off",
            "redis_url": redis if backend == "redis" else None,
        }
        settings.update(overrides)
        config = ServingConfig(**settings)  # type: ignore[arg-type]
        store = ApiKeyStore(root / "api_keys.json")
        deployment = Deployment(LiveServer(create_app(config)), config, warehouse, store, {}, {})
        for name, segments in DEFAULT_KEYS.items():
            deployment.add_key(name, segments)
        started.append(deployment.server.start())
        return deployment

    yield _deploy
    for server in started:
        server.stop()
