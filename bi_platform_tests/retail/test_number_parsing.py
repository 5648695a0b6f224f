"""Property tests of the cleaning step's number parsing, lossless casts and text keys.

* pt-BR numbers generated from arbitrary decimals parse to exactly their value (up to the
  rounding of the target dtype);
* arbitrary text never crashes: each value either parses -- to what an independent
  reading of the pt-BR format says, finite and in range -- or is quarantined with the
  reason that reading gives;
* Polars and Dask give the same typed table and the same quarantine for the same
  generated export (differential tests, through the IO layer as the assets read it).
"""

from __future__ import annotations

import math
import re
import tempfile
import unicodedata
from decimal import Decimal
from pathlib import Path

import narwhals as nw
import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bi_platform.io_managers.engines import EngineConfig, load_parquet
from bi_platform.retail.cleaning import (
    FRACTION_REASON,
    NON_FINITE_REASON,
    UNPARSABLE_REASON,
    ambiguous_reason,
    inexact_integer_reason,
    normalize_text_keys,
    out_of_range_reason,
    quarantine_rows,
    typed_table,
)
from bi_platform.retail.schema import PT_BR, PT_BR_BRL, RetailTable

#: A price with currency (Float64), a quantity (Int32) and a weight (Float32), all
#: exported as pt-BR strings.
NUMBERS = RetailTable(
    "numeros",
    "Property-test table: string-typed numbers of three dtypes.",
    {"ID": pl.Int64(), "PRECO": pl.Float64(), "QTDE": pl.Int32(), "PESO": pl.Float32()},
    key=("ID",),
    raw_string_columns=("PRECO", "QTDE", "PESO"),
    number_formats={"PRECO": PT_BR_BRL},
)
COLUMNS = ("PRECO", "QTDE", "PESO")
INT32 = (-(2**31), 2**31 - 1)
FLOAT32_MAX = float(np.finfo(np.float32).max)
BLANKS = " \t\r\n\u00a0\u202f"

#: Polars only, in memory: cheap examples. Dask (differential) examples cost ~1 s each
#: (graph building), so fewer of them, each a column of up to 24 values.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIFFERENTIAL = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------
# An independent reading of the format (plain Python, not the module's regex)
# --------------------------------------------------------------------------------------
def reference_decimal(
    text: str, *, currency: bool, thousands: str = ".", decimal: str = ","
) -> Decimal | None:
    """The exact value ``text`` stands for in the format, or None when it is not one."""
    body = text.strip(BLANKS)
    signs = ""
    if body[:1] in "+-" and body:
        signs, body = body[0], body[1:]
    if currency and body.startswith("R$"):
        body = body[2:]
        if body[:1] and body[0] in " \u00a0\u202f":
            body = body[1:]
        if not signs and body[:1] and body[0] in "+-":
            signs, body = body[0], body[1:]
    integer, sep, fraction = body.partition(decimal)
    ascii_digits = set("0123456789")
    if sep and (not fraction or not set(fraction) <= ascii_digits):
        return None
    groups = integer.split(thousands)
    if not groups[0] or not set("".join(groups)) <= ascii_digits:
        return None
    if len(groups) > 1 and (
        len(groups[0]) > 3 or groups[0][0] == "0" or any(len(g) != 3 for g in groups[1:])
    ):
        return None
    magnitude = Decimal("".join(groups) + "." + (fraction or "0"))
    return -magnitude if signs == "-" else magnitude


def expected_outcome(text: str | None, column: str) -> tuple[object, str | None]:
    """(typed value, quarantine reason) the cleaning step must give for ``text``."""
    if text is None:
        return None, None
    currency = column == "PRECO"
    value = reference_decimal(text, currency=currency)
    if value is None:
        swapped = reference_decimal(text, currency=currency, thousands=",", decimal=".")
        return None, ambiguous_reason(PT_BR) if swapped is not None else UNPARSABLE_REASON
    if column == "QTDE":
        whole = int(value)  # the integer part (a range error is reported before a fraction)
        if not INT32[0] <= whole <= INT32[1]:
            return None, out_of_range_reason(pl.Int32())
        if value != whole:
            return None, FRACTION_REASON
        return whole, None
    as_float = float(value)
    if not math.isfinite(as_float):
        return None, NON_FINITE_REASON
    if column == "PESO" and abs(as_float) > FLOAT32_MAX:
        return None, out_of_range_reason(pl.Float32())
    return value, None


