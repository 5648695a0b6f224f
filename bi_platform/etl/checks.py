"""Checks of the ETL: each failure names the files (partition keys) and counts involved.

On ``etl_records``, for the partitions of the run (every file with an outcome when run
alone):

- ``records_reconcile`` (blocking): records in, recounted from the source file (read
  through a descriptor opened without following links, see
  :func:`~bi_platform.etl.assets.open_source`), equal records out plus dead-letter
  entries, both read from their Parquet footers; a file that was not parsed (a duplicate,
  a file rejected as unreadable) must have loaded nothing. A file that does not reconcile
  is recorded as rejected (audit log, report) and the check fails, which fails its run;
- ``dead_letter_rate`` (warning): at most :data:`MAX_DEAD_LETTER_RATE` of a file's
  records go to the dead-letter queue;
- ``file_accepted`` (warning): the file was not rejected as a whole (the reason is in the
  metadata); duplicates pass.
"""

import mmap
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from bi_platform.etl.assets import (
    PROCESSED,
    RECORDS,
    REJECTED,
    dead_letter_path,
    open_source,
    read_summary,
    records_path,
    reject,
)
from bi_platform.etl.layouts import RecordLayout
from bi_platform.etl.parse_common import detect_format
from bi_platform.etl.parse_parquet import fd_file
from bi_platform.etl.resources import EtlResource

MAX_DEAD_LETTER_RATE = 0.05
SHOWN = 10  # files listed in a failure's metadata
_LF, _CR = 10, 13


def _keys(context: dg.AssetCheckExecutionContext, etl: EtlResource) -> list[str]:
    """The run's partitions of etl_records, or every file with an outcome outside a
    partitioned run."""
    op = context.op_execution_context
    if op.has_partition_key or op.has_partition_key_range:
        return list(op.partition_keys)
    if not etl.records_dir.is_dir():
        return []
    return sorted(p.stem for p in etl.records_dir.glob("*.json"))


def _rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def count_csv_records(data: np.ndarray) -> int:
    """Records of a CSV file, counted independently of the parser: the lines after the
    first (ended by LF; a last line without LF counts) that are not empty once one CR
    before the LF is dropped.

    Args:
        data: The file's bytes (uint8).

    Returns:
        The number of records.
    """
    breaks = np.flatnonzero(data == _LF)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(data)]])
    if len(data) and data[-1] == _LF:
        starts, ends = starts[:-1], ends[:-1]
    lengths = ends - starts
    lone_cr = lengths == 1
    lone_cr[lone_cr] = data[starts[lone_cr]] == _CR
    blank = (lengths == 0) | lone_cr
    return int(np.count_nonzero(~blank[1:]))


