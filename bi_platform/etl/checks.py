"""Checks of the ETL: each failure names the files (partition keys) and counts involved.

On ``etl_records``, for the partitions of the run (every processed file when run alone):

- ``records_reconcile`` (blocking): records in, recounted from the source file, equal
  records out plus dead-letter entries, both read from their Parquet footers;
- ``dead_letter_rate`` (warning): at most :data:`MAX_DEAD_LETTER_RATE` of a file's
  records go to the dead-letter queue.
"""

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from bi_platform.etl.assets import (
    RECORDS,
    dead_letter_path,
    records_path,
    summary_path,
    verified_source,
)
from bi_platform.etl.layouts import RecordLayout
from bi_platform.etl.parser import detect_format
from bi_platform.etl.resources import EtlResource

MAX_DEAD_LETTER_RATE = 0.05
SHOWN = 10  # files listed in a failure's metadata


def _keys(context: dg.AssetCheckExecutionContext, etl: EtlResource) -> list[str]:
    """The run's partitions of etl_records, or every processed file outside a
    partitioned run."""
    op = context.op_execution_context
    if op.has_partition_key or op.has_partition_key_range:
        return list(op.partition_keys)
    if not etl.records_dir.is_dir():
        return []
    return sorted(p.stem for p in etl.records_dir.glob("*.json"))


def _rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def count_source_records(path: Path, layout: RecordLayout) -> int:
    """Records in a source file, counted independently of the parser: binary, the
    record slots (a trailing partial record counts); CSV, the non-empty lines after the
    header (values never span lines); Parquet, the footer's row count."""
    fmt = detect_format(path)
    if fmt == "binary":
        return -(-path.stat().st_size // layout.record_size)
    if fmt == "parquet":
        return _rows(path)
    lines = 0
    with path.open("rb") as f:
        for line in f:
            if line.strip(b"\r\n"):
                lines += 1
    return max(lines - 1, 0)


def reconcile(etl: EtlResource, key: str) -> dict[str, Any]:
    """In/out/dead-letter counts of one processed file, recounted from the files."""
    source, _, _ = verified_source(etl, key)
    records_in = count_source_records(source, etl.record_layout())
    records_out = _rows(records_path(etl, key))
    dead_letter = _rows(dead_letter_path(etl, key))
    return {
        "file": key,
        "records_in": records_in,
        "records_out": records_out,
        "dead_letter": dead_letter,
        "balanced": records_in == records_out + dead_letter,
    }


@dg.asset_check(
    asset=RECORDS,
    name="records_reconcile",
    blocking=True,
    description=(
        "For every file: records in (recounted from the source file) = records out + "
        "dead-letter entries (from the two Parquet footers)."
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
        path = summary_path(etl, key)
        if not path.is_file():
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


etl_checks = [records_reconcile, dead_letter_rate]
