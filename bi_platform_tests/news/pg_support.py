"""Helpers of the news PostgreSQL tests: sample tables, edits, queries, a local repo."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa

from bi_platform.news import pg_write, validation
from bi_platform.news.dataset_repo_local import LocalDatasetRepo
from bi_platform.news.records import (
    HF_SCHEMA,
)
from bi_platform.news.sample import generate_news, month_shards


@functools.cache
def sample(n: int, seed: int = 11) -> pa.Table:
    return generate_news(n, seed=seed)


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return None if row is None else row[0]


def replace_column(table: pa.Table, name: str, values: list[Any]) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(
        index, table.schema.field(name), pa.array(values, HF_SCHEMA.field(name).type)
    )


def edit(table: pa.Table, row: int, **changes: Any) -> pa.Table:
    for name, value in changes.items():
        values = table.column(name).to_pylist()
        values[row] = value
        table = replace_column(table, name, values)
    return table


def rehash(table: pa.Table) -> pa.Table:
    """``table`` with the ids the platform computes (after edits of title or content:
    supplied ids that disagree are refused)."""
    table = replace_column(table, "unique_id", [None] * table.num_rows)
    return validation.with_ids(replace_column(table, "content_hash", [None] * table.num_rows))


def reconciles(result: pg_write.WriteResult) -> bool:
    return result.rows_in == result.inserted + result.updated + result.unchanged + result.rejected


def make_repo(root: Path, table: pa.Table) -> LocalDatasetRepo:
    repo = LocalDatasetRepo(root)
    repo.commit(month_shards(table), message="initial dataset")
    return repo
