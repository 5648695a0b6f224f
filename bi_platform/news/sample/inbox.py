"""The daily inbox batches of the news sample: new, edited, duplicated and malformed
records."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bi_platform.lib.files import write_bytes_atomic
from bi_platform.news.records import TIMESTAMP
from bi_platform.news.sample.helpers import (
    _local_timestamps,
    _local_us,
    _reference,
    _rng,
    _sentence_bank,
)
from bi_platform.news.sample.profiles import (
    _BANK_PER_GROUP,
    BAD_TIMESTAMPS,
    DEFAULT_SEED,
    DUPLICATE_IN_BATCH,
    DUPLICATE_OF_EXISTING,
    EDIT,
    INBOX_DUP_BATCH_RATE,
    INBOX_DUP_EXISTING_RATE,
    INBOX_EDIT_RATE,
    INBOX_EDIT_WINDOW_DAYS,
    INBOX_FIELDS,
    INBOX_MALFORMED_RATE,
    INBOX_MIN_NEW,
    INBOX_NEW_SHARE,
    MALFORMED_KINDS,
    NEW,
    UNKNOWN_AGENCIES,
)
from bi_platform.news.sample.records import _generate
from bi_platform.news.sample.vocabulary import _UPDATE_PREFIX


# --------------------------------------------------------------------------------------
# Inbox batches
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InboxBatch:
    """One day of scraper output: the JSON lines and what each line is."""

    day: date
    lines: tuple[str, ...]
    kinds: tuple[str, ...]  # NEW, EDIT, DUPLICATE_*, or one of MALFORMED_KINDS
    new_records: pa.Table  # the distinct valid new records (HF_SCHEMA)
    edited_ids: tuple[str, ...]  # unique_id of the existing records edited

    def counts(self) -> dict[str, int]:
        """Number of lines per kind."""
        return dict(Counter(self.kinds))


def inbox_counts(existing_rows: int) -> dict[str, int]:
    """Lines per kind of a batch for a dataset of ``existing_rows`` records."""
    new = max(INBOX_MIN_NEW, round(INBOX_NEW_SHARE * existing_rows))
    counts = {
        NEW: new,
        EDIT: max(1, round(INBOX_EDIT_RATE * new)) if existing_rows else 0,
        DUPLICATE_IN_BATCH: max(1, round(INBOX_DUP_BATCH_RATE * new)),
        DUPLICATE_OF_EXISTING: max(1, round(INBOX_DUP_EXISTING_RATE * new)) if existing_rows else 0,
    }
    valid = sum(counts.values())
    malformed = max(
        len(MALFORMED_KINDS), round(INBOX_MALFORMED_RATE * valid / (1 - INBOX_MALFORMED_RATE))
    )
    for i, kind in enumerate(MALFORMED_KINDS):
        counts[kind] = malformed // len(MALFORMED_KINDS) + (i < malformed % len(MALFORMED_KINDS))
    return counts


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _scraper_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as the scraper sends them: ISO-8601 timestamps, no unique_id/content_hash."""
    return [
        {k: _json_value(row[k]) for k in INBOX_FIELDS}
        for row in table.select(list(INBOX_FIELDS)).to_pylist()
    ]


