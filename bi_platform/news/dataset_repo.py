"""The news dataset as a versioned repo of monthly Parquet shards: a local directory or the HF Hub.

Both backends hold the same files, laid out like a HuggingFace dataset repo::

    README.md              the dataset card (YAML front matter declares the data files)
    data/YYYY-MM.parquet   one shard per publication month (São Paulo time), written with
                           HF_SCHEMA exactly, rows sorted by (published_at, unique_id)

Every change is ONE atomic commit: the month shards written, the months deleted and the
regenerated card land together or not at all. What this module fixes from the original
sync: no one-file-per-day appends (a month is rewritten whole), no ISO-string timestamps
(tables are validated against HF_SCHEMA before anything is written), no split sizes in the
card (they go stale and broke loading), and no whole-dataset rewrite in memory (one month
is in memory at a time; shards are staged to temporary files).

Backends:

* :class:`LocalDatasetRepo` (the default): content-addressed objects + one JSON manifest per
  revision under ``root/.repo/``; ``HEAD`` is swapped atomically; ``root/`` (the working
  copy: what ``datasets.load_dataset(root)`` reads) shows the head.
* :class:`HubDatasetRepo`: a dataset repo on the Hub (or a mirror) through ``huggingface_hub``.

:func:`open_dataset_repo` picks one from :class:`~bi_platform.settings.Settings`.

What users read vs the history: :meth:`DatasetRepo.published` gives the files a user of
the repo reads now (the local working copy, or what the Hub serves at its head), resolved
through the dataset card's ``data_files`` as the ``datasets`` library resolves them;
:meth:`DatasetRepo.published_differences` says where they differ from ``HEAD`` (the
integrity gates read both). :meth:`DatasetRepo.sync_working_copy` brings a stale working
copy to ``HEAD`` (every commit does it first, and so does every sync);
:meth:`DatasetRepo.checkout` writes a plain copy of any revision.

Crash tests: :func:`crash_point` marks the named steps of a commit (:data:`CRASH_STEPS`);
with ``BI_PLATFORM_NEWS_CRASH_AT=<step>`` in the environment the process SIGKILLs itself
there. Test-only; unset, each point costs one environment lookup.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from filelock import FileLock
from pydantic import SecretStr

from bi_platform.news.records import HF_COLUMNS, HF_SCHEMA, TIMEZONE

if TYPE_CHECKING:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    from bi_platform.settings import Settings

logger = logging.getLogger(__name__)

DATA_DIR = "data"
CARD_PATH = "README.md"
DEFAULT_BRANCH = "main"
#: Local directory name of the default repo under ``Settings.hf_dir``.
LOCAL_REPO_NAME = "govbrnews"

#: Rows per Parquet row group: a month (~5k stories) is one or two groups, small enough
#: for the Hub's dataset viewer.
ROW_GROUP_SIZE = 10_000
#: Bytes fetched from the end of a remote shard to read its footer (one request usually).
FOOTER_PROBE_BYTES = 64 * 1024

# Licence of gov.br portal content (CC BY-ND 3.0); not on the Hub's list, hence "other".
DEFAULT_LICENSE = {
    "license": "other",
    "license_name": "cc-by-nd-3.0",
    "license_link": "https://creativecommons.org/licenses/by-nd/3.0/deed.pt_BR",
}
DEFAULT_PRETTY_NAME = "GovBR News"

_MONTH_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_SHARD_RE = re.compile(rf"{DATA_DIR}/(\d{{4}}-(?:0[1-9]|1[0-2]))\.parquet")
_REVISION_RE = re.compile(r"[0-9a-f]{40}")
_TRAILER_ADDED = "Shards-Added"
_TRAILER_DELETED = "Shards-Deleted"
_SORT_KEYS = [("published_at", "ascending"), ("unique_id", "ascending")]


# -- errors ---------------------------------------------------------------------------------
class DatasetRepoError(Exception):
    """Base class of every error raised by a DatasetRepo."""


class ConflictError(DatasetRepoError):
    """The repo's head is not the ``parent_revision`` the commit was based on."""


class SchemaError(DatasetRepoError, ValueError):
    """A table does not conform to HF_SCHEMA (or to the month of its shard)."""


class RevisionNotFoundError(DatasetRepoError, LookupError):
    """No such revision in the repo (or its files were pruned)."""


class ShardNotFoundError(DatasetRepoError, LookupError):
    """No shard for that month at that revision."""


class RepoFileNotFoundError(DatasetRepoError, LookupError):
    """No file at that path in that revision."""


class HubError(DatasetRepoError):
    """A Hub request failed. The message never contains the token."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


# -- crash points (tests) -------------------------------------------------------------------
#: Environment variable naming the step (one of :data:`CRASH_STEPS`) at which the process
#: kills itself with SIGKILL: a hook for crash tests only, never set in production.
CRASH_AT_ENV = "BI_PLATFORM_NEWS_CRASH_AT"

#: The named steps of a sync, in order. ``sync:*`` are in :mod:`bi_platform.news.hf_sync`,
#: ``repo:*`` in :meth:`LocalDatasetRepo.commit`:
#:
#: * ``sync:exported``: every month exported from PG and staged; nothing in the repo yet;
#: * ``repo:objects_written``: objects and manifest durable; ``HEAD`` not moved;
#: * ``repo:head_moved``: ``HEAD`` moved (the commit point); the working copy untouched;
#: * ``repo:worktree_partial``: one file of the working copy replaced, the others stale;
#: * ``repo:worktree_updated``: working copy done, its ``WORKTREE`` marker not written;
#: * ``sync:committed``: the commit returned; no PG row marked synced yet.
CRASH_STEPS = (
    "sync:exported",
    "repo:objects_written",
    "repo:head_moved",
    "repo:worktree_partial",
    "repo:worktree_updated",
    "sync:committed",
)


def crash_point(step: str) -> None:
    """SIGKILL this process if ``BI_PLATFORM_NEWS_CRASH_AT`` names ``step`` (tests only).

    Args:
        step: one of :data:`CRASH_STEPS`.
    """
    if os.environ.get(CRASH_AT_ENV) == step:
        logger.warning("crash point %s: killing process %d (SIGKILL)", step, os.getpid())
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


# -- the commit record ----------------------------------------------------------------------
@dataclass(frozen=True)
class CommitInfo:
    """One revision of the repo.

    ``added``: months whose shard was written (new or changed); ``deleted``: months removed.
    ``at``: commit time (UTC; for a commit just made on the Hub, the client's clock).
    """

    revision: str
    message: str
    added: tuple[str, ...]
    deleted: tuple[str, ...]
    at: datetime


# -- pure helpers ---------------------------------------------------------------------------
def month_of(ts: datetime | date | pa.Scalar) -> str:
    """``"YYYY-MM"`` of a publication time, in São Paulo time (the shard it belongs to).

    Naive datetimes are refused: they are ambiguous.
    """
    if isinstance(ts, pa.Scalar):
        ts = ts.as_py()
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"naive datetime {ts!r}: give it a timezone")
        ts = ts.astimezone(ZoneInfo(TIMEZONE))
        return f"{ts.year:04d}-{ts.month:02d}"
    if isinstance(ts, date):
        return f"{ts.year:04d}-{ts.month:02d}"
    raise TypeError(f"not a datetime or date: {type(ts).__name__}")


def shard_path(month: str) -> str:
    """Repo path of a month's shard: ``data/YYYY-MM.parquet``."""
    return f"{DATA_DIR}/{_check_month(month)}.parquet"


def _check_month(month: str) -> str:
    if not isinstance(month, str) or not _MONTH_RE.fullmatch(month):
        raise ValueError(f"not a month (YYYY-MM): {month!r}")
    return month


def _months_of_paths(paths: Iterable[str]) -> list[str]:
    return sorted(m.group(1) for p in paths if (m := _SHARD_RE.fullmatch(p)))


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
        or pa.types.is_fixed_size_list(t)
    )


