"""Everything for a profile: the initial dataset and the inbox batches."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from bi_platform.lib.files import read_json_object, write_bytes_atomic
from bi_platform.news.sample.dataset import (
    _profile,
    _write_initial,
    read_initial_dataset,
)
from bi_platform.news.sample.inbox import _write_batch, inbox_batch
from bi_platform.news.sample.profiles import (
    DEFAULT_SEED,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    inbox_days,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Everything for a profile
# --------------------------------------------------------------------------------------
def news_source_dirs(home: Path) -> tuple[Path, Path]:
    """(initial dataset repo dir, inbox dir) under the platform home."""
    home = Path(home)
    return home / "raw" / "news" / "initial", home / "news" / "inbox"


def write_news_sources(
    home: Path,
    profile: str = "default",
    *,
    seed: int = DEFAULT_SEED,
    days: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the initial shards to ``home/raw/news/initial/data/`` and the inbox batches of
    the ``days`` (default: the profile's) days after :data:`REFERENCE_DATE` to
    ``home/news/inbox/``. Returns ``{"initial": manifest, "inbox": manifest}``.

    Idempotent: the initial dataset as in :func:`write_initial_dataset`; a batch already
    recorded in ``home/news/inbox/.seed_manifest.json`` for the same profile, seed and
    schema is not written again, even if the pipeline has since consumed (moved) its
    file, unless ``force``. Each day's batch is generated against the initial dataset
    plus the new records of the previous days.
    """
    prof = _profile(profile)
    days = prof.inbox_days if days is None else days
    if days < 0:
        raise ValueError(f"days must be non-negative, got {days}")
    initial_dir, inbox_dir = news_source_dirs(home)
    initial, table = _write_initial(initial_dir, prof, seed, force)
    inbox_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = inbox_dir / MANIFEST_NAME
    params = {
        "generator": __package__,
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "schema_hash": initial["schema_hash"],
    }
    previous = read_json_object(manifest_path) or {}
    recorded: dict[str, Any] = (
        dict(previous.get("batches", {}))
        if not force and all(previous.get(k) == v for k, v in params.items())
        else {}
    )
    wanted = inbox_days(days)
    if all(d.isoformat() in recorded for d in wanted):
        logger.info("news inbox in %s is current (%d days)", inbox_dir, days)
        return {"initial": initial, "inbox": {**params, "batches": recorded}}
    existing = table if table is not None else read_initial_dataset(initial_dir)
    for day in wanted:
        batch = inbox_batch(day, existing=existing, seed=seed)
        if day.isoformat() not in recorded:
            path = _write_batch(inbox_dir, batch)
            recorded[day.isoformat()] = {
                "file": path.name,
                "lines": len(batch.lines),
                "bytes": path.stat().st_size,
                "counts": batch.counts(),
            }
            logger.info("wrote inbox batch %s: %d lines", path.name, len(batch.lines))
        existing = pa.concat_tables([existing, batch.new_records])
    inbox_manifest = {**params, "batches": dict(sorted(recorded.items()))}
    payload = json.dumps(inbox_manifest, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(manifest_path, payload.encode(), durable=False)
    return {"initial": initial, "inbox": inbox_manifest}
