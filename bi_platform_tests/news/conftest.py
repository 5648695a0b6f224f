"""Fixtures of the news tests: a database with the news schema and reference data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from bi_platform.news import pg_schema
from bi_platform.news.pg_reference import load_reference_data
from bi_platform.news.reference_data import load_agencies, load_themes


@pytest.fixture
def news_db(pg_url: str) -> str:
    """A database with the news schema and the packaged reference data."""
    pg_schema.migrate(pg_url)
    with psycopg.connect(pg_url) as conn:
        load_reference_data(conn, load_agencies(), load_themes())
    return pg_url


@pytest.fixture
def conn(news_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(news_db) as c:
        yield c