def _conform(field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Cast ``column`` to ``field.type`` if that is lossless and unambiguous, else raise."""
    source, target = column.type, field.type
    if pa.types.is_dictionary(source):
        column = column.cast(source.value_type)
        source = source.value_type
    ok = False
    if source.equals(target) or pa.types.is_null(source):
        ok = True
    elif pa.types.is_timestamp(target):
        if _is_string(source):
            raise SchemaError(
                f"{field.name}: ISO-string timestamps ({source}) are refused; "
                f"convert them to {target} first"
            )
        if not pa.types.is_timestamp(source):
            raise SchemaError(f"{field.name}: expected {target}, got {source}")
        if source.tz is None:
            raise SchemaError(
                f"{field.name}: timezone-naive timestamps are ambiguous; expected {target}"
            )
        ok = True
    elif _is_string(target):
        ok = _is_string(source)
    elif _is_list(target):
        value = source.value_type if _is_list(source) else None
        if value is not None and pa.types.is_dictionary(value):
            value = value.value_type
        ok = value is not None and (_is_string(value) or pa.types.is_null(value))
    if not ok:
        raise SchemaError(f"{field.name}: expected {target}, got {source}")
    try:
        return column.cast(target)  # safe=True: refuses lossy casts (e.g. sub-µs timestamps)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(f"{field.name}: cannot cast {source} to {target}: {exc}") from None


def validate_table(table: pa.Table | pa.RecordBatch) -> pa.Table:
    """Return ``table`` conformed to HF_SCHEMA exactly, or raise :class:`SchemaError`.

    Columns are reordered and safe casts applied (large/view/dictionary strings, other
    timestamp units or time zones, all-null columns). Refused: missing or unexpected
    columns, ISO-string or naive timestamps, other types, nulls in required columns and
    duplicate ``unique_id`` values. Schema metadata is dropped.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise TypeError(f"expected a pyarrow Table, got {type(table).__name__}")
    names = table.column_names
    problems: list[str] = []
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SchemaError(f"table does not match HF_SCHEMA: duplicate columns {duplicated}")
    missing = [n for n in HF_COLUMNS if n not in names]
    unexpected = [n for n in names if n not in HF_COLUMNS]
    if missing:
        problems.append(f"missing columns {missing}")
    if unexpected:
        problems.append(f"unexpected columns {unexpected}")
    columns: list[pa.ChunkedArray] = []
    for field in HF_SCHEMA:
        if field.name not in names:
            continue
        try:
            column = _conform(field, table.column(field.name))
        except SchemaError as exc:
            problems.append(str(exc))
            continue
        if not field.nullable and column.null_count:
            problems.append(f"{field.name}: {column.null_count} null value(s) in a required column")
        columns.append(column)
    if problems:
        raise SchemaError("table does not match HF_SCHEMA: " + "; ".join(problems))
    result = pa.Table.from_arrays(columns, schema=HF_SCHEMA)
    if result.num_rows and pc.count_distinct(result["unique_id"]).as_py() != result.num_rows:
        raise SchemaError("table does not match HF_SCHEMA: duplicate unique_id values")
    return result


def _prepare_shard(month: str, table: pa.Table) -> pa.Table:
    """Validate a month's table, check every row belongs to the month, sort it."""
    table = validate_table(table)
    if table.num_rows:
        months = pc.unique(pc.strftime(table["published_at"], format="%Y-%m")).to_pylist()
        strays = sorted(m for m in months if m != month)
        if strays:
            raise SchemaError(
                f"shard {month}: rows published in other months {strays[:5]} "
                f"(months are taken in {TIMEZONE} time)"
            )
    return table.sort_by(_SORT_KEYS)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write a shard: HF_SCHEMA, zstd, page index, content-defined chunks (dedup-friendly)."""
    pq.write_table(
        table,
        path,
        compression="zstd",
        row_group_size=ROW_GROUP_SIZE,
        write_page_index=True,
        use_content_defined_chunking=True,
    )


def _read_parquet(path: Path | str) -> pa.Table:
    # ParquetFile.read rather than pq.read_table: the latter's threaded dataset path
    # intermittently aborts the interpreter at exit with pyarrow 26.
    return validate_table(pq.ParquetFile(path).read())


def empty_table() -> pa.Table:
    """A table with no rows and HF_SCHEMA."""
    return HF_SCHEMA.empty_table()


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class _Staged:
    """A shard written to a temporary file, ready to be committed."""

    month: str
    path: Path
    size: int
    sha256: str
    git_sha1: str
    rows: int


def _hash_file(path: Path) -> tuple[str, str, int]:
    """sha256, git blob sha1 and size of a file, read in chunks."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest(), size


def _normalise_commit_args(
    shards: Mapping[str, pa.Table], message: str, delete: Iterable[str]
) -> tuple[str, list[str], list[str]]:
    if not isinstance(message, str) or not message.strip():
        raise ValueError("a commit needs a non-empty message")
    months = sorted(_check_month(m) for m in shards)
    deletes = sorted({_check_month(m) for m in delete})
    both = sorted(set(months) & set(deletes))
    if both:
        raise ValueError(f"months both written and deleted: {both}")
    return message.strip(), months, deletes


def _stage_shards(shards: Mapping[str, pa.Table], months: list[str], tmp: Path) -> list[_Staged]:
    """Validate and write each month to ``tmp``, one month in memory at a time.

    ``shards[month]`` is read once per month, so a lazy Mapping streams.
    """
    staged: list[_Staged] = []
    for month in months:
        table = _prepare_shard(month, shards[month])
        rows = table.num_rows
        path = tmp / f"{month}.parquet"
        _write_parquet(table, path)
        del table
        sha256, git_sha1, size = _hash_file(path)
        staged.append(_Staged(month, path, size, sha256, git_sha1, rows))
        logger.debug("staged %s: %d rows, %d bytes", month, rows, size)
    return staged


def _type_name(t: pa.DataType) -> str:
    if _is_list(t):
        return f"list<{t.value_type}>"
    return str(t)


_COLUMN_DOCS = {
    "unique_id": "md5 of agency, publication time and title (the original scraper's id)",
    "agency": "key of the publishing gov.br agency",
    "published_at": "publication time",
    "updated_datetime": "last update shown on the page",
    "extracted_at": "when the page was scraped",
    "title": "headline",
    "subtitle": "subtitle",
    "editorial_lead": "editorial lead",
    "url": "address of the story",
    "image_url": "main image",
    "video_url": "embedded video",
    "category": "category given by the agency",
    "tags": "tags given by the agency",
    "content": "body text",
    "summary": "summary of the story",
    "theme_1_level_1_code": "theme, level 1 (code)",
    "theme_1_level_1_label": "theme, level 1 (label)",
    "theme_1_level_2_code": "theme, level 2 (code)",
    "theme_1_level_2_label": "theme, level 2 (label)",
    "theme_1_level_3_code": "theme, level 3 (code)",
    "theme_1_level_3_label": "theme, level 3 (label)",
    "most_specific_theme_code": "most specific theme assigned (code)",
    "most_specific_theme_label": "most specific theme assigned (label)",
    "content_hash": "sha256 of normalised title and content (equal for re-publications)",
}


def dataset_card(
    months: Sequence[str] = (),
    *,
    pretty_name: str = DEFAULT_PRETTY_NAME,
    license: Mapping[str, str] | None = None,
    repo_id: str | None = None,
) -> str:
    """The README.md of the dataset repo.

    The YAML front matter declares the data files (``data/*.parquet`` as the train split of
    the default config), licence, language and task categories, and deliberately NO split
    sizes, byte counts or example counts: they go stale and break loading. ``months`` (the
    shards present in the same commit) only feed the human-readable coverage line;
    ``repo_id`` the loading example.
    """
    meta: dict[str, Any] = {"pretty_name": pretty_name}
    meta.update(license or DEFAULT_LICENSE)
    meta.update(
        {
            "language": ["pt"],
            "multilinguality": ["monolingual"],
            "task_categories": ["text-classification", "summarization"],
            "tags": ["news", "government", "brazil", "gov.br"],
            "configs": [
                {
                    "config_name": "default",
                    "data_files": [{"split": "train", "path": f"{DATA_DIR}/*.parquet"}],
                }
            ],
        }
    )
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    example_id = repo_id or "<owner>/<name>"
    months = sorted(months)
    if months:
        coverage = f"{len(months)} monthly shard(s), {months[0]} to {months[-1]}."
    else:
        coverage = "No shards yet."
    rows = "\n".join(
        f"| `{f.name}` | `{_type_name(f.type)}` | {'no' if not f.nullable else 'yes'} "
        f"| {_COLUMN_DOCS.get(f.name, '')} |"
        for f in HF_SCHEMA
    )
    return f"""---
{front}---

# {pretty_name}

News published by Brazilian federal government agencies on gov.br, one record per story.

## Files

One Parquet file per month of publication, `{DATA_DIR}/YYYY-MM.parquet` (months in
{TIMEZONE} time), rows sorted by `published_at` then `unique_id`. All files share one
explicit Arrow schema. A month is rewritten whole when any of its stories changes.

Coverage: {coverage}

```python
from datasets import load_dataset

ds = load_dataset("{example_id}", split="train")
```

## Columns

Timestamps are real timestamps in {TIMEZONE} time, never strings:
`timestamp[us, tz={TIMEZONE}]`. `tags` is a list of strings.

| column | type | nullable | description |
|---|---|---|---|
{rows}
"""


def _trailers(added: Sequence[str], deleted: Sequence[str]) -> str:
    lines = []
    if added:
        lines.append(f"{_TRAILER_ADDED}: {' '.join(added)}")
    if deleted:
        lines.append(f"{_TRAILER_DELETED}: {' '.join(deleted)}")
    return "\n".join(lines)


def _parse_trailer(text: str | None, key: str) -> tuple[str, ...]:
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return tuple(m for m in value.split() if _MONTH_RE.fullmatch(m))
    return ()


# -- what users read ------------------------------------------------------------------------
_FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
#: What ``datasets`` falls back to for this layout when a card declares no data files.
DEFAULT_DATA_FILES = (f"{DATA_DIR}/*.parquet",)


def _patterns_of(value: Any) -> list[str]:
    """The path patterns of one ``data_files`` value (str, list, or {split: ...})."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        if "path" in value:
            return _patterns_of(value["path"])
        return [p for v in value.values() for p in _patterns_of(v)]
    if isinstance(value, list):
        return [p for v in value for p in _patterns_of(v)]
    return []


def card_data_files(card: str | None) -> tuple[list[str], list[str]]:
    """The ``data_files`` patterns a dataset card declares, and what is wrong with it.

    Reads the YAML front matter's ``configs[*].data_files`` (a string, a list, or
    ``{split, path}`` entries), as the ``datasets`` library does.

    Args:
        card: the README.md text; None when the repo has no card.

    Returns:
        ``(patterns, problems)``: the declared patterns (sorted, unique) and a sentence
        per problem (no card, no front matter, invalid YAML, patterns reaching outside the
        repo, which are dropped, no ``data_files``). Without a usable pattern the patterns
        are :data:`DEFAULT_DATA_FILES`, what a reader would fall back to for this layout.
    """
    if card is None:
        return list(DEFAULT_DATA_FILES), [f"no {CARD_PATH} (dataset card)"]
    match = _FRONT_MATTER_RE.match(card)
    if match is None:
        return list(DEFAULT_DATA_FILES), [f"{CARD_PATH} has no YAML front matter"]
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        return list(DEFAULT_DATA_FILES), [f"{CARD_PATH}: invalid YAML front matter: {exc}"]
    configs = meta.get("configs") if isinstance(meta, Mapping) else None
    declared = sorted(
        {
            p.removeprefix("./")
            for c in (configs if isinstance(configs, list) else [])
            if isinstance(c, Mapping)
            for p in _patterns_of(c.get("data_files"))
        }
    )
    outside = [p for p in declared if "://" in p or p.startswith("/") or ".." in p.split("/")]
    patterns = [p for p in declared if p not in outside]
    problems = [f"{CARD_PATH}: data_files outside the repo: {outside}"] if outside else []
    if not patterns:
        problems.append(f"{CARD_PATH} declares no configs[].data_files")
        return list(DEFAULT_DATA_FILES), problems
    return patterns, problems


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over repo paths: ``*``/``?`` stay within a directory, ``**`` crosses them."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def match_data_files(patterns: Iterable[str], paths: Iterable[str]) -> list[str]:
    """The repo paths a card's ``data_files`` patterns select, sorted.

    Hidden files and files in hidden directories (a component starting with ``.``) are
    never selected, as in ``datasets``.

    Args:
        patterns: glob patterns relative to the repo root.
        paths: repo paths (``/``-separated).

    Returns:
        The selected paths, sorted.
    """
    regexes = [_glob_regex(p) for p in patterns]
    return sorted(
        p
        for p in paths
        if not any(part.startswith(".") for part in p.split("/"))
        and any(r.fullmatch(p) for r in regexes)
    )


def data_file_key(path: str) -> str:
    """The month of a shard path (``data/2024-11.parquet`` -> ``2024-11``); other paths
    are their own key."""
    match = _SHARD_RE.fullmatch(path)
    return match.group(1) if match else path


@dataclass(frozen=True)
class Published:
    """The files a user of the repo reads now (:meth:`DatasetRepo.published`).

    ``revision``: the head these files should show (None: empty repo). ``card``: the
    README.md text users get (None if absent). ``patterns``/``problems``: the card's
    ``data_files`` and what is wrong with them (:func:`card_data_files`). ``data_files``:
    the repo paths those patterns select, i.e. what ``datasets.load_dataset`` reads.
    ``where``: a description of the location, for messages.
    """

    revision: str | None
    card: str | None
    patterns: tuple[str, ...]
    problems: tuple[str, ...]
    data_files: tuple[str, ...]
    where: str
    _open: Callable[[str], Path] = dc_field(repr=False, compare=False)

    def path(self, repo_path: str) -> Path:
        """Local file holding ``repo_path`` as users read it (downloaded for the Hub).

        Args:
            repo_path: one of :attr:`data_files` (or another published path).

        Returns:
            A readable local path.
        """
        return self._open(repo_path)

    def by_key(self) -> dict[str, str]:
        """:func:`data_file_key` (the month for a shard) -> repo path, for every data file."""
        return {data_file_key(p): p for p in self.data_files}


@dataclass(frozen=True)
class PublishedDifference:
    """One way in which what users read differs from ``HEAD``."""

    path: str
    problem: str

    @property
    def month(self) -> str | None:
        """The month of a shard path, else None."""
        match = _SHARD_RE.fullmatch(self.path)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class CheckoutResult:
    """A plain copy of a revision written by :meth:`DatasetRepo.checkout`."""

    revision: str
    directory: Path
    files: tuple[str, ...]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the interface --------------------------------------------------------------------------
class DatasetRepo(ABC):
    """A versioned dataset repo of monthly shards. Revisions are 40-hex commit ids."""

    @abstractmethod
    def head(self) -> str | None:
        """Current revision, or None for an empty repo."""

    @abstractmethod
    def list_shards(self, revision: str | None = None) -> list[str]:
        """Months present (``["2024-11", ...]``), sorted."""

    @abstractmethod
    def download_shard(self, month: str, revision: str | None = None) -> Path:
        """Local path of the month's Parquet file (read-only). Raises ShardNotFoundError."""

    def read_shard(self, month: str, revision: str | None = None) -> pa.Table:
        """The month's rows with HF_SCHEMA; an empty table if the month has no shard."""
        try:
            path = self.download_shard(month, revision)
        except ShardNotFoundError:
            return empty_table()
        return _read_parquet(path)

    @abstractmethod
    def commit(
        self,
        shards: Mapping[str, pa.Table],
        *,
        message: str,
        delete: Iterable[str] = (),
        parent_revision: str | None = None,
        verify: Callable[[Mapping[str, Path]], None] | None = None,
    ) -> CommitInfo:
        """Write ``shards`` (replacing those months), delete ``delete``, regenerate the card.

        One atomic commit. Every table is validated (:func:`validate_table`, rows must be
        in their month) and staged to a temporary Parquet file before anything is written
        to the repo. Shards identical to the current ones and deletions of absent months
        are dropped; if nothing changes, no revision is made.

        Args:
            shards: month -> rows (read once per month, so a lazy mapping streams).
            message: the commit message (non-empty).
            delete: months whose shard is removed.
            parent_revision: raise :class:`ConflictError` unless it is the head.
            verify: called with month -> staged file (the exact bytes about to be
                committed) once every shard is staged, before anything reaches the repo;
                if it raises, nothing is written and the exception propagates.

        Returns:
            The new revision's CommitInfo (the head's when nothing changed).
        """

    @abstractmethod
    def log(self) -> list[CommitInfo]:
        """The history from the head, newest first.

        On the Hub this includes commits not made through a DatasetRepo (e.g. the Hub's
        "initial commit"), with empty ``added``/``deleted``.
        """

    @abstractmethod
    def row_count(self, revision: str | None = None) -> int:
        """Rows in all shards, from the Parquet footers (no data read)."""

    @abstractmethod
    def resolve_revision(self, revision: str | None = None) -> str:
        """The commit id of ``revision``.

        Args:
            revision: a commit id, ``"main"``, or None for the head (the local backend
                also takes a unique prefix of at least 4 hex digits).

        Returns:
            The 40-hex commit id. Raises :class:`RevisionNotFoundError` if there is no
            such revision (or the repo is empty).
        """

    @abstractmethod
    def list_files(self, revision: str | None = None) -> list[str]:
        """Every file of ``revision`` (None: the head), repo paths sorted."""

    @abstractmethod
    def download_file(self, path: str, revision: str | None = None) -> Path:
        """Local read-only path of the file ``path`` at ``revision`` (None: the head).

        Raises :class:`RepoFileNotFoundError` if the revision has no such file.
        """

    @abstractmethod
    def published(self) -> Published:
        """What a user of the repo reads now: the card and the data files it selects.

        Local: the working copy in the repo directory. Hub: what the Hub serves at its
        head.
        """

    @abstractmethod
    def published_differences(self) -> list[PublishedDifference]:
        """Where what users read (:meth:`published`) differs from ``HEAD``; empty if not.

        Every problem of the card's ``data_files`` declaration counts, and so does a
        shard of ``HEAD`` the card does not select.
        """

    def sync_working_copy(self) -> list[str]:
        """Bring the files users read to ``HEAD`` (repair after a crash).

        Returns:
            The repo paths rewritten or removed. The Hub serves its head itself: nothing
            to do there.
        """
        return []

    def checkout(self, directory: Path | str, revision: str | None = None) -> CheckoutResult:
        """Write a plain copy of ``revision``: every file of it (``README.md`` card and
        ``data/*.parquet``), as a ``git clone`` of the Hub repo would hold.

        The copy is assembled in a hidden sibling directory and renamed into place, so
        ``directory`` appears complete or not at all.

        Args:
            directory: must not exist, or be an empty directory.
            revision: as :meth:`resolve_revision` takes it (None: the head).

        Returns:
            The revision written, the directory and the repo paths of its files.
        """
        target = Path(directory).expanduser().absolute()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise FileExistsError(f"{target} exists and is not an empty directory")
        resolved = self.resolve_revision(revision)
        files = self.list_files(resolved)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.checkout")
        try:
            for path in files:
                dest = staging / path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.download_file(path, resolved), dest)
            staging.mkdir(parents=True, exist_ok=True)  # a revision without files
            if target.exists():
                target.rmdir()
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("checked out %s of %r into %s (%d files)", resolved, self, target, len(files))
        return CheckoutResult(resolved, target, tuple(files))


