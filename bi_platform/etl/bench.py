"""``bi-platform bench etl``: the binary parser against the I/O floor and the reviewed
script's approach, and the stratified estimator's error -- same file, same run.

A binary file of ``mb`` MiB in the default layout (``<IQIq32s``, 56 bytes) is generated
in a scratch directory (removed at the end): ~5,000 distinct products of Zipf-like
popularity, retail quantities (mostly 1-3 units) and values (a log-normal unit price per
product, occasional discounts), timestamps over 2024. It is then read once, untimed, so
the page cache is warm, and measured:

- ``read_floor``: the I/O floor of a Python program, the file read in 64 MiB chunks in a
  loop (``f.read``); the bare copy into one reused buffer (``readinto``) is reported too
  (``readinto_mb_per_s``, ``fraction_of_readinto``);
- ``parse``: :func:`~bi_platform.etl.parser.parse_file` end to end (memory-map, decode,
  validate, write the records and dead-letter Parquet files) with the configured workers
  (default: the machine's cores);
- ``struct_csv``: the reviewed script's approach, ``struct.unpack`` per record and
  ``csv.writer``, timed on a prefix of the file (``struct_prefix_mb``, default 50 MiB) and
  extrapolated to the whole file (said so in the stage name);
- ``estimate``: :func:`~bi_platform.etl.estimation.stratified_estimate` on the parsed
  records at ``fraction`` (default 0.5%), with the exact totals for its relative error.

Parity checks: the parser keeps every record (none dead-lettered), its totals equal the
generator's, and the struct baseline's CSV sums equal the parser's on the same prefix.
"""

from __future__ import annotations

import csv
import logging
import os
import struct
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bi_platform.lib.benchmarking import met

logger = logging.getLogger(__name__)

DEFAULT_MB = 1024
STRUCT_PREFIX_MB = 50
READ_CHUNK = 64 * 2**20
RECORD_FORMAT = "<IQIq32s"
STRUCT_BLOCK_RECORDS = 10_000
FRACTION = 0.005
PRODUCTS = 5_000
GENERATE_BLOCK = 1_000_000
TARGETS = {
    "speedup_vs_struct": (">=", 20.0),
    "fraction_of_raw_read": (">=", 0.25),
    "estimate_rel_error": ("<=", 0.01),
}
YEAR_START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
YEAR_END = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())

_ITEMS = (
    "Arroz",
    "Feijão",
    "Açúcar",
    "Café",
    "Leite",
    "Óleo soja",
    "Macarrão",
    "Farinha",
    "Sabão pó",
    "Detergente",
    "Biscoito",
    "Refrigerante",
    "Cerveja",
    "Água mineral",
    "Iogurte",
    "Queijo",
    "Presunto",
    "Pão forma",
    "Manteiga",
    "Margarina",
)
_BRANDS = (
    "Tio João",
    "Camil",
    "Kicaldo",
    "União",
    "Pilão",
    "Melitta",
    "Itambé",
    "Piracanjuba",
    "Liza",
    "Renata",
    "Dona Benta",
    "Omo",
    "Ypê",
    "Marilan",
    "Bauducco",
    "Guaraná",
    "Brahma",
    "Crystal",
    "Nestlé",
    "Tirolez",
    "Sadia",
    "Seara",
    "Pullman",
    "Aviação",
    "Qualy",
)
_SIZES = ("200g", "500g", "1kg", "2kg", "5kg", "350ml", "1L", "2L", "6un", "12un")


def product_names(count: int = PRODUCTS) -> list[bytes]:
    """``count`` distinct retail product names, UTF-8, at most 32 bytes each."""
    names: list[bytes] = []
    for item in _ITEMS:
        for brand in _BRANDS:
            for size in _SIZES:
                encoded = f"{item} {brand} {size}".encode()
                if len(encoded) > 32:
                    encoded = f"{item[:10]} {brand[:8]} {size}".encode()[:32]
                    encoded = encoded.decode("utf-8", errors="ignore").encode()
                names.append(encoded)
    unique = list(dict.fromkeys(names))
    if len(unique) < count:  # pragma: no cover - 5,000 combinations exist
        raise ValueError(f"only {len(unique)} distinct product names")
    return unique[:count]


