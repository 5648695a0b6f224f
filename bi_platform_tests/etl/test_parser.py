"""The parser: binary (chunked, memory-mapped, process pool), CSV and Parquet inputs,
dead letters with their reasons, and records in == records out + dead letters."""

import json
import logging
import os
import random
import re
import struct
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bi_platform.etl.layouts import LayoutField, RecordLayout, get_layout
from bi_platform.etl.parse_common import (
    DEAD_LETTER_SCHEMA,
    REASONS,
    EtlInputError,
    EtlOutputError,
    ParseOptions,
    ParseResult,
    detect_format,
    disk_schema,
)
from bi_platform.etl.parser import parse_file, read_records

LAYOUT = get_layout("default")
TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2035, 12, 31, 23, 59, 59, tzinfo=UTC)
T0 = 1_704_067_200  # 2024-01-01
PRODUCTS = ["Café Pilão 500g", "Açúcar União 1kg", "Leite", "x" * 32, "=HYPERLINK(1)", ""]


def options(layout: RecordLayout = LAYOUT, **kw: int) -> ParseOptions:
    return ParseOptions(layout, TS_MIN, TS_MAX, **kw)


def rows(n: int, seed: int = 1) -> list[tuple[int, int, int, int, bytes]]:
    rng = random.Random(seed)
    return [
        (
            i + 1,
            T0 + rng.randrange(366 * 86_400),
            rng.randrange(1, 20),
            rng.randrange(-500, 10**7),
            rng.choice(PRODUCTS).encode(),
        )
        for i in range(n)
    ]


def pack(records: list[tuple], fmt: str = "<IQIq32s") -> bytes:
    return b"".join(struct.pack(fmt, *r) for r in records)


def read(path: Path) -> pa.Table:
    return pq.ParquetFile(path).read()


def run(
    tmp_path: Path, path: Path, opts: ParseOptions, tag: str = "out"
) -> tuple[ParseResult, pa.Table, pa.Table]:
    result = parse_file(
        path, tmp_path / tag / "records.parquet", tmp_path / tag / "dead.parquet", opts
    )
    records, dead = read(result.records_path), read(result.dead_letter_path)
    assert result.records_in == result.records_out + result.dead_letter
    assert records.num_rows == result.records_out
    assert dead.num_rows == result.dead_letter
    assert sum(result.dead_letter_reasons.values()) == result.dead_letter
    assert set(result.dead_letter_reasons) <= set(REASONS)
    assert dead.schema.equals(DEAD_LETTER_SCHEMA)
    json.dumps(result.as_metadata())
    assert not list((tmp_path / tag).glob("*.tmp"))
    return result, records, dead