# -- local backend --------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + os.replace)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


class LocalDatasetRepo(DatasetRepo):
    """A dataset repo in a local directory; the default backend.

    On disk (``root`` is what users look at; ``.repo/`` is the store)::

        root/README.md, root/data/YYYY-MM.parquet   working copy of the head revision
        root/.repo/objects/ab/<sha256>.parquet      immutable, read-only file contents
        root/.repo/commits/<revision>.json          one manifest per revision: parent,
                                                    message, time, added/deleted months,
                                                    {path: object} of every file
        root/.repo/HEAD                             the head revision (swapped atomically)
        root/.repo/WORKTREE                         revision the working copy shows
        root/.repo/lock                             file lock held by commits and gc

    A revision is the sha1 of its manifest. A commit writes objects, then the manifest,
    then replaces ``HEAD`` with ``os.replace`` (the commit point), then updates the working
    copy file by file (each file replaced atomically: a hard link to its object, a copy
    where links fail), then writes ``WORKTREE``. Readers of the store never take the lock:
    they read ``HEAD`` once and then only immutable files.

    HEAD and the working copy cannot move in one atomic step, so the protocol is: HEAD
    first, working copy after, and every writer heals first. A crash before the swap
    leaves the head and the working copy unchanged (orphan objects go with :meth:`gc`). A
    crash after it leaves the working copy (what ``datasets.load_dataset(root)`` reads)
    behind ``HEAD`` until the next :meth:`sync_working_copy`, which every commit runs
    under the lock before anything else (and :func:`~bi_platform.news.hf_sync.sync_to_hf`
    before it plans). Meanwhile :meth:`published_differences` reports the stale files
    (the ``working_copy_matches_head`` gate fails), comparing contents, not the
    ``WORKTREE`` marker.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()
        self._store = self.root / ".repo"
        self._manifests: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"LocalDatasetRepo({str(self.root)!r})"

    # -- reading ----------------------------------------------------------------------------
    def head(self) -> str | None:
        try:
            revision = (self._store / "HEAD").read_text().strip()
        except FileNotFoundError:
            return None
        return revision or None

    def _manifest(self, revision: str) -> dict[str, Any]:
        if revision in self._manifests:
            return self._manifests[revision]
        if not isinstance(revision, str) or not _REVISION_RE.fullmatch(revision):
            raise RevisionNotFoundError(f"not a revision of {self.root}: {revision!r}")
        try:
            manifest = json.loads((self._store / "commits" / f"{revision}.json").read_text())
        except FileNotFoundError:
            raise RevisionNotFoundError(f"no revision {revision} in {self.root}") from None
        self._manifests[revision] = manifest
        return manifest

    def _files(self, revision: str | None) -> dict[str, dict[str, Any]]:
        if revision is None or revision == DEFAULT_BRANCH:
            revision = self.head()
        return {} if revision is None else self._manifest(revision)["files"]

    def _object(self, entry: Mapping[str, Any], revision: str | None) -> Path:
        path = self._store / "objects" / entry["object"]
        if not path.exists():
            raise RevisionNotFoundError(f"revision {revision} of {self.root} was pruned")
        return path

    def list_shards(self, revision: str | None = None) -> list[str]:
        return _months_of_paths(self._files(revision))

    def download_shard(self, month: str, revision: str | None = None) -> Path:
        entry = self._files(revision).get(shard_path(month))
        if entry is None:
            raise ShardNotFoundError(f"no shard {month} at {revision or 'head'} in {self.root}")
        return self._object(entry, revision)

    def resolve_revision(self, revision: str | None = None) -> str:
        if revision is None or revision in (DEFAULT_BRANCH, "HEAD"):
            head = self.head()
            if head is None:
                raise RevisionNotFoundError(f"{self.root} has no revision yet (empty repo)")
            return head
        revision = revision.strip().lower()
        if _REVISION_RE.fullmatch(revision):
            self._manifest(revision)
            return revision
        if re.fullmatch(r"[0-9a-f]{4,39}", revision):
            found = sorted(p.stem for p in (self._store / "commits").glob(f"{revision}*.json"))
            if len(found) == 1:
                return found[0]
            if found:
                raise RevisionNotFoundError(
                    f"{revision!r} is ambiguous in {self.root}: {', '.join(f[:12] for f in found)}"
                )
        raise RevisionNotFoundError(f"no revision {revision!r} in {self.root}")

    def list_files(self, revision: str | None = None) -> list[str]:
        return sorted(self._files(self.resolve_revision(revision)))

    def download_file(self, path: str, revision: str | None = None) -> Path:
        resolved = self.resolve_revision(revision)
        entry = self._files(resolved).get(path)
        if entry is None:
            raise RepoFileNotFoundError(f"no file {path} at {resolved} in {self.root}")
        return self._object(entry, resolved)

    def _shown_files(self) -> set[str]:
        """Repo paths of the working copy that users could read: the card and every
        non-hidden file under ``data/`` (what the default ``data_files`` look at)."""
        shown = {CARD_PATH} if (self.root / CARD_PATH).is_file() else set()
        data = self.root / DATA_DIR
        if data.is_dir():
            for path in data.rglob("*"):
                rel = path.relative_to(self.root).as_posix()
                if path.is_file() and not any(p.startswith(".") for p in rel.split("/")):
                    shown.add(rel)
        return shown

    def published(self) -> Published:
        """The working copy: ``root/README.md`` and the files its ``data_files`` select."""
        card_file = self.root / CARD_PATH
        card = card_file.read_text(encoding="utf-8") if card_file.is_file() else None
        patterns, problems = card_data_files(card)
        candidates = {
            p.relative_to(self.root).as_posix()
            for pattern in patterns
            for p in self.root.glob(pattern)
            if p.is_file()
        }
        return Published(
            revision=self.head(),
            card=card,
            patterns=tuple(patterns),
            problems=tuple(problems),
            data_files=tuple(match_data_files(patterns, candidates)),
            where=f"working copy {self.root}",
            _open=lambda path: self.root / path,
        )

    def published_differences(self) -> list[PublishedDifference]:
        """The working copy vs ``HEAD``'s manifest: same files, same sha256 (every file is
        hashed), and the card selects exactly ``HEAD``'s shards."""
        head = self.head()
        expected = self._files(head)
        published = self.published()
        diffs = [
            PublishedDifference(CARD_PATH, problem)
            for problem in (published.problems if head is not None else ())
        ]
        shown = self._shown_files() | set(published.data_files)
        for path in sorted(set(expected) | shown):
            entry = expected.get(path)
            local = self.root / path
            if entry is None:
                problem = f"in the working copy, not in HEAD {head}"
                diffs.append(PublishedDifference(path, problem))
            elif not local.is_file():
                problem = f"in HEAD {head}, missing from the working copy"
                diffs.append(PublishedDifference(path, problem))
            else:
                digest = _sha256_file(local)
                if digest != entry["sha256"]:
                    diffs.append(
                        PublishedDifference(
                            path,
                            f"content differs from HEAD {head} "
                            f"(sha256 {digest[:12]} != {entry['sha256'][:12]})",
                        )
                    )
        selected = set(published.data_files)
        reported = {d.path for d in diffs}
        diffs += [
            PublishedDifference(path, "a shard of HEAD the card's data_files do not select")
            for path in sorted(expected)
            if _SHARD_RE.fullmatch(path) and path not in selected and path not in reported
        ]
        return diffs

    def sync_working_copy(self) -> list[str]:
        """Under the lock: drop a crashed commit's staging; make the working copy ``HEAD``.

        Returns:
            The repo paths rewritten or removed (empty when the working copy was right).
        """
        with self._lock():
            return self._recover()

    def row_count(self, revision: str | None = None) -> int:
        files = self._files(revision)
        return sum(
            pq.read_metadata(self._object(files[path], revision)).num_rows
            for path in files
            if _SHARD_RE.fullmatch(path)
        )

    def _info(self, manifest: Mapping[str, Any]) -> CommitInfo:
        return CommitInfo(
            revision=manifest["revision"],
            message=manifest["message"],
            added=tuple(manifest["added"]),
            deleted=tuple(manifest["deleted"]),
            at=datetime.fromisoformat(manifest["at"]),
        )

    def log(self) -> list[CommitInfo]:
        history = []
        revision = self.head()
        while revision is not None:
            manifest = self._manifest(revision)
            history.append(self._info(manifest))
            revision = manifest["parent"]
        return history

    # -- writing ----------------------------------------------------------------------------
    def _lock(self) -> FileLock:
        self._store.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self._store / "lock"))

    def _store_object(self, src: Path, sha256: str, suffix: str) -> str:
        """Move ``src`` into the object store (content-addressed, read-only); its key."""
        key = f"{sha256[:2]}/{sha256}{suffix}"
        dest = self._store / "objects" / key
        if dest.exists():
            src.unlink()
            return key
        dest.parent.mkdir(parents=True, exist_ok=True)
        with src.open("rb") as fh:
            os.fsync(fh.fileno())
        src.chmod(0o444)
        src.replace(dest)
        _fsync_dir(dest.parent)
        return key

    def _before_head_swap(self, revision: str) -> None:
        """Seam for crash tests: the new revision is durable, HEAD not yet moved."""
        crash_point("repo:objects_written")

    def commit(
        self,
        shards: Mapping[str, pa.Table],
        *,
        message: str,
        delete: Iterable[str] = (),
        parent_revision: str | None = None,
        verify: Callable[[Mapping[str, Path]], None] | None = None,
    ) -> CommitInfo:
        """See :meth:`DatasetRepo.commit`. Under the lock: heal the working copy, stage and
        ``verify``, store objects and the manifest, move ``HEAD``, update the working copy."""
        message, months, deletes = _normalise_commit_args(shards, message, delete)
        with self._lock():
            self._recover()
            head = self.head()
            if parent_revision is not None and parent_revision != head:
                raise ConflictError(f"head of {self.root} is {head}, not {parent_revision}")
            base = self._files(head)
            tmp = self._store / "tmp" / uuid.uuid4().hex
            tmp.mkdir(parents=True)
            try:
                staged = _stage_shards(shards, months, tmp)
                if verify is not None:
                    verify({st.month: st.path for st in staged})
                files = dict(base)
                added: list[str] = []
                for st in staged:
                    path = shard_path(st.month)
                    if base.get(path, {}).get("sha256") == st.sha256:
                        continue
                    key = self._store_object(st.path, st.sha256, ".parquet")
                    files[path] = {"object": key, "sha256": st.sha256, "size": st.size}
                    added.append(st.month)
                deleted = [m for m in deletes if files.pop(shard_path(m), None) is not None]
                card = dataset_card(_months_of_paths(files)).encode()
                card_sha = hashlib.sha256(card).hexdigest()
                if base.get(CARD_PATH, {}).get("sha256") != card_sha:
                    card_tmp = tmp / CARD_PATH
                    card_tmp.write_bytes(card)
                    key = self._store_object(card_tmp, card_sha, ".md")
                    files[CARD_PATH] = {"object": key, "sha256": card_sha, "size": len(card)}
                if head is not None and files == base:
                    logger.info(
                        "commit %r changes nothing in %s; head stays %s", message, self, head
                    )
                    return self._info(self._manifest(head))
                manifest: dict[str, Any] = {
                    "parent": head,
                    "message": message,
                    "at": datetime.now(UTC).isoformat(),
                    "added": added,
                    "deleted": deleted,
                    "files": files,
                }
                revision = hashlib.sha1(
                    json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
                ).hexdigest()
                manifest = {"revision": revision, **manifest}
                commits = self._store / "commits"
                commits.mkdir(exist_ok=True)
                _write_durably(
                    commits / f"{revision}.json", json.dumps(manifest, indent=1).encode()
                )
                self._before_head_swap(revision)
                _write_durably(self._store / "HEAD", f"{revision}\n".encode())
                crash_point("repo:head_moved")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            logger.info(
                "committed %s to %s: %r (+%s -%s)",
                revision[:12],
                self.root,
                message,
                added,
                deleted,
            )
            self._sync_worktree(revision)
            return self._info(manifest)

    def _recover(self) -> list[str]:
        """Under the lock: drop staging left by a crash; make the working copy ``HEAD``.

        Returns:
            The repo paths of the working copy rewritten or removed.
        """
        shutil.rmtree(self._store / "tmp", ignore_errors=True)
        head = self.head()
        if head is None:
            return []
        repaired = self._sync_worktree(head)
        if repaired:
            logger.warning(
                "%s: the working copy was behind HEAD %s (a crash after the commit point?); "
                "repaired %d file(s): %s",
                self,
                head[:12],
                len(repaired),
                repaired[:10],
            )
        return repaired

    def _shown_revision(self) -> str | None:
        try:
            return (self._store / "WORKTREE").read_text().strip() or None
        except FileNotFoundError:
            return None

    def _sync_worktree(self, revision: str) -> list[str]:
        """Make ``root/`` show ``revision``: hard links to the objects (copies as fallback).

        A file already showing the right content (the object itself, or a copy with the
        same sha256) is left alone; every other one is replaced atomically (temporary
        file + rename). Then cards and shards not in ``revision`` are removed and
        ``WORKTREE`` records ``revision``.

        Returns:
            The repo paths rewritten or removed.
        """
        files = self._files(revision)
        changed: list[str] = []
        for path, entry in files.items():
            src = self._object(entry, revision)
            dest = self.root / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if dest.samefile(src):
                    continue
                if (
                    dest.is_file()
                    and dest.stat().st_size == entry.get("size", -1)
                    and _sha256_file(dest) == entry["sha256"]
                ):
                    continue
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            tmp.replace(dest)
            changed.append(path)
            if len(changed) == 1:
                crash_point("repo:worktree_partial")
        for leftover in [*self.root.glob(".*.tmp"), *(self.root / DATA_DIR).glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)  # from a crash in a previous sync
        shown = [self.root / CARD_PATH, *(self.root / DATA_DIR).glob("*.parquet")]
        for dest in shown:
            path = dest.relative_to(self.root).as_posix()
            if dest.exists() and path not in files:
                dest.unlink()
                changed.append(path)
        if changed or self._shown_revision() != revision:
            _fsync_dir(self.root / DATA_DIR)
            _fsync_dir(self.root)
            crash_point("repo:worktree_updated")
            _write_durably(self._store / "WORKTREE", f"{revision}\n".encode())
        return changed

    def gc(self, keep: int | None = None) -> int:
        """Delete objects not used by the newest ``keep`` revisions (None: by any revision).

        Manifests stay, so :meth:`log` is complete; reading a pruned revision raises
        :class:`RevisionNotFoundError`. Returns the number of files deleted.
        """
        with self._lock():
            self._recover()
            history = self.log()
            kept = history if keep is None else history[: max(keep, 1)]
            live = {
                entry["object"]
                for c in kept
                for entry in self._manifest(c.revision)["files"].values()
            }
            removed = 0
            for obj in (self._store / "objects").glob("*/*"):
                if obj.relative_to(self._store / "objects").as_posix() not in live:
                    obj.unlink()
                    removed += 1
            reachable = {c.revision for c in history}
            for manifest in (self._store / "commits").glob("*.json"):
                if manifest.stem not in reachable:  # left by a crash before the HEAD swap
                    manifest.unlink()
                    removed += 1
            logger.info("gc of %s: %d file(s) deleted", self.root, removed)
            return removed


