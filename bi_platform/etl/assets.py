"""ETL assets: inbox files -> records + dead-letter queue (one partition per file) ->
stratified estimates -> the HTML report.

etl_records + etl_dead_letter (per file) --> etl_sample_estimates --> etl_report

A partition is one inbox file version, keyed ``<name>@<sha256 prefix>`` (see
:mod:`bi_platform.etl.inbox`); the ``etl_inbox_sensor`` adds them. Each run of a partition
ends with one *outcome*, written to ``records/<key>.json`` (the summary) and the audit log:

- ``processed``: the file was parsed; its valid records count, the others are in the
  dead-letter queue;
- ``duplicate``: the same content (sha256) was already processed under another name or
  version: it is not parsed again and counts once;
- ``rejected``: the file as a whole cannot be trusted (unreadable or corrupt content, rows
  that cannot be delimited, a misaligned binary file, an error while parsing it, records
  that do not reconcile): none of its records count; the reason is kept.

A rejected file is a completed run (the ``file_accepted`` warning check fails on it), so
one bad file never fails, hides or blocks another; it is retried only when its content
changes (a new partition). What cannot be decided about the content (the file vanished,
changed or became a link since it was registered; the outputs cannot be written; the
layout is refused) fails the run instead. Each partition leaves ``records/<key>.parquet``,
``dead_letter/<key>.parquet`` (+ ``.csv``) and ``records/<key>.json`` under
``$BI_PLATFORM_HOME/etl``.
"""

import csv
import io
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from bi_platform.etl.estimation import stratified_estimate
from bi_platform.etl.inbox import InboxFile, scan_inbox, split_partition_key
from bi_platform.etl.layouts import LayoutError
from bi_platform.etl.parse_common import (
    DEAD_LETTER_SCHEMA,
    EtlInputError,
    EtlOutputError,
    detect_format,
    writer_schema,
)
from bi_platform.etl.parser import parse_file, read_records
from bi_platform.etl.report import publish_report, render_report, system_profile, top_products
from bi_platform.etl.resources import EtlResource
from bi_platform.etl.security import (
    FileIdentity,
    InputChangedError,
    OpenedInboxFile,
    UnsafeInputError,
    open_inbox_file,
)
from bi_platform.lib.files import atomic_path, write_bytes_atomic
from bi_platform.lib.safe_csv import write_csv_safe

logger = logging.getLogger(__name__)

GROUP = "etl"
OWNERS = ["team:data-engineering"]
ESTIMATES_FILE = "estimates.json"

PROCESSED = "processed"
DUPLICATE = "duplicate"
REJECTED = "rejected"
OUTCOMES = (PROCESSED, DUPLICATE, REJECTED)

#: One partition per inbox file version: ``<file name>@<first 16 hex of its sha256>``.
etl_files = dg.DynamicPartitionsDefinition(name="etl_files")


def etl_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


RECORDS = etl_key("etl_records")
DEAD_LETTER = etl_key("etl_dead_letter")


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


# -- per file --------------------------------------------------------------------------
class FileChangedError(InputChangedError):
    """The file behind a partition vanished or no longer has the registered content."""


def records_path(etl: EtlResource, key: str) -> Path:
    return etl.records_dir / f"{key}.parquet"


def summary_path(etl: EtlResource, key: str) -> Path:
    return etl.records_dir / f"{key}.json"


def dead_letter_path(etl: EtlResource, key: str, suffix: str = ".parquet") -> Path:
    return etl.dead_letter_dir / f"{key}{suffix}"


