"""Property tests (hypothesis): for any bytes, the parse and the independent recount of
the reconcile check agree, and records in = records out + dead-letter entries.

CSV bytes mix a valid header and rows with quotes, commas, CR, LF, CRLF, BOM, NUL and
invalid UTF-8; binary files have any length and content (and sometimes valid records).
"""

from __future__ import annotations

import os
import struct
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bi_platform.etl.checks import count_csv_records, count_source_records
from bi_platform.etl.layouts import get_layout
from bi_platform.etl.parse_common import REASONS, ParseOptions
from bi_platform.etl.parser import parse_file

LAYOUT = get_layout("default")
OPTIONS = ParseOptions(
    LAYOUT,
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2035, 12, 31, 23, 59, 59, tzinfo=UTC),
    chunk_bytes=56 * 16,
)
HEADER = b"id,timestamp,quantity,value,product"
T0 = 1_704_067_200
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Pieces a CSV line is made of: sound cells and every character that upsets line readers.
_CELLS = st.sampled_from(
    [b"1", b"42", str(T0).encode(), b"2026-01-05T10:00:00Z", b"7", b"-3", b"Leite", b"x" * 40,
     b'"Caf\xc3\xa9, 500g"', b'"a""b"', b'"', b'""', b'"open', b"\r", b"\n", b"\r\n",
     b"\xef\xbb\xbf", b"\x00", b"\xff\xfe", b"\xe9", b",", b" ", b"=1+1", b"12x"]
)  # fmt: skip
_LINES = st.lists(_CELLS, min_size=0, max_size=8).map(b",".join)
_CSV = st.tuples(
    st.sampled_from([HEADER, b"\xef\xbb\xbf" + HEADER, b"", b"id,value", b'"id",product']),
    st.lists(_LINES, max_size=25),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.booleans(),
).map(lambda t: t[0] + t[2] + t[2].join(t[1]) + (t[2] if t[3] else b""))


def _check(path: Path, out: Path) -> None:
    result = parse_file(path, out / "records.parquet", out / "dead.parquet", OPTIONS)
    records = pq.read_metadata(result.records_path).num_rows
    dead = pq.read_metadata(result.dead_letter_path).num_rows
    assert result.records_in == result.records_out + result.dead_letter
    assert (records, dead) == (result.records_out, result.dead_letter)
    assert set(result.dead_letter_reasons) <= set(REASONS)
    fd = os.open(path, os.O_RDONLY)
    try:
        fmt = "csv" if path.suffix == ".csv" else "binary"
        recount = count_source_records(fd, path.stat().st_size, fmt, LAYOUT)
    finally:
        os.close(fd)
    assert recount == result.records_in == records + dead  # the reconcile check passes


@PROPERTY
@given(data=_CSV)
def test_any_csv_bytes_reconcile(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "any.csv"
    path.write_bytes(data)
    _check(path, tmp_path / "out")


@PROPERTY
@given(data=st.binary(max_size=400))
def test_any_raw_csv_bytes_reconcile(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "raw.csv"
    path.write_bytes(HEADER + b"\n" + data)
    _check(path, tmp_path / "out")


@PROPERTY
@given(
    good=st.integers(0, 40),
    noise=st.binary(max_size=300),
    where=st.integers(0, 2_000),
)
def test_any_binary_file_reconciles(tmp_path: Path, good: int, noise: bytes, where: int) -> None:
    """Valid records with arbitrary bytes inserted anywhere (misaligning what follows),
    any length."""
    valid = b"".join(
        struct.pack("<IQIq32s", i, T0 + i, 1 + i % 5, 100 * i, b"Leite") for i in range(good)
    )
    at = min(where, len(valid))
    path = tmp_path / "any.bin"
    path.write_bytes(valid[:at] + noise + valid[at:])
    _check(path, tmp_path / "out")


def test_the_recount_follows_the_line_rules() -> None:
    def count(data: bytes) -> int:
        return count_csv_records(np.frombuffer(data, np.uint8))

    assert count(b"") == 0
    assert count(b"h") == 0 and count(b"h\n") == 0
    assert count(b"h\r\n\r\n\n1\r\n") == 1  # blank lines (CRLF or LF) are not records
    assert count(b"h\n1\r2\n3") == 2  # a bare CR does not end a line; the last line counts
    assert count(b'h\n"a\nb"\n') == 2  # a quoted line break: two lines, two records
    assert count(b"h\n\r\r\n") == 1  # a CR that is not the terminator's is content
