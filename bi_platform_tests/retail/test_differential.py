"""One outcome per input, whatever the engine: a corpus of malformed admmat exports goes
through the cleaning the clean step runs (`RetailExportsResource.clean`) on three paths,

- ``polars``: the export routed to Polars (threshold far above its size),
- ``dask``: Dask only (``FORCE_DASK``),
- ``hybrid``: routed to Polars, whose collect panics (a Rust ``PanicException``): the
  cleaning falls back to Dask,

and each path must give the same outcome: the same typed rows and quarantine rows, or
the same error naming the table and the file.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import narwhals as nw
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bi_platform.io_managers.engines import EngineConfig, read_polars
from bi_platform.retail.resources import RawExportError, RetailExportsResource
from bi_platform.retail.sample import generate_admmat
from bi_platform.retail.schema import TABLES

ADMMAT = TABLES["admmat"]
PATHS = ("polars", "dask", "hybrid")


@dataclass(frozen=True)
class Outcome:
    """Rows (typed and quarantine, order-free digests) or an error (type, table, file)."""

    typed: str | None = None
    quarantine: str | None = None
    typed_rows: int | None = None
    error: tuple[str, str, str] | None = None


def _digest(frame: pl.DataFrame) -> str:
    canonical = frame.sort(frame.columns, nulls_last=True).write_csv()
    return hashlib.sha256(canonical.encode()).hexdigest()


def _panicking_reader(files, *, lazy, columns=None):
    """A Polars scan that panics when collected, as a Rust bug in the reader would."""

    def panic(batch: pl.DataFrame) -> pl.DataFrame:
        raise pl.exceptions.PanicException("assertion failed: offset < len (injected)")

    frame = read_polars(files, lazy=True, columns=columns)
    return frame.map_batches(panic, schema=frame.collect_schema()) if lazy else frame


def clean_outcome(raw_dir: Path, path: str) -> Outcome:
    resource = RetailExportsResource(raw_dir=str(raw_dir))
    polars = EngineConfig(polars_threshold_mb="100000", verify_checksums=True)
    config = EngineConfig(force_dask=True) if path == "dask" else polars
    reader = _panicking_reader if path == "hybrid" else read_polars
    try:
        cleaned = resource.clean(ADMMAT, config, polars_reader=reader)
    except RawExportError as exc:
        message = str(exc)
        table = "admmat" if "'admmat'" in message else "?"
        source = str(resource.path(ADMMAT))
        return Outcome(error=(type(exc).__name__, table, source if source in message else "?"))
    typed = nw.from_native(cleaned.typed)
    if isinstance(typed, nw.LazyFrame):  # Dask: computed here
        typed = typed.collect(backend="polars")
    typed = typed.to_native()
    typed = typed.with_columns(pl.col(c).cast(t) for c, t in ADMMAT.schema.items())
    quarantine = cleaned.quarantine.to_native() if cleaned.quarantine is not None else None
    if path == "hybrid":
        assert cleaned.fallback_error and "PanicException" in cleaned.fallback_error
    return Outcome(
        typed=_digest(typed),
        quarantine=_digest(quarantine.cast(pl.String)) if quarantine is not None else None,
        typed_rows=typed.height,
    )


@pytest.fixture(scope="module")
def good_export() -> pl.DataFrame:
    return generate_admmat(300, stores=4, seed=21)


def _write(frame: pl.DataFrame, path: Path) -> None:
    pq.write_table(frame.to_arrow(), path, write_page_checksum=True, compression="none")


def _corrupt_page(path: Path) -> None:
    meta = pq.read_metadata(path)
    column = meta.row_group(0).column(meta.schema.to_arrow_schema().get_field_index("MES_01"))
    start = column.dictionary_page_offset if column.has_dictionary_page else None
    offset = (start or column.data_page_offset) + column.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _case_clean(frame: pl.DataFrame, raw: Path) -> None:
    _write(frame, raw / "admmat.parquet")


def _case_empty(frame: pl.DataFrame, raw: Path) -> None:
    _write(frame.head(0), raw / "admmat.parquet")


def _case_corrupt_page(frame: pl.DataFrame, raw: Path) -> None:
    _write(frame, raw / "admmat.parquet")
    _corrupt_page(raw / "admmat.parquet")


def _case_truncated(frame: pl.DataFrame, raw: Path) -> None:
    _write(frame, raw / "admmat.parquet")
    data = (raw / "admmat.parquet").read_bytes()
    (raw / "admmat.parquet").write_bytes(data[: len(data) // 2])


def _case_parts_disagree(frame: pl.DataFrame, raw: Path) -> None:
    table = raw / "admmat.parquet"
    table.mkdir()
    _write(frame.head(150), table / "part.0.parquet")
    flipped = frame.tail(150).to_arrow()
    index = flipped.schema.get_field_index("LEADTIME_LV")
    flipped = flipped.set_column(
        index, "LEADTIME_LV", flipped.column("LEADTIME_LV").cast(pa.int64())
    )
    pq.write_table(flipped, table / "part.1.parquet", write_page_checksum=True)


def _with_values(column: str, values: list) -> Callable[[pl.DataFrame, Path], None]:
    """The export with the first ``len(values)`` rows of ``column`` replaced."""

    def case(frame: pl.DataFrame, raw: Path) -> None:
        head = frame.head(len(values)).with_columns(
            pl.Series(column, values, dtype=frame.schema[column])
        )
        _write(pl.concat([head, frame.slice(len(values))]), raw / "admmat.parquet")

    return case


def _case_float_in_int32(frame: pl.DataFrame, raw: Path) -> None:
    values = [10.7, 10.0, 3.5e9, None] + [7.0] * (frame.height - 4)
    _write(frame.with_columns(pl.Series("LEADTIME_LV", values)), raw / "admmat.parquet")


def _case_timestamp_with_offset(frame: pl.DataFrame, raw: Path) -> None:
    table = frame.to_arrow()
    index = table.schema.get_field_index("ULTIMA_ATUALIZACAO")
    column = pc.assume_timezone(table.column(index), "-03:00")  # the same wall time
    pq.write_table(
        table.set_column(index, pa.field("ULTIMA_ATUALIZACAO", column.type), column),
        raw / "admmat.parquet",
        write_page_checksum=True,
    )


def _case_nfd_segment(frame: pl.DataFrame, raw: Path) -> None:
    nfd = unicodedata.normalize("NFD", "ARMARINHO E CONFECÇÃO")
    segment = pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit(nfd + " "))
    frame = frame.with_columns(segment.otherwise(pl.col("NOMESEGMENTO")).alias("NOMESEGMENTO"))
    _write(frame, raw / "admmat.parquet")


CASES: dict[str, Callable[[pl.DataFrame, Path], None]] = {
    "clean export": _case_clean,
    "pt-BR thousands and decimals": _with_values(
        "LIQUIDO_38", ["1.234", "1.234,56", "R$ 12,90", " 7 ", "-0,5"]
    ),
    "ambiguous dot decimals": _with_values("ESTOQUE_CD", ["12.5", "1.23", "0.123"]),
    "a run of 400 nines": _with_values("ESTOQUE_UNE", ["9" * 400, "-" + "9" * 400]),
    "full-width digits": _with_values("ESTOQUE_LV", ["\uff11\uff12\uff13", "\u0661\u0662"]),
    "a float in an Int32 column": _case_float_in_int32,
    "a timestamp with a -03:00 offset": _case_timestamp_with_offset,
    "NFD and padded segment names": _case_nfd_segment,
    "0-row export": _case_empty,
    "corrupt data page": _case_corrupt_page,
    "truncated file": _case_truncated,
    "parts with different dtypes": _case_parts_disagree,
}
#: What each case must give: rows, or an error whose text says why.
EXPECTED_ERRORS = {"corrupt data page", "truncated file", "parts with different dtypes"}


@pytest.mark.parametrize("case", list(CASES))
def test_every_engine_path_gives_the_same_outcome(
    case: str, good_export: pl.DataFrame, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    CASES[case](good_export, raw)
    outcomes = {path: clean_outcome(raw, path) for path in PATHS}
    assert outcomes["dask"] == outcomes["polars"] == outcomes["hybrid"], outcomes
    outcome = outcomes["polars"]
    if case in EXPECTED_ERRORS:
        assert outcome.error == ("RawExportError", "admmat", str(raw / "admmat.parquet"))
    else:
        assert outcome.error is None
        assert outcome.typed_rows == (0 if case == "0-row export" else good_export.height)


def test_what_the_corpus_cleans_to(good_export: pl.DataFrame, tmp_path: Path) -> None:
    """The values the differential cases agree on are the right ones (checked on Dask,
    the engine the others were compared with)."""
    resource = RetailExportsResource(raw_dir=str(tmp_path))
    dask = EngineConfig(force_dask=True)

    def cleaned(case: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        for old in tmp_path.iterdir():
            old.unlink()
        CASES[case](good_export, tmp_path)
        result = resource.clean(ADMMAT, dask)
        typed = nw.from_native(result.typed).collect(backend="polars").to_native()
        return typed, result.quarantine.to_native()

    typed, _ = cleaned("pt-BR thousands and decimals")
    assert typed["LIQUIDO_38"].head(5).to_list() == [1234.0, 1234.56, 12.9, 7.0, -0.5]
    for case, column in (
        ("ambiguous dot decimals", "ESTOQUE_CD"),
        ("a run of 400 nines", "ESTOQUE_UNE"),
        ("full-width digits", "ESTOQUE_LV"),
    ):
        typed, quarantine = cleaned(case)
        rows = len(quarantine.filter(pl.col("COLUNA") == column))
        assert rows >= (3 if case == "ambiguous dot decimals" else 2), case
        assert typed[column].is_infinite().sum() == 0
    typed, quarantine = cleaned("a float in an Int32 column")
    assert typed["LEADTIME_LV"].head(4).to_list() == [None, 10, None, None]
    reasons = quarantine.filter(pl.col("COLUNA") == "LEADTIME_LV")["MOTIVO"].to_list()
    assert sorted(set(reasons)) == ["fraction in an integer column", "out of range for Int32"]
    typed, _ = cleaned("a timestamp with a -03:00 offset")
    expected = good_export["ULTIMA_ATUALIZACAO"].head(3).to_list()
    assert typed["ULTIMA_ATUALIZACAO"].head(3).to_list() == expected  # São Paulo wall time
    typed, _ = cleaned("NFD and padded segment names")
    segments = set(typed["NOMESEGMENTO"].to_list())
    assert unicodedata.normalize("NFD", "ARMARINHO E CONFECÇÃO") not in segments
    assert "ARMARINHO E CONFECÇÃO" in segments