def read_summary(etl: EtlResource, key: str) -> dict[str, Any] | None:
    """The summary of a partition.

    Args:
        etl: The resource.
        key: The partition key.

    Returns:
        The ``records/<key>.json`` summary, or None when there is none or it is unreadable.
    """
    try:
        data = json.loads(summary_path(etl, key).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_summary(etl: EtlResource, key: str, summary: dict[str, Any]) -> None:
    """Write the summary of a partition atomically.

    Args:
        etl: The resource.
        key: The partition key.
        summary: The summary (JSON-able).
    """
    write_bytes_atomic(
        summary_path(etl, key), (json.dumps(summary, indent=2, default=str) + "\n").encode()
    )


@contextmanager
def open_source(
    etl: EtlResource, key: str, summary: dict[str, Any] | None = None
) -> Iterator[tuple[OpenedInboxFile, str]]:
    """The inbox file of partition ``key``, opened without following links and checked on
    its descriptor (:func:`~bi_platform.etl.security.open_inbox_file`), with its sha256.

    Args:
        etl: The resource (inbox, size limit).
        key: The partition key.
        summary: The partition's summary: when the descriptor shows the identity recorded
            there (device, inode, size, mtime, ctime) its sha256 is reused, else the
            content is hashed again from the descriptor.

    Returns:
        A context manager yielding ``(opened file, sha256)``. :class:`FileChangedError`
        when the file vanished or has other content; :class:`UnsafeInputError` when it
        is refused (link, not a regular file, too large...).
    """
    name, prefix = split_partition_key(key)
    with ExitStack() as stack:
        try:
            opened = stack.enter_context(open_inbox_file(etl.inbox_dir, name, etl.max_bytes))
        except UnsafeInputError as exc:
            if "no such file" in str(exc):
                raise FileChangedError(
                    f"{name}: vanished from the inbox {etl.inbox_dir} (partition {key})"
                ) from None
            raise
        known = FileIdentity.from_dict((summary or {}).get("identity"))
        recorded = str((summary or {}).get("sha256") or "")
        if known is not None and known == opened.identity and len(recorded) == 64:
            digest = recorded
        else:
            digest = opened.sha256()
        if not digest.startswith(prefix):
            raise FileChangedError(
                f"{name}: changed since partition {key} was registered (sha256 now "
                f"{digest[:16]}...); the new content gets its own partition"
            )
        yield opened, digest


@dataclass(frozen=True)
class ProcessedFile:
    """One file version with an outcome (its ``records/<key>.json`` summary), and how the
    estimates use it: ``records_key`` holds the records that count for it (its own, or
    those of the file it duplicates), ``duplicate_of`` the file it is counted as, ``note``
    why it does not count when its summary does not say it."""

    key: str
    summary: dict[str, Any]
    records_key: str | None = None
    duplicate_of: str | None = None
    note: str | None = None

    @property
    def name(self) -> str:
        return split_partition_key(self.key)[0]

    @property
    def outcome(self) -> str:
        return str(self.summary.get("outcome") or PROCESSED)

    @property
    def reason(self) -> str | None:
        return self.note or self.summary.get("reason")

    @property
    def sha256(self) -> str:
        return str(self.summary.get("sha256") or "")

    @property
    def records_in(self) -> int:
        return int(self.summary.get("records_in") or 0)

    @property
    def records_out(self) -> int:
        return int(self.summary.get("records_out") or 0)

    @property
    def dead_letter(self) -> int:
        return int(self.summary.get("dead_letter") or 0)


def _write_empty_outputs(etl: EtlResource, key: str) -> None:
    """Schema-only records and dead-letter files for a file that loads nothing."""
    layout = etl.record_layout()
    try:
        for path, schema in (
            (records_path(etl, key), writer_schema(layout)),
            (dead_letter_path(etl, key), DEAD_LETTER_SCHEMA),
        ):
            with atomic_path(path) as tmp:
                pq.write_table(schema.empty_table(), tmp)
        write_csv_safe(DEAD_LETTER_SCHEMA.empty_table(), dead_letter_path(etl, key, ".csv"))
    except OSError as exc:
        raise EtlOutputError(f"cannot write the outputs of {key}: {exc}") from exc


def _remove_outputs(etl: EtlResource, key: str) -> None:
    for path in (
        records_path(etl, key),
        dead_letter_path(etl, key),
        dead_letter_path(etl, key, ".csv"),
    ):
        path.unlink(missing_ok=True)


def find_original(
    etl: EtlResource, digest: str, key: str, trusted: set[str] | None = None
) -> str | None:
    """The partition whose records already hold this content.

    Args:
        etl: The resource.
        digest: The content's sha256.
        key: The partition asking (never its own answer).
        trusted: When given, only these partitions count (their run succeeded).

    Returns:
        The first processed partition with this sha256, outcome ``processed`` and its
        records on disk; None when there is none.
    """
    found: list[tuple[str, str]] = []
    for path in etl.records_dir.glob(f"*@{digest[:16]}.json"):
        other = path.stem
        if other == key or (trusted is not None and other not in trusted):
            continue
        summary = read_summary(etl, other)
        if (
            summary
            and summary.get("outcome", PROCESSED) == PROCESSED
            and summary.get("sha256") == digest
            and records_path(etl, other).is_file()
        ):
            found.append((str(summary.get("processed_at") or ""), other))
    return min(found)[1] if found else None


def process_file(etl: EtlResource, key: str, trusted: set[str] | None = None) -> ProcessedFile:
    """Give the file of partition ``key`` its outcome: open and verify it (confinement on
    the descriptor, size, sha256 from the descriptor), then a duplicate of already
    processed content (``trusted``: the partitions whose run succeeded, see
    :func:`find_original`), or parse it through that descriptor: ``processed``, or
    ``rejected`` with the reason when its content cannot be trusted. Writes the records,
    the dead-letter Parquet and CSV (formula-neutralised) and the summary; audits.

    Args:
        etl: The resource.
        key: The partition key.
        trusted: Keys whose records may be shared with a duplicate (None: any).

    Returns:
        The :class:`ProcessedFile`. Raises (and audits) when nothing can be decided about
        the content: :class:`FileChangedError`, :class:`UnsafeInputError` (the file is
        now refused), :class:`EtlOutputError`, :class:`LayoutError`.
    """
    audit = etl.audit_log()
    name, _ = split_partition_key(key)
    options = etl.parse_options()  # a refused layout is audited by the resource
    started = time.perf_counter()
    with ExitStack() as stack:
        try:
            opened, digest = stack.enter_context(open_source(etl, key))
        except UnsafeInputError as exc:
            result = "failed" if isinstance(exc, InputChangedError) else "refused"
            audit.record(name=name, size=None, sha256=None, result=result, detail=str(exc))
            raise
        base: dict[str, Any] = {
            "partition_key": key,
            "source_file": name,
            "format": detect_format(Path(name)),
            "sha256": digest,
            "size_bytes": opened.size,
            "identity": opened.identity.as_dict(),
        }
        try:
            for directory in (etl.records_dir, etl.dead_letter_dir):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EtlOutputError(f"cannot create the ETL output directories: {exc}") from exc
        original = find_original(etl, digest, key, trusted)
        if original is not None:
            _write_empty_outputs(etl, key)
            return _finish(
                etl,
                key,
                {
                    **base,
                    "outcome": DUPLICATE,
                    "duplicate_of": original,
                    "records_key": original,
                    "reason": f"same content (sha256) as {original}: not parsed again",
                    "parsed": False,
                },
                started,
            )
        try:
            parsed = parse_file(
                etl.inbox_dir / name,
                records_path(etl, key),
                dead_letter_path(etl, key),
                options,
                source_name=name,
                fd=opened.fd,
            )
            opened.check_unchanged()
        except (EtlOutputError, InputChangedError, MemoryError) as exc:
            _remove_outputs(etl, key)
            audit.record(
                name=name, size=opened.size, sha256=digest, result="failed", detail=str(exc)
            )
            raise
        except Exception as exc:  # the content: rejected, whatever the parser raised
            if not isinstance(exc, EtlInputError):
                logger.exception("%s: unexpected error while parsing", key)
            reason = str(exc) if isinstance(exc, EtlInputError) else f"{type(exc).__name__}: {exc}"
            reason = "".join(c if c.isprintable() else "?" for c in reason)
            _write_empty_outputs(etl, key)
            return _finish(
                etl,
                key,
                {
                    **base,
                    "outcome": REJECTED,
                    "reason": f"unreadable: {reason}",
                    "records_key": None,
                    "parsed": False,
                },
                started,
            )
        try:
            write_csv_safe(
                pq.ParquetFile(parsed.dead_letter_path).read(), dead_letter_path(etl, key, ".csv")
            )
        except OSError as exc:
            raise EtlOutputError(f"cannot write the dead-letter CSV of {key}: {exc}") from exc
        meta = parsed.as_metadata()
        rejected = meta.pop("rejected_reason")
        return _finish(
            etl,
            key,
            {
                **base,
                **meta,
                "outcome": REJECTED if rejected else PROCESSED,
                "reason": rejected,
                "records_key": None if rejected else key,
                "parsed": True,
            },
            started,
        )


def _finish(etl: EtlResource, key: str, summary: dict[str, Any], started: float) -> ProcessedFile:
    """Complete, write and audit the summary of a file version with an outcome."""
    summary = {
        "records_in": 0,
        "records_out": 0,
        "dead_letter": 0,
        "dead_letter_reasons": {},
        "records_path": str(records_path(etl, key)),
        "dead_letter_path": str(dead_letter_path(etl, key)),
        "duplicate_of": None,
        **summary,
        "seconds": round(time.perf_counter() - started, 4),
        "processed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    write_summary(etl, key, summary)
    item = ProcessedFile(key, summary, summary.get("records_key"), summary.get("duplicate_of"))
    if item.outcome == PROCESSED:
        detail = (
            f"partition {key}: {item.records_in} in, {item.records_out} out, "
            f"{item.dead_letter} dead-lettered"
        )
    else:
        detail = f"partition {key}: {item.reason}"
    etl.audit_log().record(
        name=item.name,
        size=summary.get("size_bytes"),
        sha256=item.sha256,
        result=item.outcome,
        detail=detail,
    )
    return item


def reject(etl: EtlResource, key: str, reason: str) -> None:
    """Record a partition as rejected (its records no longer count) and audit it.

    Args:
        etl: The resource.
        key: The partition key.
        reason: Why (kept in the summary, the audit log and the report).
    """
    summary = read_summary(etl, key) or {"partition_key": key}
    summary.update(outcome=REJECTED, reason=reason, records_key=None)
    write_summary(etl, key, summary)
    etl.audit_log().record(
        name=split_partition_key(key)[0],
        size=summary.get("size_bytes"),
        sha256=summary.get("sha256"),
        result=REJECTED,
        detail=f"partition {key}: {reason}",
    )


@dg.multi_asset(
    name="etl_ingest_file",
    specs=[
        dg.AssetSpec(
            RECORDS,
            description=(
                "The valid records of one inbox file (binary fixed-layout records, CSV or "
                "Parquet), decoded and validated into Parquet: id, timestamp (UTC), "
                "quantity, value (cents), product. One partition per file version, keyed "
                "<file name>@<sha256 prefix>; written to $BI_PLATFORM_HOME/etl/records/."
            ),
            group_name=GROUP,
            kinds={"numpy", "parquet"},
            owners=OWNERS,
            partitions_def=etl_files,
            skippable=True,
        ),
        dg.AssetSpec(
            DEAD_LETTER,
            description=(
                "The dead-letter queue of one inbox file: every record that could not be "
                "loaded (trailing partial record, undecodable product, timestamp outside "
                "the window, overflow, malformed CSV row, wrong Parquet schema) with file, "
                "row number, byte offset, raw bytes (hex), reason and field. Parquet, plus "
                "a CSV whose cells are neutralised against formula injection."
            ),
            group_name=GROUP,
            kinds={"parquet", "csv"},
            owners=OWNERS,
            partitions_def=etl_files,
            skippable=True,
        ),
    ],
    partitions_def=etl_files,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    can_subset=True,
)
def etl_ingest_file(
    context: dg.AssetExecutionContext, etl: EtlResource
) -> Iterator[dg.MaterializeResult]:
    """Give the inbox file of the run's partition its outcome (see the module): re-checked
    on its descriptor first (confinement, size, content hash); ``processed``,
    ``duplicate`` or ``rejected`` (with the reason) complete the run; a file that vanished,
    changed or is now refused fails it with the reason. One parse writes both the records
    and the dead-letter queue; a run selecting one of them reports only that one. One file
    per run (a backfill runs each file on its own), so each partition's metadata is its
    own."""
    key = context.partition_key
    try:
        item = process_file(etl, key, successful_partitions(context.instance))
    except (UnsafeInputError, EtlOutputError, LayoutError, OSError) as exc:
        context.log.error("%s: %s", key, exc)
        raise dg.Failure(
            description=f"{key} could not be processed: {exc}",
            metadata={"partition": key, "error": str(exc)},
        ) from exc
    if item.outcome == PROCESSED:
        context.log.info(
            "%s: %d records in, %d out, %d dead-lettered in %.2fs",
            key,
            item.records_in,
            item.records_out,
            item.dead_letter,
            float(item.summary.get("seconds") or 0.0),
        )
    else:
        log = context.log.warning if item.outcome == REJECTED else context.log.info
        log("%s: %s: %s", key, item.outcome, item.reason)
    reasons = item.summary.get("dead_letter_reasons") or {}
    outcome_meta: dict[str, Any] = {"outcome": item.outcome}
    if item.reason:
        outcome_meta["reason"] = item.reason
    if item.duplicate_of:
        outcome_meta["duplicate_of"] = item.duplicate_of
    records_meta: dict[str, Any] = {
        "dagster/row_count": item.records_out,
        "dagster/column_schema": table_schema(etl.record_layout().arrow_schema),
        **outcome_meta,
        "records_in": item.records_in,
        "records_out": item.records_out,
        "dead_letter": item.dead_letter,
        "source_file": item.name,
        "format": str(item.summary.get("format")),
        "size_bytes": int(item.summary.get("size_bytes") or 0),
        "sha256": item.sha256,
        "seconds": float(item.summary.get("seconds") or 0.0),
        "path": dg.MetadataValue.path(str(records_path(etl, key))),
    }
    dead_meta: dict[str, Any] = {
        "dagster/row_count": item.dead_letter,
        "dagster/column_schema": table_schema(DEAD_LETTER_SCHEMA),
        **outcome_meta,
        "dead_letter": item.dead_letter,
        "reasons": dg.MetadataValue.json(dict(Counter(reasons).most_common())),
        "path": dg.MetadataValue.path(str(dead_letter_path(etl, key))),
        "csv_path": dg.MetadataValue.path(str(dead_letter_path(etl, key, ".csv"))),
    }
    selected = context.selected_asset_keys
    if RECORDS in selected:
        yield dg.MaterializeResult(asset_key=RECORDS, metadata=records_meta)
    if DEAD_LETTER in selected:
        yield dg.MaterializeResult(asset_key=DEAD_LETTER, metadata=dead_meta)


# -- over all files ----------------------------------------------------------------------
def _latest_runs(
    instance: dg.DagsterInstance, current_run_id: str | None = None
) -> dict[str, tuple[int, str | None, bool]]:
    """Registered partition -> (storage id, run id, whether that run succeeded or is
    ``current_run_id``) of its latest ``etl_records`` materialization."""
    keys = set(instance.get_dynamic_partitions(etl_files.name))
    latest = {
        key: storage_id
        for key, storage_id in instance.get_latest_storage_id_by_partition(
            RECORDS, dg.DagsterEventType.ASSET_MATERIALIZATION
        ).items()
        if key in keys
    }
    if not latest:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RECORDS, storage_ids=list(latest.values())),
        limit=len(latest),
    ).records
    run_of = {r.storage_id: r.run_id for r in records}
    status = {
        run.run_id: run.status
        for run in instance.get_runs(filters=dg.RunsFilter(run_ids=list(set(run_of.values()))))
    }
    out = {}
    for key, storage_id in latest.items():
        run_id = run_of.get(storage_id)
        ok = run_id is not None and (
            run_id == current_run_id or status.get(run_id) == dg.DagsterRunStatus.SUCCESS
        )
        out[key] = (storage_id, run_id, ok)
    return out