def close_to(got: float, value: Decimal, column: str) -> bool:
    """``got`` is ``value`` rounded to the column's float dtype (half an ulp; Float32 is
    parsed through Float64, so one float32 ulp)."""
    if column == "PESO":
        ulp32 = abs(float(np.spacing(np.float32(got))))
        return abs(Decimal(float(got)) - value) <= Decimal(ulp32)
    return abs(Decimal(got) - value) <= Decimal(math.ulp(got)) / 2


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------
def _grouped(digits: str) -> str:
    head = len(digits) % 3 or 3
    return ".".join([digits[:head], *(digits[i : i + 3] for i in range(head, len(digits), 3))])


@st.composite
def pt_br_numbers(draw: st.DrawFn, column: str, *, english: bool = False) -> tuple[str, Decimal]:
    """A value of ``column`` written the way the ERP (or a person) writes it in pt-BR --
    or, with ``english``, with the separators swapped (``"1,234.5"``, ``"12.5"``)."""
    if column == "QTDE":
        value = Decimal(draw(st.integers(*INT32)))
        places = draw(st.sampled_from([0, 0, 0, 2]))
    else:
        places = draw(st.integers(0, 6))
        bound = 10**15 if column == "PRECO" else 10**30
        value = draw(st.decimals(min_value=-bound, max_value=bound, places=places, allow_nan=False))
    integer, _, fraction = f"{abs(value):.{places}f}".partition(".")
    if len(integer) > 3 and draw(st.booleans()):
        integer = _grouped(integer)
    elif draw(st.integers(0, 9)) == 0:
        integer = "0" * draw(st.integers(1, 3)) + integer  # leading zeros
    fraction += "0" * draw(st.integers(0, 2)) if fraction else ""
    text = integer + (f",{fraction}" if fraction else "")
    if english:
        text = text.translate(str.maketrans(".,", ",."))
    sign = "-" if value < 0 else draw(st.sampled_from(["", "", "+"]))
    if column == "PRECO" and draw(st.booleans()):
        currency = draw(st.sampled_from(["R$", "R$ ", "R$\u00a0"]))
        text = sign + currency + text if draw(st.booleans()) else currency + sign + text
    else:
        text = sign + text
    blank = st.sampled_from(["", "", " ", "  ", "\t", "\u00a0"])
    return draw(blank) + text + draw(blank), value


NUMBERISH = "0123456789.,-+R$ \u00a0\t\uff11e"


def raw_values(column: str) -> st.SearchStrategy[str | None]:
    """Anything an export may hold: well-formed numbers, near misses (English format,
    fractions and huge values in the integer column), junk, nulls."""
    return st.one_of(
        pt_br_numbers(column).map(lambda pair: pair[0]),
        pt_br_numbers(column, english=True).map(lambda pair: pair[0]),
        pt_br_numbers("PESO").map(lambda pair: pair[0]),
        st.text(alphabet=NUMBERISH, max_size=14),
        st.text(max_size=8),
        st.builds(lambda n, z: n * z, st.sampled_from(["9", "1"]), st.integers(300, 420)),
        st.none(),
    )


def raw_columns(size: int) -> st.SearchStrategy[dict[str, list[str | None]]]:
    return st.integers(1, size).flatmap(
        lambda n: st.fixed_dictionaries(
            {c: st.lists(raw_values(c), min_size=n, max_size=n) for c in COLUMNS}
        )
    )


