"""Deterministic generator of the ETL inbox: binary record files, CSV/Parquet exports and a
malformed corpus.

Everything lands in ``home/etl/inbox``:

* **binary files** ``records_NNNN.bin`` in the record layout ``default`` of
  ``struct_config.json`` (``<IQIq32s``, 56 bytes): ids in sequence, timestamps over the
  two years before :data:`REFERENCE_DATE`, ~5,000 Portuguese product names (some with
  commas, quotes, or a leading ``=``/``+``/``-``/``@``) with Zipf-like popularity, skewed
  quantities (1..50) and values in cents (quantity x a per-product unit price, with
  discounts). Records are built as a numpy structured array with the layout's dtype and
  written with ``tobytes`` in chunks (no per-record Python loop);
* **exports** of further records with the same fields: ``export_0001.csv`` (ISO-8601 UTC
  timestamps) and ``export_0001.parquet`` (the parser's output schema);
* the **malformed corpus** (:data:`MALFORMED`): what each file exercises and whether it is
  rejected at the inbox or dead-lettered record by record is recorded in the manifest
  (``expect``).

Idempotent like the retail and news generators: ``.seed_manifest.json`` (hidden, so the
inbox scan ignores it) records the profile, seed, layout and size limit; a current inbox is
not rewritten unless ``force``. The same profile and seed always give identical files.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bi_platform.etl.layouts import RecordLayout, get_layout
from bi_platform.lib.files import (
    atomic_path,
    read_json_object,
    write_bytes_atomic,
    write_json_atomic,
)
from bi_platform.lib.package_data import read_json

logger = logging.getLogger(__name__)

#: The last day of the generated records; every timestamp is relative to it.
REFERENCE_DATE = date(2026, 10, 31)
HISTORY_DAYS = 730
#: Bumped whenever the generated data changes, so that old files are rewritten.
GENERATOR_VERSION = 2
DEFAULT_SEED = 38
MANIFEST_NAME = ".seed_manifest.json"
LAYOUT = "default"
PRODUCTS = 5_000
CHUNK_RECORDS = 1_000_000
MAX_QUANTITY = 50

# Expected outcome of each inbox file (recorded in the manifest).
PROCESSED = "processed"  # every record valid
DEAD_LETTER = "dead_letter"  # processed; some records go to the dead-letter queue
REJECTED = "rejected"  # refused at the inbox, never read
REJECTED_FILE = "rejected_file"  # accepted at the inbox, rejected as a whole when read
DUPLICATE = "duplicate"  # the same content as another file: counted once


@dataclass(frozen=True)
class EtlProfile:
    """Size of one generated inbox."""

    name: str
    binary_files: int
    records_per_file: int
    csv_records: int
    parquet_records: int
    malformed_records: int

    @property
    def binary_records(self) -> int:
        return self.binary_files * self.records_per_file


PROFILES: dict[str, EtlProfile] = {
    "small": EtlProfile("small", 4, 12_500, 2_000, 5_000, 500),
    "default": EtlProfile("default", 5, 2_000_000, 100_000, 400_000, 5_000),
}

#: The malformed corpus: file name -> (expected outcome, what it exercises).
MALFORMED: dict[str, tuple[str, str]] = {
    "bad_truncated.bin": (DEAD_LETTER, "valid records then a trailing partial record"),
    "bad_record_size.dat": (
        REJECTED_FILE,
        "60-byte records (36-byte product) in a 56-byte layout: misaligned, none accepted",
    ),
    "bad_pages.parquet": (REJECTED_FILE, "a valid Parquet footer over corrupt data pages"),
    "bad_newlines.csv": (
        DEAD_LETTER,
        "bare CR inside cells, quoted line breaks, an unclosed quote, BOM, NUL, bad UTF-8",
    ),
    "export_0001_copy.csv": (DUPLICATE, "a byte copy of export_0001.csv under another name"),
    "escape_hardlink.csv": (REJECTED, "a hard link to a file outside the inbox"),
    "bad_empty.bin": (REJECTED, "an empty file"),
    "bad_utf8.bin": (DEAD_LETTER, "products that are not valid UTF-8"),
    "bad_timestamps.bin": (DEAD_LETTER, "timestamps outside the window, beyond int64"),
    "bad_columns.csv": (
        DEAD_LETTER,
        "missing/extra columns, bad numbers, formula cells, quotes and commas",
    ),
    "bad_schema.parquet": (DEAD_LETTER, "a Parquet file whose columns are not the layout's"),
    "bad_oversize.bin": (REJECTED, "a sparse file 1 MB over ETL_MAX_FILE_MB"),
    "bad_format.txt": (REJECTED, "an unsupported file type"),
    "escape.csv": (REJECTED, "a symlink resolving outside the inbox"),
}
#: Where the escaping symlink points (outside the inbox, inside the ETL dir).
ESCAPE_TARGET = Path("..") / "outside_inbox" / "escape_target.csv"

# --------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------
_DATA = read_json(__package__, "products.json")
_NOUNS = tuple(_DATA["nouns"])
_QUALIFIERS = tuple(_DATA["qualifiers"])
_BRANDS = tuple(_DATA["brands"])
_SIZES = tuple(_DATA["sizes"])
#: Names that must survive CSV quoting and neutralisation (commas, quotes, formulas).
_SPECIAL_PRODUCTS = tuple(_DATA["special_products"])


def _clip_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes on a character boundary."""
    raw = text.encode()[:limit]
    return raw.decode(errors="ignore").rstrip()


