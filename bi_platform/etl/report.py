"""The ETL run report: a self-contained HTML page (Jinja2, inline CSS and SVG) and its
publication with backups of the previous outputs.

The page makes no request of any kind: no script, no stylesheet, font or image link, no URL
(no ``http``, no ``//``, no ``xmlns``). Chart geometry is computed here; every text shown,
product names included, is escaped by the template's autoescape.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
import psutil

from bi_platform.lib.files import atomic_path

logger = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
_DASH = "\N{EN DASH}"
BACKUP_NAME = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")

# -- facts gathered for the report -------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> str | None:
    """GPUs reported by ``nvidia-smi`` when it is on PATH, else None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.info("nvidia-smi did not answer: %s", exc)
        return None
    if done.returncode != 0:
        logger.info("nvidia-smi exited with %d: no GPU reported", done.returncode)
        return None
    gpus = [", ".join(p.strip() for p in line.split(",")) for line in done.stdout.splitlines()]
    gpus = [g for g in gpus if g]
    return "; ".join(gpus) if gpus else None


def system_profile() -> dict[str, Any]:
    """Cores, RAM, platform, Python, library versions and the GPU (``None`` if there is none)."""
    import numpy
    import pyarrow

    return {
        "cpu": _cpu_model(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": {
            "polars": pl.__version__,
            "pyarrow": pyarrow.__version__,
            "numpy": numpy.__version__,
        },
        "gpu": _gpus(),
    }