def as_tuples(records: pa.Table) -> list[tuple]:
    seconds = records.column("timestamp").cast(pa.int64()).to_pylist()
    return [
        (r["id"], s // 1000, r["quantity"], r["value"], r["product"].encode())
        for r, s in zip(records.to_pylist(), seconds, strict=True)
    ]


def test_binary_file_round_trips(tmp_path: Path) -> None:
    data = rows(1_000)
    source = tmp_path / "sales.bin"
    source.write_bytes(pack(data))
    result, records, dead = run(tmp_path, source, options())
    assert (result.format, result.size_bytes) == ("binary", 56_000)
    assert (result.records_in, result.records_out, result.dead_letter) == (1_000, 1_000, 0)
    assert result.source_file == "sales.bin"
    assert as_tuples(records) == data
    assert records.schema.remove_metadata() == disk_schema(LAYOUT)
    assert str(disk_schema(LAYOUT)) == str(
        pa.schema(
            [
                pa.field("id", pa.uint32(), False),
                pa.field("timestamp", pa.timestamp("ms", tz="UTC"), False),
                pa.field("quantity", pa.uint32(), False),
                pa.field("value", pa.int64(), False),
                pa.field("product", pa.string(), False),
            ]
        )
    )
    assert dead.num_rows == 0


def test_binary_dead_letters_carry_offset_raw_bytes_and_reason(tmp_path: Path) -> None:
    data = rows(12)
    bad = {
        3: (4, T0, 1, 1, b"Caf\xe9 \xff"),  # not UTF-8
        5: (6, 946_684_799, 1, 1, b"old"),  # one second before the window
        6: (7, 2_082_758_400, 1, 1, b"future"),  # one second after
        7: (8, 2**64 - 1, 1, 1, b"overflow"),  # beyond int64
    }
    for index, record in bad.items():
        data[index] = record
    tail = pack([data[0]])[:20]
    source = tmp_path / "bad.dat"
    source.write_bytes(pack(data) + tail)
    result, records, dead = run(tmp_path, source, options())
    assert (result.records_in, result.records_out, result.dead_letter) == (13, 8, 5)
    assert result.dead_letter_reasons == {
        "invalid_utf8": 1,
        "timestamp_out_of_range": 3,
        "truncated_record": 1,
    }
    entries = {e["row_number"]: e for e in dead.to_pylist()}
    assert set(entries) == {3, 5, 6, 7, 12}
    for index, record in bad.items():
        entry = entries[index]
        assert entry["source_file"] == "bad.dat"
        assert entry["byte_offset"] == index * 56
        assert entry["raw_hex"] == pack([record]).hex()
    assert (entries[3]["reason"], entries[3]["field"]) == ("invalid_utf8", "product")
    assert {entries[i]["field"] for i in (5, 6, 7)} == {"timestamp"}
    assert entries[12] == {
        "source_file": "bad.dat",
        "row_number": 12,
        "byte_offset": 12 * 56,
        "raw_hex": tail.hex(),
        "reason": "truncated_record",
        "field": None,
    }
    assert [r[0] for r in as_tuples(records)] == [1, 2, 3, 5, 9, 10, 11, 12]


def test_chunk_boundaries_and_the_process_pool_change_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = rows(3_001, seed=7)
    for index in (0, 16, 17, 33, 1_000, 2_999, 3_000):  # around 17-record chunk edges
        data[index] = (data[index][0], 5, 1, 1, b"bad time")
    for index in (18, 1_001):
        data[index] = (data[index][0], T0, 1, 1, b"\xc3\x28")
    source = tmp_path / "edges.bin"
    source.write_bytes(pack(data) + b"\x01\x02\x03")
    reference, ref_records, ref_dead = run(tmp_path, source, options(), "whole")
    assert (reference.records_out, reference.dead_letter) == (2_992, 10)
    caplog.set_level(logging.DEBUG, logger="bi_platform.etl.parse_binary")
    for chunk_bytes, workers in ((1_000, 1), (1_000, 2), (56 * 500, 2), (56 * 3, 2)):
        tag = f"c{chunk_bytes}w{workers}"
        result, records, dead = run(
            tmp_path, source, options(chunk_bytes=chunk_bytes, workers=workers), tag
        )
        assert records.equals(ref_records), tag
        assert dead.equals(ref_dead), tag
        assert result.dead_letter_reasons == reference.dead_letter_reasons
    pooled = [
        re.match(r"edges\.bin: (\d+) chunks, (\d+) decoded here while (\d+) worker", m)
        for m in caplog.messages
    ]
    runs = [tuple(int(x) for x in m.groups()) for m in pooled if m]
    # 1,000 B -> 17-record chunks; the process pool was used for every multi-chunk run
    assert [(chunks, workers) for chunks, _, workers in runs] == [(177, 2), (7, 2), (1001, 2)]
    chunks, here, _ = runs[-1]
    assert chunks - here > 0, runs  # the worker processes decoded chunks (in slots)


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    result, records, dead = run(tmp_path, empty, options(workers=2), "empty")
    assert (result.records_in, result.records_out, result.dead_letter) == (0, 0, 0)
    assert records.num_rows == 0 and records.schema.names == LAYOUT.arrow_schema.names
    for suffix in (".csv", ".parquet"):
        other = tmp_path / f"empty{suffix}"
        other.write_bytes(b"")
        assert run(tmp_path, other, options(), suffix[1:])[0].records_in == 0
    tiny = tmp_path / "tiny.bin"
    tiny.write_bytes(b"\xff" * 55)
    result, _, dead = run(tmp_path, tiny, options(), "tiny")
    assert (result.records_in, result.dead_letter) == (1, 1)
    assert dead.column("reason").to_pylist() == ["truncated_record"]


def test_a_misaligned_file_is_rejected_with_every_record_dead_lettered(tmp_path: Path) -> None:
    """60-byte records read with the 56-byte layout: a few windows decode to plausible
    records by chance; none is accepted, the file is rejected with the reason."""
    source = tmp_path / "wrong.bin"
    source.write_bytes(pack(rows(100), "<IQIq36s"))
    result, records, dead = run(tmp_path, source, options(chunk_bytes=56 * 30))
    assert result.records_in == -(-6_000 // 56) == result.dead_letter
    assert result.records_out == records.num_rows == 0
    assert result.rejected_reason is not None
    assert result.rejected_reason.startswith("misaligned: ")
    assert "not a multiple of the 56-byte record" in result.rejected_reason
    assert result.dead_letter_reasons == {"misaligned": 107, "truncated_record": 1}
    first = dead.to_pylist()[1]
    assert (first["row_number"], first["byte_offset"]) == (1, 56)
    assert first["raw_hex"] == source.read_bytes()[56:112].hex()
    # a size that is a multiple of the record: misaligned all the same (14 x 60 = 15 x 56)
    source.write_bytes(pack(rows(14), "<IQIq36s"))
    result, _, _ = run(tmp_path, source, options(), "multiple")
    assert result.records_in == 15 and result.rejected_reason is not None
    # few bad records in a truncated file: not misaligned, the tail alone dead-lettered
    source.write_bytes(pack(rows(20)) + b"\x01\x02")
    result, _, _ = run(tmp_path, source, options(), "truncated")
    assert result.rejected_reason is None and result.dead_letter == 1


def test_big_endian_and_float_layouts(tmp_path: Path) -> None:
    network = get_layout("network")
    data = rows(50)
    source = tmp_path / "net.bin"
    source.write_bytes(pack(data, network.struct_format))
    _, records, _ = run(tmp_path, source, options(network), "net")
    assert as_tuples(records) == data

    layout = RecordLayout(
        "readings",
        "<Iqdf",
        (
            LayoutField("id", "uint32"),
            LayoutField("at", "epoch_s"),
            LayoutField("reading", "float64"),
            LayoutField("ratio", "float32"),
        ),
    )
    values = [
        (1, T0, 1.5, 0.25),
        (2, T0, float("nan"), 1.0),
        (3, -5, 2.0, 1.0),
        (4, T0, 3.0, float("inf")),
        (5, T0 + 1, -0.0, 2.0),
    ]
    source = tmp_path / "readings.bin"
    source.write_bytes(pack(values, "<Iqdf"))
    _, records, dead = run(tmp_path, source, options(layout), "readings")
    assert records.column("id").to_pylist() == [1, 5]
    assert records.column("reading").to_pylist() == [1.5, -0.0]
    assert [(d["row_number"], d["reason"], d["field"]) for d in dead.to_pylist()] == [
        (1, "non_finite", "reading"),
        (2, "timestamp_out_of_range", "at"),
        (3, "non_finite", "ratio"),
    ]


def _csv(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_csv_with_the_same_fields_matches_the_binary_parse(tmp_path: Path) -> None:
    data = rows(200, seed=3)
    lines = ["id,timestamp,quantity,value,product"]
    for i, (id_, ts, q, v, p) in enumerate(data):
        stamp = (
            str(ts)
            if i % 3 == 0
            else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if i % 3 == 1
            else datetime.fromtimestamp(ts, UTC).isoformat()
        )
        text = p.decode().replace('"', '""')
        lines.append(f'{id_},{stamp},{q},{v},"{text}"')
    source = _csv(tmp_path / "export.csv", lines)
    result, records, _ = run(tmp_path, source, options())
    assert (result.format, result.records_in, result.dead_letter) == ("csv", 200, 0)
    assert as_tuples(records) == data
    binary = tmp_path / "same.bin"
    binary.write_bytes(pack(data))
    assert run(tmp_path, binary, options(), "bin")[1].equals(records)


def test_csv_malformed_rows_and_bad_values_are_dead_lettered(tmp_path: Path) -> None:
    lines: list[str | bytes] = [
        "id,timestamp,quantity,value,product",
        f"1,{T0},2,100,Leite",  # line 2 ok
        f"2,{T0},2",  # line 3 missing columns
        f"3,{T0},2,100,Leite,extra",  # line 4 extra column
        f"4,{T0},12x,100,Leite",  # line 5 bad number
        f"5,{T0},-3,100,Leite",  # 6 negative quantity
        f"6,{T0},4294967296,100,Leite",  # 7 uint32 overflow
        f"7,{T0},1,99999999999999999999,Leite",  # 8 int64 overflow
        "8,yesterday,1,100,Leite",  # 9 not a timestamp
        "9,1999-12-31T23:59:59Z,1,100,Leite",  # 10 before the window
        f"10,{T0},,100,Leite",  # 11 empty cell
        f"11,{T0},1,100,{'x' * 33}",  # 12 longer than the 32-byte field
        f"12,{T0},1,100,=HYPERLINK(1)",  # 13 formula text is data: kept
        f"13,{T0},1,100,".encode() + b"Caf\xe9",  # 14 not UTF-8
        f"14,{T0}, 7 ,+100,Leite",  # 15 ok (spaces, plus sign)
    ]
    source = _csv(tmp_path / "bad.csv", lines)
    result, records, dead = run(tmp_path, source, options())
    assert (result.records_in, result.records_out, result.dead_letter) == (14, 3, 11)
    assert records.column("id").to_pylist() == [1, 12, 14]
    assert records.column("product").to_pylist() == ["Leite", "=HYPERLINK(1)", "Leite"]
    assert records.column("quantity").to_pylist()[2] == 7
    found = {(d["row_number"], d["reason"], d["field"]) for d in dead.to_pylist()}
    assert found == {
        (3, "malformed_row", None),
        (4, "malformed_row", None),
        (5, "bad_number", "quantity"),
        (6, "out_of_range", "quantity"),
        (7, "out_of_range", "quantity"),
        (8, "out_of_range", "value"),
        (9, "bad_timestamp", "timestamp"),
        (10, "timestamp_out_of_range", "timestamp"),
        (11, "missing_value", "quantity"),
        (12, "text_too_long", "product"),
        (14, "invalid_utf8", "product"),
    }
    raw = {d["row_number"]: bytes.fromhex(d["raw_hex"]) for d in dead.to_pylist()}
    assert raw[3] == f"2,{T0},2".encode()
    assert raw[5] == f"4,{T0},12x,100,Leite".encode()
    assert raw[14] == f"13,{T0},1,100,".encode() + b"Caf\xe9"
    text = source.read_bytes()
    for entry in dead.to_pylist():  # the byte offset of each line in the file
        line = bytes.fromhex(entry["raw_hex"])
        assert text[entry["byte_offset"] : entry["byte_offset"] + len(line)] == line
    assert [d["row_number"] for d in dead.to_pylist()] == sorted(raw)  # in file order


def test_csv_header_spaces_bom_and_blank_lines(tmp_path: Path) -> None:
    source = _csv(
        tmp_path / "spaced.csv",
        [
            "\ufeffid , timestamp,quantity,value,product",
            f"1,{T0},1,1,a",
            "",
            f"2,{T0},x,1,b",
            f"3,{T0},1",
            f"4,{T0},1,1,d",
        ],
    )
    _, records, dead = run(tmp_path, source, options())
    assert records.column("id").to_pylist() == [1, 4]
    # row numbers are the file's line numbers: the header is line 1, blank lines count
    assert [(d["row_number"], d["reason"]) for d in dead.to_pylist()] == [
        (4, "bad_number"),
        (5, "malformed_row"),
    ]


def test_csv_without_a_layout_column_dead_letters_every_row(tmp_path: Path) -> None:
    source = _csv(
        tmp_path / "nocol.csv",
        ["id,timestamp,quantity,product", f"1,{T0},2,a", f"2,{T0},2,b", f"3,{T0}"],
    )
    result, _, dead = run(tmp_path, source, options())
    assert (result.records_in, result.records_out) == (3, 0)
    assert result.dead_letter_reasons == {"missing_field": 2, "malformed_row": 1}
    assert set(dead.column("field").to_pylist()) == {"value", None}
    header_only = _csv(tmp_path / "header.csv", ["id,timestamp,quantity,value,product"])
    assert run(tmp_path, header_only, options(), "h")[0].records_in == 0


def test_parquet_input_is_cast_and_validated(tmp_path: Path) -> None:
    table = pa.table(
        {
            "product": pa.array(["Leite", "Café", None, "Pão", "Queijo", "Sal"]),
            "id": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "timestamp": pa.array(
                [T0 * 10**6, T0 * 10**6 + 1_500_000, T0 * 10**6, 0, T0 * 10**6, T0 * 10**6],
                pa.timestamp("us"),
            ),
            "quantity": pa.array([1, 2, 3, 4, -1, 2**33], pa.int64()),
            "value": pa.array([10, 20, 30, 40, 50, 60], pa.int32()),
            "ignored": pa.array(["a"] * 6),
        }
    )
    source = tmp_path / "export.parquet"
    pq.write_table(table, source)
    result, records, dead = run(tmp_path, source, options())
    assert (result.format, result.records_in, result.records_out) == ("parquet", 6, 2)
    assert as_tuples(records) == [(1, T0, 1, 10, b"Leite"), (2, T0 + 1, 2, 20, "Café".encode())]
    assert [(d["row_number"], d["reason"], d["field"]) for d in dead.to_pylist()] == [
        (2, "missing_value", "product"),
        (3, "timestamp_out_of_range", "timestamp"),
        (4, "out_of_range", "quantity"),
        (5, "out_of_range", "quantity"),
    ]
    row = json.loads(bytes.fromhex(dead.to_pylist()[0]["raw_hex"]))
    assert row["id"] == 3 and row["product"] is None


def test_parquet_with_the_wrong_schema_dead_letters_every_row(tmp_path: Path) -> None:
    n = 2_500
    missing = pa.table(
        {
            "id": pa.array(range(n), pa.uint32()),
            "timestamp": pa.array([T0] * n, pa.int64()),
            "quantity": pa.array([1] * n, pa.uint32()),
            "product": pa.array(["a"] * n),
        }
    )
    source = tmp_path / "missing.parquet"
    pq.write_table(missing, source, row_group_size=1_000)
    result, _, dead = run(tmp_path, source, options(), "missing")
    assert (result.records_in, result.records_out, result.dead_letter) == (n, 0, n)
    assert set(dead.column("reason").to_pylist()) == {"missing_field"}
    assert set(dead.column("field").to_pylist()) == {"value"}
    assert dead.column("row_number").to_pylist() == list(range(n))

    wrong = missing.append_column("value", pa.array([[1, 2]] * n, pa.list_(pa.int64())))
    source = tmp_path / "wrong.parquet"
    pq.write_table(wrong, source)
    result, _, dead = run(tmp_path, source, options(), "wrong")
    assert (result.records_in, result.dead_letter) == (n, n)
    assert result.dead_letter_reasons == {"bad_type": n}
    assert set(dead.column("field").to_pylist()) == {"value"}


def test_corrupt_parquet_pages_raise_etl_input_error(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array(range(1_000), pa.uint32()), "product": ["x"] * 1_000})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = bytearray(sink.getvalue().to_pybytes())
    chunk = pq.read_metadata(pa.BufferReader(bytes(data))).row_group(0).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start : start + 16] = b"\xff" * 16
    broken = tmp_path / "pages.parquet"
    broken.write_bytes(bytes(data))
    pq.read_metadata(broken)  # the footer reads
    with pytest.raises(EtlInputError, match=r"pages\.parquet: corrupt Parquet data"):
        parse_file(broken, tmp_path / "o" / "r.parquet", tmp_path / "o" / "d.parquet", options())
    assert not (tmp_path / "o" / "r.parquet").exists()


def test_the_parse_reads_only_the_descriptor_it_is_given(tmp_path: Path) -> None:
    """The name is only used for the format: the bytes come from ``fd``, in this process
    and in the worker processes (which map it through /proc, not through the name)."""
    data = rows(600, seed=5)
    source = tmp_path / "sales.bin"
    source.write_bytes(pack(data))
    fd = os.open(source, os.O_RDONLY)
    try:
        source.unlink()
        source.write_bytes(pack(rows(3, seed=9)))  # another file under the name now
        for workers in (1, 2):
            result = parse_file(
                source,
                tmp_path / f"w{workers}" / "r.parquet",
                tmp_path / f"w{workers}" / "d.parquet",
                options(chunk_bytes=56 * 50, workers=workers),
                fd=fd,
            )
            assert result.records_out == 600
            assert as_tuples(read(result.records_path)) == data
    finally:
        os.close(fd)


def test_an_output_that_cannot_be_written_is_not_an_input_error(tmp_path: Path) -> None:
    source = tmp_path / "sales.bin"
    source.write_bytes(pack(rows(5)))
    (tmp_path / "blocked").write_text("a file where the output directory should be")
    with pytest.raises(EtlOutputError):
        parse_file(source, tmp_path / "blocked" / "r.parquet", tmp_path / "d.parquet", options())


def test_unusable_files_raise_etl_input_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"PAR1 not really")
    previous = tmp_path / "out" / "records.parquet"
    previous.parent.mkdir()
    previous.write_bytes(b"previous output")
    with pytest.raises(EtlInputError, match=r"fake\.parquet: not a readable Parquet file"):
        parse_file(fake, previous, tmp_path / "out" / "dead.parquet", options())
    assert previous.read_bytes() == b"previous output"  # atomic: untouched on failure
    assert sorted(p.name for p in previous.parent.iterdir()) == ["records.parquet"]
    with pytest.raises(EtlInputError, match=r"unsupported file type '\.txt'"):
        detect_format(tmp_path / "notes.txt")
    assert detect_format(Path("A.BIN")) == "binary"


def test_read_records_scans_many_files(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        source = tmp_path / f"part{i}.bin"
        source.write_bytes(pack(rows(100, seed=i)))
        paths.append(run(tmp_path, source, options(), f"p{i}")[0].records_path)
    frame = read_records(paths).collect()
    assert frame.height == 200
    assert frame.columns == ["id", "timestamp", "quantity", "value", "product"]
    empty = read_records([]).collect()
    assert empty.height == 0 and empty.schema == frame.schema


def test_parse_options_validation() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ParseOptions(LAYOUT, datetime(2000, 1, 1), TS_MAX)
    with pytest.raises(ValueError, match="after"):
        ParseOptions(LAYOUT, TS_MAX, TS_MIN)
    with pytest.raises(ValueError, match=">= 1"):
        options(workers=0)
    opts = options(chunk_bytes=100)
    assert opts.chunk_records == 1 and opts.epoch_bounds == (946_684_800, 2_082_758_399)
    from_settings = ParseOptions.from_settings()
    assert from_settings.layout == LAYOUT and from_settings.workers >= 1
    assert from_settings.chunk_bytes == 64 * 2**20
