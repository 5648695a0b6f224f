"""ETL assets: inbox files -> records + dead-letter queue (one partition per file) ->
stratified estimates -> the HTML report.

etl_records + etl_dead_letter (per file) --> etl_sample_estimates --> etl_report

A partition is one inbox file version, keyed ``<name>@<sha256 prefix>`` (see
:mod:`bi_platform.etl.inbox`); the ``etl_inbox_sensor`` adds them. Each processed file
leaves ``records/<key>.parquet``, ``dead_letter/<key>.parquet`` (+ ``.csv``) and a
summary ``records/<key>.json`` under ``$BI_PLATFORM_HOME/etl``.
"""

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from bi_platform.etl.estimation import stratified_estimate
from bi_platform.etl.inbox import split_partition_key
from bi_platform.etl.parser import DEAD_LETTER_SCHEMA, EtlInputError, parse_file, read_records
from bi_platform.etl.report import publish_report, render_report, system_profile, top_products
from bi_platform.etl.resources import EtlResource
from bi_platform.etl.security import (
    UnsafeInputError,
    check_file_size,
    resolve_inbox_file,
    sha256_file,
    write_csv_safe,
)
from bi_platform.sample_data.files import write_bytes_atomic

GROUP = "etl"
OWNERS = ["team:data-engineering"]
ESTIMATES_FILE = "estimates.json"

#: One partition per inbox file version: ``<file name>@<first 16 hex of its sha256>``.
etl_files = dg.DynamicPartitionsDefinition(name="etl_files")


def etl_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


RECORDS = etl_key("etl_records")
DEAD_LETTER = etl_key("etl_dead_letter")


def table_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


# -- per file --------------------------------------------------------------------------
class FileChangedError(UnsafeInputError):
    """The file behind a partition vanished or no longer has the registered content."""


def records_path(etl: EtlResource, key: str) -> Path:
    return etl.records_dir / f"{key}.parquet"


def summary_path(etl: EtlResource, key: str) -> Path:
    return etl.records_dir / f"{key}.json"


def dead_letter_path(etl: EtlResource, key: str, suffix: str = ".parquet") -> Path:
    return etl.dead_letter_dir / f"{key}{suffix}"


def verified_source(etl: EtlResource, key: str) -> tuple[Path, int, str]:
    """(path, size, sha256) of the inbox file of partition ``key``, re-checked now:
    confined to the inbox, within the size limit, same content as when registered."""
    name, prefix = split_partition_key(key)
    candidate = etl.inbox_dir / name
    if not candidate.exists() and not candidate.is_symlink():
        raise FileChangedError(f"{name}: vanished from the inbox {etl.inbox_dir} (partition {key})")
    path = resolve_inbox_file(etl.inbox_dir, name)
    size = check_file_size(path, etl.max_bytes)
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        raise FileChangedError(
            f"{name}: changed since partition {key} was registered (sha256 now "
            f"{digest[:16]}...); the new content gets its own partition"
        )
    return path, size, digest


@dataclass(frozen=True)
class ProcessedFile:
    """One inbox file run through the parser (the ``records/<key>.json`` summary)."""

    key: str
    summary: dict[str, Any]

    @property
    def records_in(self) -> int:
        return int(self.summary["records_in"])

    @property
    def records_out(self) -> int:
        return int(self.summary["records_out"])

    @property
    def dead_letter(self) -> int:
        return int(self.summary["dead_letter"])