def successful_partitions(instance: dg.DagsterInstance) -> set[str]:
    """The partitions whose latest ``etl_records`` run succeeded.

    Args:
        instance: The Dagster instance.

    Returns:
        Their keys (their blocking check passed).
    """
    return {key for key, (_, _, ok) in _latest_runs(instance).items() if ok}


@dataclass(frozen=True)
class FileStates:
    """What the estimates and the report cover: one version per file name (its current
    content), grouped by outcome.

    - ``counted``: their records count (``records_key``: whose records hold them), one per
      distinct content;
    - ``duplicates``: the same content as a counted file (``duplicate_of``);
    - ``rejected``: files that do not count, with the reason;
    - ``refused``: inbox files refused unread (name, reason);
    - ``superseded``: older versions and versions no longer current.
    """

    counted: list[ProcessedFile] = field(default_factory=list)
    duplicates: list[ProcessedFile] = field(default_factory=list)
    rejected: list[ProcessedFile] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)

    def state(self) -> dict[str, list]:
        """The comparable state (JSON-able): which keys count, which are duplicates of
        what, which are rejected or refused and why."""
        return {
            "counted": [[f.key, f.records_key] for f in self.counted],
            "duplicates": [[f.key, f.duplicate_of] for f in self.duplicates],
            "rejected": [[f.key, f.reason] for f in self.rejected],
            "refused": [[name, reason] for name, reason in self.refused],
        }


