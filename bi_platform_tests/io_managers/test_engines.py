"""The pure engine layer: real Parquet files in tmp_path, real Polars and Dask, no Dagster."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import narwhals as nw
import narwhals.stable.v1 as nw_v1
import pandas as pd
import polars as pl
import psutil
import pytest

from bi_platform.io_managers import engines, reading, writing
from bi_platform.io_managers.engines import (
    GIB,
    Engine,
    EngineConfig,
    IntegrityError,
    auto_threshold_mb,
    choose_engine,
    load_parquet,
    parquet_files,
    parquet_row_count,
    parquet_schema,
    size_mb,
    validate_integrity,
    write_parquet,
)
from bi_platform.io_managers.integrity import CorruptParquetError
from bi_platform.settings import get_settings

# Third-party noise: narwhals' Dask notice (when tests call narwhals on Dask themselves;
# the io_managers modules filter it for their own calls) and dask's use of a pandas-3
# deprecated keyword.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Dask support is moving out of Narwhals:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]

SMALL = EngineConfig(polars_threshold_mb="500")  # every test table loads with Polars
TINY = EngineConfig(polars_threshold_mb="0.001")  # every test table loads with Dask


def sample(rows: int = 100, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": pl.int_range(offset, offset + rows, eager=True),
            "name": [f"n{i}" for i in range(offset, offset + rows)],
            "price": [i / 2 for i in range(rows)],
        }
    )


def dask_sample(rows: int = 100, parts: int = 3, offset: int = 0) -> dd.DataFrame:
    return dd.from_pandas(sample(rows, offset).to_pandas(), npartitions=parts)


def leftovers(directory: Path) -> list[str]:
    """Hidden temporaries (``.<name>.tmp-*`` / ``.old-*``) left in a directory."""
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def failing_reader(exc: BaseException) -> Callable[..., Any]:
    """A Polars reader that raises ``exc`` (an injected engine failure)."""

    def reader(files: Any, **kwargs: Any) -> Any:
        raise exc

    return reader


# -- configuration ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("available_gib", "expected"),
    [(32, 1000.0), (16.5, 1000.0), (16, 500.0), (12, 500.0), (8, 500.0), (7.9, 200.0), (1, 200.0)],
)
def test_auto_threshold_from_available_ram(available_gib: float, expected: float) -> None:
    assert auto_threshold_mb(int(available_gib * GIB)) == expected
    assert EngineConfig(polars_threshold_mb="auto").threshold_mb(int(available_gib * GIB)) == (
        expected
    )


def test_auto_threshold_reads_psutil() -> None:
    config = EngineConfig(polars_threshold_mb="auto")
    assert config.is_auto
    assert config.threshold_mb() == auto_threshold_mb(psutil.virtual_memory().available)
    assert config.threshold_mb() in (200.0, 500.0, 1000.0)


@pytest.mark.parametrize("value", ["-1", "abc", "", -0.5, float("nan")])
def test_invalid_threshold_rejected(value: str | float) -> None:
    with pytest.raises(ValueError, match="polars_threshold_mb"):
        EngineConfig(polars_threshold_mb=value)


def test_config_from_settings_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = get_settings().home_dir / "cache" / "parquet-verified"
    assert EngineConfig.from_settings() == EngineConfig(verified_cache_dir=cache)
    monkeypatch.setenv("POLARS_THRESHOLD_MB", "auto")
    monkeypatch.setenv("POLARS_ENABLED", "false")
    monkeypatch.setenv("FORCE_DASK", "true")
    monkeypatch.setenv("VALIDATE_INTEGRITY", "false")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://scheduler:8786")
    monkeypatch.setenv("VERIFY_CHECKSUMS", "false")
    config = EngineConfig.from_settings(get_settings())
    assert config == EngineConfig(
        "auto", False, True, False, "tcp://scheduler:8786", False, verified_cache_dir=cache
    )
    overridden = config.with_overrides(
        polars_threshold_mb="10", force_dask=False, polars_enabled=None
    )
    assert overridden.polars_threshold_mb == "10"
    assert overridden.force_dask is False
    assert overridden.polars_enabled is False  # None leaves the setting


def test_choose_engine_around_threshold() -> None:
    config = EngineConfig(polars_threshold_mb="0.5")
    assert choose_engine(0.4999, config)[0] is Engine.POLARS
    assert choose_engine(0.5, config)[0] is Engine.DASK  # at the threshold: Dask
    assert choose_engine(7.0, config)[0] is Engine.DASK
    engine, reason = choose_engine(0.25, config)
    assert (engine, reason) == (Engine.POLARS, "0.25 MB < threshold 0.5 MB")
    assert choose_engine(1, EngineConfig(polars_threshold_mb=0))[0] is Engine.DASK


def test_choose_engine_flags() -> None:
    assert choose_engine(0.0, EngineConfig(force_dask=True)) == (Engine.DASK, "force_dask is true")
    assert choose_engine(0.0, EngineConfig(polars_enabled=False)) == (
        Engine.DASK,
        "polars_enabled is false",
    )
    assert "(auto)" in choose_engine(0.0, EngineConfig(polars_threshold_mb="auto"))[1]


# -- files, sizes, footers --------------------------------------------------------------
def test_parquet_files_sizes_and_footers(tmp_path: Path) -> None:
    single = tmp_path / "single.parquet"
    sample(10).write_parquet(single)
    directory = tmp_path / "dir.parquet"
    dask_sample(30, parts=12).to_parquet(directory, write_index=False)
    (directory / "_metadata").write_bytes(b"ignored")
    (directory / ".hidden.parquet").write_bytes(b"ignored")

    parts = parquet_files(directory)
    assert [p.name for p in parts] == [f"part.{i}.parquet" for i in range(12)]  # natural order
    both = parquet_files([single, directory])
    assert len(both) == 13
    assert size_mb([single, directory]) == pytest.approx(
        sum(p.stat().st_size for p in both) / 2**20
    )
    assert parquet_row_count([single, directory]) == 40
    assert parquet_schema(single) == {"id": "int64", "name": "large_string", "price": "double"}
    assert set(parquet_schema(directory)) == {"id", "name", "price"}


def test_parquet_files_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.parquet")):
        parquet_files(tmp_path / "nope.parquet")
    (tmp_path / "empty.parquet").mkdir()
    with pytest.raises(FileNotFoundError, match="no Parquet part files"):
        size_mb(tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="no Parquet paths"):
        parquet_files([])


# -- loading by type --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("as_type", "native", "engine"),
    [
        (pl.LazyFrame, pl.LazyFrame, Engine.POLARS),
        (pl.DataFrame, pl.DataFrame, Engine.POLARS),
        (dd.DataFrame, dd.DataFrame, Engine.DASK),
        (nw.LazyFrame, pl.LazyFrame, Engine.POLARS),
        (nw.DataFrame, pl.DataFrame, Engine.POLARS),
        (nw_v1.LazyFrame, pl.LazyFrame, Engine.POLARS),
        (Any, pl.LazyFrame, Engine.POLARS),
    ],
)
def test_load_returns_requested_type(
    tmp_path: Path, as_type: Any, native: type, engine: Engine
) -> None:
    path = tmp_path / "t.parquet"
    sample(50).write_parquet(path)
    loaded = load_parquet(path, as_type, SMALL)
    assert loaded.engine is engine
    assert not loaded.fallback
    frame = loaded.frame
    if as_type in (nw.LazyFrame, nw.DataFrame, nw_v1.LazyFrame, Any):
        expected_wrapper = nw.DataFrame if as_type is nw.DataFrame else nw.LazyFrame
        assert isinstance(frame, expected_wrapper)
        if as_type is nw_v1.LazyFrame:
            assert isinstance(frame, nw_v1.LazyFrame)
        frame = nw.to_native(frame)
    assert isinstance(frame, native)
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    elif isinstance(frame, dd.DataFrame):
        frame = pl.from_pandas(frame.compute())
    assert frame.height == 50


def test_narwhals_routed_by_size(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    sample(200).write_parquet(path)
    small = load_parquet(path, nw.LazyFrame, SMALL)
    large = load_parquet(path, nw.LazyFrame, TINY)
    assert (small.engine, large.engine) == (Engine.POLARS, Engine.DASK)
    assert isinstance(nw.to_native(small.frame), pl.LazyFrame)
    assert isinstance(nw.to_native(large.frame), dd.DataFrame)
    assert ">= threshold 0.001 MB" in large.reason
    assert large.size_mb == pytest.approx(size_mb(path))
    eager = load_parquet(path, nw.DataFrame, TINY)
    assert eager.engine is Engine.DASK
    assert isinstance(nw.to_native(eager.frame), pd.DataFrame)  # computed by Dask
    assert eager.frame.shape == (200, 3)
    # The same narwhals code runs on either engine.
    for loaded in (small, large):
        total = loaded.frame.select(nw.col("id").sum()).collect()
        assert total.item() == sum(range(200))


@pytest.mark.parametrize("flag", [{"force_dask": True}, {"polars_enabled": False}])
def test_flags_force_dask(tmp_path: Path, flag: dict[str, bool]) -> None:
    path = tmp_path / "t.parquet"
    sample(10).write_parquet(path)
    loaded = load_parquet(path, nw.LazyFrame, EngineConfig(**flag))
    assert loaded.engine is Engine.DASK
    assert isinstance(nw.to_native(loaded.frame), dd.DataFrame)
    # A native annotation still wins over the flags.
    assert load_parquet(path, pl.DataFrame, EngineConfig(**flag)).engine is Engine.POLARS


def test_columns_projection(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    sample(10).write_parquet(path)
    for config in (SMALL, TINY):
        loaded = load_parquet(path, nw.LazyFrame, config, columns=["price", "id"])
        assert loaded.frame.collect_schema().names() == ["price", "id"]


def test_polars_lazy_load_stays_lazy_with_pushdown(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    sample(1000).write_parquet(path)
    frame = nw.to_native(load_parquet(path, nw.LazyFrame, SMALL).frame)
    plan = frame.filter(pl.col("id") < 5).select("name").explain()
    assert "Parquet SCAN" in plan
    assert "SELECTION" in plan  # the predicate is pushed into the scan
    assert "PROJECT 2/3 COLUMNS" in plan  # and the projection (id for the filter, name)


def test_corrupt_file_fails_at_load_time_the_same_on_every_engine(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    # verified before either engine reads: the same error, naming the file, whatever the
    # frame type asked for
    for as_type in (pl.LazyFrame, nw.LazyFrame, dd.DataFrame):
        with pytest.raises(CorruptParquetError, match=r"bad\.parquet"):
            load_parquet(path, as_type, SMALL)


def test_unsupported_type(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    sample(1).write_parquet(path)
    with pytest.raises(TypeError, match="cannot load Parquet as"):
        load_parquet(path, dict, SMALL)


def test_several_paths_load_together(tmp_path: Path) -> None:
    write_parquet(sample(10), tmp_path / "p1.parquet")
    write_parquet(dask_sample(20, offset=10), tmp_path / "p2.parquet")  # a directory
    paths = [tmp_path / "p1.parquet", tmp_path / "p2.parquet"]
    for config in (SMALL, TINY):
        loaded = load_parquet(paths, nw.DataFrame, config)
        assert sorted(loaded.frame["id"].to_list()) == list(range(30))
        assert len(loaded.files) == 4


# -- fallback and integrity --------------------------------------------------------------
@pytest.mark.parametrize("error", [MemoryError("out of memory"), RuntimeError("polars broke")])
@pytest.mark.parametrize("as_type", [nw.LazyFrame, nw.DataFrame])
def test_polars_failure_falls_back_to_dask(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception, as_type: Any
) -> None:
    path = tmp_path / "t.parquet"
    sample(40).write_parquet(path)
    with caplog.at_level(logging.WARNING, logger=reading.__name__):
        loaded = load_parquet(path, as_type, SMALL, polars_reader=failing_reader(error))
    assert loaded.engine is Engine.DASK
    assert loaded.fallback and loaded.validated
    assert loaded.error == f"{type(error).__name__}: {error}"
    assert "falling back to Dask" in caplog.text and str(error) in caplog.text
    assert isinstance(nw.to_native(loaded.frame), dd.DataFrame | pd.DataFrame)
    assert len(nw.to_native(loaded.frame)) == 40


def test_native_polars_annotation_does_not_fall_back(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    sample(4).write_parquet(path)
    with pytest.raises(MemoryError):
        load_parquet(path, pl.DataFrame, SMALL, polars_reader=failing_reader(MemoryError()))


def test_integrity_validation_catches_a_bad_fallback(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    sample(40).write_parquet(path)
    polars_fails = failing_reader(MemoryError("boom"))

    def too_few_rows(files: Any, **kwargs: Any) -> dd.DataFrame:
        return engines.read_dask(files, **kwargs).head(5, compute=False)

    def wrong_columns(files: Any, **kwargs: Any) -> dd.DataFrame:
        return engines.read_dask(files, **kwargs).drop(columns=["price"])

    def wrong_dtype(files: Any, **kwargs: Any) -> dd.DataFrame:
        return engines.read_dask(files, **kwargs).astype({"id": "string"})

    cases = [(too_few_rows, "5 rows != 40"), (wrong_columns, "missing ['price']")]
    cases.append((wrong_dtype, "column 'id': dtype"))
    for reader, message in cases:
        with pytest.raises(IntegrityError, match=message.replace("[", r"\[")):
            load_parquet(path, nw.LazyFrame, SMALL, polars_reader=polars_fails, dask_reader=reader)
        # Without validation the bad frame goes through (so the check is what caught it).
        loaded = load_parquet(
            path,
            nw.LazyFrame,
            EngineConfig(validate_integrity=False),
            polars_reader=polars_fails,
            dask_reader=reader,
        )
        assert loaded.fallback and not loaded.validated


def test_integrity_validation_passes_on_real_data(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    frame = sample(30).with_columns(
        maybe=pl.Series([None, *range(29)]),  # int64 with nulls: float64 in pandas
        flag=pl.Series([True, None] * 15),
        cat=pl.Series(["a", "b", "c"] * 10, dtype=pl.Categorical),
        day=pl.date_range(pl.date(2024, 1, 1), pl.date(2024, 1, 30), eager=True),
        ts=pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 30), "1d", eager=True),
        items=pl.Series([[1, 2]] * 30),
    )
    frame.write_parquet(path)
    validate_integrity(engines.read_dask(parquet_files(path)), path)
    validate_integrity(engines.read_dask(parquet_files(path)).compute(), path)
    validate_integrity(engines.read_dask(parquet_files(path), columns=["ts"]), path, columns=["ts"])


# -- writing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "engine"),
    [
        (lambda: sample(25), Engine.POLARS),
        (lambda: sample(25).lazy(), Engine.POLARS),
        (lambda: nw.from_native(sample(25)), Engine.POLARS),
        (lambda: nw.from_native(sample(25).lazy()), Engine.POLARS),
        (lambda: sample(25).to_pandas(), Engine.POLARS),
        (lambda: sample(25).to_arrow(), Engine.POLARS),
        (lambda: dask_sample(25), Engine.DASK),
        (lambda: nw.from_native(dask_sample(25)), Engine.DASK),
    ],
)
def test_write_each_frame_type(tmp_path: Path, make: Any, engine: Engine) -> None:
    path = tmp_path / "deep" / "t.parquet"
    written = write_parquet(make(), path)
    assert written.engine is engine
    assert written.path == path
    assert written.rows == 25
    assert list(written.schema) == ["id", "name", "price"]
    assert written.size_mb == pytest.approx(size_mb(path))
    assert written.seconds > 0
    assert path.is_dir() if engine is Engine.DASK else path.is_file()
    if engine is Engine.DASK:
        assert written.files == 3
        assert path.is_symlink() and not path.readlink().is_absolute()
    assert pl.read_parquet(parquet_files(path)).sort("id").equals(sample(25))
    assert leftovers(path.parent) == []


def test_write_rejects_unknown_objects(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot write dict"):
        write_parquet({"a": [1]}, tmp_path / "t.parquet")


def test_dask_named_index_is_kept_as_column(tmp_path: Path) -> None:
    frame = dask_sample(10).set_index("id")
    written = write_parquet(frame, tmp_path / "t.parquet")
    assert set(written.schema) == {"id", "name", "price"}


def test_replace_file_by_directory_and_back(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    versions = tmp_path / ".t.parquet.versions"
    write_parquet(sample(5), path)
    assert path.is_file() and not path.is_symlink()

    write_parquet(dask_sample(7, parts=2), path)
    assert path.is_symlink() and path.is_dir()
    assert load_parquet(path, pl.DataFrame, SMALL).frame.height == 7

    write_parquet(dask_sample(9, parts=3), path)
    write_parquet(dask_sample(11, parts=4), path)
    assert load_parquet(path, dd.DataFrame, SMALL).frame.npartitions == 4
    assert len(list(versions.iterdir())) == 2  # the published one + one previous

    write_parquet(sample(3).lazy(), path)
    assert path.is_file() and not path.is_symlink()
    assert load_parquet(path, pl.DataFrame, SMALL).frame.height == 3
    assert len(list(versions.iterdir())) == 1  # kept for in-flight readers of the last dir
    write_parquet(sample(4), path)
    assert len(list(versions.iterdir())) == 1
    write_parquet(sample(4), path, keep_previous=0)
    assert not versions.exists()
    assert leftovers(tmp_path) == []


def test_plain_directory_is_replaced(tmp_path: Path) -> None:
    """A directory not written by this module (no symlink) is replaced too."""
    path = tmp_path / "t.parquet"
    dask_sample(8).to_parquet(path, write_index=False)
    write_parquet(sample(2), path)
    assert path.is_file() and pl.read_parquet(path).height == 2
    dask_sample(8).to_parquet(tmp_path / "u.parquet", write_index=False)
    write_parquet(dask_sample(6), tmp_path / "u.parquet")
    assert parquet_row_count(tmp_path / "u.parquet") == 6
    assert leftovers(tmp_path) == []


def test_reader_keeps_its_version_while_a_new_one_is_published(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(dask_sample(10, parts=2), path)
    lazy = load_parquet(path, dd.DataFrame, SMALL).frame  # files resolved now
    write_parquet(dask_sample(99, parts=5), path)
    assert len(lazy.compute()) == 10  # still the version it listed
    assert parquet_row_count(path) == 99


# -- atomicity ---------------------------------------------------------------------------
def _explode(batch: pl.Series) -> pl.Series:
    raise RuntimeError("crash while computing")


def test_crash_during_polars_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(sample(10), path)
    before = path.read_bytes()
    crashing = pl.LazyFrame({"id": range(100_000)}).with_columns(
        boom=pl.col("id").map_batches(_explode, return_dtype=pl.Int64)
    )
    with pytest.raises(Exception, match="crash while computing"):
        write_parquet(crashing, path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_crash_during_dask_write_keeps_old_directory(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(dask_sample(10, parts=2), path)
    target = path.readlink()

    def explode_on_last(part: pd.DataFrame, partition_info: dict | None = None) -> pd.DataFrame:
        if partition_info and partition_info["number"] == 2:
            raise RuntimeError("crash in partition 2")
        return part

    crashing = dask_sample(30, parts=3).map_partitions(explode_on_last, meta=dask_sample(1)._meta)
    with pytest.raises(RuntimeError, match="crash in partition 2"):
        write_parquet(crashing, path)
    assert path.readlink() == target
    assert parquet_row_count(path) == 10
    assert [v.name for v in (tmp_path / ".t.parquet.versions").iterdir()] == [target.name]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("new", ["file", "directory"])
@pytest.mark.parametrize("old", ["file", "directory"])
def test_failure_before_rename_keeps_old_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> None:
    path = tmp_path / "t.parquet"
    write_parquet(sample(10) if old == "file" else dask_sample(10), path)

    def crash(source: Path, target: Path) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(writing, "_rename_over", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_parquet(sample(20) if new == "file" else dask_sample(20), path)
    monkeypatch.undo()
    assert path.is_file() if old == "file" else path.is_symlink()
    assert pl.read_parquet(parquet_files(path)).sort("id").equals(sample(10))
    assert leftovers(tmp_path) == []
    versions = tmp_path / ".t.parquet.versions"
    if old == "directory":
        assert [v.name for v in versions.iterdir()] == [path.readlink().name]
    else:
        assert not versions.exists()


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    stale = tmp_path / ".t.parquet.tmp-deadbeef"
    fresh = tmp_path / ".t.parquet.tmp-cafebabe"  # maybe a concurrent writer: kept
    for tmp in (stale, fresh):
        tmp.write_bytes(b"partial")
    old = time.time() - engines.STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    write_parquet(sample(1), path)
    assert not stale.exists() and fresh.exists()
    assert parquet_files(tmp_path / "t.parquet") == [path.resolve()]


def test_versions_being_written_are_not_pruned(tmp_path: Path) -> None:
    """Another writer's unfinished version survives pruning (unless abandoned long ago)."""
    path = tmp_path / "t.parquet"
    versions = tmp_path / ".t.parquet.versions"
    in_progress = versions / "00000000000000000001-aaaaaaaa.partial"
    abandoned = versions / "00000000000000000000-bbbbbbbb.partial"
    for partial in (in_progress, abandoned):
        partial.mkdir(parents=True)
    old = time.time() - engines.STALE_TEMP_SECONDS - 60
    os.utime(abandoned, (old, old))
    for rows in (1, 2, 3):
        write_parquet(dask_sample(rows, parts=1), path)
    names = {v.name for v in versions.iterdir()}
    assert in_progress.name in names and abandoned.name not in names
    assert path.resolve().name in names
    assert len(names) == 3  # published + one previous + the one in progress
    assert parquet_row_count(path) == 3


def test_concurrent_writers_leave_a_complete_table(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    errors: list[BaseException] = []

    def writer(rows: int) -> None:
        try:
            for i in range(3):
                frame = dask_sample(rows, parts=2) if i % 2 == 0 else sample(rows)
                write_parquet(frame, path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(rows,)) for rows in (10, 20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert parquet_row_count(path) in (10, 20)  # the last publisher's table, complete
    assert leftovers(tmp_path) == []
    versions = tmp_path / ".t.parquet.versions"
    assert not versions.exists() or not [
        v for v in versions.iterdir() if v.name.endswith(engines.PARTIAL_SUFFIX)
    ]


# -- narwhals' Dask warning --------------------------------------------------------------
def test_narwhals_dask_warning_is_filtered(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    frame = dask_sample(10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as if all filters had been reset
        write_parquet(frame, path)
        loaded = load_parquet(path, nw.LazyFrame, TINY)
        loaded.frame.select(nw.col("id").max()).collect()
        write_parquet(loaded.frame, tmp_path / "u.parquet")
        warnings.warn("another FutureWarning", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "narwhals-dask" in m]
    assert "another FutureWarning" in messages  # only that warning is filtered
