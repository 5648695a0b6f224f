"""``bi-platform news ...`` (the HF dataset repo) and ``bi-platform bench news``."""

from __future__ import annotations

import json
import sys

import click

from bi_platform.cli.common import fail
from bi_platform.lib.benchmarking import BenchError
from bi_platform.runtime.postgres import PostgresRuntimeError
from bi_platform.settings import Settings


@click.group()
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
            fail(exc)
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
        fail(
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
        fail(exc)
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
        fail(exc)
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
        fail(exc)
    click.echo(f"{result.directory}: revision {result.revision}, {len(result.files)} file(s)")


@click.command("news")
@click.option("--rows", type=int, default=300_000, show_default=True, help="News records.")
@click.option(
    "--baseline-rows",
    type=int,
    default=60_000,
    show_default=True,
    help="Rows timed for the batch-INSERT baseline (rows/s extrapolated).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Alternating rounds of the COPY floor and the migration (medians reported).",
)
@click.option(
    "--database-url",
    default=None,
    help="Admin URL of the server where scratch databases are made (default: the platform's).",
)
def bench_news(rows: int, baseline_rows: int, rounds: int, database_url: str | None) -> None:
    """HF -> PG migration vs raw COPY and batch INSERTs; incremental vs full HF sync."""
    from rich.console import Console
    from rich.table import Table

    from bi_platform.news import bench as news_bench

    console = Console(stderr=True)
    console.print(f"bench news: {rows:,} rows (scratch databases, dropped at the end)")
    try:
        stages, summary = news_bench.run(
            rows,
            database_url=database_url,
            baseline_rows=baseline_rows,
            rounds=rounds,
            progress=lambda message: console.print(f"  {message}"),
        )
    except BenchError as exc:
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
