"""The Parquet files behind a path (a file, a directory of parts, or several), their
on-disk size and what their footers say (schema, row count), without reading data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.parquet as pq

from bi_platform.io_managers.engine_config import MB

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")

PathArg: TypeAlias = str | os.PathLike[str]
Paths: TypeAlias = PathArg | Sequence[PathArg]


# --------------------------------------------------------------------------------------
# files, sizes, footers
# --------------------------------------------------------------------------------------
def _as_paths(path_or_paths: Paths) -> list[Path]:
    if isinstance(path_or_paths, str | os.PathLike):
        return [Path(path_or_paths)]
    paths = [Path(p) for p in path_or_paths]
    if not paths:
        raise ValueError("no Parquet paths given")
    return paths


def _natural_key(path: Path) -> list[Any]:
    """``part.2`` before ``part.10`` (the order Dask wrote them in)."""
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.as_posix())]


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def parquet_files(path_or_paths: Paths) -> list[Path]:
    """The Parquet files behind one or several paths, each a file or a directory of parts.

    Symlinks are resolved, so a reader stays on the version it listed even if a writer
    publishes a new one meanwhile. Directories contribute their ``*.parquet`` (``.parq``,
    ``.pq``) files, recursively, in natural order, skipping hidden (``.``) and
    ``_``-prefixed entries such as ``_metadata`` and in-progress writes.

    Args:
        path_or_paths: A Parquet file or directory of parts, or several.

    Returns:
        The files, in read order.

    Raises:
        FileNotFoundError: A path is missing or a directory holds no part file.
    """
    files: list[Path] = []
    for path in _as_paths(path_or_paths):
        if not path.exists():  # also a dangling symlink
            raise FileNotFoundError(f"no Parquet file or directory at {path}")
        real = path.resolve()
        if real.is_dir():
            parts = [
                f
                for f in real.rglob("*")
                if f.suffix in PARQUET_SUFFIXES
                and not _is_hidden(f.relative_to(real))
                and f.is_file()
            ]
            if not parts:
                raise FileNotFoundError(f"no Parquet part files in directory {path}")
            files.extend(sorted(parts, key=lambda f: _natural_key(f.relative_to(real))))
        else:
            files.append(real)
    return files


def size_mb(path_or_paths: Paths) -> float:
    """On-disk size in MB of all Parquet files behind the path(s).

    Args:
        path_or_paths: A Parquet file or directory of parts, or several.

    Returns:
        The summed size in MB.
    """
    return files_size_mb(parquet_files(path_or_paths))


def files_size_mb(files: Sequence[Path]) -> float:
    """On-disk size in MB of ``files``.

    Args:
        files: Parquet files.

    Returns:
        Their summed size in MB.
    """
    return sum(f.stat().st_size for f in files) / MB


def read_footers(files: Sequence[Path]) -> tuple[pa.Schema, int]:
    """The unified Arrow schema and total row count, from the footers only.

    Args:
        files: Parquet files.

    Returns:
        The unified schema and the summed row count.

    Raises:
        ValueError: The files' schemas cannot be unified.
    """
    schemas: list[pa.Schema] = []
    rows = 0
    for f in files:
        meta = pq.read_metadata(f)
        rows += meta.num_rows
        schemas.append(meta.schema.to_arrow_schema().remove_metadata())
    try:
        schema = pa.unify_schemas(schemas) if len(schemas) > 1 else schemas[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"Parquet files have incompatible schemas: {exc}") from exc
    return schema, rows


def parquet_schema(path_or_paths: Paths) -> dict[str, str]:
    """``{column: Arrow type}`` of the Parquet data, read from the footers only.

    Args:
        path_or_paths: A Parquet file or directory of parts, or several.

    Returns:
        The type of each column.
    """
    schema, _ = read_footers(parquet_files(path_or_paths))
    return {f.name: str(f.type) for f in schema}


def parquet_row_count(path_or_paths: Paths) -> int:
    """Total rows of the Parquet data, summed from the footers (no data read).

    Args:
        path_or_paths: A Parquet file or directory of parts, or several.

    Returns:
        The row count.
    """
    return sum(pq.read_metadata(f).num_rows for f in parquet_files(path_or_paths))
