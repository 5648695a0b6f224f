"""The ETL sample-data generator: the inbox of the ``small`` profile, record realism,
determinism, idempotency and the malformed corpus.

The ``default`` profile (10M records) is checked through its declared numbers and one
full-size-chunk file written with the same code.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from bi_platform.etl import sample
from bi_platform.etl.layouts import get_layout
from bi_platform.etl.sample import (
    DEAD_LETTER,
    DUPLICATE,
    MALFORMED,
    PROCESSED,
    PROFILES,
    REJECTED,
    REJECTED_FILE,
    Catalogue,
    product_names,
    read_manifest,
    write_binary_file,
    write_etl_sources,
)

LAYOUT = get_layout("default")
SMALL = PROFILES["small"]
MAX_MB = 2.0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("etl_home")
    write_etl_sources(home, "small", max_file_mb=MAX_MB)
    return home


def _inbox(home: Path) -> Path:
    return home / "etl" / "inbox"


def _decode(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype=LAYOUT.numpy_dtype)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_profiles_declare_the_issue_sizes() -> None:
    default = PROFILES["default"]
    assert default.binary_records == 10_000_000
    assert default.binary_files >= 3
    assert 40_000 <= SMALL.binary_records <= 60_000
    assert LAYOUT.record_size == 56


def test_inbox_lists_every_file_with_its_expected_outcome(home: Path) -> None:
    manifest = read_manifest(home)
    files = manifest["files"]
    assert set(MALFORMED) <= set(files)
    binaries = [n for n in files if n.startswith("records_")]
    assert len(binaries) == SMALL.binary_files
    assert {"export_0001.csv", "export_0001.parquet"} <= set(files)
    assert {files[n]["expect"] for n in files} == {
        PROCESSED,
        DEAD_LETTER,
        REJECTED,
        REJECTED_FILE,
        DUPLICATE,
    }
    for name, entry in files.items():
        path = _inbox(home) / name
        assert path.is_symlink() or path.is_file(), name
        assert entry["what"]
    assert manifest["records"] >= SMALL.binary_records + SMALL.csv_records


def test_binary_records_are_valid_and_realistic(home: Path) -> None:
    parts = [_decode(_inbox(home) / f"records_{i:04d}.bin") for i in range(1, 5)]
    assert all(len(p) == SMALL.records_per_file for p in parts)
    records = np.concatenate(parts)
    assert (_inbox(home) / "records_0001.bin").stat().st_size == SMALL.records_per_file * 56
    assert np.array_equal(records["id"], np.arange(1, len(records) + 1))
    low = datetime(2024, 10, 31, tzinfo=UTC).timestamp()
    high = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert low <= records["timestamp"].min() and records["timestamp"].max() < high
    assert records["quantity"].min() >= 1 and records["quantity"].max() <= 50
    assert records["value"].min() > 0
    products = np.char.decode(records["product"], "utf-8")  # every product is UTF-8
    names, counts = np.unique(products, return_counts=True)
    assert 2_000 < len(names) <= 5_000
    counts = np.sort(counts)[::-1]
    assert counts[0] > 20 * np.median(counts), "popularity is skewed"
    share_top_100 = counts[:100].sum() / counts.sum()
    assert 0.25 < share_top_100 < 0.8
    mean_value = records["value"].mean() / 100
    assert 20 < mean_value < 1_000, mean_value  # reais per sale line


def test_product_names_are_distinct_fit_the_field_and_include_tricky_ones() -> None:
    names = product_names()
    assert len(names) == len(set(names)) == 5_000
    assert max(len(n.encode()) for n in names) <= 32
    assert all(n == n.strip() and "\x00" not in n for n in names)
    assert any("," in n for n in names) and any('"' in n for n in names)
    assert {n[0] for n in names} >= {"=", "+", "-", "@"}
    assert any(ch in "ãçéóúâ" for n in names for ch in n)


def test_exports_have_the_parser_fields(home: Path) -> None:
    table = pq.read_table(_inbox(home) / "export_0001.parquet")
    assert table.column_names == LAYOUT.arrow_schema.names
    assert table.cast(LAYOUT.arrow_schema).schema == LAYOUT.arrow_schema  # Parquet: ms
    assert table.num_rows == SMALL.parquet_records
    csv = pacsv.read_csv(
        _inbox(home) / "export_0001.csv",
        convert_options=pacsv.ConvertOptions(column_types=LAYOUT.arrow_schema),
    )
    assert csv.column_names == LAYOUT.arrow_schema.names
    assert csv.num_rows == SMALL.csv_records
    assert csv.cast(LAYOUT.arrow_schema).schema == LAYOUT.arrow_schema
    first_csv_id = SMALL.binary_records + 1
    assert csv.column("id")[0].as_py() == first_csv_id  # ids continue after the binaries


def test_malformed_corpus(home: Path) -> None:
    inbox = _inbox(home)
    truncated = (inbox / "bad_truncated.bin").stat().st_size
    assert truncated % 56 != 0 and truncated // 56 == SMALL.malformed_records
    assert (inbox / "bad_record_size.dat").stat().st_size == SMALL.malformed_records * 60
    assert (inbox / "bad_empty.bin").stat().st_size == 0

    utf8 = _decode(inbox / "bad_utf8.bin")
    undecodable = 0
    for raw in utf8["product"]:
        try:
            raw.decode()
        except UnicodeDecodeError:
            undecodable += 1
    assert undecodable == len(utf8[::10])

    stamps = _decode(inbox / "bad_timestamps.bin")["timestamp"]
    assert (stamps < 946_684_800).any() and (stamps > 2**63).any()
    assert (stamps > 2_082_758_399).sum() >= len(stamps) // 7 // 2

    text = (inbox / "bad_columns.csv").read_text()
    assert text.startswith("id,timestamp,quantity,value,product\n")
    for fragment in ("=HYPERLINK(", "=1+1", "abc", '"12,50"', ",extra", "ontem", "@SOMA"):
        assert fragment in text, fragment
    assert pq.read_schema(inbox / "bad_schema.parquet").names != LAYOUT.arrow_schema.names

    oversize = inbox / "bad_oversize.bin"
    assert oversize.stat().st_size == int((MAX_MB + 1) * 2**20)
    assert oversize.stat().st_blocks * 512 < 2**20, "the over-limit file is sparse"

    escape = inbox / "escape.csv"
    assert escape.is_symlink()
    assert not escape.resolve().is_relative_to(inbox.resolve())
    assert escape.resolve().is_file()
    hard = inbox / "escape_hardlink.csv"  # a plain name, the same inode as the outside file
    assert not hard.is_symlink() and hard.stat().st_nlink == 2
    assert hard.stat().st_ino == escape.resolve().stat().st_ino

    pages = inbox / "bad_pages.parquet"
    assert pq.read_metadata(pages).num_rows == SMALL.malformed_records  # the footer reads
    with pytest.raises(OSError):
        pq.read_table(pages)  # the pages do not
    newlines = (inbox / "bad_newlines.csv").read_bytes()
    assert newlines.startswith(b"\xef\xbb\xbfid,timestamp")
    for fragment in (b"Leite\rIntegral", b'"Cafe\nTorrado', b'"Queijo Minas\r\n', b"\x00", b"\xe9"):
        assert fragment in newlines, fragment
    assert (inbox / "export_0001_copy.csv").read_bytes() == (inbox / "export_0001.csv").read_bytes()


def test_idempotent_then_force(tmp_path: Path) -> None:
    first = write_etl_sources(tmp_path, "small", max_file_mb=MAX_MB)
    path = _inbox(tmp_path) / "records_0001.bin"
    stamp = path.stat().st_mtime_ns
    assert write_etl_sources(tmp_path, "small", max_file_mb=MAX_MB) == first
    assert path.stat().st_mtime_ns == stamp
    # a deleted file or another seed makes the inbox stale
    (_inbox(tmp_path) / "bad_empty.bin").unlink()
    write_etl_sources(tmp_path, "small", max_file_mb=MAX_MB)
    assert (_inbox(tmp_path) / "bad_empty.bin").is_file()
    before = _sha(path)
    write_etl_sources(tmp_path, "small", seed=7, max_file_mb=MAX_MB)
    assert _sha(path) != before
    write_etl_sources(tmp_path, "small", seed=7, max_file_mb=MAX_MB, force=True)
    assert read_manifest(tmp_path)["seed"] == 7


def test_same_seed_same_bytes(tmp_path: Path, home: Path) -> None:
    layout = LAYOUT
    catalogue = Catalogue.build(layout, sample.DEFAULT_SEED)
    again = tmp_path / "records_0001.bin"
    write_binary_file(
        again,
        SMALL.records_per_file,
        layout=layout,
        catalogue=catalogue,
        seed=sample.DEFAULT_SEED,
        first_id=1,
    )
    assert _sha(again) == _sha(_inbox(home) / "records_0001.bin")


def test_a_full_chunk_file_is_written_fast(tmp_path: Path) -> None:
    """One million records (a default-profile chunk) in well under the time budget."""
    catalogue = Catalogue.build(LAYOUT, sample.DEFAULT_SEED)
    path = tmp_path / "big.bin"
    started = time.perf_counter()
    size = write_binary_file(
        path, 1_000_000, layout=LAYOUT, catalogue=catalogue, seed=1, first_id=1
    )
    seconds = time.perf_counter() - started
    assert size == 56_000_000
    assert seconds < 10, f"{seconds:.1f}s for 1M records"
    tail = np.fromfile(path, dtype=LAYOUT.numpy_dtype, offset=56 * 999_999)
    assert tail["id"].tolist() == [1_000_000]
    path.unlink()