def count_source_records(fd: int, size: int, fmt: str, layout: RecordLayout) -> int:
    """Records in a source file, read through the open descriptor ``fd`` and counted
    independently of the parser.

    Args:
        fd: The source file's descriptor.
        size: Its size in bytes.
        fmt: ``binary``, ``csv`` or ``parquet``.
        layout: The record layout (binary files).

    Returns:
        Binary: the record slots (a trailing partial record counts); CSV: see
        :func:`count_csv_records`; Parquet: the footer's row count.
    """
    if fmt == "binary":
        return -(-size // layout.record_size)
    if fmt == "parquet":
        with fd_file(fd) as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    if size == 0:
        return 0
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
        data = np.frombuffer(mapped, np.uint8)
        count = count_csv_records(data)
        del data
    return count


def reconcile(etl: EtlResource, key: str) -> dict[str, Any]:
    """Recount one file with an outcome from the source and the two Parquet footers.

    Args:
        etl: The resource.
        key: The partition key.

    Returns:
        ``file, records_in, records_out, dead_letter``, ``balanced`` (whether they agree;
        for a file that was not parsed: whether nothing was loaded) and ``parsed``.
        Raises ``OSError``/``ValueError`` when the source or an output cannot be read.
    """
    summary = read_summary(etl, key)
    if summary is None:
        raise FileNotFoundError(f"{key}: no summary (the file was not processed)")
    records_out = _rows(records_path(etl, key))
    dead_letter = _rows(dead_letter_path(etl, key))
    parsed = bool(summary.get("parsed", True))
    if parsed:
        with open_source(etl, key, summary) as (opened, _):
            fmt = detect_format(Path(opened.name))
            records_in = count_source_records(opened.fd, opened.size, fmt, etl.record_layout())
        balanced = records_in == records_out + dead_letter
    else:
        records_in = 0
        balanced = records_out == 0 and dead_letter == 0
    return {
        "file": key,
        "records_in": records_in,
        "records_out": records_out,
        "dead_letter": dead_letter,
        "balanced": balanced,
        "parsed": parsed,
    }


@dg.asset_check(
    asset=RECORDS,
    name="records_reconcile",
    blocking=True,
    description=(
        "For every file: records in (recounted from the source file) = records out + "
        "dead-letter entries (from the two Parquet footers); a file that was not parsed "
        "(duplicate, unreadable) loaded nothing. A file that does not reconcile is "
        "recorded as rejected."
    ),
)
def records_reconcile(
    context: dg.AssetCheckExecutionContext, etl: EtlResource
) -> dg.AssetCheckResult:
    results, errors = [], {}
    for key in _keys(context, etl):
        try:
            results.append(reconcile(etl, key))
        except (OSError, ValueError) as exc:  # vanished/changed source, unreadable output
            errors[key] = str(exc)
    unbalanced = [r for r in results if not r["balanced"]]
    for r in unbalanced:
        reason = (
            f"records do not reconcile: {r['records_in']} in, {r['records_out']} out, "
            f"{r['dead_letter']} dead-lettered"
        )
        context.log.error("%s: %s", r["file"], reason)
        reject(etl, r["file"], reason)
    return dg.AssetCheckResult(
        passed=not unbalanced and not errors,
        metadata={
            "files": len(results) + len(errors),
            "records_in": sum(r["records_in"] for r in results),
            "records_out": sum(r["records_out"] for r in results),
            "dead_letter": sum(r["dead_letter"] for r in results),
            "unbalanced": [
                f"{r['file']}: in={r['records_in']} out={r['records_out']} "
                f"dead_letter={r['dead_letter']}"
                for r in unbalanced[:SHOWN]
            ],
            "errors": dg.MetadataValue.json(dict(list(errors.items())[:SHOWN])),
            "per_file": dg.MetadataValue.json(
                {r["file"]: [r["records_in"], r["records_out"], r["dead_letter"]] for r in results}
            ),
        },
    )


@dg.asset_check(
    asset=RECORDS,
    name="dead_letter_rate",
    description=(
        f"At most {MAX_DEAD_LETTER_RATE:.0%} of each file's records go to the dead-letter "
        "queue (a warning: the file is processed, its producer should look)."
    ),
)
def dead_letter_rate(
    context: dg.AssetCheckExecutionContext, etl: EtlResource
) -> dg.AssetCheckResult:
    rates = {}
    for key in _keys(context, etl):
        if read_summary(etl, key) is None:
            continue
        total = _rows(records_path(etl, key)) + (dead := _rows(dead_letter_path(etl, key)))
        rates[key] = round(dead / total, 6) if total else 0.0
    over = {k: v for k, v in sorted(rates.items()) if v > MAX_DEAD_LETTER_RATE}
    return dg.AssetCheckResult(
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "threshold": MAX_DEAD_LETTER_RATE,
            "files": len(rates),
            "files_over_threshold": [f"{k}: {v:.2%}" for k, v in list(over.items())[:SHOWN]],
            "max_rate": max(rates.values(), default=0.0),
        },
    )


@dg.asset_check(
    asset=RECORDS,
    name="file_accepted",
    description=(
        "Each file was accepted as a whole: not rejected as unreadable, corrupt, "
        "misaligned or unreconciled (a warning: a rejected file counts nothing, is listed "
        "with its reason in the report and is retried only when its content changes)."
    ),
)
def file_accepted(context: dg.AssetCheckExecutionContext, etl: EtlResource) -> dg.AssetCheckResult:
    outcomes: dict[str, str] = {}
    rejected: dict[str, str] = {}
    for key in _keys(context, etl):
        summary = read_summary(etl, key)
        if summary is None:
            continue
        outcomes[key] = str(summary.get("outcome") or PROCESSED)
        if outcomes[key] == REJECTED:
            rejected[key] = str(summary.get("reason") or "rejected")
    return dg.AssetCheckResult(
        passed=not rejected,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "files": len(outcomes),
            "outcomes": dg.MetadataValue.json(dict(sorted(outcomes.items())[:SHOWN])),
            "rejected": dg.MetadataValue.json(dict(list(rejected.items())[:SHOWN])),
        },
    )


etl_checks = [records_reconcile, dead_letter_rate, file_accepted]