def process_file(etl: EtlResource, key: str) -> ProcessedFile:
    """Parse the file of partition ``key`` into its records and dead-letter files, write
    the dead-letter CSV (formula-neutralised) and the summary, and audit the outcome."""
    audit = etl.audit_log()
    name, _ = split_partition_key(key)
    size = digest = None
    try:
        path, size, digest = verified_source(etl, key)
        for directory in (etl.records_dir, etl.dead_letter_dir):
            directory.mkdir(parents=True, exist_ok=True)
        result = parse_file(
            path,
            records_path(etl, key),
            dead_letter_path(etl, key),
            etl.parse_options(),
            source_name=name,
        )
        write_csv_safe(
            pq.ParquetFile(result.dead_letter_path).read(), dead_letter_path(etl, key, ".csv")
        )
    except (UnsafeInputError, EtlInputError, OSError) as exc:
        audit.record(name=name, size=size, sha256=digest, result="failed", detail=str(exc))
        raise
    summary = {
        **result.as_metadata(),
        "partition_key": key,
        "sha256": digest,
        "processed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_bytes_atomic(
        summary_path(etl, key), (json.dumps(summary, indent=2, default=str) + "\n").encode()
    )
    audit.record(
        name=name,
        size=size,
        sha256=digest,
        result="processed",
        detail=(
            f"partition {key}: {result.records_in} in, {result.records_out} out, "
            f"{result.dead_letter} dead-lettered"
        ),
    )
    return ProcessedFile(key, summary)


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
    """Parse the inbox file of the run's partition: confinement, size and content hash
    re-checked first; a file that vanished or changed fails with the reason. One parse
    writes both the records and the dead-letter queue (the same content for the same
    partition); a run selecting one of them reports only that one. One file per run
    (a backfill runs each file on its own), so each partition's metadata is its own."""
    key = context.partition_key
    try:
        item = process_file(etl, key)
    except (UnsafeInputError, EtlInputError, OSError, ValueError) as exc:
        context.log.error("%s: %s", key, exc)
        raise dg.Failure(
            description=f"{key} could not be processed: {exc}",
            metadata={"partition": key, "error": str(exc)},
        ) from exc
    context.log.info(
        "%s: %d records in, %d out, %d dead-lettered in %.2fs",
        key,
        item.records_in,
        item.records_out,
        item.dead_letter,
        float(item.summary.get("seconds") or 0.0),
    )
    reasons = item.summary.get("dead_letter_reasons") or {}
    records_meta: dict[str, Any] = {
        "dagster/row_count": item.records_out,
        "dagster/column_schema": table_schema(etl.record_layout().arrow_schema),
        "records_in": item.records_in,
        "records_out": item.records_out,
        "dead_letter": item.dead_letter,
        "source_file": split_partition_key(key)[0],
        "format": str(item.summary.get("format")),
        "size_bytes": int(item.summary.get("size_bytes") or 0),
        "sha256": item.summary["sha256"],
        "seconds": float(item.summary.get("seconds") or 0.0),
        "path": dg.MetadataValue.path(str(records_path(etl, key))),
    }
    dead_meta: dict[str, Any] = {
        "dagster/row_count": item.dead_letter,
        "dagster/column_schema": table_schema(DEAD_LETTER_SCHEMA),
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


# -- over all processed files ------------------------------------------------------------
def processed_files(
    instance: dg.DagsterInstance, etl: EtlResource, current_run_id: str | None = None
) -> tuple[list[ProcessedFile], list[str]]:
    """The processed files the estimates and report cover, and the superseded keys.

    A partition counts when its latest ``etl_records`` materialization belongs to a
    successful run (so its blocking check passed) or to ``current_run_id``, and its
    summary is on disk. Of several versions of one file name only the latest counts.
    """
    keys = set(instance.get_dynamic_partitions(etl_files.name))
    latest = {
        key: storage_id
        for key, storage_id in instance.get_latest_storage_id_by_partition(
            RECORDS, dg.DagsterEventType.ASSET_MATERIALIZATION
        ).items()
        if key in keys
    }
    if not latest:
        return [], []
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RECORDS, storage_ids=list(latest.values())),
        limit=len(latest),
    ).records
    run_of = {r.storage_id: r.run_id for r in records}
    runs = {
        run.run_id: run.status
        for run in instance.get_runs(filters=dg.RunsFilter(run_ids=list(set(run_of.values()))))
    }
    best: dict[str, tuple[int, str]] = {}
    for key, storage_id in latest.items():
        run_id = run_of.get(storage_id)
        ok = run_id == current_run_id or runs.get(run_id) == dg.DagsterRunStatus.SUCCESS
        if not ok or not summary_path(etl, key).is_file():
            continue
        name, _ = split_partition_key(key)
        if name not in best or storage_id > best[name][0]:
            best[name] = (storage_id, key)
    chosen = sorted(key for _, key in best.values())
    superseded = sorted(set(latest) - set(chosen))
    files = [ProcessedFile(key, json.loads(summary_path(etl, key).read_text())) for key in chosen]
    return files, superseded


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
    """Totals of quantity and value over every processed file, estimated from a seeded
    stratified random sample (strata = product, allocation proportional to sqrt(N_h),
    at least 2 per stratum, expansion weights N_h/n_h) with standard errors and 95%
    confidence intervals, next to the exact totals: relative error and whether each
    interval covers the truth. Sample fraction ETL_SAMPLE_FRACTION (default 0.5%).
    Written to $BI_PLATFORM_HOME/etl/estimates/estimates.json."""
    files, superseded = processed_files(context.instance, etl, context.run.run_id)
    if not files:
        raise dg.Failure(
            "no processed ETL file yet: drop files in the inbox and materialize etl_records"
        )
    paths = [records_path(etl, f.key) for f in files]
    result = stratified_estimate(read_records(paths), fraction=etl.fraction, seed=etl.seed)
    estimates = result.as_metadata()
    _write_json(
        etl.estimates_dir / ESTIMATES_FILE,
        {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "partitions": [f.key for f in files],
            "superseded": superseded,
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
    context.log.info("estimates over %d files: %s", len(files), per_column)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(result.estimates),
            "dagster/column_schema": ESTIMATES_SCHEMA,
            "files": len(files),
            "superseded_partitions": superseded,
            "population": result.population,
            "sample_size": result.sample_size,
            "strata": result.strata,
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
    any kind): top products by value, estimate vs exact with interval bars, dead-letter
    reasons, input files with their sha256, the run configuration, timings and the system
    profile; report.json (its data) and estimates.csv beside it in
    $BI_PLATFORM_HOME/etl/report. The previous report moves to etl/backup/<UTC time>/
    (the last ETL_BACKUP_KEEP are kept). ``dagster/row_count``: the records it covers."""
    started = time.perf_counter()
    estimates_path = etl.estimates_dir / ESTIMATES_FILE
    if not estimates_path.is_file():
        raise dg.Failure(f"{estimates_path} does not exist: materialize etl_sample_estimates")
    stored = json.loads(estimates_path.read_text())
    files = [
        ProcessedFile(key, json.loads(summary_path(etl, key).read_text()))
        for key in stored["partitions"]
    ]
    reasons: Counter[str] = Counter()
    for item in files:
        reasons.update(item.summary.get("dead_letter_reasons") or {})
    t0 = time.perf_counter()
    top = top_products(read_records([records_path(etl, f.key) for f in files]))
    top_seconds = time.perf_counter() - t0
    estimates = stored["estimates"]
    report_context = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": [item.summary for item in files],
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