# -- Hub backend ----------------------------------------------------------------------------
class HubDatasetRepo(DatasetRepo):
    """A dataset repo on the HuggingFace Hub (or any Hub-compatible ``endpoint``).

    Reads are pinned to a commit id (resolved once per call), so a call sees one revision
    and downloads are cached under ``cache_dir``. ``row_count`` reads only the Parquet
    footers (HTTP range requests). Commits go through ``create_commit`` with
    ``parent_commit`` set to the head the commit was computed from, so the Hub refuses it
    (HTTP 412/409 -> :class:`ConflictError`) if another writer got in between. The token is
    kept out of reprs, logs and the messages of raised errors.
    """

    def __init__(
        self,
        repo_id: str,
        token: str | SecretStr | None = None,
        endpoint: str | None = None,
        cache_dir: Path | str | None = None,
        *,
        branch: str = DEFAULT_BRANCH,
    ) -> None:
        from huggingface_hub import HfApi, constants

        self.repo_id = repo_id
        self.branch = branch
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._token = SecretStr(secret) if secret else None
        self._api: HfApi = HfApi(endpoint=self.endpoint, token=secret, library_name="bi_platform")
        self._trees: dict[str, dict[str, RepoFile]] = {}
        self._footer_rows: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"HubDatasetRepo({self.repo_id!r}, endpoint={self.endpoint!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        if self._token is not None:
            text = text.replace(self._token.get_secret_value(), "***")
        return text

    @contextlib.contextmanager
    def _hub(self, action: str) -> Iterator[None]:
        """Translate huggingface_hub/HTTP errors to DatasetRepoErrors without the token."""
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        try:
            yield
        except DatasetRepoError:
            raise
        except HfRevisionNotFound as exc:
            raise RevisionNotFoundError(
                f"{action} on {self.repo_id}: {self._redact(str(exc))}"
            ) from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            first = self._redact(str(exc)).strip().splitlines()
            detail = first[0] if first else type(exc).__name__
            raise HubError(
                f"{action} on {self.repo_id} failed (HTTP {status}): {detail}", status
            ) from None
        except Exception as exc:
            raise HubError(
                f"{action} on {self.repo_id} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None

    def _resolve(self, revision: str | None) -> str | None:
        """A commit id for ``revision`` (None: the head; None if the repo is empty)."""
        if revision is None:
            return self.head()
        if _REVISION_RE.fullmatch(revision):
            return revision
        with self._hub(f"resolve {revision}"):
            return self._api.dataset_info(self.repo_id, revision=revision).sha

    def _tree(self, revision: str) -> dict[str, RepoFile]:
        """Files at a commit id (cached: commits are immutable)."""
        if revision not in self._trees:
            from huggingface_hub.hf_api import RepoFile

            with self._hub(f"list files at {revision}"):
                entries = self._api.list_repo_tree(
                    self.repo_id, recursive=True, revision=revision, repo_type="dataset"
                )
                self._trees[revision] = {e.path: e for e in entries if isinstance(e, RepoFile)}
        return self._trees[revision]

    # -- reading ----------------------------------------------------------------------------
    def head(self) -> str | None:
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        with self._hub("read head"):
            try:
                return self._api.dataset_info(self.repo_id, revision=self.branch).sha
            except (RepositoryNotFoundError, HfRevisionNotFound):
                return None

    def list_shards(self, revision: str | None = None) -> list[str]:
        resolved = self._resolve(revision)
        return [] if resolved is None else _months_of_paths(self._tree(resolved))

    def download_shard(self, month: str, revision: str | None = None) -> Path:
        path = shard_path(month)
        resolved = self._resolve(revision)
        if resolved is None:
            raise ShardNotFoundError(f"no shard {month} in {self.repo_id} (empty repo)")
        try:
            return self._download(path, resolved)
        except RepoFileNotFoundError:
            raise ShardNotFoundError(f"no shard {month} at {resolved} in {self.repo_id}") from None

    def _download(self, path: str, resolved: str) -> Path:
        """``path`` at the commit id ``resolved``, through the download cache."""
        from huggingface_hub.errors import EntryNotFoundError

        with self._hub(f"download {path}@{resolved[:12]}"):
            try:
                local = self._api.hf_hub_download(
                    self.repo_id,
                    path,
                    repo_type="dataset",
                    revision=resolved,
                    cache_dir=self.cache_dir,
                )
            except EntryNotFoundError:
                raise RepoFileNotFoundError(
                    f"no file {path} at {resolved} in {self.repo_id}"
                ) from None
        return Path(local)

    def resolve_revision(self, revision: str | None = None) -> str:
        resolved = self._resolve(revision)
        if resolved is None:
            raise RevisionNotFoundError(f"{self.repo_id} has no revision yet (empty repo)")
        return resolved

    def list_files(self, revision: str | None = None) -> list[str]:
        return sorted(self._tree(self.resolve_revision(revision)))

    def download_file(self, path: str, revision: str | None = None) -> Path:
        return self._download(path, self.resolve_revision(revision))

    def published(self) -> Published:
        """What the Hub serves at its head: the card and the files it selects, each read
        at the head's commit id (downloaded on demand through the cache)."""
        head = self.head()
        tree = self._tree(head) if head is not None else {}
        card = (
            self._download(CARD_PATH, head).read_text(encoding="utf-8")
            if head is not None and CARD_PATH in tree
            else None
        )
        patterns, problems = card_data_files(card)

        def open_at_head(path: str) -> Path:
            if head is None:
                raise RepoFileNotFoundError(f"{self.repo_id} is empty")
            return self._download(path, head)

        return Published(
            revision=head,
            card=card,
            patterns=tuple(patterns),
            problems=tuple(problems),
            data_files=tuple(match_data_files(patterns, tree)),
            where=f"hub {self.endpoint}/datasets/{self.repo_id}@{(head or '')[:12]}",
            _open=open_at_head,
        )

    def published_differences(self) -> list[PublishedDifference]:
        """The Hub serves its head's tree itself; what can differ is the card: a problem
        with its ``data_files``, or a shard of the head the card does not select."""
        published = self.published()
        if published.revision is None:
            return []
        diffs = [PublishedDifference(CARD_PATH, problem) for problem in published.problems]
        selected = set(published.data_files)
        diffs += [
            PublishedDifference(path, "a shard of HEAD the card's data_files do not select")
            for path in sorted(self._tree(published.revision))
            if _SHARD_RE.fullmatch(path) and path not in selected
        ]
        return diffs

    def _footer_num_rows(self, path: str, revision: str) -> int:
        """Rows of a remote Parquet file from its footer, fetched with range requests."""
        key = (revision, path)
        if key in self._footer_rows:
            return self._footer_rows[key]
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(
            self.repo_id, path, repo_type="dataset", revision=revision, endpoint=self.endpoint
        )
        token = self._token.get_secret_value() if self._token is not None else None
        headers = build_hf_headers(token=token, library_name="bi_platform")

        def tail(nbytes: int) -> bytes:
            response = get_session().get(
                url, headers={**headers, "Range": f"bytes=-{nbytes}"}, follow_redirects=True
            )
            hf_raise_for_status(response)
            return response.content[-nbytes:]  # a server ignoring Range sends it all

        with self._hub(f"read footer of {path}@{revision[:12]}"):
            data = tail(FOOTER_PROBE_BYTES)
            if len(data) < 12 or data[-4:] != b"PAR1":
                raise DatasetRepoError(f"{path}@{revision} is not a Parquet file")
            length = int.from_bytes(data[-8:-4], "little") + 8
            if length > len(data):
                data = tail(length)
            rows = pq.read_metadata(pa.BufferReader(b"PAR1" + data[-length:])).num_rows
        self._footer_rows[key] = rows
        return rows

    def row_count(self, revision: str | None = None) -> int:
        resolved = self._resolve(revision)
        if resolved is None:
            return 0
        return sum(
            self._footer_num_rows(path, resolved)
            for path in self._tree(resolved)
            if _SHARD_RE.fullmatch(path)
        )

    def log(self) -> list[CommitInfo]:
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        with self._hub("list commits"):
            try:
                commits = self._api.list_repo_commits(
                    self.repo_id, repo_type="dataset", revision=self.branch
                )
            except (RepositoryNotFoundError, HfRevisionNotFound):
                return []
        return [
            CommitInfo(
                revision=c.commit_id,
                message=c.title,
                added=_parse_trailer(c.message, _TRAILER_ADDED),
                deleted=_parse_trailer(c.message, _TRAILER_DELETED),
                at=c.created_at,
            )
            for c in commits
        ]

    # -- writing ----------------------------------------------------------------------------
    def commit(
        self,
        shards: Mapping[str, pa.Table],
        *,
        message: str,
        delete: Iterable[str] = (),
        parent_revision: str | None = None,
        verify: Callable[[Mapping[str, Path]], None] | None = None,
    ) -> CommitInfo:
        """See :meth:`DatasetRepo.commit`: one ``create_commit`` with ``parent_commit``."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        message, months, deletes = _normalise_commit_args(shards, message, delete)
        head = self.head()
        if parent_revision is not None and parent_revision != head:
            raise ConflictError(f"head of {self.repo_id} is {head}, not {parent_revision}")
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="commit-", dir=self.cache_dir) as tmp:
            staged = _stage_shards(shards, months, Path(tmp))
            if verify is not None:
                verify({st.month: st.path for st in staged})
            if head is None:
                with self._hub("create repo"):
                    self._api.create_repo(self.repo_id, repo_type="dataset", exist_ok=True)
                head = self.head()
            tree = self._tree(head) if head is not None else {}
            operations: list[CommitOperationAdd | CommitOperationDelete] = []
            added: list[str] = []
            for st in staged:
                path = shard_path(st.month)
                remote = tree.get(path)
                if remote is not None and (
                    (remote.lfs is not None and remote.lfs.sha256 == st.sha256)
                    or remote.blob_id == st.git_sha1
                ):
                    continue
                operations.append(CommitOperationAdd(path, str(st.path)))
                added.append(st.month)
            deleted = [m for m in deletes if shard_path(m) in tree]
            operations += [CommitOperationDelete(shard_path(m)) for m in deleted]
            months_after = (set(_months_of_paths(tree)) - set(deleted)) | {s.month for s in staged}
            card = dataset_card(sorted(months_after), repo_id=self.repo_id).encode()
            remote_card = tree.get(CARD_PATH)
            if remote_card is None or remote_card.blob_id != _git_blob_sha1(card):
                operations.append(CommitOperationAdd(CARD_PATH, card))
            if not operations and head is not None:
                logger.info("commit %r changes nothing in %s; head stays %s", message, self, head)
                return self._head_info(head)
            with self._hub("commit"):
                try:
                    result = self._api.create_commit(
                        self.repo_id,
                        operations,
                        commit_message=message,
                        commit_description=_trailers(added, deleted),
                        repo_type="dataset",
                        revision=self.branch,
                        parent_commit=head,
                    )
                except Exception as exc:
                    response = getattr(exc, "response", None)
                    if response is not None and response.status_code in (409, 412):
                        raise ConflictError(
                            f"{self.repo_id} moved past {head} during the commit"
                        ) from None
                    raise
        if result.oid == head:  # the library found nothing to change after all
            return self._head_info(head)
        logger.info(
            "committed %s to %s: %r (+%s -%s)",
            result.oid[:12],
            self.repo_id,
            message,
            added,
            deleted,
        )
        return CommitInfo(
            revision=result.oid,
            message=message,
            added=tuple(added),
            deleted=tuple(deleted),
            at=datetime.now(UTC),
        )

    def _head_info(self, head: str) -> CommitInfo:
        for info in self.log():
            if info.revision == head:
                return info
        raise RevisionNotFoundError(f"head {head} of {self.repo_id} is not in its history")


# -- factory --------------------------------------------------------------------------------
def open_dataset_repo(settings: Settings | None = None) -> DatasetRepo:
    """The news dataset repo: on the Hub if ``HF_REPO_ID`` is set, else a local directory."""
    from bi_platform.settings import get_settings

    settings = settings if settings is not None else get_settings()
    if settings.hf_repo_id:
        return HubDatasetRepo(
            settings.hf_repo_id,
            token=settings.hf_token,
            endpoint=settings.hf_endpoint,
            cache_dir=settings.hf_dir / "cache",
        )
    return LocalDatasetRepo(settings.hf_dir / LOCAL_REPO_NAME)