def generate_file(path: Path, mb: int, seed: int = 6) -> dict[str, int]:
    """Write ``mb`` MiB (rounded down to whole records) of default-layout records to
    ``path``; returns the record count and exact totals."""
    from bi_platform.etl.layouts import get_layout

    dtype = get_layout("default").numpy_dtype
    records = mb * 2**20 // dtype.itemsize
    rng = np.random.default_rng(seed)
    names = np.array(product_names(), dtype="S32")
    popularity = 1.0 / np.arange(1, len(names) + 1) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    unit_cents = np.clip(np.round(rng.lognormal(np.log(1_200), 0.9, len(names))), 50, 500_000)
    discounts = np.array([1.0, 0.9, 0.85, 0.7])
    totals = {"records": records, "quantity": 0, "value": 0}
    with path.open("wb") as f:
        for start in range(0, records, GENERATE_BLOCK):
            n = min(GENERATE_BLOCK, records - start)
            block = np.zeros(n, dtype)
            product = rng.choice(len(names), size=n, p=popularity)
            quantity = rng.geometric(0.55, n).astype(np.uint32)
            discount = discounts[rng.choice(4, size=n, p=[0.8, 0.1, 0.06, 0.04])]
            value = np.round(quantity * unit_cents[product] * discount).astype(np.int64)
            block["id"] = np.arange(start + 1, start + n + 1, dtype=np.uint32)
            block["timestamp"] = rng.integers(YEAR_START, YEAR_END, n, dtype=np.uint64)
            block["quantity"] = quantity
            block["value"] = value
            block["product"] = names[product]
            block.tofile(f)
            totals["quantity"] += int(quantity.sum(dtype=np.int64))
            totals["value"] += int(value.sum())
    return totals


def read_floor(path: Path, chunk: int = READ_CHUNK) -> float:
    """Seconds to read ``path`` in ``chunk``-byte pieces in a Python loop
    (``f.read(chunk)``: each piece a new bytes object, as a program that then uses the
    bytes would do)."""
    started = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.read(chunk):
            pass
    return time.perf_counter() - started


def readinto_floor(path: Path, chunk: int = READ_CHUNK) -> float:
    """Seconds to copy ``path`` into one reused ``chunk``-byte buffer (``readinto``): the
    bare page-cache copy rate, a stricter floor reported alongside."""
    view = memoryview(bytearray(chunk))
    started = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - started