def file_states(
    instance: dg.DagsterInstance,
    etl: EtlResource,
    current_run_id: str | None = None,
    inbox: tuple[list[InboxFile], list[tuple[str, str]]] | None = None,
) -> FileStates:
    """The version of each file name that the estimates and the report cover, by outcome.

    A name's version is the one matching its current content in the inbox when that
    version has an outcome (so a revert to earlier content counts the earlier version
    again); while the current content has none yet (its run is pending), and for names no
    longer in the inbox, the latest version with an outcome. A name the inbox now refuses
    (a link, too large...) counts nothing. A version counts when its latest
    ``etl_records`` run succeeded (or is ``current_run_id``) and its outcome is
    ``processed`` (or ``duplicate`` of records that count); the same content under several
    names counts once.

    Args:
        instance: The Dagster instance.
        etl: The resource.
        current_run_id: A run whose materializations count as successful.
        inbox: ``scan_inbox``'s result, when the caller has it (else the inbox is scanned,
            with the shared hash cache).

    Returns:
        The :class:`FileStates`.
    """
    runs = _latest_runs(instance, current_run_id)
    accepted, refused = inbox or scan_inbox(
        etl.inbox_dir, etl.max_bytes, cache_path=etl.hash_cache_path
    )
    items: dict[str, ProcessedFile] = {}
    for key, (_, run_id, ok) in runs.items():
        summary = read_summary(etl, key)
        if summary is None:
            continue
        note = None
        if not ok and summary.get("outcome", PROCESSED) != REJECTED:
            note = f"its run {run_id} did not succeed (a blocking check failed or the run stopped)"
        items[key] = ProcessedFile(key, summary, note=note)
    by_name: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for key in items:
        by_name[items[key].name].append((runs[key][0], key))
    current = {f.name: f.partition_key for f in accepted}
    refused_names = {name for name, _ in refused}
    chosen: dict[str, str] = {}
    for name in sorted(set(by_name) | set(current)):
        if name in refused_names:
            continue
        if current.get(name) in items:
            chosen[name] = current[name]
        elif name in by_name:
            chosen[name] = max(by_name[name])[1]
    states = FileStates(
        refused=sorted(refused), superseded=sorted(set(items) - set(chosen.values()))
    )

    def trusted(key: str | None) -> bool:
        item = items.get(key or "")
        return bool(
            item
            and item.note is None
            and item.outcome == PROCESSED
            and records_path(etl, item.key).is_file()
        )

    groups: dict[str, list[ProcessedFile]] = defaultdict(list)
    for name in sorted(chosen):
        item = items[chosen[name]]
        if item.note is not None or item.outcome == REJECTED:
            states.rejected.append(item)
        else:
            groups[item.sha256].append(item)
    for members in groups.values():
        own = [m for m in members if m.outcome == PROCESSED and trusted(m.key)]
        shared = [m for m in members if trusted(m.summary.get("records_key"))]
        if own:
            first, holder = own[0], own[0].key
        elif shared:
            first, holder = shared[0], str(shared[0].summary["records_key"])
        else:
            for m in members:
                states.rejected.append(
                    replace(m, note=f"its records ({m.summary.get('records_key')}) no longer count")
                )
            continue
        states.counted.append(replace(first, records_key=holder, duplicate_of=None))
        states.duplicates.extend(
            replace(m, records_key=None, duplicate_of=first.key) for m in members if m is not first
        )
    return states


