"""Diffing two Delta versions file pair by file pair, without a Spark shuffle.

Every cadastral stage output is hash-partitioned by its key into
``spark.sql.shuffle.partitions`` partitions before Spark writes it, and Spark names each
data file ``part-<partition id>-<uuid>-c<nnn>...parquet``. When two versions were
written with the same partitioning, all rows of one key live in the files with the same
partition id in both, so the versions' ``(key, row_hash)`` diff is the union of the
diffs of the file groups with equal partition ids. :func:`pair_files` groups the files;
:func:`pair_differ` builds the ``mapInArrow`` function whose task ``i`` reads pair
``i``'s ``key`` and ``row_hash`` columns with pyarrow and full-outer-joins them.

The output has the schema of :func:`.pg_sync._diff`: ``(key, op, rows)`` with op ``I``
(only in the new version), ``U`` (hash differs) or ``D`` (only in the old version) and
``rows`` 1, plus one ``N`` row per pair with a null key whose ``rows`` counts the
unchanged keys (so the unchanged million never cross into Spark).

Pure pyarrow: the caller checks the pairing (a key in two pairs' changes means the
versions were not co-partitioned) and falls back to a Spark join.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

from bi_platform.cadastral.row_hash import ROW_HASH

#: A Spark data file name: ``part-<partition id, at least 5 digits>-<job uuid>...``.
PART_FILE = re.compile(r"part-(\d{5,})-[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}.*\.parquet")
#: Rows per record batch a diff task yields.
DIFF_BATCH_ROWS = 262_144


def partition_id(path: str) -> int | None:
    """The Spark partition id in a data file's name; None when the name is not Spark's.

    Args:
        path: a data file's path or name.

    Returns:
        The partition id, or None.
    """
    match = PART_FILE.fullmatch(PurePosixPath(path).name)
    return int(match.group(1)) if match else None


def pair_files(
    old_files: list[str], new_files: list[str]
) -> tuple[list[tuple[list[str], list[str]]] | None, str]:
    """Group two versions' data files by partition id, into pairs to diff one by one.

    Args:
        old_files: the old version's data file paths.
        new_files: the new version's data file paths.

    Returns:
        ``(pairs, reason)``: ``pairs`` lists ``(old files, new files)`` by ascending
        partition id, or is None when the files cannot be paired (``reason`` says why:
        a name without a partition id, different sets of partition ids, no files).
    """
    groups: list[dict[int, list[str]]] = []
    for files in (old_files, new_files):
        by_id: dict[int, list[str]] = {}
        for path in files:
            pid = partition_id(path)
            if pid is None:
                return None, f"file name without a partition id: {PurePosixPath(path).name}"
            by_id.setdefault(pid, []).append(path)
        groups.append(by_id)
    old, new = groups
    if not old or not new:
        return None, "a version has no data files"
    if old.keys() != new.keys():
        return None, f"partition ids differ ({len(old)} old, {len(new)} new)"
    return [(sorted(old[pid]), sorted(new[pid])) for pid in sorted(old)], ""


def _read_hashes(files: list[str], key: str, key_type: Any):
    """``(key, row_hash)`` of ``files`` (only those two columns are read), key cast to
    ``key_type``, row_hash to string; an empty table when there are no files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(key, key_type), (ROW_HASH, pa.string())])
    tables = [
        pq.read_table(path, columns=[key, ROW_HASH], use_threads=False).cast(schema)
        for path in files
    ]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def diff_pair(old_files: list[str], new_files: list[str], key: str, key_type: Any = None):
    """The ``(key, op, rows)`` diff of one pair of file groups (pyarrow full outer join).

    Args:
        old_files: the old version's files of the pair (may be empty).
        new_files: the new version's files of the pair (may be empty).
        key: the key column; it and ``row_hash`` must be in every file.
        key_type: the Arrow type of the output key column (default string).

    Returns:
        A pyarrow Table ``(key, op, rows)``: one row per changed key (op ``I``/``U``/``D``,
        rows 1), then, when some keys are unchanged, one row ``(null, "N", their count)``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    key_type = key_type or pa.string()
    old = _read_hashes(old_files, key, key_type).rename_columns(["_k_old", "_h_old"])
    new = _read_hashes(new_files, key, key_type).rename_columns(["_k_new", "_h_new"])
    joined = old.join(
        new,
        keys="_k_old",
        right_keys="_k_new",
        join_type="full outer",
        coalesce_keys=False,
        use_threads=False,
    )
    k_old, k_new = joined.column("_k_old"), joined.column("_k_new")
    op = pc.if_else(
        pc.is_null(k_old),
        "I",
        pc.if_else(
            pc.is_null(k_new),
            "D",
            pc.if_else(
                pc.fill_null(pc.not_equal(joined.column("_h_old"), joined.column("_h_new")), True),
                "U",
                "N",
            ),
        ),
    )
    schema = pa.schema([(key, key_type), ("op", pa.string()), ("rows", pa.int64())])
    changes = pa.table(
        {key: pc.coalesce(k_new, k_old).cast(key_type), "op": op.cast(pa.string())}
    ).filter(pc.not_equal(op, "N"))
    changes = changes.append_column("rows", pa.repeat(pa.scalar(1, pa.int64()), changes.num_rows))
    changes = changes.cast(schema)
    unchanged = joined.num_rows - changes.num_rows
    if not unchanged:
        return changes
    counted = pa.table([pa.nulls(1, key_type), ["N"], [unchanged]], schema=schema)
    return pa.concat_tables([changes, counted])


def pair_differ(
    pairs: list[tuple[list[str], list[str]]], key: str, key_type: Any = None
) -> Callable[[Iterator], Iterator]:
    """The ``mapInArrow`` function over ``spark.range(len(pairs))``: for each id ``i`` in
    its input, the record batches of :func:`diff_pair` of ``pairs[i]``.

    Args:
        pairs: per pair, the old and the new version's local file paths.
        key: the key column.
        key_type: the Arrow type of the output key column (default string).

    Returns:
        A function from ``id`` batches to ``(key, op, rows)`` batches.
    """

    def diff_pairs(batches: Iterator) -> Iterator:
        for batch in batches:
            for i in batch.column(0).to_pylist():
                old_files, new_files = pairs[i]
                yield from diff_pair(old_files, new_files, key, key_type).to_batches(
                    max_chunksize=DIFF_BATCH_ROWS
                )

    return diff_pairs
