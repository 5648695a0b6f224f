"""``bi-platform delta ...`` (the cadastral Delta tables) and ``bi-platform bench cadastral``."""

from __future__ import annotations

import json

import click

from bi_platform.cli.common import fail
from bi_platform.lib.benchmarking import BenchError
from bi_platform.settings import Settings


@click.group()
def delta() -> None:
    """The cadastral Delta tables ($BI_PLATFORM_HOME/delta/cadastral/<table>)."""


def _delta_uri(settings: Settings, table: str) -> str:
    from bi_platform.cadastral.pipeline import TABLES, table_uri

    if table not in TABLES:
        raise click.BadParameter(f"unknown table {table!r}; one of: {', '.join(TABLES)}")
    return table_uri(settings.delta_dir / "cadastral", table)


@delta.command("history")
@click.argument("table")
@click.pass_obj
def delta_history(settings: Settings, table: str) -> None:
    """The versions of TABLE, newest first, one JSON object per line."""
    from bi_platform.cadastral.delta import DeltaTableMissing, history

    try:
        for entry in history(_delta_uri(settings, table)):
            click.echo(json.dumps(entry, default=str))
    except DeltaTableMissing as exc:
        fail(exc)


@delta.command("restore")
@click.argument("table")
@click.option("--version", "version", type=int, required=True, help="Version to roll back to.")
@click.pass_obj
def delta_restore(settings: Settings, table: str, version: int) -> None:
    """Roll TABLE back to VERSION (a new version with that content; nothing is deleted).

    Readers of the latest version see the restored content at once. Dagster's runs read
    the version written for their load date: to bring PostgreSQL back to that content,
    rerun cadastral_pg_sync for the load date VERSION was written for (printed).
    """
    from bi_platform.cadastral.delta import DeltaTableMissing, history, restore
    from bi_platform.cadastral.resources import LOAD_DATE_METADATA

    uri = _delta_uri(settings, table)
    try:
        load_date = next(
            (c.get(LOAD_DATE_METADATA) for c in history(uri) if c.get("version") == version),
            None,
        )
        commit = restore(uri, version)
    except (DeltaTableMissing, ValueError) as exc:
        fail(exc)
    click.echo(
        f"{table}: restored version {version} as version {commit.version} "
        f"({commit.rows:,} rows in {commit.files} files)"
    )
    if load_date:
        click.echo(
            f"version {version} holds dat_ref_carga={load_date}; to sync PostgreSQL to it: "
            f"dagster asset materialize --select cadastral/cadastral_pg_sync "
            f"--partition {load_date}"
        )


@click.command("cadastral")
@click.option(
    "--persons", type=int, default=1_000_000, show_default=True, help="Persons generated."
)
@click.option(
    "--database-url",
    default=None,
    help="Admin URL of the server where the scratch database is made (default: the platform's).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Scratch directory for the raw snapshots and Delta tables (default: system temp).",
)
@click.option(
    "--scale",
    default="1",
    show_default=True,
    help="Comma-separated multiples of --persons whose pipeline rate is measured too (1,3).",
)
@click.option(
    "--pipeline-runs",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Warm pipeline runs on D1 (the median is reported; the lower middle one if even).",
)
def bench_cadastral(
    persons: int, database_url: str | None, workdir: str | None, scale: str, pipeline_runs: int
) -> None:
    """Spark pipeline throughput; hash-compare sync vs the collect() CompareData baseline."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from bi_platform.cadastral import bench as cadastral_bench

    console = Console(stderr=True)
    console.print(f"bench cadastral: {persons:,} persons (scratch dir and database)")
    try:
        scales = cadastral_bench.parse_scales(scale)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scale") from None
    try:
        stages, summary = cadastral_bench.run(
            persons,
            scales=scales,
            pipeline_runs=pipeline_runs,
            database_url=database_url,
            workdir=Path(workdir) if workdir else None,
            progress=lambda message: console.print(f"  {message}"),
        )
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"cadastral benchmark ({persons:,} persons, {summary['cores']} cores)")
    for column in ("stage", "rows", "seconds", "rows/s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, stage in stages.items():
        table.add_row(
            name,
            f"{stage['rows']:,}",
            f"{stage['seconds']:.2f}",
            f"{stage['rows_per_s']:,.0f}" if stage["rows"] else "",
        )
    Console(width=160).print(table)
    click.echo(json.dumps(summary))