def processed_files(
    instance: dg.DagsterInstance, etl: EtlResource, current_run_id: str | None = None
) -> tuple[list[ProcessedFile], list[str]]:
    """The files whose records the estimates and the report count, and the superseded
    keys (see :func:`file_states`).

    Args:
        instance: The Dagster instance.
        etl: The resource.
        current_run_id: A run whose materializations count as successful.

    Returns:
        ``(counted files, superseded keys)``.
    """
    states = file_states(instance, etl, current_run_id)
    return states.counted, states.superseded


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, (json.dumps(payload, indent=2, default=str) + "\n").encode())


ESTIMATE_FIELDS = (
    "column",
    "estimate",
    "standard_error",
    "ci_low",
    "ci_high",
    "exact",
    "relative_error",
    "covers",
)
#: One row per estimated total (estimates.csv).
ESTIMATES_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(
            name, "string" if name == "column" else "bool" if name == "covers" else "float"
        )
        for name in ESTIMATE_FIELDS
    ]
)


@dg.asset(
    key=etl_key("etl_sample_estimates"),
    deps=[RECORDS],
    group_name=GROUP,
    kinds={"polars", "json"},
    owners=OWNERS,
)
def etl_sample_estimates(
    context: dg.AssetExecutionContext, etl: EtlResource
) -> dg.MaterializeResult:
    """Totals of quantity and value over the files that count (the current content of
    each file name whose records are trustworthy, each content once), estimated from a
    seeded stratified random sample (strata = products; products whose share of the
    sample is under 2 rows pooled into collapsed strata), sized ETL_SAMPLE_FRACTION
    (default 0.5%) of the records or more when Cochran's rule asks for more, with
    standard errors and 95% t intervals widened on the skewed side, next to the exact
    totals: relative error and whether each interval covers the truth. The real sample
    size and fraction, and why, are in the output. Also lists the duplicates and the
    rejected files with their reasons. Written to
    $BI_PLATFORM_HOME/etl/estimates/estimates.json."""
    states = file_states(context.instance, etl, context.run.run_id)
    files = states.counted
    if not files:
        raise dg.Failure(
            "no processed ETL file yet: drop files in the inbox and materialize etl_records"
        )
    paths = [records_path(etl, f.records_key or f.key) for f in files]
    result = stratified_estimate(read_records(paths), fraction=etl.fraction, seed=etl.seed)
    estimates = result.as_metadata()
    _write_json(
        etl.estimates_dir / ESTIMATES_FILE,
        {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "partitions": [f.key for f in files],
            "records": {f.key: f.records_key for f in files},
            "duplicates": [
                {"name": f.name, "key": f.key, "duplicate_of": f.duplicate_of, "sha256": f.sha256}
                for f in states.duplicates
            ],
            "rejected": [
                {"name": f.name, "key": f.key, "reason": f.reason, "sha256": f.sha256}
                for f in states.rejected
            ],
            "refused": [{"name": name, "reason": reason} for name, reason in states.refused],
            "superseded": states.superseded,
            "state": states.state(),
            "estimates": estimates,
        },
    )
    per_column = {
        column: {
            "estimate": round(e.estimate, 2),
            "ci": [round(e.ci_low, 2), round(e.ci_high, 2)],
            "exact": e.exact,
            "relative_error": e.relative_error,
            "covers": e.covers,
        }
        for column, e in result.estimates.items()
    }
    context.log.info(
        "estimates over %d files from %d of %d records (%s): %s",
        len(files),
        result.sample_size,
        result.population,
        result.size_reason,
        per_column,
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(result.estimates),
            "dagster/column_schema": ESTIMATES_SCHEMA,
            "files": len(files),
            "duplicates": [f.key for f in states.duplicates],
            "rejected": dg.MetadataValue.json({f.key: f.reason for f in states.rejected}),
            "refused": dg.MetadataValue.json(dict(states.refused)),
            "superseded_partitions": states.superseded,
            "population": result.population,
            "sample_size": result.sample_size,
            "sample_fraction": result.sample_fraction,
            "sample_size_reason": result.size_reason,
            "strata": result.strata,
            "sampling_strata": result.sampling_strata,
            "fraction": result.fraction,
            "seed": result.seed,
            "confidence": result.confidence,
            "seconds": round(result.seconds, 3),
            "estimates": dg.MetadataValue.json(per_column),
            **{
                f"{column}_relative_error": e.relative_error
                for column, e in result.estimates.items()
                if e.relative_error is not None
            },
            "path": dg.MetadataValue.path(str(etl.estimates_dir / ESTIMATES_FILE)),
        }
    )


