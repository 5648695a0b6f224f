"""The ``bi-platform`` command: local services and platform chores.

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

import json
import logging
import shlex
import sys
from datetime import date, timedelta
from typing import NoReturn

import click

from bi_platform.runtime import services
from bi_platform.runtime.postgres import PostgresRuntimeError
from bi_platform.settings import Settings, SettingsError, get_settings

#: The first load date `bi-platform seed` writes for the cadastral sources (the next day
#: holds a change set of it).
CADASTRAL_BASE_DATE = date(2026, 11, 20)


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.bi_platform_log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _fail(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """bi_platform: one Dagster code location for five BI data systems."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        _fail(exc)
    _configure_logging(settings)
    ctx.obj = settings


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def up(settings: Settings, as_json: bool) -> None:
    """Start the local PostgreSQL (unless DATABASE_URL is set); write services.env."""
    try:
        service = services.up(settings)
    except PostgresRuntimeError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"postgres": service.as_json()}))
    else:
        click.echo(f"postgres ({service.mode}): {service.as_json()['url']}")
        click.echo(f"services.env: {settings.services_env_file}")


@main.command()
@click.pass_obj
def down(settings: Settings) -> None:
    """Stop the local PostgreSQL."""
    try:
        stopped = services.down(settings)
    except PostgresRuntimeError as exc:
        _fail(exc)
    click.echo("postgres: stopped" if stopped else "postgres: was not running")


@main.command()
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


@main.command()
@click.pass_obj
def env(settings: Settings) -> None:
    """Print `export` lines for services.env: eval "$(bi-platform env)"."""
    path = settings.services_env_file
    if not path.exists():
        _fail(PostgresRuntimeError(f"{path} does not exist: run `bi-platform up` first."))
    for key, value in services.read_services_env(path).items():
        click.echo(f"export {key}={shlex.quote(value)}")


@main.command()
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
    from bi_platform.sample_data.cadastral import (
        CADASTRAL_PROFILES,
        generate_cadastral_sources,
        generate_change_set,
    )
    from bi_platform.sample_data.etl import write_etl_sources
    from bi_platform.sample_data.news import write_news_sources
    from bi_platform.sample_data.retail import write_retail_exports

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


@main.command()
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
        _fail(PostgresRuntimeError("no Dagster instance: run `bi-platform up` first"))
    started = time.perf_counter()

    def progress(run) -> None:
        state = "ok" if run.success else "FAILED"
        click.echo(f"  {state:<6} {run.run} {run.seconds:6.1f} s  {len(run.materialized)} assets")

    with dg.DagsterInstance.from_config(str(settings.dagster_home_dir)) as instance:
        outcomes = run_steps(defs, instance, steps_for(domains or None), on_run=progress)
    if not _print_summary(settings, outcomes, time.perf_counter() - started):
        sys.exit(1)


@main.group()
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


@main.group()
def news() -> None:
    """The news open-data copy (HF dataset repo): repair, verify, history, checkout."""


def _gate_summary(results: dict) -> dict[str, dict]:
    from bi_platform.news.checks import metadata_values

    return {
        name: {"passed": result.passed, **metadata_values(result)}
        for name, result in results.items()
    }


