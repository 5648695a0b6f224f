"""``bi-platform etl ...`` and ``bi-platform bench etl``."""

from __future__ import annotations

import json

import click

from bi_platform.settings import Settings


@click.group()
def etl() -> None:
    """The secure ETL inbox ($BI_PLATFORM_HOME/etl/inbox)."""


@etl.command("register")
@click.pass_obj
def etl_register(settings: Settings) -> None:
    """Register inbox files as etl_files partitions (as the sensor does); audit rejected ones."""
    import dagster as dg

    from bi_platform.etl.automation import pending_partitions, register_inbox_partitions
    from bi_platform.etl.inbox import split_partition_key
    from bi_platform.etl.resources import EtlResource

    resource = EtlResource()
    with dg.DagsterInstance.from_config(str(settings.dagster_home_dir)) as instance:
        registered = register_inbox_partitions(
            instance, resource.inbox_dir, resource.max_bytes, resource.audit_path
        )
        pending = pending_partitions(instance, registered.current)
    click.echo(
        f"etl: {len(registered.current)} files, {len(registered.added)} new partitions, "
        f"{len(registered.rejected)} rejected"
    )
    for name, reason in registered.rejected:
        click.echo(f"  rejected {name}: {reason}")
    first_of: dict[str, str] = {}
    for key in registered.current:  # the same content under several names: counted once
        name, digest = split_partition_key(key)
        if digest in first_of:
            click.echo(f"  same content as {first_of[digest]}: {name} (counted once)")
        else:
            first_of[digest] = name
    click.echo(f"pending: {', '.join(pending) or 'none'}")


@click.command("etl")
@click.option(
    "--mb", type=int, default=1024, show_default=True, help="Size of the generated file (MiB)."
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Parser processes (default: ETL_WORKERS, else the machine's cores).",
)
@click.option(
    "--struct-prefix-mb",
    type=int,
    default=50,
    show_default=True,
    help="MiB timed for the struct.unpack + csv.writer baseline (extrapolated).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Scratch directory (default: the system temp dir; needs ~1.5x --mb free).",
)
def bench_etl(mb: int, workers: int | None, struct_prefix_mb: int, workdir: str | None) -> None:
    """Binary parser vs the f.read floor and struct.unpack + csv.writer; estimator error."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from bi_platform.etl import bench as etl_bench

    console = Console(stderr=True)
    console.print(f"bench etl: a {mb:,} MiB binary file (scratch directory, removed at the end)")
    stages, summary = etl_bench.run(
        mb,
        workers=workers,
        struct_prefix_mb=struct_prefix_mb,
        workdir=Path(workdir) if workdir else None,
        progress=lambda message: console.print(f"  {message}"),
    )
    table = Table(title=f"etl benchmark ({mb:,} MiB, {summary['records']:,} records)")
    for column in ("stage", "MiB", "seconds", "MiB/s", "note"):
        table.add_column(column, justify="left" if column in ("stage", "note") else "right")
    for name, stage in stages.items():
        whole = stage.get("extrapolated_seconds")
        table.add_row(
            name,
            f"{stage['mb']:,.0f}",
            f"{stage['seconds']:.2f}",
            f"{stage['mb_per_s']:,.1f}",
            f"whole file ~{whole:,.1f} s" if whole is not None else "",
        )
    Console(width=160).print(table)
    click.echo(json.dumps(summary))
