"""Month shards and the initial dataset (the HF export) of the news sample."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bi_platform.lib.files import (
    atomic_path,
    read_json_object,
    write_json_atomic,
)
from bi_platform.news.records import HF_SCHEMA, TIMEZONE
from bi_platform.news.reference_data import AGENCIES_FILE, THEMES_FILE
from bi_platform.news.sample.profiles import (
    _SHARD_NAME,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    PROFILES,
    REFERENCE_DATE,
    SHARD_DIR,
    NewsProfile,
)
from bi_platform.news.sample.records import generate_news

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Month shards and the initial dataset
# --------------------------------------------------------------------------------------
def month_shards(table: pa.Table) -> dict[str, pa.Table]:
    """The table split by publication month in São Paulo time (``"YYYY-MM"`` -> rows
    ordered by ``published_at``, then ``unique_id``), months in ascending order."""
    if table.num_rows == 0:
        return {}
    column = table.column("published_at")
    if not pa.types.is_timestamp(column.type) or column.type.tz is None:
        raise ValueError(f"published_at must be a tz-aware timestamp, got {column.type}")
    if column.null_count:
        raise ValueError(f"{column.null_count} records have no published_at")
    keys = [("published_at", "ascending")]
    if "unique_id" in table.column_names:
        keys.append(("unique_id", "ascending"))
    order = pc.sort_indices(table, sort_keys=keys).to_numpy()
    ordered = table if np.array_equal(order, np.arange(order.size)) else table.take(order)
    months = (
        pl.Series(pl.from_arrow(ordered.column("published_at")))
        .dt.convert_time_zone(TIMEZONE)
        .dt.strftime("%Y-%m")
    )
    values = months.to_numpy()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    stops = np.r_[starts[1:], values.size]
    return {
        str(values[a]): ordered.slice(int(a), int(b - a))
        for a, b in zip(starts, stops, strict=True)
    }


def schema_hash() -> str:
    """Hash of the generator version, HF schema, reference date and reference data."""
    payload = {
        "generator_version": GENERATOR_VERSION,
        "schema": str(HF_SCHEMA),
        "reference_date": REFERENCE_DATE.isoformat(),
        "agencies": hashlib.sha256(AGENCIES_FILE.read_bytes()).hexdigest(),
        "themes": hashlib.sha256(THEMES_FILE.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _profile(profile: str | NewsProfile) -> NewsProfile:
    if isinstance(profile, NewsProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return PROFILES[profile]


def _write_parquet(table: pa.Table, path: Path) -> None:
    with atomic_path(path, durable=False) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _initial_is_current(
    repo_dir: Path, prof: NewsProfile, seed: int, digest: str
) -> dict[str, Any] | None:
    data = read_json_object(repo_dir / MANIFEST_NAME)
    if data is None:
        return None
    if (data.get("profile"), data.get("seed"), data.get("records"), data.get("schema_hash")) != (
        prof.name,
        seed,
        prof.records,
        digest,
    ):
        return None
    for entry in data.get("shards", {}).values():
        path = repo_dir / entry.get("file", "")
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None
    return data


def _write_initial(
    repo_dir: Path, prof: NewsProfile, seed: int, force: bool
) -> tuple[dict[str, Any], pa.Table | None]:
    repo_dir.mkdir(parents=True, exist_ok=True)
    digest = schema_hash()
    if not force and (current := _initial_is_current(repo_dir, prof, seed, digest)) is not None:
        logger.info("news dataset in %s is current (%s, seed %d)", repo_dir, prof.name, seed)
        return current, None
    (repo_dir / MANIFEST_NAME).unlink(missing_ok=True)
    started = time.perf_counter()
    table = generate_news(prof.records, seed=seed)
    shards = month_shards(table)
    data_dir = repo_dir / SHARD_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    for stale in data_dir.iterdir():
        if _SHARD_NAME.match(stale.name) and stale.stem not in shards:
            stale.unlink()
            logger.info("removed stale shard %s", stale)
    entries: dict[str, dict[str, Any]] = {}
    for month, shard in shards.items():
        path = data_dir / f"{month}.parquet"
        _write_parquet(shard, path)
        entries[month] = {
            "file": f"{SHARD_DIR}/{path.name}",
            "rows": shard.num_rows,
            "bytes": path.stat().st_size,
        }
    published = table.column("published_at")
    manifest: dict[str, Any] = {
        "generator": __package__,
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "records": table.num_rows,
        "reference_date": REFERENCE_DATE.isoformat(),
        "schema_hash": digest,
        "first_published_at": pc.min(published).as_py().isoformat() if table.num_rows else None,
        "last_published_at": pc.max(published).as_py().isoformat() if table.num_rows else None,
        "shards": entries,
    }
    write_json_atomic(repo_dir / MANIFEST_NAME, manifest, durable=False)
    logger.info(
        "news dataset (%s, seed %d): %d records in %d shards written to %s in %.1fs",
        prof.name,
        seed,
        table.num_rows,
        len(entries),
        repo_dir,
        time.perf_counter() - started,
    )
    return manifest, table


def write_initial_dataset(
    repo_dir: Path, profile: str = "default", *, seed: int = DEFAULT_SEED, force: bool = False
) -> dict[str, Any]:
    """Write the initial dataset as ``repo_dir/data/YYYY-MM.parquet`` (HF_SCHEMA, one shard
    per São Paulo publication month) plus ``repo_dir/.seed_manifest.json``; return the
    manifest.

    Idempotent: when the manifest matches (profile, seed, schema hash) and the shards have
    the recorded sizes, nothing is written unless ``force``. Each file is written to a
    temporary name and renamed. Shard files of months no longer produced are removed.
    """
    manifest, _ = _write_initial(Path(repo_dir), _profile(profile), seed, force)
    return manifest


def read_initial_dataset(repo_dir: Path) -> pa.Table:
    """The shards listed in ``repo_dir``'s manifest, concatenated in month order."""
    repo_dir = Path(repo_dir)
    data = read_json_object(repo_dir / MANIFEST_NAME)
    if data is None:
        raise FileNotFoundError(f"no readable {MANIFEST_NAME} in {repo_dir}")
    tables = [
        pq.ParquetFile(repo_dir / entry["file"]).read().cast(HF_SCHEMA)
        for _, entry in sorted(data["shards"].items())
    ]
    return pa.concat_tables(tables) if tables else HF_SCHEMA.empty_table()
