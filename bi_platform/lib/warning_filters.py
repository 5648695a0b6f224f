"""The filter for narwhals' "Dask support is moving out of Narwhals" FutureWarning.

Narwhals warns on every Dask operation that its Dask support moves to ``narwhals-dask``,
a package not installed here; exactly that warning (message prefix and category) is
silenced.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

NARWHALS_DASK_WARNING = r"Dask support is moving out of Narwhals"


def silence_narwhals_dask_warning() -> None:
    """Put the filter for the narwhals/Dask FutureWarning first in ``warnings.filters``.

    Called at import by the modules that run narwhals on Dask and again before such calls,
    since the filters may have been reset meanwhile (pytest does so per test). Idempotent:
    the filters are left untouched when this one already comes first.
    """
    if warnings.filters and _is_our_filter(warnings.filters[0]):
        return
    warnings.filterwarnings("ignore", message=NARWHALS_DASK_WARNING, category=FutureWarning)


@contextlib.contextmanager
def narwhals_dask_quiet() -> Iterator[None]:
    """A block in which the narwhals/Dask FutureWarning is silenced; the previous filters
    are restored afterwards."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NARWHALS_DASK_WARNING, category=FutureWarning)
        yield


def _is_our_filter(entry: tuple[Any, ...]) -> bool:
    action, message, category, module, lineno = entry
    pattern = getattr(message, "pattern", message)
    return (action, pattern, category, module, lineno) == (
        "ignore",
        NARWHALS_DASK_WARNING,
        FutureWarning,
        None,
        0,
    )
