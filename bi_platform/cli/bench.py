"""``bi-platform bench NAME``: the group; each domain's command module holds its benchmark."""

from __future__ import annotations

import click

from bi_platform.cli.cadastral import bench_cadastral
from bi_platform.cli.etl import bench_etl
from bi_platform.cli.news import bench_news
from bi_platform.cli.retail import bench_engines
from bi_platform.cli.serving import bench_serving


@click.group()
def bench() -> None:
    """Benchmarks: a table, then one JSON line with ratios against an in-run baseline."""


for _command in (bench_engines, bench_news, bench_etl, bench_serving, bench_cadastral):
    bench.add_command(_command)
