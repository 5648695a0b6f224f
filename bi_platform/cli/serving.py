"""``bi-platform serve``, ``bi-platform api-key ...`` and ``bi-platform bench serving``."""

from __future__ import annotations

import json

import click

from bi_platform.cli.common import fail
from bi_platform.lib.benchmarking import BenchError
from bi_platform.settings import Settings


@click.command()
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
        fail(ValueError(f"--workers must be >= 1 (got {workers})"))
    run_server(
        ServingConfig.from_settings(settings),
        host=host or settings.serving_host,
        port=settings.serving_port if port is None else port,
        workers=workers,
        log_level=settings.bi_platform_log_level.lower(),
    )


@click.group("api-key")
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
            fail(
                ValueError(
                    f"unknown segments {unknown or segments!r}; known: {', '.join(SEGMENTS)}"
                )
            )
    try:
        key, secret = ApiKeyStore(settings.api_keys_file).create(name, wanted)
    except (ValueError, OSError, RuntimeError) as exc:
        fail(exc)
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
        fail(exc)
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
        fail(ValueError(f"no API key with id {key_id!r}"))
    except (OSError, RuntimeError) as exc:
        fail(exc)
    click.echo(f"revoked {key.key_id} ({key.name}) at {key.revoked_at}")


@click.command("serving")
@click.option("--duration", type=int, default=20, show_default=True, help="Seconds per timed run.")
@click.option("--users", type=int, default=30, show_default=True, help="Concurrent connections.")
@click.option("--workers", type=int, default=2, show_default=True, help="uvicorn workers.")
def bench_serving(duration: int, users: int, workers: int) -> None:
    """The query API under wrk: warm cache vs cache off (auth, rate limit, metrics on)."""
    from rich.console import Console
    from rich.table import Table

    from bi_platform.serving import bench as serving_bench

    console = Console(stderr=True)
    console.print(
        f"bench serving: {users} connections, {workers} worker(s), {duration} s per run (wrk)"
    )
    try:
        stages, summary = serving_bench.run(
            duration_s=duration,
            users=users,
            workers=workers,
            progress=lambda message: console.print(f"  {message}"),
        )
    except BenchError as exc:
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