def product_names(n: int = PRODUCTS, seed: int = DEFAULT_SEED, max_bytes: int = 32) -> list[str]:
    """``n`` distinct Portuguese-like product names of at most ``max_bytes`` UTF-8 bytes,
    in popularity order (index 0 is the most sold); the special names are among them."""
    rng = np.random.default_rng([seed, zlib.crc32(b"products")])
    names: dict[str, None] = {}
    special = [_clip_utf8(s, max_bytes) for s in _SPECIAL_PRODUCTS]
    while len(names) < n - len(special):
        noun = _NOUNS[rng.integers(len(_NOUNS))]
        parts = [noun]
        if rng.random() < 0.7:
            parts.append(_QUALIFIERS[rng.integers(len(_QUALIFIERS))])
        if rng.random() < 0.5:
            parts.append(_BRANDS[rng.integers(len(_BRANDS))])
        parts.append(_SIZES[rng.integers(len(_SIZES))])
        name = _clip_utf8(" ".join(parts), max_bytes)
        if name not in special:
            names[name] = None
    ordered = list(names)
    # the special names at spread popularity ranks (a few popular, most rare)
    for rank, name in zip((3, 40, 400, 900, 1_800, 3_000, 4_500), special, strict=True):
        ordered.insert(min(rank, len(ordered)), name)
    return ordered[:n]


def popularity(n: int = PRODUCTS, exponent: float = 1.1) -> np.ndarray:
    """Zipf-like sale probabilities of the products in popularity order."""
    weights = 1.0 / np.power(np.arange(n, dtype=np.float64) + 10.0, exponent)
    return weights / weights.sum()


def unit_prices(n: int = PRODUCTS, seed: int = DEFAULT_SEED) -> np.ndarray:
    """A unit price in cents per product: log-normal around R$ 12, R$ 0.50 .. R$ 2,500."""
    rng = np.random.default_rng([seed, zlib.crc32(b"prices")])
    return np.clip(np.rint(rng.lognormal(np.log(1_200), 1.0, n)), 50, 250_000).astype(np.int64)


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Catalogue:
    """Products as layout bytes and strings, their sale probabilities and prices."""

    names: list[str]
    encoded: np.ndarray  # fixed-width bytes of the layout's product field
    cdf: np.ndarray
    prices: np.ndarray

    @classmethod
    def build(cls, layout: RecordLayout, seed: int) -> Catalogue:
        width = layout.numpy_dtype["product"].itemsize
        names = product_names(PRODUCTS, seed, width)
        encoded = np.array([n.encode() for n in names], dtype=f"S{width}")
        cdf = np.cumsum(popularity(len(names)))
        cdf[-1] = 1.0
        return cls(names, encoded, cdf, unit_prices(len(names), seed))


def _window() -> tuple[int, int]:
    end = int(datetime(*REFERENCE_DATE.timetuple()[:3], 23, 59, 59, tzinfo=UTC).timestamp())
    return end - HISTORY_DAYS * 86_400, end