def struct_csv(path: Path, out: Path, prefix_bytes: int) -> tuple[int, float]:
    """The reviewed script's approach on the first ``prefix_bytes`` of ``path``: the file
    read in blocks of records, ``struct.unpack`` per record, the product stripped and
    decoded, one ``csv.writer`` row per record. Returns (records, seconds)."""
    size = struct.calcsize(RECORD_FORMAT)
    count = prefix_bytes // size
    block = STRUCT_BLOCK_RECORDS * size
    started = time.perf_counter()
    with path.open("rb") as f, out.open("w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink)
        writer.writerow(["id", "timestamp", "quantity", "value", "product"])
        remaining = count * size
        while remaining:
            data = f.read(min(block, remaining))
            remaining -= len(data)
            for offset in range(0, len(data), size):
                id_, timestamp, quantity, value, product = struct.unpack(
                    RECORD_FORMAT, data[offset : offset + size]
                )
                name = product.rstrip(b"\0").decode("utf-8", errors="replace")
                writer.writerow([id_, timestamp, quantity, value, name])
    return count, time.perf_counter() - started


def _csv_sums(path: Path) -> tuple[int, int, int]:
    frame = pl.read_csv(path, columns=["quantity", "value"], schema_overrides={"value": pl.Int64})
    return frame.height, int(frame["quantity"].sum()), int(frame["value"].sum())


def run(
    mb: int = DEFAULT_MB,
    *,
    workers: int | None = None,
    struct_prefix_mb: int = STRUCT_PREFIX_MB,
    fraction: float = FRACTION,
    seed: int = 42,
    workdir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Generate, measure, check; (per-stage measurements, the JSON summary)."""
    from bi_platform.etl.estimation import stratified_estimate
    from bi_platform.etl.layouts import get_layout
    from bi_platform.etl.parse_common import ParseOptions
    from bi_platform.etl.parser import parse_file, read_records
    from bi_platform.settings import get_settings

    settings = get_settings()
    options = ParseOptions(
        layout=get_layout("default"),
        timestamp_min=settings.etl_timestamp_min,
        timestamp_max=settings.etl_timestamp_max,
        chunk_bytes=int(settings.etl_chunk_mb) * 2**20,
        workers=workers or settings.etl_workers or os.cpu_count() or 1,
    )
    stages: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_etl_", dir=workdir) as tmp:
        root = Path(tmp)
        source = root / "bench.bin"
        progress(f"generating {mb:,} MiB of records ({PRODUCTS:,} products)")
        started = time.perf_counter()
        expected = generate_file(source, mb)
        generated_s = time.perf_counter() - started
        size = source.stat().st_size
        size_mb = size / 2**20
        progress("warming the page cache (untimed read)")
        read_floor(source)

        progress("read floor: f.read(64 MiB) loop")
        read_s = read_floor(source)
        stages["read_floor (f.read 64 MiB loop)"] = {"mb": size_mb, "seconds": read_s}
        readinto_s = readinto_floor(source)
        stages["readinto (64 MiB reused buffer)"] = {"mb": size_mb, "seconds": readinto_s}

        progress(f"parse_file with {options.workers} worker(s)")
        records_path, dead_path = root / "records.parquet", root / "dead_letter.parquet"
        result = parse_file(source, records_path, dead_path, options)
        stages[f"parse_file ({options.workers} workers)"] = {
            "mb": size_mb,
            "seconds": result.seconds,
        }

        prefix_mb = min(struct_prefix_mb, mb)
        progress(f"struct.unpack + csv.writer on a {prefix_mb} MiB prefix")
        struct_records, struct_s = struct_csv(source, root / "struct.csv", prefix_mb * 2**20)
        struct_mb = struct_records * struct.calcsize(RECORD_FORMAT) / 2**20
        stages[f"struct+csv.writer ({prefix_mb} MiB prefix, extrapolated)"] = {
            "mb": struct_mb,
            "seconds": struct_s,
            "extrapolated_seconds": struct_s * size_mb / struct_mb,
        }

        progress(f"stratified estimate at {fraction:.2%}")
        estimation = stratified_estimate(
            read_records([records_path]), fraction=fraction, seed=seed, with_exact=True
        )
        stages[f"estimate (stratified, {fraction:.1%} sample)"] = {
            "mb": size_mb,
            "seconds": estimation.seconds,
        }

        csv_rows, csv_quantity, csv_value = _csv_sums(root / "struct.csv")
        prefix = (
            read_records([records_path])
            .filter(pl.col("id") <= struct_records)
            .select(pl.len(), pl.col("quantity").sum(), pl.col("value").sum())
            .collect()
            .row(0)
        )
        records_mb = records_path.stat().st_size / 2**20
        dead_letter = result.dead_letter

    for stage in stages.values():
        stage["mb_per_s"] = stage["mb"] / stage["seconds"] if stage["seconds"] else 0.0
    read_rate = size_mb / read_s
    parse_rate = size_mb / result.seconds
    struct_rate = struct_mb / struct_s
    quantity, value = estimation.estimates["quantity"], estimation.estimates["value"]
    errors = [e.relative_error for e in (quantity, value) if e.relative_error is not None]
    parity = (
        result.records_in == expected["records"] == result.records_out
        and dead_letter == 0
        and quantity.exact == expected["quantity"]
        and value.exact == expected["value"]
        and (csv_rows, csv_quantity, csv_value) == tuple(int(x) for x in prefix)
    )
    summary: dict[str, Any] = {
        "bench": "etl",
        "mb": mb,
        "file_bytes": size,
        "records": expected["records"],
        "products": PRODUCTS,
        "workers": options.workers,
        "chunk_mb": options.chunk_bytes / 2**20,
        "read_mb_per_s": round(read_rate, 1),
        "readinto_mb_per_s": round(size_mb / readinto_s, 1),
        "fraction_of_readinto": round(parse_rate / (size_mb / readinto_s), 3),
        "parse_mb_per_s": round(parse_rate, 1),
        "parse_seconds": round(result.seconds, 3),
        "struct_mb_per_s": round(struct_rate, 2),
        "struct_prefix_mb": prefix_mb,
        "struct_seconds": round(struct_s, 3),
        "struct_extrapolated_seconds": round(struct_s * size_mb / struct_mb, 1),
        "fraction_of_raw_read": round(parse_rate / read_rate, 3),
        "speedup_vs_struct": round(parse_rate / struct_rate, 1),
        "records_parquet_mb": round(records_mb, 1),
        "generate_seconds": round(generated_s, 2),
        "estimate_fraction": fraction,
        "estimate_records": estimation.population,
        "estimate_sample_size": estimation.sample_size,
        "estimate_sample_fraction": round(estimation.sample_fraction, 6),
        "estimate_strata": estimation.strata,
        "estimate_seconds": round(estimation.seconds, 3),
        "estimate_rel_error": max(errors) if errors else None,
        "estimate_rel_error_quantity": quantity.relative_error,
        "estimate_rel_error_value": value.relative_error,
        "ci_covers": bool(quantity.covers and value.covers),
        "dead_letter": dead_letter,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    targets = {
        name: summary[name] is not None and met(summary[name], op, bound)
        for name, (op, bound) in TARGETS.items()
    }
    targets["estimate_on_10m_records"] = estimation.population >= 10_000_000
    targets["parity"] = bool(parity)
    summary["targets_met"] = targets
    logger.info("bench etl: %s", summary)
    return stages, summary