@news.command("resync")
@click.option(
    "--no-dagster",
    is_flag=True,
    help="Run the sync directly (no Dagster run recorded), then evaluate the gates.",
)
@click.pass_obj
def news_resync(settings: Settings, no_dagster: bool) -> None:
    """Repair: rebuild EVERY month of the HF dataset from PostgreSQL (full re-sync).

    By default this is a run of hf_news_sync_job with config `full: true` on the
    platform's Dagster instance (recorded like any run; its blocking gates run after
    it). The sync first brings the repo's working copy to HEAD and refuses to publish
    shards that fail its check (nothing is committed then). Prints one JSON line; exits
    1 if the sync or a gate failed.
    """
    import psycopg

    from bi_platform.news.checks import evaluate_hf_gates
    from bi_platform.news.dataset_repo import open_dataset_repo
    from bi_platform.news.hf_sync import REPAIR_RUN_CONFIG, sync_to_hf
    from bi_platform.runtime.services import database_url

    if no_dagster:
        try:
            url = database_url(settings)
            repo = open_dataset_repo(settings)
            report = sync_to_hf(url, repo, full=True)
            with psycopg.connect(url) as conn:
                gates = _gate_summary(evaluate_hf_gates(conn, repo))
        except Exception as exc:
            _fail(exc)
        click.echo(json.dumps({"sync": report.as_dict(), "gates": gates}, default=str))
        if not all(g["passed"] for g in gates.values()):
            sys.exit(1)
        return

    import dagster as dg

    from bi_platform.definitions import defs
    from bi_platform.news.automation import hf_news_sync_job
    from bi_platform.orchestration.runner import LAUNCHED_BY_TAG, QUIET
    from bi_platform.runtime.run_launcher import run_worker_tags

    if not (settings.dagster_home_dir / "dagster.yaml").exists():
        _fail(
            PostgresRuntimeError(
                "no Dagster instance: run `bi-platform up` first (or use --no-dagster)"
            )
        )
    with dg.DagsterInstance.from_config(str(settings.dagster_home_dir)) as instance:
        result = defs.resolve_job_def(hf_news_sync_job.name).execute_in_process(
            run_config={**QUIET, **REPAIR_RUN_CONFIG},
            instance=instance,
            tags={LAUNCHED_BY_TAG: "bi-platform news resync", **run_worker_tags()},
            raise_on_error=False,
        )
    sync = {
        k: v.value
        for event in result.get_asset_materialization_events()
        for k, v in event.materialization.metadata.items()
        if k != "dagster/column_schema"
    }
    checks = {
        e.check_name: {"passed": e.passed, "blocking": e.blocking}
        for e in result.get_asset_check_evaluations()
    }
    errors = [
        event.step_failure_data.error.message.strip()
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error
    ]
    click.echo(
        json.dumps(
            {
                "run_id": result.run_id,
                "success": result.success,
                "sync": sync,
                "gates": checks,
                "errors": errors,
            },
            default=str,
        )
    )
    if not result.success or not all(c["passed"] for c in checks.values() if c["blocking"]):
        sys.exit(1)


@news.command("verify")
@click.pass_obj
def news_verify(settings: Settings) -> None:
    """Evaluate the blocking gates of hf_news_sync now (no run recorded): PG vs what
    users of the dataset read. One JSON line; exits 1 if a gate fails."""
    import psycopg

    from bi_platform.news.checks import evaluate_hf_gates
    from bi_platform.news.dataset_repo import open_dataset_repo
    from bi_platform.runtime.services import database_url

    try:
        repo = open_dataset_repo(settings)
        with psycopg.connect(database_url(settings)) as conn:
            gates = _gate_summary(evaluate_hf_gates(conn, repo))
    except Exception as exc:
        _fail(exc)
    click.echo(json.dumps({"head": repo.head(), "gates": gates}, default=str))
    if not all(g["passed"] for g in gates.values()):
        sys.exit(1)


@news.command("log")
@click.option("--limit", type=int, default=20, show_default=True, help="Revisions shown.")
@click.pass_obj
def news_log(settings: Settings, limit: int) -> None:
    """The dataset repo's revisions, newest first, one JSON object per line."""
    from bi_platform.news.dataset_repo import DatasetRepoError, open_dataset_repo

    try:
        history = open_dataset_repo(settings).log()
    except DatasetRepoError as exc:
        _fail(exc)
    for info in history[: max(limit, 0)]:
        click.echo(
            json.dumps(
                {
                    "revision": info.revision,
                    "at": info.at.isoformat(),
                    "message": info.message,
                    "added": list(info.added),
                    "deleted": list(info.deleted),
                }
            )
        )


@news.command("checkout")
@click.option(
    "--revision",
    default=None,
    help="Commit id (local repo: a unique prefix is enough). Default: the head.",
)
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.pass_obj
def news_checkout(settings: Settings, revision: str | None, directory: str) -> None:
    """Write a plain copy of a revision into DIRECTORY (new or empty): data/*.parquet and
    the README.md card, what a `git clone` of the Hub repo holds; readable with
    `datasets.load_dataset(DIRECTORY)`."""
    from bi_platform.news.dataset_repo import DatasetRepoError, open_dataset_repo

    try:
        result = open_dataset_repo(settings).checkout(directory, revision)
    except (DatasetRepoError, FileExistsError) as exc:
        _fail(exc)
    click.echo(f"{result.directory}: revision {result.revision}, {len(result.files)} file(s)")


