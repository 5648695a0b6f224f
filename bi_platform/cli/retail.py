"""``bi-platform bench engines``: the retail battery on the engines."""

from __future__ import annotations

import json

import click


@click.command("engines")
@click.option("--rows", type=int, default=1_113_822, show_default=True, help="admmat rows.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per query.")
@click.option("--queries", default="", help="Comma-separated query names (default: all).")
def bench_engines(rows: int, repeats: int, queries: str) -> None:
    """The retail battery on admmat: IO-manager load path vs raw Polars, Dask and DuckDB."""
    from rich.console import Console
    from rich.table import Table

    from bi_platform.retail import bench as retail_bench

    console = Console(stderr=True)
    names = [q.strip() for q in queries.split(",") if q.strip()] or None

    def progress(m: dict) -> None:
        console.print(f"  {m['query']:<34} {m['path']:<7} {m['median_s']:.4f} s")

    console.print(f"bench engines: {rows:,} rows, {repeats} timed runs per query")
    measurements, summary = retail_bench.run(
        rows, repeats=repeats, queries=names, progress=progress
    )
    table = Table(title=f"retail battery on admmat ({rows:,} rows): median s / peak RSS MB")
    table.add_column("query", no_wrap=True, min_width=30)
    for path in retail_bench.PATHS:
        table.add_column(path, justify="right")
    by = {(m["path"], m["query"]): m for m in measurements}
    for query in sorted({m["query"] for m in measurements}):
        cells = [
            f"{by[p, query]['median_s']:.4f} / {by[p, query]['peak_rss_mb']:.0f}"
            for p in retail_bench.PATHS
        ]
        table.add_row(query, *cells)
    Console(width=160).print(table)
    click.echo(json.dumps(summary))
