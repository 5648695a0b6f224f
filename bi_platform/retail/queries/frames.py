"""Frame helpers the query builders share: segment filter, top-N, integer casts, shares
and the reshaping of one-row period sums into one row per period.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import narwhals as nw

from bi_platform.retail.queries.definition import ALL_SEGMENTS
from bi_platform.retail.rules import ratio_expr


def in_segment(frame: nw.LazyFrame, segment: str) -> nw.LazyFrame:
    """Restrict to one segment unless it is :data:`ALL_SEGMENTS`.

    Args:
        frame: Rows with ``NOMESEGMENTO``.
        segment: A segment name or :data:`ALL_SEGMENTS`.

    Returns:
        The rows of ``segment`` (all rows for :data:`ALL_SEGMENTS`).
    """
    if segment == ALL_SEGMENTS:
        return frame
    return frame.filter(nw.col("NOMESEGMENTO") == segment)


def top_n(frame: nw.LazyFrame, n: int, order: Sequence[tuple[str, bool]]) -> nw.LazyFrame:
    """The first ``n`` rows in the given order (sort + head: every engine, any connection).

    Args:
        frame: The rows.
        n: How many to keep.
        order: ``(column, descending)`` pairs, in sort order; nulls sort last.

    Returns:
        The top ``n`` rows, sorted.
    """
    by = [column for column, _ in order]
    descending = [desc for _, desc in order]
    return frame.sort(by, descending=descending, nulls_last=True).head(n)


def as_int(*names: str) -> nw.Expr:
    """The columns ``names`` cast to Int64 (counts summed as floats, see ``flag_expr``).

    Args:
        *names: Column names.

    Returns:
        The cast expression (one output column per name).
    """
    return nw.col(*names).cast(nw.Int64)


def long_from_wide(
    wide: nw.LazyFrame,
    rows: Sequence[tuple[str, int]],
    label: str,
    order: str,
    values: Mapping[str, Callable[[str], str]],
) -> nw.LazyFrame:
    """Turn a one-row frame of per-period columns into one row per period.

    ``rows`` are (period label, ordinal); ``values`` maps each output column to a function
    giving the wide column that holds it for a period label. narwhals' ``unpivot`` on
    DuckDB needs the default connection, and a concat of per-period selects of ``wide``
    makes DuckDB aggregate once per period; so a small frame of period labels (derived from
    ``wide``'s row, which the optimisers reduce to nearly nothing) is cross-joined with
    ``wide`` once and each value picked with when/then.

    Args:
        wide: A one-row frame of per-period columns.
        rows: (period label, ordinal) of each output row, in order.
        label: Name of the period label column.
        order: Name of the ordinal column.
        values: Output column -> function giving its wide column for a period label.

    Returns:
        One row per period: ``label``, ``order`` and the ``values`` columns.
    """
    seed = wide.select(nw.col(wide.columns[0]).alias("__SEED"))
    periods = nw.concat(
        [
            seed.with_columns(
                nw.lit(period, dtype=nw.String).alias(label),
                nw.lit(ordinal, dtype=nw.Int64).alias(order),
            ).select(label, order)
            for period, ordinal in rows
        ],
        how="vertical",
    )

    def pick(src: Callable[[str], str]) -> nw.Expr:
        (first, first_ord), *rest = rows
        expr = nw.when(nw.col(order) == first_ord).then(nw.col(src(first)))
        for period, ordinal in rest:
            expr = expr.when(nw.col(order) == ordinal).then(nw.col(src(period)))
        return expr

    return periods.join(wide, how="cross").select(
        label, order, *(pick(src).alias(out) for out, src in values.items())
    )


def with_share(frame: nw.LazyFrame, value: str, name: str = "PARTICIPACAO") -> nw.LazyFrame:
    """Add each row's share of the column total (cross join with the one-row total).

    Args:
        frame: The rows.
        value: Column whose total the shares divide.
        name: Output column of the share (null when the total is not positive).

    Returns:
        ``frame`` with the share column.
    """
    total = frame.select(nw.col(value).sum().alias("__TOTAL"))
    return (
        frame.join(total, how="cross")
        .with_columns(ratio_expr(value, "__TOTAL", name))
        .drop("__TOTAL")
    )