def generate_records(
    layout: RecordLayout, catalogue: Catalogue, rng: np.random.Generator, n: int, first_id: int
) -> np.ndarray:
    """``n`` valid records as a structured array of ``layout.numpy_dtype`` (vectorised)."""
    start, end = _window()
    records = np.zeros(n, dtype=layout.numpy_dtype)
    records["id"] = np.arange(first_id, first_id + n, dtype=np.uint64)
    records["timestamp"] = rng.integers(start, end, n, endpoint=True, dtype=np.int64)
    product = np.searchsorted(catalogue.cdf, rng.random(n), side="right")
    quantity = np.minimum(rng.geometric(0.13, n), MAX_QUANTITY)
    discount = rng.choice(np.array([1.0, 0.95, 0.9, 0.8, 0.7]), n, p=[0.7, 0.1, 0.1, 0.06, 0.04])
    records["quantity"] = quantity
    records["value"] = np.rint(quantity * catalogue.prices[product] * discount).astype(np.int64)
    records["product"] = catalogue.encoded[product]
    return records


def records_table(records: np.ndarray, layout: RecordLayout) -> pa.Table:
    """Valid generated records in the parser's output schema (``layout.arrow_schema``)."""
    columns = {
        "id": records["id"],
        "timestamp": records["timestamp"].astype(np.int64),
        "quantity": records["quantity"],
        "value": records["value"],
        "product": np.char.decode(records["product"], "utf-8"),
    }
    schema = layout.arrow_schema
    arrays = []
    for field in schema:
        values = columns[field.name]
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        else:
            arrays.append(pa.array(values).cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _chunks(total: int, size: int = CHUNK_RECORDS) -> Iterator[int]:
    for start in range(0, total, size):
        yield min(size, total - start)


def write_binary_file(
    path: Path,
    n: int,
    *,
    layout: RecordLayout,
    catalogue: Catalogue,
    seed: int,
    first_id: int,
) -> int:
    """Write ``n`` valid records to ``path`` (atomically, in chunks); returns the bytes."""
    rng = _rng(seed, path.name)
    with atomic_path(path, durable=False) as tmp, tmp.open("wb") as out:
        next_id = first_id
        for size in _chunks(n):
            out.write(generate_records(layout, catalogue, rng, size, next_id).tobytes())
            next_id += size
    return path.stat().st_size


# --------------------------------------------------------------------------------------
# The malformed corpus
# --------------------------------------------------------------------------------------
def _bad_truncated(layout: RecordLayout, records: np.ndarray) -> bytes:
    return records.tobytes() + records[:1].tobytes()[: layout.record_size // 2 - 5]


def _bad_record_size(layout: RecordLayout, records: np.ndarray) -> bytes:
    """The same records from a producer on another layout version: a 36-byte product
    padded with spaces (60-byte records). Read with the 56-byte layout, only the windows
    that happen to align with a record start decode to plausible values."""
    width = layout.numpy_dtype["product"].itemsize + 4
    wider = np.zeros(
        len(records),
        dtype=[(n, records.dtype[n]) for n in records.dtype.names if n != "product"]
        + [("product", f"S{width}")],
    )
    for name in records.dtype.names:
        wider[name] = records[name]
    wider["product"] = np.char.ljust(records["product"], width, b" ")
    return wider.tobytes()


def _bad_utf8(layout: RecordLayout, records: np.ndarray) -> bytes:
    width = layout.numpy_dtype["product"].itemsize
    broken = [b"Caf\xe9 Torrado 500g", b"\xff\xfe\xfd Detergente", b"A\xc3\x28cucar 1kg"]
    bad = np.array([b[:width] for b in broken], dtype=f"S{width}")
    records = records.copy()
    records["product"][::10] = np.resize(bad, len(records[::10]))
    return records.tobytes()


def _bad_timestamps(layout: RecordLayout, records: np.ndarray) -> bytes:
    # 1970, 1999-12-31, 2036, year ~36812, then (uint64 fields) beyond int64
    out = [0, 946_684_799, 2_082_758_400, 2**40, 2**63 + 5, 2**64 - 1]
    stamp_type = layout.numpy_dtype["timestamp"]
    out = [v for v in out if v <= np.iinfo(stamp_type).max]
    records = records.copy()
    values = np.resize(np.array(out, dtype=stamp_type), len(records[::7]))
    records["timestamp"][::7] = values
    return records.tobytes()


_CSV_HEADER = "id,timestamp,quantity,value,product"
_CSV_BAD_ROWS = (
    '{id},2026-01-05T10:02:00Z,1,1299,"=HYPERLINK(""x"";""Clique"")"',  # valid: a formula
    '{id},2026-01-05T10:02:30Z,2,890,"Biscoito ""Maria"", 200g"',  # valid: quotes, comma
    "{id},2026-01-05T10:02:45Z,1,350,+Vida Suco 1L",  # valid: leading +
    "{id},2026-01-05T10:03:00Z,5",  # missing columns
    "{id},2026-01-05T10:04:00Z,1,100,Feijão Carioca 1kg,extra",  # extra column
    "{id},2026-01-05T10:05:00Z,abc,100,Feijão Preto 1kg",  # bad number
    '{id},2026-01-05T10:06:00Z,2,"12,50",Café Torrado 500g',  # decimal comma
    "{id},ontem às 18h,1,100,Leite 1L",  # bad timestamp
    "{id},2026-01-05T10:07:00Z,=1+1,100,Sal Refinado 1kg",  # formula in a number
    "{id},2026-01-05T10:08:00Z,-3,100,Açúcar Cristal 1kg",  # negative quantity
    "{id},1990-01-01T00:00:00Z,1,100,Óleo de Soja 900ml",  # before the window
    ",2026-01-05T10:09:00Z,1,100,Sem Identificador",  # missing id
    "{id},2026-01-05T10:10:00Z,1,99999999999999999999,Valor Estourado",  # int64 overflow
    '{id},2026-01-05T10:11:00Z,1,"@SOMA(1;2)",@Promo Leve 3',  # formula, bad number
)


def _bad_columns_csv(layout: RecordLayout, records: np.ndarray) -> bytes:
    """Valid rows (via the CSV writer) with the malformed ones spread among them."""
    good = _csv_bytes(records_table(records, layout)).decode().splitlines()[1:]
    first = int(records["id"][-1]) + 1
    bad = [row.format(id=first + i) for i, row in enumerate(_CSV_BAD_ROWS)]
    step = max(1, len(good) // (len(bad) + 1))
    lines = [_CSV_HEADER]
    for i, row in enumerate(good):
        lines.append(row)
        if bad and (i + 1) % step == 0:
            lines.append(bad.pop(0))
    lines.extend(bad)
    return ("\n".join(lines) + "\n").encode()


def _bad_schema_parquet(layout: RecordLayout, records: np.ndarray) -> bytes:
    """Plausible but foreign columns (Portuguese names, strings and floats)."""
    table = pa.table(
        {
            "codigo": pa.array([str(i) for i in records["id"]]),
            "data": pa.array(
                [
                    datetime.fromtimestamp(int(t), UTC).date().isoformat()
                    for t in records["timestamp"]
                ]
            ),
            "qtd": pa.array(records["quantity"].astype(np.float64)),
            "preco": pa.array(records["value"] / 100.0),
            "produto": pa.array(np.char.decode(records["product"], "utf-8")),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _bad_pages_parquet(layout: RecordLayout, records: np.ndarray) -> bytes:
    """The parser's schema with a readable footer, but the header of every data page
    overwritten: the inbox accepts it (the footer reads), reading its rows fails."""
    sink = pa.BufferOutputStream()
    pq.write_table(records_table(records, layout), sink, compression="zstd")
    data = bytearray(sink.getvalue().to_pybytes())
    meta = pq.read_metadata(pa.BufferReader(bytes(data)))
    for group in range(meta.num_row_groups):
        for column in range(meta.num_columns):
            chunk = meta.row_group(group).column(column)
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            data[start : start + 16] = b"\xff" * 16
    return bytes(data)


def _bad_newlines_csv(layout: RecordLayout, records: np.ndarray) -> bytes:
    """Valid rows (CRLF line ends, a BOM) with rows no line-based reader agrees on: a bare
    CR inside a cell, a quoted cell spanning two lines, a quote that never closes, a NUL
    and invalid UTF-8 in a product."""
    lines = _csv_bytes(records_table(records, layout)).split(b"\n")[1:-1]
    first = int(records["id"][-1]) + 1
    bad = [
        b"%d,2026-01-05T10:00:00Z,1,100,Leite\rIntegral 1L" % first,
        b'%d,2026-01-05T10:01:00Z,1,100,"Cafe\nTorrado 500g"' % (first + 1),
        b'%d,2026-01-05T10:02:00Z,1,100,"Queijo Minas' % (first + 2),
        b"%d,2026-01-05T10:03:00Z,1,100,Arroz\x00Tipo 1" % (first + 3),
        b"%d,2026-01-05T10:04:00Z,1,100,Caf\xe9 Pil\xe3o" % (first + 4),
        b"\r",
        b"",
    ]
    step = max(1, len(lines) // (len(bad) + 1))
    out = [b"\xef\xbb\xbf" + _CSV_HEADER.encode()]
    for i, row in enumerate(lines):
        out.append(row)
        if bad and (i + 1) % step == 0:
            out.append(bad.pop(0))
    out.extend(bad)
    return b"\r\n".join(out) + b"\r\n"


def _csv_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------------------
# Everything for a profile
# --------------------------------------------------------------------------------------
def etl_inbox_dir(home: Path) -> Path:
    return Path(home) / "etl" / "inbox"


def _entry_current(path: Path, entry: dict[str, Any]) -> bool:
    """Whether ``path`` is still what the manifest ``entry`` recorded."""
    if entry.get("symlink"):
        return path.is_symlink() and str(path.readlink()) == entry["symlink"]
    if path.is_symlink() or not path.is_file():
        return False
    stat = path.stat()
    return stat.st_size == entry.get("bytes") and (not entry.get("hardlink") or stat.st_nlink > 1)


def _current(inbox: Path, params: dict[str, Any]) -> list[Path] | None:
    data = read_json_object(inbox / MANIFEST_NAME)
    if data is None or any(data.get(k) != v for k, v in params.items()):
        return None
    paths = []
    for name, entry in data.get("files", {}).items():
        path = inbox / name
        if not _entry_current(path, entry):
            return None
        paths.append(path)
    return paths


def _default_max_file_mb() -> float:
    from bi_platform.settings import get_settings

    return get_settings().etl_max_file_mb


def write_etl_sources(
    home: Path,
    profile: str = "default",
    seed: int = DEFAULT_SEED,
    force: bool = False,
    *,
    max_file_mb: float | None = None,
) -> list[Path]:
    """Write the inbox of ``profile`` to ``home/etl/inbox``; returns the inbox paths.

    ``max_file_mb`` (default ``ETL_MAX_FILE_MB``) sizes the over-limit file. Idempotent:
    when ``.seed_manifest.json`` matches (generator version, profile, seed, layout, limit)
    and every file is there with its recorded size, nothing is written unless ``force``.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    layout = get_layout(LAYOUT)
    limit_mb = _default_max_file_mb() if max_file_mb is None else float(max_file_mb)
    inbox = etl_inbox_dir(home)
    inbox.mkdir(parents=True, exist_ok=True)
    params = {
        "generator": __package__,
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "layout": {"name": layout.name, "struct_format": layout.struct_format},
        "max_file_mb": limit_mb,
    }
    if not force and (paths := _current(inbox, params)) is not None:
        logger.info("etl inbox in %s is current (%s, seed %d)", inbox, profile, seed)
        return paths
    (inbox / MANIFEST_NAME).unlink(missing_ok=True)
    started = time.perf_counter()
    catalogue = Catalogue.build(layout, seed)
    files: dict[str, dict[str, Any]] = {}

    def done(name: str, expect: str, records: int | None, what: str) -> None:
        path = inbox / name
        files[name] = {"expect": expect, "records": records, "what": what}
        if path.is_symlink():
            files[name]["symlink"] = str(path.readlink())
        else:
            files[name]["bytes"] = path.stat().st_size
            if path.stat().st_nlink > 1:
                files[name]["hardlink"] = True

    next_id = 1
    for i in range(1, prof.binary_files + 1):
        name = f"records_{i:04d}.bin"
        t0 = time.perf_counter()
        size = write_binary_file(
            inbox / name,
            prof.records_per_file,
            layout=layout,
            catalogue=catalogue,
            seed=seed,
            first_id=next_id,
        )
        next_id += prof.records_per_file
        done(name, PROCESSED, prof.records_per_file, "valid binary records")
        logger.info("wrote %s: %.1f MB in %.1fs", name, size / 1e6, time.perf_counter() - t0)

    for name, count in (
        ("export_0001.csv", prof.csv_records),
        ("export_0001.parquet", prof.parquet_records),
    ):
        records = generate_records(layout, catalogue, _rng(seed, name), count, next_id)
        next_id += count
        table = records_table(records, layout)
        if name.endswith(".csv"):
            write_bytes_atomic(inbox / name, _csv_bytes(table), durable=False)
        else:
            with atomic_path(inbox / name, durable=False) as tmp:
                pq.write_table(table, tmp, compression="zstd")
        done(name, PROCESSED, count, "valid records exported by another system")

    copy = inbox / "export_0001_copy.csv"
    write_bytes_atomic(copy, (inbox / "export_0001.csv").read_bytes(), durable=False)
    done(copy.name, DUPLICATE, None, MALFORMED[copy.name][1])

    makers = {
        "bad_truncated.bin": _bad_truncated,
        "bad_record_size.dat": _bad_record_size,
        "bad_utf8.bin": _bad_utf8,
        "bad_timestamps.bin": _bad_timestamps,
        "bad_columns.csv": _bad_columns_csv,
        "bad_schema.parquet": _bad_schema_parquet,
        "bad_pages.parquet": _bad_pages_parquet,
        "bad_newlines.csv": _bad_newlines_csv,
    }
    for name, make in makers.items():
        records = generate_records(
            layout, catalogue, _rng(seed, name), prof.malformed_records, next_id
        )
        next_id += prof.malformed_records
        write_bytes_atomic(inbox / name, make(layout, records), durable=False)
        expect, what = MALFORMED[name]
        done(name, expect, None, what)

    write_bytes_atomic(inbox / "bad_empty.bin", b"", durable=False)
    done("bad_empty.bin", REJECTED, None, MALFORMED["bad_empty.bin"][1])
    oversize = inbox / "bad_oversize.bin"
    with atomic_path(oversize, durable=False) as tmp:
        tmp.touch()
        os.truncate(tmp, int((limit_mb + 1) * 2**20))  # sparse: no disk blocks used
    done("bad_oversize.bin", REJECTED, None, MALFORMED["bad_oversize.bin"][1])
    write_bytes_atomic(inbox / "bad_format.txt", b"id;quantidade\n1;2\n", durable=False)
    done("bad_format.txt", REJECTED, None, MALFORMED["bad_format.txt"][1])
    target = inbox / ESCAPE_TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(
        target, (_CSV_HEADER + "\n1,2026-01-05T10:00:00Z,1,100,Segredo\n").encode(), durable=False
    )
    link = inbox / "escape.csv"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(ESCAPE_TARGET)
    done("escape.csv", REJECTED, None, MALFORMED["escape.csv"][1])
    hard = inbox / "escape_hardlink.csv"
    hard.unlink(missing_ok=True)
    try:
        os.link(target, hard)
    except OSError as exc:  # a file system without hard links: nothing to show
        logger.warning("%s not created (%s): the hard-link case is skipped", hard, exc)
    else:
        done(hard.name, REJECTED, None, MALFORMED[hard.name][1])

    manifest = {**params, "records": next_id - 1, "files": dict(sorted(files.items()))}
    write_json_atomic(inbox / MANIFEST_NAME, manifest, durable=False)
    logger.info(
        "etl inbox (%s, seed %d): %d files in %s in %.1fs",
        profile,
        seed,
        len(files),
        inbox,
        time.perf_counter() - started,
    )
    return [inbox / name for name in sorted(files)]


def read_manifest(home: Path) -> dict[str, Any]:
    """The generator's manifest of ``home/etl/inbox`` (expected outcome of each file)."""
    path = etl_inbox_dir(home) / MANIFEST_NAME
    data = read_json_object(path)
    if data is None:
        raise FileNotFoundError(f"no readable {MANIFEST_NAME} in {path.parent}")
    return data