def _dumps(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def _malform(kind: str, row: dict[str, Any], rng: np.random.Generator, i: int) -> str:
    row = dict(row)
    if kind == "missing_title":
        if i % 2:
            row["title"] = ""
        else:
            del row["title"]
    elif kind == "bad_published_at":
        row["published_at"] = BAD_TIMESTAMPS[i % len(BAD_TIMESTAMPS)]
    elif kind == "unknown_agency":
        row["agency"] = UNKNOWN_AGENCIES[i % len(UNKNOWN_AGENCIES)]
    elif kind == "bad_tags_type":
        tags = row.get("tags") or ["Governo Federal"]
        row["tags"] = (", ".join(tags), len(tags), {"tags": tags})[i % 3]
    line = _dumps(row)
    if kind == "broken_json":
        cut = int(rng.integers(10, len(line) - 1))
        line = line[:cut]
    return line


def _local_datetime(day: date, seconds: int = 0) -> datetime:
    """A São Paulo wall-clock time as a tz-aware datetime."""
    return _local_timestamps(np.array([_local_us(day, seconds)])).to_list()[0]


def _edit(row: dict[str, Any], day: date, sentence: str, rng: np.random.Generator) -> None:
    when = _local_datetime(day, int(rng.integers(7 * 3600, 20 * 3600)) // 60 * 60).isoformat()
    if rng.random() < 0.5:
        row["content"] = (
            f"{row['content']}\n\n{_UPDATE_PREFIX.format(day=day.strftime('%d/%m/%Y'))}{sentence}"
        )
    else:
        row["summary"] = f"{sentence} {row['summary'] or ''}".strip()
    row["updated_datetime"] = when
    row["extracted_at"] = when


def inbox_batch(day: date, *, existing: pa.Table, seed: int = DEFAULT_SEED) -> InboxBatch:
    """The scraper's batch for ``day`` given the ``existing`` dataset (HF_SCHEMA rows).

    Contents (see :func:`inbox_counts`): new records published on ``day``, edits of
    existing records (same agency, published_at and title, hence the same unique_id;
    changed content or summary), exact copies of new lines and of existing records,
    and malformed lines of each of :data:`MALFORMED_KINDS`; in a shuffled order.
    """
    counts = inbox_counts(existing.num_rows)
    n_malformed = sum(counts[k] for k in MALFORMED_KINDS)
    tag = f"inbox-{day.isoformat()}"
    taken: set[str] = set()
    if existing.num_rows and "unique_id" in existing.column_names:
        published = existing.column("published_at")
        day_start = pa.scalar(_local_datetime(day), TIMESTAMP).cast(published.type)
        same_day = pc.greater_equal(published, day_start)
        taken = set(existing.filter(same_day).column("unique_id").to_pylist())
    url_ids = [f"{day:%Y%m%d}{i:05d}" for i in range(counts[NEW] + n_malformed)]
    fresh = _generate(
        counts[NEW] + n_malformed,
        seed=seed,
        tag=tag,
        first=day,
        last=day,
        url_ids=url_ids,
        taken=taken,
    )
    rng = _rng(seed, tag, "mix")
    order = rng.permutation(fresh.num_rows)
    new_records = fresh.take(np.sort(order[: counts[NEW]]))
    malformed_base = _scraper_rows(fresh.take(np.sort(order[counts[NEW] :])))
    new_rows = _scraper_rows(new_records)
    lines: list[str] = [_dumps(r) for r in new_rows]
    kinds: list[str] = [NEW] * len(lines)
    for i in rng.choice(len(new_rows), size=counts[DUPLICATE_IN_BATCH], replace=True):
        lines.append(lines[int(i)])
        kinds.append(DUPLICATE_IN_BATCH)
    edited_ids: list[str] = []
    wanted = counts[EDIT] + counts[DUPLICATE_OF_EXISTING]
    if existing.num_rows and wanted:
        published = existing.column("published_at")
        window_start = pa.scalar(
            _local_datetime(day - timedelta(days=INBOX_EDIT_WINDOW_DAYS)), TIMESTAMP
        ).cast(published.type)
        recent = np.flatnonzero(pc.greater_equal(published, window_start).to_numpy(False))
        pool = recent if recent.size >= wanted else np.arange(existing.num_rows)
        chosen = rng.choice(pool, size=min(wanted, pool.size), replace=False)
        picked = existing.take(chosen)
        rows = _scraper_rows(picked)
        ids = picked.column("unique_id").to_pylist() if "unique_id" in picked.column_names else []
        bank = _sentence_bank(seed)
        l1_index = {code: i for i, code in enumerate(_reference().l1_code)}
        l1_codes = picked.column("theme_1_level_1_code").to_pylist()
        for j, row in enumerate(rows):
            if j < counts[EDIT]:
                group = l1_index.get(l1_codes[j], -1) + 1
                sentence = bank[int(group * _BANK_PER_GROUP + rng.integers(0, _BANK_PER_GROUP))]
                _edit(row, day, sentence, rng)
                kinds.append(EDIT)
                if ids:
                    edited_ids.append(ids[j])
            else:
                kinds.append(DUPLICATE_OF_EXISTING)
            lines.append(_dumps(row))
    for i, row in enumerate(malformed_base):
        kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
        lines.append(_malform(kind, row, rng, i // len(MALFORMED_KINDS)))
        kinds.append(kind)
    shuffle = rng.permutation(len(lines))
    return InboxBatch(
        day=day,
        lines=tuple(lines[i] for i in shuffle),
        kinds=tuple(kinds[i] for i in shuffle),
        new_records=new_records,
        edited_ids=tuple(edited_ids),
    )


def inbox_file(inbox_dir: Path, day: date) -> Path:
    """Path of the batch of ``day``: ``inbox_dir/YYYY-MM-DD.jsonl``."""
    return Path(inbox_dir) / f"{day.isoformat()}.jsonl"


def _write_batch(inbox_dir: Path, batch: InboxBatch) -> Path:
    inbox_dir.mkdir(parents=True, exist_ok=True)
    path = inbox_file(inbox_dir, batch.day)
    write_bytes_atomic(path, ("\n".join(batch.lines) + "\n").encode(), durable=False)
    return path


def write_inbox(
    inbox_dir: Path, day: date, *, existing: pa.Table, seed: int = DEFAULT_SEED
) -> Path:
    """Write :func:`inbox_batch` of ``day`` as ``inbox_dir/YYYY-MM-DD.jsonl`` (atomically)."""
    return _write_batch(Path(inbox_dir), inbox_batch(day, existing=existing, seed=seed))