# --------------------------------------------------------------------------------------
# Running the cleaning step
# --------------------------------------------------------------------------------------
def _frame(columns: dict[str, list]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    return pl.DataFrame(
        {"ID": pl.Series(range(n), dtype=pl.Int64)}
        | {c: pl.Series(v, dtype=pl.String) for c, v in columns.items()}
    )


def _clean_lazy(raw: nw.LazyFrame, table: RetailTable) -> tuple[pl.DataFrame, pl.DataFrame]:
    typed = typed_table(raw, table).collect(backend="polars").to_native()
    rejected = quarantine_rows(raw, table).collect(backend="polars").to_native()
    return typed, rejected.sort("ID", "COLUNA")


def _clean_on_both(frame: pl.DataFrame, table: RetailTable) -> dict[str, tuple]:
    """(typed, quarantine) of ``frame`` read back from Parquet by each engine."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.parquet"
        frame.write_parquet(path)
        results = {}
        for engine in ("polars", "dask"):
            loaded = load_parquet(path, nw.LazyFrame, EngineConfig(force_dask=engine == "dask"))
            assert loaded.engine == engine
            results[engine] = _clean_lazy(loaded.frame, table)
    return results


def _assert_same(results: dict[str, tuple]) -> None:
    (typed_p, rejected_p), (typed_d, rejected_d) = results["polars"], results["dask"]
    assert typed_p.schema == typed_d.schema
    assert typed_p.equals(typed_d), (typed_p, typed_d)
    assert rejected_p.equals(rejected_d), (rejected_p, rejected_d)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------
@FAST
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.fixed_dictionaries(
            {c: st.lists(pt_br_numbers(c), min_size=n, max_size=n) for c in COLUMNS}
        )
    )
)
def test_pt_br_numbers_parse_to_their_exact_value(
    columns: dict[str, list[tuple[str, Decimal]]],
) -> None:
    frame = _frame({c: [text for text, _ in pairs] for c, pairs in columns.items()})
    typed, rejected = _clean_lazy(nw.from_native(frame.lazy()), NUMBERS)
    for column, pairs in columns.items():
        for got, (text, value) in zip(typed[column].to_list(), pairs, strict=True):
            if column == "QTDE":
                assert got == int(value), text
            elif column == "PESO" and abs(value) > Decimal(FLOAT32_MAX):
                assert got is None, text
            else:
                assert got is not None and close_to(got, value, column), (text, got, value)
    assert set(rejected["MOTIVO"]) <= {out_of_range_reason(pl.Float32())}


@FAST
@given(raw_columns(16))
def test_arbitrary_text_parses_as_the_format_says_or_is_quarantined(
    columns: dict[str, list[str | None]],
) -> None:
    frame = _frame(columns)
    typed, rejected = _clean_lazy(nw.from_native(frame.lazy()), NUMBERS)
    assert typed.height == frame.height
    reasons = {(row["ID"], row["COLUNA"]): row for row in rejected.iter_rows(named=True)}
    assert len(reasons) == rejected.height  # at most one row per value
    for column in COLUMNS:
        for i, (text, got) in enumerate(zip(columns[column], typed[column], strict=True)):
            value, reason = expected_outcome(text, column)
            row = reasons.get((i, column))
            if reason is None:
                assert row is None, (text, row)
                if value is None:
                    assert got is None
                elif column == "QTDE":
                    assert got == value, text
                else:
                    assert math.isfinite(got) and close_to(got, value, column), (text, got)
            else:
                assert got is None, (text, got)
                assert row is not None and row["MOTIVO"] == reason, (text, row, reason)
                assert row["VALOR_BRUTO"] == text and row["TABELA"] == "numeros"


@DIFFERENTIAL
@given(raw_columns(24))
def test_polars_and_dask_parse_the_same_column_identically(
    columns: dict[str, list[str | None]],
) -> None:
    _assert_same(_clean_on_both(_frame(columns), NUMBERS))


LOSSY = RetailTable(
    "conversoes",
    "Property-test table: numeric columns exported with another dtype than declared.",
    {
        "ID": pl.Int64(),
        "F_TO_I32": pl.Int32(),
        "I64_TO_I16": pl.Int16(),
        "F64_TO_F32": pl.Float32(),
        "I64_TO_F64": pl.Float64(),
        "U8_TO_I64": pl.Int64(),
    },
    key=("ID",),
)
_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**33), 2**33).map(float),
    st.integers(-(2**31), 2**31).map(lambda i: i + 0.5),
    st.none(),
)
_ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-40_000, 40_000), st.none())


@DIFFERENTIAL
@given(
    st.integers(1, 20).flatmap(
        lambda n: st.tuples(
            st.lists(_floats, min_size=n, max_size=n),
            st.lists(_ints, min_size=n, max_size=n),
            st.lists(_floats, min_size=n, max_size=n),
            st.lists(_ints, min_size=n, max_size=n),
            st.lists(st.one_of(st.integers(0, 255), st.none()), min_size=n, max_size=n),
        )
    )
)
def test_lossless_casts_are_exact_and_the_same_on_both_engines(
    values: tuple[list, list, list, list, list],
) -> None:
    floats, ints, doubles, big, small = values
    frame = pl.DataFrame(
        {
            "ID": pl.Series(range(len(floats)), dtype=pl.Int64),
            "F_TO_I32": pl.Series(floats, dtype=pl.Float64),
            "I64_TO_I16": pl.Series(ints, dtype=pl.Int64),
            "F64_TO_F32": pl.Series(doubles, dtype=pl.Float64),
            "I64_TO_F64": pl.Series(big, dtype=pl.Int64),
            "U8_TO_I64": pl.Series(small, dtype=pl.UInt8),
        }
    )
    results = _clean_on_both(frame, LOSSY)
    _assert_same(results)
    typed, rejected = results["polars"]
    assert typed.schema == pl.Schema(LOSSY.schema)
    rejected_keys = set(zip(rejected["ID"], rejected["COLUNA"], strict=True))
    for column in ("F_TO_I32", "I64_TO_I16", "I64_TO_F64", "U8_TO_I64"):
        for i, (raw, got) in enumerate(zip(frame[column], typed[column], strict=True)):
            if (i, column) in rejected_keys:
                assert got is None and raw is not None
            elif raw is None:
                assert got is None
            else:  # what is kept is exactly the raw value, never rounded or wrapped
                assert got == raw and int(got) == int(raw), (column, raw, got)
    assert "U8_TO_I64" not in set(rejected["COLUNA"])
    inexact = rejected.filter(pl.col("COLUNA") == "I64_TO_F64")
    assert set(inexact["MOTIVO"]) <= {inexact_integer_reason(pl.Float64())}
    assert all(abs(int(v)) > 2**53 for v in inexact["VALOR_BRUTO"])


_LETTERS = "ACEINOUaceinou \t\u00a0\u3000\u0301\u0303\u0327\u00c7\u00e3\u00c3\uff21"


@DIFFERENTIAL
@given(st.lists(st.one_of(st.text(alphabet=_LETTERS, max_size=10), st.none()), min_size=1))
def test_text_keys_are_python_nfc_and_strip_on_both_engines(values: list[str | None]) -> None:
    expected = [None if v is None else unicodedata.normalize("NFC", v).strip() for v in values]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.parquet"
        pl.DataFrame({"K": pl.Series(values, dtype=pl.String)}).write_parquet(path)
        for engine in ("polars", "dask"):
            loaded = load_parquet(path, nw.LazyFrame, EngineConfig(force_dask=engine == "dask"))
            out = normalize_text_keys(loaded.frame, ["K"]).collect(backend="polars")
            assert out["K"].to_list() == expected, engine


def test_reference_reading_agrees_with_the_documented_examples() -> None:
    """The test oracle itself, on the forms the format accepts and rejects."""
    read = lambda text: reference_decimal(text, currency=True)  # noqa: E731
    assert read("1.234") == 1234
    assert read("1.234,56") == Decimal("1234.56")
    assert read("1234,5") == Decimal("1234.5")
    assert read("R$ 12,90") == Decimal("12.90") == read("R$12,90") == read("\u00a0R$ 12,90 ")
    assert read("-0,5") == Decimal("-0.5") == read("R$ -0,5") == read("-R$ 0,5")
    assert read(" 7 ") == 7
    for bad in ("12.5", "1.23", "0.123", "1.2.3", ",5", "5,", "--5", "R$", "", "1e5"):
        assert read(bad) is None, bad
    assert re.fullmatch(r"[0-9]+", "\uff11") is None  # ASCII digits only, as in the module
