"""CSV neutralised against formula injection: cells, header names, round trip."""

import csv
from pathlib import Path

import pyarrow as pa
import pytest

from bi_platform.lib.safe_csv import (
    FORMULA_PREFIXES,
    csv_bytes,
    neutralise_csv_cell,
    write_csv_safe,
)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Café Pilão", "Café Pilão"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralise_csv_cell(cell: str, expected: str) -> None:
    assert neutralise_csv_cell(cell) == expected


def test_write_csv_safe_round_trips_through_the_csv_module(tmp_path: Path) -> None:
    cells = [
        "=1+2",
        "+SUM(A1:A9)",
        "-cmd|' /C calc'!A0",
        "@import",
        "\t=tab",
        "\r=cr",
        'quote " inside',
        "comma, inside",
        "line\nbreak",
        "Açúcar União 1kg",
        None,
    ]
    table = pa.table(
        {
            "text": pa.array(cells, pa.string()),
            "amount": pa.array([-5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], pa.int64()),
            "label": pa.array(["=x"] * 11, pa.string()).dictionary_encode(),
        }
    )
    out = tmp_path / "out" / "dead_letter.csv"
    write_csv_safe(table, out)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["text", "amount", "label"]
    body = rows[1:]
    assert len(body) == len(cells)
    expected = [neutralise_csv_cell(c) if c is not None else "" for c in cells]
    assert [r[0] for r in body] == expected
    assert all(not r[0].startswith(("=", "+", "-", "@", "\t", "\r")) for r in body)
    assert [r[1] for r in body][:2] == ["-5", "1"]  # numbers are numbers, not formulas
    assert {r[2] for r in body} == {"'=x"}
    assert not list(out.parent.glob("*.tmp"))


def test_write_csv_safe_neutralises_header_names(tmp_path: Path) -> None:
    out = tmp_path / "h.csv"
    write_csv_safe(pa.table({"=cmd": ["a"]}), out)
    with out.open(newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["'=cmd"]


def test_csv_bytes_neutralises_like_the_file_writer(tmp_path: Path) -> None:
    table = pa.table({"=h": ["=1+2", "ok"]})
    write_csv_safe(table, tmp_path / "t.csv")
    assert csv_bytes(table) == (tmp_path / "t.csv").read_bytes()
    assert not any(
        line.startswith(FORMULA_PREFIXES) for line in csv_bytes(table).decode().splitlines()
    )
