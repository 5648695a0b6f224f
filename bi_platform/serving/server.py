"""Run the query API under uvicorn (``bi-platform serve``).

:func:`serve` passes the :class:`~bi_platform.serving.app.ServingConfig` to the worker
processes through the environment (:data:`CONFIG_ENV`, JSON without secrets) and runs
``uvicorn.run("bi_platform.serving.server:app_factory", factory=True, ...)``: every
worker builds its own app (connection pool, cache client, rate limiter, metrics). With
several workers the Prometheus metrics are multiprocess: ``PROMETHEUS_MULTIPROC_DIR`` is
set to a fresh directory unless the environment already names one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from bi_platform.serving.app import ServingConfig, create_app
from bi_platform.serving.warehouse import default_threads

logger = logging.getLogger(__name__)

#: Environment variable carrying the config (JSON) from :func:`serve` to the workers.
CONFIG_ENV = "BI_SERVING_CONFIG_JSON"
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def app_factory() -> FastAPI:
    """The app of one worker: the config :func:`serve` exported, else the settings."""
    text = os.environ.get(CONFIG_ENV)
    return create_app(ServingConfig.from_json(text) if text else None)


def _prepare_multiprocess_metrics(workers: int) -> Path | None:
    if workers <= 1:
        return None
    existing = os.environ.get(_MULTIPROC_ENV)
    if existing:
        directory = Path(existing)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # counters of an earlier run
            stale.unlink()
        return None
    directory = Path(tempfile.mkdtemp(prefix="bi_serving_prom_"))
    os.environ[_MULTIPROC_ENV] = str(directory)
    return directory


def with_worker_threads(config: ServingConfig, workers: int) -> ServingConfig:
    """``config`` with DuckDB threads for one of ``workers`` processes on this machine
    when it names none: the usable cores shared out (at least 1), so that the workers'
    DuckDB instances together run one thread per core instead of ``workers`` per core
    (the queries over the pre-aggregates are too small to gain from parallelism; the
    requests of a worker run concurrently on its pooled connections anyway)."""
    if config.duckdb_threads is not None:
        return config
    return dataclasses.replace(config, duckdb_threads=max(1, default_threads() // workers))


def serve(
    config: ServingConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    *,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serve the API on ``host:port`` with ``workers`` processes until interrupted."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (got {workers})")
    config = with_worker_threads(config, workers)
    os.environ[CONFIG_ENV] = config.to_json()
    created = _prepare_multiprocess_metrics(workers)
    logger.info(
        "serving the BI query API on http://%s:%d with %d worker(s); warehouse %s",
        host,
        port,
        workers,
        config.warehouse_path,
    )
    try:
        uvicorn.run(
            "bi_platform.serving.server:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            proxy_headers=False,
            server_header=False,
        )
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
            os.environ.pop(_MULTIPROC_ENV, None)