@main.command()
@click.option("--host", default=None, help="Bind address [default: SERVING_HOST].")
@click.option("--port", type=int, default=None, help="Port [default: SERVING_PORT].")
@click.option("--workers", type=int, default=None, help="Processes [default: SERVING_WORKERS].")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the BI query API (uvicorn) over the DuckDB warehouse."""
    from bi_platform.serving.app import ServingConfig
    from bi_platform.serving.server import serve as run_server

    workers = settings.serving_workers if workers is None else workers
    if workers < 1:
        _fail(ValueError(f"--workers must be >= 1 (got {workers})"))
    run_server(
        ServingConfig.from_settings(settings),
        host=host or settings.serving_host,
        port=settings.serving_port if port is None else port,
        workers=workers,
        log_level=settings.bi_platform_log_level.lower(),
    )


@main.group("api-key")
def api_key() -> None:
    """API keys of the query API (stored hashed in SERVING_API_KEYS_FILE)."""


def _key_row(key: object) -> dict:
    from dataclasses import asdict

    row = asdict(key)  # type: ignore[call-overload]
    row["segments"] = list(row["segments"]) if row["segments"] is not None else None
    return row


@api_key.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option(
    "--segments",
    default=None,
    help="Comma-separated NOMESEGMENTO values the key may read (default: every segment).",
)
@click.pass_obj
def api_key_create(settings: Settings, name: str, segments: str | None) -> None:
    """Create a key; its secret is printed once (only its hash is stored)."""
    from bi_platform.retail.schema import SEGMENTS
    from bi_platform.serving.auth import ApiKeyStore
    from bi_platform.serving.text import canonical_text

    wanted = None
    if segments is not None:
        # canonical (NFC, trimmed) before the check: an NFD or padded spelling of a known
        # segment is that segment, and is stored NFC
        wanted = [canonical_text(s) for s in segments.split(",") if canonical_text(s)]
        unknown = [s for s in wanted if s not in SEGMENTS]
        if not wanted or unknown:
            _fail(
                ValueError(
                    f"unknown segments {unknown or segments!r}; known: {', '.join(SEGMENTS)}"
                )
            )
    try:
        key, secret = ApiKeyStore(settings.api_keys_file).create(name, wanted)
    except (ValueError, OSError, RuntimeError) as exc:
        _fail(exc)
    click.echo(
        f"key {key.key_id} ({key.name}), segments: {', '.join(key.segments or ['all'])}", err=True
    )
    click.echo("the secret is shown only now; store it safely:", err=True)
    click.echo(secret)


@api_key.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def api_key_list(settings: Settings, as_json: bool) -> None:
    """Keys (never their secrets): id, name, segments, created, revoked."""
    from bi_platform.serving.auth import ApiKeyStore

    try:
        keys = ApiKeyStore(settings.api_keys_file).list()
    except (OSError, RuntimeError) as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([_key_row(k) for k in keys]))
        return
    for key in keys:
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        segs = ",".join(key.segments) if key.segments is not None else "all"
        click.echo(f"{key.key_id}  {key.name:<20} {segs:<30} {key.created_at}  {state}")


@api_key.command("revoke")
@click.argument("key_id")
@click.pass_obj
def api_key_revoke(settings: Settings, key_id: str) -> None:
    """Revoke a key by id (running APIs refuse it on their next request)."""
    from bi_platform.serving.auth import ApiKeyStore, UnknownApiKeyError

    try:
        key = ApiKeyStore(settings.api_keys_file).revoke(key_id)
    except UnknownApiKeyError:
        _fail(ValueError(f"no API key with id {key_id!r}"))
    except (OSError, RuntimeError) as exc:
        _fail(exc)
    click.echo(f"revoked {key.key_id} ({key.name}) at {key.revoked_at}")


@main.group()
def bench() -> None:
    """Benchmarks: a table, then one JSON line with ratios against an in-run baseline."""


@bench.command("engines")
@click.option("--rows", type=int, default=1_113_822, show_default=True, help="admmat rows.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per query.")
@click.option("--queries", default="", help="Comma-separated query names (default: all).")
def bench_engines(rows: int, repeats: int, queries: str) -> None:
    """The retail battery on admmat: IO-manager load path vs raw Polars, Dask and DuckDB."""
    from rich.console import Console
    from rich.table import Table

    from bi_platform.bench import engines

    console = Console(stderr=True)
    names = [q.strip() for q in queries.split(",") if q.strip()] or None

    def progress(m: dict) -> None:
        console.print(f"  {m['query']:<34} {m['path']:<7} {m['median_s']:.4f} s")

    console.print(f"bench engines: {rows:,} rows, {repeats} timed runs per query")
    measurements, summary = engines.run(rows, repeats=repeats, queries=names, progress=progress)
    table = Table(title=f"retail battery on admmat ({rows:,} rows): median s / peak RSS MB")
    table.add_column("query", no_wrap=True, min_width=30)
    for path in engines.PATHS:
        table.add_column(path, justify="right")
    by = {(m["path"], m["query"]): m for m in measurements}
    for query in sorted({m["query"] for m in measurements}):
        cells = [
            f"{by[p, query]['median_s']:.4f} / {by[p, query]['peak_rss_mb']:.0f}"
            for p in engines.PATHS
        ]
        table.add_row(query, *cells)
    Console(width=160).print(table)
    click.echo(json.dumps(summary))


@bench.command("news")
@click.option("--rows", type=int, default=300_000, show_default=True, help="News records.")
@click.option(
    "--baseline-rows",
    type=int,
    default=60_000,
    show_default=True,
    help="Rows timed for the batch-INSERT baseline (rows/s extrapolated).",
)
@click.option(
    "--database-url",
    default=None,
    help="Admin URL of the server where scratch databases are made (default: the platform's).",
)
def bench_news(rows: int, baseline_rows: int, database_url: str | None) -> None:
    """HF -> PG migration vs raw COPY and batch INSERTs; incremental vs full HF sync."""
    from rich.console import Console
    from rich.table import Table

    from bi_platform.bench import news

    console = Console(stderr=True)
    console.print(f"bench news: {rows:,} rows (scratch databases, dropped at the end)")
    try:
        stages, summary = news.run(
            rows,
            database_url=database_url,
            baseline_rows=baseline_rows,
            progress=lambda message: console.print(f"  {message}"),
        )
    except news.BenchError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"news benchmark ({rows:,} rows)")
    for column in ("stage", "rows", "seconds", "rows/s", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, stage in stages.items():
        peak = stage.get("peak_rss_mb")
        table.add_row(
            name,
            f"{stage['rows']:,}",
            f"{stage['seconds']:.2f}",
            f"{stage['rows_per_s']:,.0f}",
            f"{peak:.0f}" if peak is not None else "",
        )
    Console(width=160).print(table)
    click.echo(json.dumps(summary))


@bench.command("etl")
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

    from bi_platform.bench import etl

    console = Console(stderr=True)
    console.print(f"bench etl: a {mb:,} MiB binary file (scratch directory, removed at the end)")
    stages, summary = etl.run(
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


@bench.command("serving")
@click.option("--duration", type=int, default=20, show_default=True, help="Seconds per timed run.")
@click.option("--users", type=int, default=30, show_default=True, help="Concurrent connections.")
@click.option("--workers", type=int, default=2, show_default=True, help="uvicorn workers.")
def bench_serving(duration: int, users: int, workers: int) -> None:
    """The query API under wrk: warm cache vs cache off (auth, rate limit, metrics on)."""
    from rich.console import Console
    from rich.table import Table

    from bi_platform.bench import serving

    console = Console(stderr=True)
    console.print(
        f"bench serving: {users} connections, {workers} worker(s), {duration} s per run (wrk)"
    )
    try:
        stages, summary = serving.run(
            duration_s=duration,
            users=users,
            workers=workers,
            progress=lambda message: console.print(f"  {message}"),
        )
    except serving.BenchError as exc:
        raise click.ClickException(str(exc)) from None
    title = f"serving benchmark ({users} connections, warehouse {summary['warehouse']})"
    table = Table(title=title)
    for column in ("run", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name in ("cached", "uncached"):
        stage = stages[name]
        table.add_row(
            name,
            f"{stage['requests']:,}",
            f"{stage['rps']:,.0f}",
            f"{stage['p50_ms']:.1f}",
            f"{stage['p95_ms']:.1f}",
            f"{stage['p99_ms']:.1f}",
            f"{stage['errors']:,}",
        )
    Console(width=160).print(table)
    click.echo(json.dumps(summary))


@bench.command("cadastral")
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
def bench_cadastral(
    persons: int, database_url: str | None, workdir: str | None, scale: str
) -> None:
    """Spark pipeline throughput; hash-compare sync vs the collect() CompareData baseline."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from bi_platform.bench import cadastral

    console = Console(stderr=True)
    console.print(f"bench cadastral: {persons:,} persons (scratch dir and database)")
    try:
        scales = cadastral.parse_scales(scale)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scale") from None
    try:
        stages, summary = cadastral.run(
            persons,
            scales=scales,
            database_url=database_url,
            workdir=Path(workdir) if workdir else None,
            progress=lambda message: console.print(f"  {message}"),
        )
    except cadastral.BenchError as exc:
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


@main.group()
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
        _fail(exc)


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
        _fail(exc)
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


@main.group()
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
    from bi_platform.runtime import clusters

    try:
        state, started = clusters.up(kind, _cluster_root(settings))
    except clusters.ClusterError as exc:
        _fail(exc)
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


@main.command()
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


@main.command()
def assets() -> None:
    """List the asset keys of the code location, one per line."""
    from bi_platform.definitions import defs

    for key in sorted(defs.resolve_all_asset_keys()):
        click.echo(key.to_user_string())


if __name__ == "__main__":  # pragma: no cover
    main()