def top_products(records: pl.LazyFrame, n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` products with the largest total value, largest first; ties by name.

    Args:
        records: The records (``product``, ``value`` in cents).
        n: How many.

    Returns:
        ``(product, total value in cents)`` pairs; totals are exact integers (summed in
        128 bits: no wrap).
    """
    top = (
        records.lazy()
        .group_by("product")
        .agg(pl.col("value").cast(pl.Int128).sum().alias("value"))
        .sort(["value", "product"], descending=[True, False], nulls_last=True)
        .head(n)
        .collect(engine="streaming")
    )
    return [("" if p is None else str(p), int(v)) for p, v in top.iter_rows()]


# -- formatting --------------------------------------------------------------------------------


def _int(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def _money(cents: Any) -> str:
    """Cents as currency units with two decimals (exact for integers of any size)."""
    if cents is None:
        return "—"
    if isinstance(cents, int) or (isinstance(cents, float) and cents.is_integer()):
        whole = int(cents)
        sign = "-" if whole < 0 else ""
        units, rest = divmod(abs(whole), 100)
        return f"{sign}{units:,}.{rest:02d}"
    return f"{float(cents) / 100:,.2f}"


def _compact(value: float) -> str:
    """1234567 -> '1.23M' (axis ticks)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{sign}{value / limit:.3g}{suffix}"
    return f"{sign}{value:.3g}"


def _bytes(size: Any) -> str:
    if size is None:
        return "—"
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TiB"


def _seconds(value: Any) -> str:
    if value is None:
        return "—"
    value = float(value)
    if value < 1:
        return f"{value * 1000:,.0f} ms"
    if value < 120:
        return f"{value:,.2f} s"
    return f"{value / 60:,.1f} min"


def _plain(value: Any) -> str:
    """A configuration value as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return "—" if value is None else str(value)


def _percent(share: Any) -> str:
    """A share (0..1) as a percentage with three significant digits."""
    return "—" if share is None else f"{float(share) * 100:.3g}%"


def _truncate(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- charts (geometry only; the template draws and escapes) ------------------------------------


def bar_chart(items: Iterable[tuple[str, float]], fmt: Any) -> dict[str, Any]:
    """Horizontal bars, one row each: label (left) and value (right) above the bar.

    The SVG has no viewBox: user units are CSS pixels, so text keeps its size at any width
    and bar lengths are percentages of the chart width (responsive without scaling text).
    """
    rows = list(items)
    row_h, label_h, bar_h = 44, 18, 12
    peak = max((abs(v) for _, v in rows), default=0.0) or 1.0
    bars = []
    for i, (label, value) in enumerate(rows):
        top = 4 + i * row_h
        bars.append(
            {
                "label": _truncate(str(label)),
                "full": str(label),
                "value": fmt(value),
                "text_y": top + 13,
                "y": top + label_h + 2,
                "h": bar_h,
                "pct": round(max(0.6, 100 * abs(value) / peak), 2),
            }
        )
    return {"height": 4 + len(rows) * row_h, "bars": bars}


def interval_chart(estimate: Mapping[str, Any], fmt: Any, scale: float = 1.0) -> dict[str, Any]:
    """Estimate (dot), its confidence interval (bar) and the exact total (line) on one axis;
    horizontal positions are percentages of the chart width.

    Args:
        estimate: ``estimate, ci_low, ci_high, exact`` in the column's stored unit.
        fmt: Formats a stored value as a label (e.g. cents as currency units).
        scale: Stored units per displayed unit (100 for cents shown as currency units):
            the axis ticks are in the displayed unit, like the labels.

    Returns:
        The chart geometry and labels.
    """
    est = float(estimate.get("estimate") or 0.0)
    low = float(estimate.get("ci_low", est))
    high = float(estimate.get("ci_high", est))
    exact = estimate.get("exact")
    points = [est, low, high] + ([float(exact)] if exact is not None else [])
    lo, hi = min(points), max(points)
    pad = (hi - lo) * 0.18 or max(abs(est) * 0.01, 1.0)
    lo, hi = lo - pad, hi + pad
    left, right = 2.0, 98.0

    def x(v: float) -> float:
        return round(left + (v - lo) / (hi - lo) * (right - left), 2)

    def anchor(pct: float) -> str:
        return "start" if pct < 12 else ("end" if pct > 88 else "middle")

    ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    exact_x = None if exact is None else x(float(exact))
    return {
        "height": 104,
        "axis_y": 78,
        "left": left,
        "right": right,
        "ticks": [
            {
                "x": x(t),
                "label": _compact(t / scale),
                "anchor": ("start", *["middle"] * 3, "end")[k],
            }
            for k, t in enumerate(ticks)
        ],
        "ci": {"x": x(low), "w": max(0.4, round(x(high) - x(low), 2)), "y": 38, "h": 20},
        "estimate_x": x(est),
        "exact_x": exact_x,
        "exact_anchor": anchor(exact_x) if exact_x is not None else "middle",
        "ci_label": f"{fmt(low)} {_DASH} {fmt(high)}",
        "estimate_label": fmt(est),
        "exact_label": None if exact is None else fmt(float(exact)),
    }


# -- view model --------------------------------------------------------------------------------

_SYSTEM_LABELS = {
    "cpu": "CPU",
    "cores_physical": "Physical cores",
    "cores_logical": "Logical cores",
    "ram_gb": "RAM (GiB)",
    "platform": "Platform",
    "python": "Python",
    "gpu": "GPU",
    "libraries": "Libraries",
}
_COLUMN_FORMATS = {"value": _money, "quantity": _int}
#: Stored units per displayed unit (value is stored in cents, shown in currency units).
_COLUMN_SCALES = {"value": 100.0}
_COLUMN_TITLES = {"value": "Value (currency units)", "quantity": "Quantity (units)"}
_COLUMN_UNITS = {"value": "currency units", "quantity": "units"}


def _file_row(meta: Mapping[str, Any]) -> dict[str, Any]:
    dead = int(meta.get("dead_letter") or 0)
    return {
        "note": str(meta.get("note") or ""),
        "name": str(meta.get("source_file") or meta.get("name") or "?"),
        "format": str(meta.get("format") or "?"),
        "size": _bytes(meta.get("size_bytes", meta.get("size"))),
        "sha256": str(meta.get("sha256") or "—"),
        "records_in": _int(meta.get("records_in")),
        "records_out": _int(meta.get("records_out")),
        "dead_letter": _int(dead),
        "has_dead": dead > 0,
        "seconds": _seconds(meta.get("seconds")),
    }


def _estimate_rows(estimates: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    confidence = float(estimates.get("confidence", 0.95))
    for column, est in (estimates.get("estimates") or {}).items():
        fmt = _COLUMN_FORMATS.get(column, lambda v: f"{float(v):,.2f}")
        rel = est.get("relative_error")
        rows.append(
            {
                "column": column,
                "title": _COLUMN_TITLES.get(column, column),
                "unit": _COLUMN_UNITS.get(column, "the column's unit"),
                "estimate": fmt(est.get("estimate")),
                "standard_error": fmt(est.get("standard_error")),
                "ci": f"{fmt(est.get('ci_low'))} {_DASH} {fmt(est.get('ci_high'))}",
                "exact": "—" if est.get("exact") is None else fmt(est.get("exact")),
                "relative_error": "—" if rel is None else f"{float(rel) * 100:.3f}%",
                "covers": est.get("covers"),
                "confidence": f"{confidence * 100:g}%",
                "chart": interval_chart(est, fmt, _COLUMN_SCALES.get(column, 1.0)),
            }
        )
    return rows


def _view_model(context: Mapping[str, Any]) -> dict[str, Any]:
    files = [_file_row(f) for f in context.get("files") or []]
    raw_files = context.get("files") or []
    total_in = sum(int(f.get("records_in") or 0) for f in raw_files)
    total_out = sum(int(f.get("records_out") or 0) for f in raw_files)
    total_dead = sum(int(f.get("dead_letter") or 0) for f in raw_files)
    total_size = sum(int(f.get("size_bytes") or f.get("size") or 0) for f in raw_files)
    reasons = sorted(
        (context.get("dead_letter_reasons") or {}).items(), key=lambda kv: (-kv[1], kv[0])
    )
    top = [(str(p), float(v)) for p, v in context.get("top_products") or []]
    estimates = context.get("estimates") or {}
    timings = [(str(k), float(v)) for k, v in (context.get("timings") or {}).items()]
    slowest = max((v for _, v in timings), default=0.0) or 1.0
    system = dict(context.get("system") or {})
    system.setdefault("gpu", None)
    libraries = system.pop("libraries", None)
    if libraries:
        system["libraries"] = ", ".join(f"{k} {v}" for k, v in dict(libraries).items())
    system_rows = [
        (_SYSTEM_LABELS.get(k, k.replace("_", " ")), "none" if v is None else _plain(v))
        for k, v in system.items()
    ]
    rejected = [
        {
            "name": str(r.get("name", "?")),
            "reason": str(r.get("reason", "")),
            "stage": "read" if r.get("stage") == "parse" else "inbox",
            "sha256": str(r.get("sha256") or ""),
        }
        if isinstance(r, Mapping)
        else {"name": str(r[0]), "reason": str(r[1]), "stage": "inbox", "sha256": ""}
        for r in context.get("rejected") or []
    ]
    duplicates = [
        {
            "name": str(d.get("name", "?")),
            "key": str(d.get("key", "")),
            "duplicate_of": str(d.get("duplicate_of") or ""),
        }
        for d in context.get("duplicates") or []
    ]
    estimate_rows = _estimate_rows(estimates) if estimates else []
    value_rel = (estimates.get("estimates") or {}).get("value", {}).get("relative_error")
    kpis = [
        (
            "Files",
            _int(len(files)),
            f"{_bytes(total_size)} · {len(rejected)} rejected · {len(duplicates)} duplicate(s)",
        ),
        ("Records in", _int(total_in), "decoded and validated"),
        ("Records out", _int(total_out), "written to Parquet"),
        ("Dead-letter", _int(total_dead), f"{len(reasons)} reason(s)"),
        (
            "Value estimate error",
            "—" if value_rel is None else f"{float(value_rel) * 100:.3f}%",
            (
                f"sample of {_int(estimates.get('sample_size'))} rows "
                f"({_percent(estimates.get('sample_fraction'))} of the records)"
                if estimates
                else "no estimate"
            ),
        ),
        ("Run time", _seconds(sum(v for _, v in timings)) if timings else "—", "all steps"),
    ]
    return {
        "title": str(context.get("title") or "Secure hybrid ETL report"),
        "generated_at": _plain(context.get("generated_at") or datetime.now(UTC).isoformat()),
        "kpis": kpis,
        "files": files,
        "totals": {
            "size": _bytes(total_size),
            "records_in": _int(total_in),
            "records_out": _int(total_out),
            "dead_letter": _int(total_dead),
            "reconciled": total_in == total_out + total_dead,
        },
        "rejected": rejected,
        "duplicates": duplicates,
        "top_chart": bar_chart(top, _money) if top else None,
        "dead_chart": bar_chart(reasons, _int) if reasons else None,
        "estimates": estimate_rows,
        "sample": (
            {
                "population": _int(estimates.get("population")),
                "sample_size": _int(estimates.get("sample_size")),
                "sample_fraction": _percent(estimates.get("sample_fraction")),
                "strata": _int(estimates.get("strata")),
                "sampling_strata": _int(estimates.get("sampling_strata")),
                "fraction": _percent(estimates.get("fraction")),
                "reason": _plain(estimates.get("size_reason") or ""),
                "seed": _plain(estimates.get("seed")),
                "confidence": f"{float(estimates.get('confidence', 0.95)) * 100:g}%",
                "seconds": _seconds(estimates.get("seconds")),
                "method": _plain(estimates.get("method")),
            }
            if estimates
            else None
        ),
        "config": [(str(k), _plain(v)) for k, v in (context.get("config") or {}).items()],
        "timings": [
            {"name": k, "seconds": _seconds(v), "pct": round(100 * v / slowest, 1)}
            for k, v in timings
        ],
        "system": system_rows,
    }


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bi_platform.etl", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(context: Mapping[str, Any]) -> str:
    """The report page for ``context``.

    Args:
        context: generated_at, files (their summaries), dead_letter_reasons, top_products
            (product, cents), estimates, config, timings, system; optional title,
            rejected (name, reason, stage ``inbox``/``parse``, sha256) and duplicates
            (name, key, duplicate_of).

    Returns:
        The HTML page (self-contained).
    """
    html = _environment().get_template(TEMPLATE).render(**_view_model(context))
    logger.debug("report rendered: %d characters", len(html))
    return html


# -- publication -------------------------------------------------------------------------------


def _claim_backup_dir(backup_root: Path, now: datetime) -> Path:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup_root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = backup_root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise RuntimeError(f"no free backup directory name for {stamp} under {backup_root}")


def _backup_order(path: Path) -> tuple[str, int]:
    match = BACKUP_NAME.match(path.name)
    assert match is not None
    return match.group(1), int(match.group(2) or 0)


def list_backups(backup_root: Path) -> list[Path]:
    """Backup directories under ``backup_root``, oldest first (other entries are ignored)."""
    if not backup_root.is_dir():
        return []
    found = [p for p in backup_root.iterdir() if p.is_dir() and BACKUP_NAME.match(p.name)]
    return sorted(found, key=_backup_order)


def _check_output_name(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"report output name {name!r} must be a plain file name")
    if name.endswith(".tmp"):
        raise ValueError(f"report output name {name!r} may not end with .tmp")


def publish_report(
    report_dir: Path,
    outputs: Mapping[str, bytes | str],
    backup_root: Path,
    keep: int = 5,
    now: datetime | None = None,
) -> dict[str, Path]:
    """Write ``outputs`` (file name -> content) into ``report_dir``.

    The files already in ``report_dir`` first go to ``backup_root/<UTC YYYYMMDDTHHMMSSZ>/``
    (suffixed ``-1``, ``-2``... when that second is taken); only the newest ``keep`` backups
    stay. The old files are hard-linked (copied across file systems) into the backup and the
    new ones then replace them atomically, so a reader never finds a report missing or half
    written; previous files that are not rewritten are removed from ``report_dir``.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    for name in outputs:
        _check_output_name(name)
    report_dir.mkdir(parents=True, exist_ok=True)
    previous = sorted(
        p for p in report_dir.iterdir() if p.is_file() and not p.name.endswith(".tmp")
    )
    if previous:
        backup = _claim_backup_dir(backup_root, now or datetime.now(UTC))
        for path in previous:
            try:
                os.link(path, backup / path.name)
            except OSError:
                shutil.copy2(path, backup / path.name)
        logger.info("previous report (%d files) backed up to %s", len(previous), backup)
        backups = list_backups(backup_root)
        for stale in backups[: max(0, len(backups) - keep)]:
            shutil.rmtree(stale)
            logger.info("old report backup %s removed (keep %d)", stale.name, keep)
    written: dict[str, Path] = {}
    for name, content in outputs.items():
        target = report_dir / name
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        written[name] = target
    for path in previous:
        if path.name not in outputs:
            path.unlink(missing_ok=True)
    logger.info("report published to %s: %s", report_dir, ", ".join(sorted(written)))
    return written
