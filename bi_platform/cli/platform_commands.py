"""Platform commands: local services (up, down, status, env), the sample sources
(seed), running every domain (materialize), the Dagster UI, local clusters, assets."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import date, timedelta

import click

from bi_platform.cli.common import fail
from bi_platform.runtime import services
from bi_platform.runtime.postgres import PostgresRuntimeError
from bi_platform.settings import Settings

#: The first load date `bi-platform seed` writes for the cadastral sources (the next day
#: holds a change set of it).
CADASTRAL_BASE_DATE = date(2026, 11, 20)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def up(settings: Settings, as_json: bool) -> None:
    """Start the local PostgreSQL (unless DATABASE_URL is set); write services.env."""
    try:
        service = services.up(settings)
    except PostgresRuntimeError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps({"postgres": service.as_json()}))
    else:
        click.echo(f"postgres ({service.mode}): {service.as_json()['url']}")
        click.echo(f"services.env: {settings.services_env_file}")


@click.command()
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the local PostgreSQL."""
    try:
        stopped = services.down(settings)
    except PostgresRuntimeError as exc:
        fail(exc)
    click.echo("postgres: stopped" if stopped else "postgres: was not running")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Show whether PostgreSQL runs and where (passwords masked)."""
    report = services.status_json(settings)
    if as_json:
        click.echo(json.dumps(report))
        return
    pg = report["postgres"]
    state = "running" if pg["running"] else "stopped"
    where = f" (data {pg['data_dir']})" if pg["data_dir"] else ""
    click.echo(f"postgres ({pg['mode']}): {state} {pg['url'] or ''}".rstrip() + where)


@click.command()
@click.pass_obj
def env(settings: Settings) -> None:
    """Print `export` lines for services.env: eval "$(bi-platform env)"."""
    path = settings.services_env_file
    if not path.exists():
        fail(PostgresRuntimeError(f"{path} does not exist: run `bi-platform up` first."))
    for key, value in services.read_services_env(path).items():
        click.echo(f"export {key}={shlex.quote(value)}")


@click.command()
@click.option(
    "--profile",
    type=click.Choice(["small", "default", "large"]),
    default="default",
    show_default=True,
    help="small: for tests; default: admmat at full size (1.1M rows); large: + a 600 MB fact.",
)
@click.option("--seed", "rng_seed", type=int, default=38, show_default=True, help="RNG seed.")
@click.option("--force", is_flag=True, help="Rewrite even when the same profile is there.")
@click.pass_obj
def seed(settings: Settings, profile: str, rng_seed: int, force: bool) -> None:
    """Write the raw sources of every domain under $BI_PLATFORM_HOME/raw (idempotent)."""
    from bi_platform.cadastral.sample import (
        CADASTRAL_PROFILES,
        generate_cadastral_sources,
        generate_change_set,
    )
    from bi_platform.etl.sample import write_etl_sources
    from bi_platform.news.sample import write_news_sources
    from bi_platform.retail.sample import write_retail_exports

    retail_dir = settings.raw_dir / "retail"
    paths = write_retail_exports(retail_dir, profile, seed=rng_seed, force=force)
    click.echo(f"retail: {len(paths)} raw exports in {retail_dir} (profile {profile})")
    # news has no `large` profile: its default is already the real dataset's size
    news_profile = "default" if profile == "large" else profile
    write_news_sources(settings.home_dir, news_profile, seed=rng_seed, force=force)
    click.echo(
        f"news: initial HF export in {settings.raw_dir / 'news'}, daily batches in "
        f"{settings.news_dir / 'inbox'} (profile {news_profile})"
    )
    etl_profile = "default" if profile == "large" else profile
    etl_paths = write_etl_sources(
        settings.home_dir,
        etl_profile,
        seed=rng_seed,
        force=force,
        max_file_mb=settings.etl_max_file_mb,
    )
    click.echo(
        f"etl: {len(etl_paths)} inbox files in {settings.etl_dir / 'inbox'} "
        f"(profile {etl_profile}, malformed corpus included)"
    )
    cadastral_persons = CADASTRAL_PROFILES["small" if profile == "small" else "default"]
    raw_cadastral = settings.cadastral_raw_dir
    base = generate_cadastral_sources(
        raw_cadastral,
        persons=cadastral_persons,
        load_date=CADASTRAL_BASE_DATE,
        seed=rng_seed,
        force=force,
    )
    change = generate_change_set(
        raw_cadastral,
        from_date=CADASTRAL_BASE_DATE,
        to_date=CADASTRAL_BASE_DATE + timedelta(days=1),
        seed=rng_seed + 1,
        force=force,
    )
    click.echo(
        f"cadastral: {cadastral_persons:,} persons at dat_ref_carga={base.load_date}, then a "
        f"change set (+{change.inserted:,} ~{change.updated:,} -{change.deleted:,}) at "
        f"{change.to_date} in {raw_cadastral}"
    )


def _print_summary(settings: Settings, outcomes: list, seconds: float) -> bool:
    """The end of ``bi-platform materialize``: what ran, the checks, where to look next.
    Returns whether everything succeeded."""
    runs = [run for step in outcomes for run in step.runs]
    checks = [check for run in runs for check in run.checks]
    failed_checks = [c for c in checks if not c.passed]
    materialized = [key for run in runs for key in run.materialized]
    ok = all(step.success for step in outcomes)
    click.echo("")
    click.echo(f"== bi-platform materialize: {'OK' if ok else 'FAILED'} in {seconds:.0f} s ==")
    for step in outcomes:
        if step.skipped or step.error:
            click.echo(f"  {step.step.name:<16} SKIPPED: {step.skipped or step.error}")
            continue
        if not step.runs:
            click.echo(f"  {step.step.name:<16} nothing to do")
            continue
        good = sum(run.success for run in step.runs)
        seconds_step = sum(run.seconds for run in step.runs)
        click.echo(
            f"  {step.step.name:<16} {good}/{len(step.runs)} run(s) ok in {seconds_step:.0f} s"
        )
        for run in step.runs:
            if not run.success:
                click.echo(f"    FAILED {run.run} (run {run.run_id}): {run.error}")
    click.echo(
        f"assets materialized: {len(materialized)} ({len(set(materialized))} distinct) in "
        f"{len(runs)} run(s)"
    )
    click.echo(f"checks: {len(checks) - len(failed_checks)} passed, {len(failed_checks)} failed")
    for check in sorted(set(failed_checks), key=str):
        click.echo(f"  failed: {check}{' (blocking)' if check.blocking else ''}")
    reports = {
        "retail inventory": settings.reports_dir / "retail_table_inventory.json",
        "ETL report": settings.etl_dir / "report" / "report.html",
        "BI warehouse": settings.warehouse_path,
    }
    for name, path in reports.items():
        if path.exists():
            click.echo(f"{name}: {path.resolve()}")
    click.echo("query API:  bi-platform serve   (keys: bi-platform api-key create --name me)")
    click.echo("Dagster UI: make ui             (http://127.0.0.1:3000, runs above included)")
    return ok


@click.command()
@click.option(
    "--domain",
    "domains",
    multiple=True,
    type=click.Choice(["retail", "serving", "news", "etl", "cadastral"]),
    help="Only these domains (repeatable). Default: all, in dependency order.",
)
@click.pass_obj
def materialize(settings: Settings, domains: tuple[str, ...]) -> None:
    """Run every domain's jobs in dependency order on the platform's Dagster instance.

    retail_tables, serving_warehouse, news_setup_job, news_ingest_job (one run per inbox
    day not ingested yet), hf_news_sync_job, etl_file_job (one run per inbox file not
    processed yet), etl_report_job, cadastral_job (one run per complete load date not
    processed yet, oldest first): the partitions the sensors would request. Each run is
    recorded in the instance (see them with `make ui`). Ends with a summary; exits 1 if a
    run failed.
    """
    import time

    import dagster as dg

    from bi_platform.definitions import defs
    from bi_platform.orchestration.plan import steps_for
    from bi_platform.orchestration.runner import run_steps

    if not (settings.dagster_home_dir / "dagster.yaml").exists():
        fail(PostgresRuntimeError("no Dagster instance: run `bi-platform up` first"))
    started = time.perf_counter()

    def progress(run) -> None:
        state = "ok" if run.success else "FAILED"
        click.echo(f"  {state:<6} {run.run} {run.seconds:6.1f} s  {len(run.materialized)} assets")

    with dg.DagsterInstance.from_config(str(settings.dagster_home_dir)) as instance:
        outcomes = run_steps(defs, instance, steps_for(domains or None), on_run=progress)
    if not _print_summary(settings, outcomes, time.perf_counter() - started):
        sys.exit(1)


@click.group()
def cluster() -> None:
    """Local clusters (Spark standalone, Spark Connect, Dask) to run the platform on.

    `up` prints the variable to export (e.g. `eval "$(bi-platform cluster up spark)"`);
    the details go to stderr. State and logs: $BI_PLATFORM_HOME/clusters/<kind>/.
    """


def _cluster_root(settings: Settings):
    return settings.home_dir / "clusters"


@cluster.command("up")
@click.argument("kind", type=click.Choice(["spark", "spark-connect", "dask"]))
@click.pass_obj
def cluster_up(settings: Settings, kind: str) -> None:
    """Start the KIND cluster (idempotent) and print `export VAR=address`."""
    from bi_platform.cadastral.spark_config import connect_server_settings
    from bi_platform.runtime import clusters

    # a Spark Connect server runs the cadastral pipeline: its settings, sized for 2 cores
    spark_conf = connect_server_settings() if kind == "spark-connect" else None
    try:
        state, started = clusters.up(kind, _cluster_root(settings), spark_conf=spark_conf)
    except clusters.ClusterError as exc:
        fail(exc)
    click.echo(("started " if started else "already running ") + clusters.describe(state), err=True)
    click.echo(state.export_line)


@cluster.command("down")
@click.argument("kinds", nargs=-1, type=click.Choice(["spark", "spark-connect", "dask"]))
@click.pass_obj
def cluster_down(settings: Settings, kinds: tuple[str, ...]) -> None:
    """Stop the KINDS clusters (default: all) with every process they started."""
    from bi_platform.runtime import clusters

    stopped = clusters.down(_cluster_root(settings), kinds or clusters.KINDS)
    for kind in kinds or clusters.KINDS:
        names = stopped.get(kind)
        click.echo(f"{kind}: stopped {', '.join(names)}" if names else f"{kind}: not running")


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def cluster_status(settings: Settings, as_json: bool) -> None:
    """Which local clusters run, their addresses and the variables to export."""
    from bi_platform.runtime import clusters

    found = clusters.status(_cluster_root(settings))
    if as_json:
        payload = {
            kind: None if state is None else {"address": state.address, "env": state.env}
            for kind, state in found.items()
        }
        click.echo(json.dumps(payload, indent=2))
        return
    for kind, state in found.items():
        if state is None:
            click.echo(f"{kind}: not running")
        else:
            click.echo(f"{clusters.describe(state)}\n  {state.export_line}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface of the webserver.")
@click.option("--port", default=3000, show_default=True, help="Port of the webserver.")
@click.option(
    "--workspace",
    default="workspace.yaml",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The workspace file that names the code location.",
)
def ui(host: str, port: int, workspace: str) -> None:
    """The Dagster UI: dagster dev (webserver + daemon); one Ctrl-C or SIGTERM stops it all."""
    from pathlib import Path

    from bi_platform.runtime.ui import dagster_dev_command, run_supervised

    sys.exit(run_supervised(dagster_dev_command(host, port, Path(workspace))))


@click.command()
def assets() -> None:
    """List the asset keys of the code location, one per line."""
    from bi_platform.definitions import defs

    for key in sorted(defs.resolve_all_asset_keys()):
        click.echo(key.to_user_string())
