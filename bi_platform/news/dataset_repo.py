"""The news dataset as a versioned repo of monthly Parquet shards: the interface.

Every backend holds the same files, laid out like a HuggingFace dataset repo::

    README.md              the dataset card (YAML front matter declares the data files)
    data/YYYY-MM.parquet   one shard per publication month (São Paulo time), written with
                           HF_SCHEMA exactly, rows sorted by (published_at, unique_id)

Every change is ONE atomic commit: the month shards written, the months deleted and the
regenerated card land together or not at all. A month is rewritten whole; tables are
validated against HF_SCHEMA before anything is written (:func:`validate_table`); the
card declares the data files and no split sizes (:func:`dataset_card`); one month is in
memory at a time (shards are staged to temporary files, :func:`stage_shards`).

This module holds what the backends share: the errors, :class:`CommitInfo`, the shard and
card helpers, :class:`DatasetRepo` (the interface) and :func:`open_dataset_repo`, which
picks a backend from :class:`~bi_platform.settings.Settings`:

* :class:`~bi_platform.news.dataset_repo_local.LocalDatasetRepo` (the default): a local
  directory with a content-addressed store;
* :class:`~bi_platform.news.dataset_repo_hub.HubDatasetRepo`: a dataset repo on the Hub
  (or a mirror) through ``huggingface_hub``.

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

import hashlib
import logging
import os
import re
import shutil
import signal
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from bi_platform.news.records import HF_COLUMNS, HF_SCHEMA, TIMEZONE

if TYPE_CHECKING:
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

# Licence of gov.br portal content (CC BY-ND 3.0); not on the Hub's list, hence "other".
DEFAULT_LICENSE = {
    "license": "other",
    "license_name": "cc-by-nd-3.0",
    "license_link": "https://creativecommons.org/licenses/by-nd/3.0/deed.pt_BR",
}
DEFAULT_PRETTY_NAME = "GovBR News"

MONTH_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
SHARD_RE = re.compile(rf"{DATA_DIR}/(\d{{4}}-(?:0[1-9]|1[0-2]))\.parquet")
REVISION_RE = re.compile(r"[0-9a-f]{40}")
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
    if not isinstance(month, str) or not MONTH_RE.fullmatch(month):
        raise ValueError(f"not a month (YYYY-MM): {month!r}")
    return month


def months_of_paths(paths: Iterable[str]) -> list[str]:
    return sorted(m.group(1) for p in paths if (m := SHARD_RE.fullmatch(p)))


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


@dataclass(frozen=True)
class StagedShard:
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


def normalise_commit_args(
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


def stage_shards(shards: Mapping[str, pa.Table], months: list[str], tmp: Path) -> list[StagedShard]:
    """Validate and write each month to ``tmp``, one month in memory at a time.

    ``shards[month]`` is read once per month, so a lazy Mapping streams.
    """
    staged: list[StagedShard] = []
    for month in months:
        table = _prepare_shard(month, shards[month])
        rows = table.num_rows
        path = tmp / f"{month}.parquet"
        _write_parquet(table, path)
        del table
        sha256, git_sha1, size = _hash_file(path)
        staged.append(StagedShard(month, path, size, sha256, git_sha1, rows))
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
    match = SHARD_RE.fullmatch(path)
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
        match = SHARD_RE.fullmatch(self.path)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class CheckoutResult:
    """A plain copy of a revision written by :meth:`DatasetRepo.checkout`."""

    revision: str
    directory: Path
    files: tuple[str, ...]


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


# -- factory --------------------------------------------------------------------------------
def open_dataset_repo(
    settings: Settings | None = None, *, hf_dir: Path | str | None = None
) -> DatasetRepo:
    """The news dataset repo: on the Hub if ``HF_REPO_ID`` is set, else a local directory
    under ``hf_dir`` (default: ``$BI_PLATFORM_HOME/hf``), which also holds the Hub cache."""
    from bi_platform.news.dataset_repo_hub import HubDatasetRepo  # the backends import this module
    from bi_platform.news.dataset_repo_local import LocalDatasetRepo
    from bi_platform.settings import get_settings

    settings = settings if settings is not None else get_settings()
    root = Path(hf_dir) if hf_dir is not None else settings.hf_dir
    if settings.hf_repo_id:
        return HubDatasetRepo(
            settings.hf_repo_id,
            token=settings.hf_token,
            endpoint=settings.hf_endpoint,
            cache_dir=root / "cache",
        )
    return LocalDatasetRepo(root / LOCAL_REPO_NAME)
