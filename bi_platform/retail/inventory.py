"""The table inventory: size, rows, columns and the engine each retail table routes to
under the threshold in force.

Reads Parquet footers only: no table is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bi_platform.io_managers.engines import (
    EngineConfig,
    choose_engine,
    parquet_files,
    parquet_row_count,
    parquet_schema,
    size_mb,
)
from bi_platform.lib.files import write_text_atomic


def analyze_tables(tables: Mapping[str, Path], config: EngineConfig) -> dict[str, Any]:
    """The inventory of ``tables`` under ``config``.

    Args:
        tables: Table name -> Parquet file or directory.
        config: The engine thresholds in force.

    Returns:
        One entry per table (sorted by name) plus totals, as written to the JSON report.
    """
    entries = []
    for name, path in sorted(tables.items()):
        files = parquet_files(path)
        size = size_mb(files)
        engine, reason = choose_engine(size, config)
        entries.append(
            {
                "name": name,
                "path": str(path),
                "files": len(files),
                "size_mb": round(size, 3),
                "rows": parquet_row_count(files),
                "columns": len(parquet_schema(files)),
                "engine": str(engine),
                "reason": reason,
            }
        )
    return {
        "threshold_mb": config.threshold_mb(),
        "total_tables": len(entries),
        "total_size_gb": round(sum(e["size_mb"] for e in entries) / 1024, 4),
        "total_rows": sum(e["rows"] for e in entries),
        "polars_recommended": sum(e["engine"] == "polars" for e in entries),
        "dask_recommended": sum(e["engine"] == "dask" for e in entries),
        "tables": entries,
    }


def inventory_markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table (shown in the Dagster UI)."""
    lines = [
        f"Threshold in force: **{report['threshold_mb']:g} MB** — "
        f"{report['polars_recommended']} tables on Polars, "
        f"{report['dask_recommended']} on Dask, {report['total_rows']:,} rows.",
        "",
        "| table | size (MB) | rows | columns | engine |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {e['name']} | {e['size_mb']:.2f} | {e['rows']:,} | {e['columns']} | {e['engine']} |"
        for e in report["tables"]
    ]
    return "\n".join(lines)


def write_json_atomic(report: Mapping[str, Any], path: Path) -> Path:
    """Write ``report`` as indented JSON to ``path``, atomically and durably.

    Args:
        report: The inventory (see :func:`analyze_tables`).
        path: The JSON file; its parent directories are created.

    Returns:
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
