"""One outcome whatever the engine: page checksums verified before a read, part files
that disagree refused naming the file, Polars panics falling back to Dask, and staged
(write-audit-publish) versions invisible until published."""

from __future__ import annotations

from pathlib import Path

import dask.dataframe as dd
import narwhals as nw
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bi_platform.io_managers.engines import (
    KEEP_STAGED,
    Engine,
    EngineConfig,
    load_parquet,
    parquet_row_count,
    publish_staged,
    write_parquet,
)
from bi_platform.io_managers.integrity import (
    CorruptParquetError,
    InconsistentPartsError,
    VerifiedFiles,
)

POLARS = EngineConfig(polars_threshold_mb="500", validate_integrity=True)
DASK = EngineConfig(force_dask=True)
KINDS = (pl.LazyFrame, nw.LazyFrame, dd.DataFrame)


def _flip_a_data_byte(path: Path) -> None:
    """Corrupt one byte inside the first data page of column ``a`` (uncompressed)."""
    meta = pq.read_metadata(path)
    column = meta.row_group(0).column(0)
    start = column.dictionary_page_offset if column.has_dictionary_page else None
    offset = (start or column.data_page_offset) + column.total_compressed_size // 2
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_flipped_byte_is_caught_on_every_engine_instead_of_a_wrong_sum(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.parquet"
    values = np.arange(100_000, dtype=np.int64)
    pq.write_table(pa.table({"a": values}), path, compression="none", write_page_checksum=True)
    _flip_a_data_byte(path)
    # what both engines do without verification: a wrong total, silently
    assert pl.read_parquet(path)["a"].sum() != values.sum()
    for config in (POLARS, DASK):
        for kind in KINDS:
            with pytest.raises(CorruptParquetError, match=r"t\.parquet.*CRC") as raised:
                load_parquet(path, kind, config)
            assert raised.value.path == path


def test_lake_files_carry_page_checksums(tmp_path: Path) -> None:
    frame = pl.DataFrame({"a": np.arange(50_000), "b": np.random.default_rng(1).random(50_000)})
    written = write_parquet(frame, tmp_path / "lake.parquet")
    _flip_a_data_byte(written.path)
    with pytest.raises(CorruptParquetError, match="CRC"):
        load_parquet(written.path, nw.LazyFrame, POLARS)
    parts = write_parquet(dd.from_pandas(frame.to_pandas(), npartitions=2), tmp_path / "d.parquet")
    part = sorted(parts.path.resolve().glob("*.parquet"))[0]
    _flip_a_data_byte(part)
    with pytest.raises(CorruptParquetError, match=part.name):
        load_parquet(parts.path, nw.LazyFrame, DASK)


def test_a_verified_version_is_not_read_twice_but_a_rewrite_is(tmp_path: Path) -> None:
    path = write_parquet(pl.DataFrame({"a": [1, 2, 3]}), tmp_path / "t.parquet").path
    verified = VerifiedFiles(tmp_path / "cache")
    assert verified.verify([path]) == 1
    assert verified.verify([path]) == 0  # same version: a stat, no read
    write_parquet(pl.DataFrame({"a": [4, 5]}), path)  # a new version (new inode)
    assert verified.verify([path]) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (pa.array([1], pa.int64()), pa.array([2.5], pa.float64())),
        (pa.array([1], pa.int32()), pa.array([2], pa.int64())),
        (pa.array([1], pa.timestamp("us")), pa.array([1], pa.timestamp("ns"))),
    ],
    ids=["int-vs-float", "int32-vs-int64", "us-vs-ns"],
)
def test_parts_that_disagree_fail_naming_the_part_on_every_engine(
    tmp_path: Path, first: pa.Array, second: pa.Array
) -> None:
    table = tmp_path / "t.parquet"
    table.mkdir()
    pq.write_table(pa.table({"x": first}), table / "part.0.parquet")
    pq.write_table(pa.table({"x": second}), table / "part.1.parquet")
    for config in (POLARS, DASK):
        for kind in KINDS:
            with pytest.raises(InconsistentPartsError, match=r"part\.1\.parquet.*x:"):
                load_parquet(table, kind, config)


def test_string_and_large_string_parts_are_the_same_type(tmp_path: Path) -> None:
    table = tmp_path / "t.parquet"
    table.mkdir()
    pq.write_table(pa.table({"x": pa.array(["a"], pa.string())}), table / "part.0.parquet")
    pq.write_table(pa.table({"x": pa.array(["b"], pa.large_string())}), table / "part.1.parquet")
    for config in (POLARS, DASK):
        loaded = load_parquet(table, nw.DataFrame, config)
        assert sorted(loaded.frame["x"].to_list()) == ["a", "b"]


def test_a_polars_panic_falls_back_to_dask(tmp_path: Path) -> None:
    path = write_parquet(pl.DataFrame({"a": [1, 2, 3]}), tmp_path / "t.parquet").path

    def panicking(files, *, lazy, columns=None):
        raise pl.exceptions.PanicException("called `Option::unwrap()` on a `None` value")

    loaded = load_parquet(path, nw.DataFrame, POLARS, polars_reader=panicking)
    assert loaded.fallback and loaded.engine is Engine.DASK and loaded.validated
    assert "PanicException" in (loaded.error or "")
    assert sorted(loaded.frame["a"].to_list()) == [1, 2, 3]


@pytest.mark.parametrize("engine", ["polars", "dask"])
def test_a_staged_version_is_invisible_until_published(tmp_path: Path, engine: str) -> None:
    final = tmp_path / "t.parquet"
    write_parquet(pl.DataFrame({"a": [1, 2, 3]}), final)

    def frame(rows: int):
        data = pl.DataFrame({"a": list(range(rows))})
        return data if engine == "polars" else dd.from_pandas(data.to_pandas(), npartitions=2)

    staged = write_parquet(frame(10), final, publish=False)
    assert staged.staged is not None and staged.rows == 10
    assert parquet_row_count(final) == 3  # readers still see the published version
    assert load_parquet(final, nw.DataFrame, POLARS).frame.shape == (3, 1)
    publish_staged(staged.staged, final)
    assert parquet_row_count(final) == 10
    if engine == "polars":  # a file is moved into place; a Dask version stays, linked
        with pytest.raises(FileNotFoundError, match="no staged version"):
            publish_staged(staged.staged, final)


def test_rejected_staged_versions_are_kept_for_diagnosis_but_bounded(tmp_path: Path) -> None:
    final = tmp_path / "t.parquet"
    write_parquet(pl.DataFrame({"a": [1]}), final)
    for rows in range(2, 2 + KEEP_STAGED + 2):
        write_parquet(pl.DataFrame({"a": list(range(rows))}), final, publish=False)
    staged = sorted(tmp_path.glob(".t.parquet.staged-*"))
    assert len(staged) == KEEP_STAGED
    assert parquet_row_count(final) == 1


def test_pandas_frames_still_write(tmp_path: Path) -> None:
    written = write_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "p.parquet")
    assert written.rows == 2
