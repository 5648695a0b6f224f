"""The ``bi-platform`` command: local services and platform chores.

The root group; the commands live in one module per area (``platform_commands``: services and
platform chores; one per domain; ``bench``: the benchmark group).

bi-platform up [--json]       start (or reach) PostgreSQL, write services.env
bi-platform down              stop the local PostgreSQL
bi-platform status [--json]   what runs, with secrets masked
bi-platform env               `export` lines for a shell: eval "$(bi-platform env)"
bi-platform assets            the asset keys of the code location, one per line
bi-platform seed              sample sources of every domain (retail, news, etl, cadastral)
bi-platform materialize       every domain's jobs in dependency order, then a summary
bi-platform delta ...         history | restore of the cadastral Delta tables (rollback)
bi-platform etl register      ETL inbox files -> etl_files partitions (as the sensor does)
bi-platform news ...          resync | verify | log | checkout of the news HF dataset repo
bi-platform serve             the BI query API (uvicorn) over the DuckDB warehouse
bi-platform ui                the Dagster UI (dagster dev), stopped as a whole by one Ctrl-C
bi-platform api-key ...       create | list | revoke the API's keys (stored hashed)
bi-platform bench ...         benchmarks (engines, news, etl, serving, cadastral): table + JSON
"""

from __future__ import annotations

import logging
import sys

import click

from bi_platform.cli.common import fail
from bi_platform.settings import Settings, SettingsError, get_settings


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.bi_platform_log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """bi_platform: one Dagster code location for five BI data systems."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        fail(exc)
    _configure_logging(settings)
    ctx.obj = settings


def _register() -> None:
    from bi_platform.cli import bench, cadastral, etl, news, platform_commands, serving

    for command in (
        platform_commands.up,
        platform_commands.down,
        platform_commands.status,
        platform_commands.env,
        platform_commands.seed,
        platform_commands.materialize,
        platform_commands.cluster,
        platform_commands.ui,
        platform_commands.assets,
        etl.etl,
        news.news,
        serving.serve,
        serving.api_key,
        cadastral.delta,
        bench.bench,
    ):
        main.add_command(command)


_register()