def estimates_csv(estimates: dict[str, Any]) -> str:
    """The estimates as CSV, one row per estimated column."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ESTIMATE_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for column, values in (estimates.get("estimates") or {}).items():
        writer.writerow({"column": column, **values})
    return out.getvalue()


@dg.asset(
    key=etl_key("etl_report"),
    deps=[etl_sample_estimates],
    group_name=GROUP,
    kinds={"html", "json"},
    owners=OWNERS,
)
def etl_report(context: dg.AssetExecutionContext, etl: EtlResource) -> dg.MaterializeResult:
    """The self-contained HTML report (dark theme, inline CSS and SVG charts, no URL of
    any kind): top products by value, estimate vs exact with interval bars (currency
    units), dead-letter reasons, the real sample size and fraction, input files with their
    sha256, duplicates, rejected files with their reasons, the run configuration, timings
    and the system profile; report.json (its data) and estimates.csv beside it in
    $BI_PLATFORM_HOME/etl/report. The previous report moves to etl/backup/<UTC time>/
    (the last ETL_BACKUP_KEEP are kept). ``dagster/row_count``: the records it covers."""
    started = time.perf_counter()
    estimates_path = etl.estimates_dir / ESTIMATES_FILE
    if not estimates_path.is_file():
        raise dg.Failure(f"{estimates_path} does not exist: materialize etl_sample_estimates")
    stored = json.loads(estimates_path.read_text())
    holders = stored.get("records") or {}
    files = []
    for key in stored["partitions"]:
        summary = read_summary(etl, key) or {"partition_key": key}
        holder = holders.get(key) or key
        if holder != key:  # a duplicate counted for content processed under another key
            counts = read_summary(etl, holder) or {}
            summary = {
                **counts,
                **{k: summary.get(k) for k in ("partition_key", "source_file", "sha256")},
                "note": f"same content as {holder}, processed once",
            }
        files.append(ProcessedFile(key, summary, holder))
    reasons: Counter[str] = Counter()
    for item in files:
        reasons.update(item.summary.get("dead_letter_reasons") or {})
    t0 = time.perf_counter()
    top = top_products(read_records([records_path(etl, f.records_key or f.key) for f in files]))
    top_seconds = time.perf_counter() - t0
    estimates = stored["estimates"]
    rejected = [
        {"name": r["name"], "reason": r["reason"], "stage": "parse", "sha256": r.get("sha256")}
        for r in stored.get("rejected") or []
    ] + [
        {"name": r["name"], "reason": r["reason"], "stage": "inbox"}
        for r in stored.get("refused") or []
    ]
    report_context = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [item.summary for item in files],
        "duplicates": stored.get("duplicates") or [],
        "rejected": rejected,
        "dead_letter_reasons": dict(reasons.most_common()),
        "top_products": top,
        "estimates": estimates,
        "config": etl.describe(),
        "timings": {
            "parse_seconds": round(sum(float(f.summary.get("seconds") or 0) for f in files), 3),
            "estimation_seconds": round(float(estimates.get("seconds") or 0), 3),
            "top_products_seconds": round(top_seconds, 3),
        },
        "system": system_profile(),
    }
    html = render_report(report_context)
    report_context["timings"]["report_seconds"] = round(time.perf_counter() - started, 3)
    outputs = {
        "report.html": html,
        "report.json": json.dumps(report_context, indent=2, default=str) + "\n",
        "estimates.csv": estimates_csv(estimates),
    }
    written = publish_report(etl.report_dir, outputs, etl.backup_dir, keep=etl.keep)
    backups = sorted(p.name for p in etl.backup_dir.iterdir()) if etl.backup_dir.exists() else []
    records_out = sum(f.records_out for f in files)
    context.log.info("report written to %s", written["report.html"])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": records_out,
            "path": dg.MetadataValue.path(str(written["report.html"])),
            "json_path": dg.MetadataValue.path(str(written["report.json"])),
            "files": len(files),
            "duplicates": len(report_context["duplicates"]),
            "rejected": len(rejected),
            "records_out": records_out,
            "dead_letter": sum(f.dead_letter for f in files),
            "backups": backups,
            "summary": dg.MetadataValue.md(_summary_markdown(files, estimates)),
        }
    )


def _summary_markdown(files: list[ProcessedFile], estimates: dict[str, Any]) -> str:
    lines = [
        "| file | format | in | out | dead letter |",
        "| --- | --- | ---: | ---: | ---: |",
        *(
            f"| {f.key} | {f.summary.get('format')} | {f.records_in} | {f.records_out} "
            f"| {f.dead_letter} |"
            for f in files
        ),
        "",
        "| total | estimate | exact | relative error | CI covers |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for column, e in (estimates.get("estimates") or {}).items():
        lines.append(
            f"| {column} | {e.get('estimate')} | {e.get('exact')} | "
            f"{e.get('relative_error')} | {e.get('covers')} |"
        )
    return "\n".join(lines)


etl_assets = [etl_ingest_file, etl_sample_estimates, etl_report]
