"""The retail query battery: named business queries over the typed ``admmat`` table.

The package splits by responsibility and re-exports the public names here:
:mod:`~bi_platform.retail.queries.definition` (:class:`BusinessQuery`, :class:`Param`,
validation), :mod:`~bi_platform.retail.queries.frames` (shared frame helpers), one module
per family of questions (:mod:`~bi_platform.retail.queries.rankings`,
:mod:`~bi_platform.retail.queries.sales`, :mod:`~bi_platform.retail.queries.stock`),
:mod:`~bi_platform.retail.queries.catalog` (:data:`CATALOG`) and
:mod:`~bi_platform.retail.queries.running` (scan, row-level security, run). The business
rules the builders apply come from :mod:`bi_platform.retail.rules`.

Each :class:`BusinessQuery` is written ONCE with narwhals and runs unchanged on Polars,
Dask and DuckDB (see :func:`scan_admmat`). The questions follow the BI team's suite of
80 questions in Portuguese ("Quais os 10 produtos mais vendidos do segmento TECIDOS?").

Rules that keep the three engines identical (checked by :mod:`bi_platform.retail.parity`):

* only operations every backend supports: filter, with_columns, select, elementary
  group-by aggregations (sum/mean/len/min/max of a plain column; derived values are
  computed with ``with_columns`` first, as Dask requires), when/then/otherwise, is_in,
  cast, concat, cross join, sort + head;
* no grouped ``n_unique``: narwhals' Dask version sums per-partition counts, wrong when
  a group spans partitions; distinct counts are two group-bys (global ``n_unique`` is
  fine);
* no window functions, no string operations beyond equality, no ``top_k``/``unpivot``
  (narwhals runs those through DuckDB's *default* connection, which cannot see a
  relation of another connection), no literals in ``select`` after a global aggregate
  (Dask), only ``with_columns``;
* every ratio is computed in float and guarded against a zero denominator
  (:func:`~bi_platform.retail.rules.ratio_expr`);
* every result has a total order: :attr:`BusinessQuery.sort_by` ends with key columns
  (UNE, PRODUTO, names), so top-N rows and their order agree across engines.

:func:`run_query` validates the parameters, applies the row-level security restriction
(``NOMESEGMENTO`` in the user's segments) *before* the query, projects the source to the
query's declared columns, builds, sorts and collects.
"""

from __future__ import annotations

from bi_platform.retail.queries.catalog import CATALOG, get_query
from bi_platform.retail.queries.definition import (
    ALL_SEGMENTS,
    CACHE_CLASSES,
    DEFAULT_UNES,
    ENGINES,
    Builder,
    BusinessQuery,
    Engine,
    Param,
    QueryParameterError,
    validate_params,
)
from bi_platform.retail.queries.running import prepare, restrict_segments, run_query, scan_admmat
from bi_platform.retail.rules import LEADTIME_BUCKETS

__all__ = [
    "ALL_SEGMENTS",
    "CACHE_CLASSES",
    "CATALOG",
    "DEFAULT_UNES",
    "ENGINES",
    "LEADTIME_BUCKETS",
    "Builder",
    "BusinessQuery",
    "Engine",
    "Param",
    "QueryParameterError",
    "get_query",
    "prepare",
    "restrict_segments",
    "run_query",
    "scan_admmat",
    "validate_params",
]
