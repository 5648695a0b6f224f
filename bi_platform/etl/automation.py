"""Jobs and sensors of the ETL domain.

- ``etl_inbox_sensor`` (every 30 s): new files in $BI_PLATFORM_HOME/etl/inbox become
  partitions of ``etl_files`` (``<name>@<sha256 prefix>``: an identical re-drop adds
  nothing, a changed file a new partition) and each starts its ``etl_file_job`` run;
  rejected files (unsafe name, symlink escaping the inbox, too large, empty, unsupported
  type) are written to the audit log once, never read.
- ``etl_report_sensor`` (every 30 s): when the state of the files (which version of each
  name counts -- the one matching its current content --, the duplicates, the rejected
  and refused files, see :func:`~bi_platform.etl.assets.file_states`) differs from the
  one the published estimates cover, ``etl_report_job`` refreshes the estimates and the
  report; one refresh at a time, a burst of files makes one refresh.

A rejected file's run completes (its partition is materialized with the ``rejected``
outcome), so neither the sensor (run key = partition key) nor ``bi-platform materialize``
(:func:`pending_partitions`) runs it again; a new content is a new partition.
- :func:`register_inbox_partitions` and :func:`pending_partitions`: the sensor's
  registration without the daemon, for ``bi-platform etl register`` and ``bi-platform
  materialize``.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import dagster as dg

from bi_platform.etl.assets import (
    DEAD_LETTER,
    ESTIMATES_FILE,
    RECORDS,
    etl_files,
    etl_report,
    etl_sample_estimates,
    file_states,
)
from bi_platform.etl.inbox import InboxFile, hash_cache, scan_inbox
from bi_platform.etl.resources import EtlResource
from bi_platform.etl.security import AUDIT_DETAIL_MAX, AuditLog

etl_file_job = dg.define_asset_job(
    "etl_file_job",
    selection=dg.AssetSelection.assets(RECORDS, DEAD_LETTER),
    executor_def=dg.in_process_executor,
    description="One inbox file into its records and dead-letter queue, then its checks.",
)

etl_report_job = dg.define_asset_job(
    "etl_report_job",
    selection=dg.AssetSelection.assets(etl_sample_estimates, etl_report),
    executor_def=dg.in_process_executor,
    description="The stratified estimates and the HTML report over every processed file.",
)


def audit_rejections(audit: AuditLog, rejected: Sequence[tuple[str, str]]) -> list[str]:
    """Audit each rejected file once: unless the latest audit entry of that name already
    is this rejection. Returns the names audited now."""
    latest = {entry.get("name"): entry for entry in audit.entries()}
    audited = []
    for name, reason in rejected:
        entry = latest.get(name)
        same = entry and entry.get("detail") == reason[:AUDIT_DETAIL_MAX]
        if same and entry.get("result") == "rejected":
            continue
        audit.record(name=name, size=None, sha256=None, result="rejected", detail=reason)
        audited.append(name)
    return audited


class Registration(NamedTuple):
    """What :func:`register_inbox_partitions` did."""

    added: list[str]  # partition keys added now
    all_keys: list[str]  # every registered partition, in registration order
    rejected: list[tuple[str, str]]  # (file name, reason)
    current: list[str]  # keys of the files now in the inbox


def register_inbox_partitions(
    instance: dg.DagsterInstance,
    inbox: Path,
    max_bytes: int,
    audit_path: Path | None = None,
) -> Registration:
    """Add a partition for every accepted inbox file not registered yet, audit the rejected
    ones (once), and drop partitions that were never materialized and whose file is gone
    or changed (they can no longer run).

    Args:
        instance: The Dagster instance.
        inbox: The inbox directory.
        max_bytes: The size limit.
        audit_path: The audit log (default: ``audit.jsonl`` beside the inbox); the hash
            cache is ``state/inbox_hashes.json`` beside it too.

    Returns:
        The :class:`Registration`: keys added, all keys, rejected files, current keys.
    """
    inbox = Path(inbox)
    accepted, rejected = scan_inbox(
        inbox, max_bytes, cache_path=inbox.parent / "state" / "inbox_hashes.json"
    )
    current = [f.partition_key for f in accepted]
    existing = instance.get_dynamic_partitions(etl_files.name)
    materialized = instance.get_materialized_partitions(RECORDS)
    stale = [k for k in existing if k not in materialized and k not in set(current)]
    for key in stale:
        instance.delete_dynamic_partition(etl_files.name, key)
    known = set(existing)
    added = [key for key in current if key not in known]
    if added:
        instance.add_dynamic_partitions(etl_files.name, added)
    audit_rejections(AuditLog(audit_path or inbox.parent / "audit.jsonl"), rejected)
    return Registration(
        added, list(instance.get_dynamic_partitions(etl_files.name)), rejected, current
    )


def pending_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> list[str]:
    """Those of ``keys`` (registered partitions) that have no outcome yet: their records
    were never materialized (every outcome -- processed, duplicate, rejected --
    materializes them), in registration order.

    Args:
        instance: The Dagster instance.
        keys: Candidate partition keys (e.g. the current inbox files').

    Returns:
        The pending keys.
    """
    materialized = instance.get_materialized_partitions(RECORDS)
    wanted = set(keys)
    return [
        key
        for key in instance.get_dynamic_partitions(etl_files.name)
        if key in wanted and key not in materialized
    ]


def _cursor(raw: str | None) -> dict:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dg.sensor(job=etl_file_job, minimum_interval_seconds=30)
def etl_inbox_sensor(context: dg.SensorEvaluationContext, etl: EtlResource) -> dg.SensorResult:
    """New inbox files become ``etl_files`` partitions, each with its run (the run key is
    the partition key, so a file version runs once). The cursor keeps the hashes of
    unchanged files (same identity: device, inode, size, mtime, ctime) and so does the
    shared hash cache, so big files are not hashed every 30 s."""
    cursor = _cursor(context.cursor)
    accepted, rejected = scan_inbox(
        etl.inbox_dir, etl.max_bytes, known=cursor.get("hashes"), cache_path=etl.hash_cache_path
    )
    existing = set(context.instance.get_dynamic_partitions(etl_files.name))
    new: list[InboxFile] = [f for f in accepted if f.partition_key not in existing]
    audited = audit_rejections(etl.audit_log(), rejected) if rejected else []
    if audited:
        context.log.warning("rejected inbox files: %s", {n: r for n, r in rejected})
    for item in new:
        context.log.info(
            "new inbox file %s (%d bytes): %s", item.name, item.size, item.partition_key
        )
    keys = [f.partition_key for f in new]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=key) for key in keys],
        dynamic_partitions_requests=[etl_files.build_add_request(keys)] if keys else [],
        cursor=json.dumps({"hashes": hash_cache(accepted)}, sort_keys=True),
    )


def report_is_stale(instance: dg.DagsterInstance, etl: EtlResource) -> tuple[bool, list[str]]:
    """Whether the published estimates cover another state of the files than the current
    one (:func:`~bi_platform.etl.assets.file_states`: the version of each name that
    counts, duplicates, rejected and refused files), when some file counts.

    Args:
        instance: The Dagster instance.
        etl: The resource.

    Returns:
        ``(stale, keys)``: ``keys`` identify the current state (one line per file, for
        the run key).
    """
    states = file_states(instance, etl)
    state = states.state()
    keys = [json.dumps(entry, separators=(",", ":")) for group in state.values() for entry in group]
    published = etl.estimates_dir / ESTIMATES_FILE
    try:
        covered = json.loads(published.read_text()).get("state")
    except (OSError, ValueError):
        covered = None
    return bool(states.counted) and state != covered, keys


@dg.sensor(job=etl_report_job, minimum_interval_seconds=30)
def etl_report_sensor(context: dg.SensorEvaluationContext, etl: EtlResource) -> dg.SensorResult:
    """Refresh the estimates and the report when the state of the files (the version of
    each name matching its current content, whose run succeeded; duplicates; rejected and
    refused files) differs from the one the published estimates cover; one refresh at a
    time. It compares states rather than reacting to run events, so nothing is missed
    while it is stopped or starting."""
    waiting = context.instance.get_runs(
        filters=dg.RunsFilter(
            job_name=etl_report_job.name,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if waiting:
        return dg.SensorResult(skip_reason=f"a report refresh is running ({waiting[0].run_id})")
    stale, keys = report_is_stale(context.instance, etl)
    if not stale:
        return dg.SensorResult(skip_reason="the report covers the current files")
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"files:{digest}", tags={"etl/files": str(len(keys))})]
    )
