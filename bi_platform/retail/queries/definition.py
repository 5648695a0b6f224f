"""What a business query is: :class:`BusinessQuery`, its parameters (:class:`Param`)
and their validation (:func:`validate_params`), plus the pieces the query families
share to declare theirs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import narwhals as nw

from bi_platform.retail.schema import ADMMAT_SCHEMA, SEGMENTS

Engine = Literal["polars", "dask", "duckdb"]
ENGINES: tuple[Engine, ...] = ("polars", "dask", "duckdb")
CACHE_CLASSES: tuple[str, ...] = ("top_products", "dashboard", "forecast", "suppliers")

#: Default stores of the UNE parameters: 261 (CAMPO GRANDE) and 2 (MADUREIRA), the first
#: stores of the export (UNE 1 is the distribution centre, not in admmat).
DEFAULT_UNES: tuple[int, int] = (261, 2)

#: Value of the ``segmento`` parameter that means "every segment the user may see".
ALL_SEGMENTS = "TODOS"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class QueryParameterError(ValueError):
    """A query parameter is unknown, of the wrong type, not a choice or out of range."""

    def __init__(self, query: str, param: str, value: Any, reason: str) -> None:
        self.query = query
        self.param = param
        self.value = value
        self.reason = reason
        super().__init__(f"query {query!r}: parameter {param!r} = {value!r}: {reason}")


@dataclass(frozen=True)
class Param:
    """One parameter of a business query: type, default, allowed choices or range."""

    name: str
    type: type
    default: Any
    description: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in (int, float, str):
            raise TypeError(f"parameter {self.name!r}: type must be int, float or str")

    def coerce(self, query: str, value: Any) -> Any:
        """Convert ``value`` (possibly a string from a URL) to the parameter's type and
        check it against the choices and range; raise :class:`QueryParameterError`.

        Args:
            query: Name of the query (for the error message).
            value: The raw value.

        Returns:
            The value converted to :attr:`type` (a choice in its declared spelling).

        Raises:
            QueryParameterError: The value is of the wrong type, not a choice or out of range.
        """
        converted = self._convert(query, value)
        if self.choices is not None:
            converted = self._match_choice(query, value, converted)
        if self.minimum is not None and converted < self.minimum:
            raise QueryParameterError(
                query, self.name, value, f"must be >= {self.minimum} (got {converted})"
            )
        if self.maximum is not None and converted > self.maximum:
            raise QueryParameterError(
                query, self.name, value, f"must be <= {self.maximum} (got {converted})"
            )
        return converted

    def _convert(self, query: str, value: Any) -> Any:
        expected = self.type.__name__
        if isinstance(value, bool):
            raise QueryParameterError(query, self.name, value, f"expected {expected}, got bool")
        if self.type is str:
            if not isinstance(value, str):
                raise QueryParameterError(
                    query, self.name, value, f"expected str, got {type(value).__name__}"
                )
            return value.strip()
        if isinstance(value, str):
            text = value.strip()
            try:
                number: float = int(text) if self.type is int else float(text)
            except ValueError:
                raise QueryParameterError(
                    query, self.name, value, f"expected {expected}, not a number"
                ) from None
        elif isinstance(value, int | float):
            number = value
        else:
            raise QueryParameterError(
                query, self.name, value, f"expected {expected}, got {type(value).__name__}"
            )
        if not math.isfinite(number):
            raise QueryParameterError(query, self.name, value, "must be a finite number")
        if self.type is int:
            if number != int(number):
                raise QueryParameterError(query, self.name, value, "expected an integer")
            return int(number)
        return float(number)

    def _match_choice(self, query: str, raw: Any, value: Any) -> Any:
        assert self.choices is not None
        if isinstance(value, str):
            folded = value.casefold()
            for choice in self.choices:
                if isinstance(choice, str) and choice.casefold() == folded:
                    return choice
        elif value in self.choices:
            return value
        shown = ", ".join(repr(c) for c in self.choices)
        raise QueryParameterError(query, self.name, raw, f"must be one of {shown}")


def limit_param(default: int, maximum: int = 1000) -> Param:
    """The ``limite`` parameter of a top-N query.

    Args:
        default: Rows returned when the parameter is not given.
        maximum: Largest accepted value.

    Returns:
        The parameter (an int from 1 to ``maximum``).
    """
    return Param("limite", int, default, "Number of rows to return.", minimum=1, maximum=maximum)


def store_param(
    name: str = "une", default: int = DEFAULT_UNES[0], description: str = "Store (UNE) id."
) -> Param:
    """A store (UNE) parameter.

    Args:
        name: Parameter name.
        default: Store used when the parameter is not given.
        description: Text shown in the API documentation.

    Returns:
        The parameter (a non-negative int).
    """
    return Param(name, int, default, description, minimum=0)


#: The ``segmento`` parameter of a query about one segment.
SEGMENT_PARAM = Param("segmento", str, "TECIDOS", "Product segment.", choices=SEGMENTS)
#: The ``segmento`` parameter of a query about one segment or all (:data:`ALL_SEGMENTS`).
SEGMENT_OR_ALL_PARAM = Param(
    "segmento",
    str,
    ALL_SEGMENTS,
    f"Product segment, or {ALL_SEGMENTS!r} for every segment.",
    choices=(ALL_SEGMENTS, *SEGMENTS),
)


# --------------------------------------------------------------------------------------
# The query definition
# --------------------------------------------------------------------------------------
Builder = Callable[[nw.LazyFrame, Mapping[str, Any]], nw.LazyFrame]


@dataclass(frozen=True)
class BusinessQuery:
    """A named business question over ``admmat``, written once with narwhals."""

    name: str
    question: str
    description: str
    cache_class: str
    params: tuple[Param, ...]
    columns: tuple[str, ...]
    sort_by: tuple[str, ...]
    build: Builder = field(repr=False)
    #: One flag per ``sort_by`` column (empty: all ascending). Nulls always sort last.
    descending: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"query name {self.name!r} is not snake_case")
        if self.cache_class not in CACHE_CLASSES:
            raise ValueError(f"query {self.name!r}: unknown cache class {self.cache_class!r}")
        unknown = [c for c in self.columns if c not in ADMMAT_SCHEMA]
        if unknown:
            raise ValueError(f"query {self.name!r}: columns not in admmat: {unknown}")
        if "NOMESEGMENTO" not in self.columns:
            raise ValueError(f"query {self.name!r}: must read NOMESEGMENTO (row-level security)")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"query {self.name!r}: duplicate parameter names {names}")
        if self.descending and len(self.descending) != len(self.sort_by):
            raise ValueError(f"query {self.name!r}: one descending flag per sort_by column")

    @property
    def sort_descending(self) -> list[bool]:
        """The descending flag of each ``sort_by`` column."""
        return list(self.descending) if self.descending else [False] * len(self.sort_by)

    @property
    def defaults(self) -> dict[str, Any]:
        """The default value of each parameter."""
        return {p.name: p.default for p in self.params}


def validate_params(query: BusinessQuery, raw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Coerce ``raw`` parameters (strings allowed: ``"10"`` -> ``10``), apply defaults and
    check choices and ranges. Unknown parameters are rejected; ``None`` means default.

    Args:
        query: The query whose parameters these are.
        raw: Parameter values by name (``None``: all defaults).

    Returns:
        Every parameter of ``query`` by name, typed.

    Raises:
        QueryParameterError: A parameter is unknown, of the wrong type, or out of range.
    """
    raw = dict(raw or {})
    known = {p.name: p for p in query.params}
    for name in raw:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise QueryParameterError(
                query.name, name, raw[name], f"unknown parameter (allowed: {allowed})"
            )
    values: dict[str, Any] = {}
    for param in query.params:
        value = raw.get(param.name)
        values[param.name] = param.default if value is None else param.coerce(query.name, value)
    return values


def sort_spec(spec: Sequence[tuple[str, bool]]) -> dict[str, tuple[Any, ...]]:
    """The ``sort_by`` and ``descending`` fields of a :class:`BusinessQuery`.

    Args:
        spec: ``(column, descending)`` pairs, in sort order.

    Returns:
        Keyword arguments for :class:`BusinessQuery`.
    """
    return {
        "sort_by": tuple(name for name, _ in spec),
        "descending": tuple(desc for _, desc in spec),
    }


#: The columns identifying a store x product row.
PRODUCT_COLUMNS = ("UNE", "UNE_NOME", "PRODUTO", "NOME", "NOMESEGMENTO")
