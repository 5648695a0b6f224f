"""The API's OpenAPI 3.1 document, generated from the query catalog.

One operation per catalog query (``GET /api/v1/queries/<name>``, ``operationId`` = the
query's name, tagged with its cache class) with its parameters typed as the catalog
types them: integers and numbers with their ranges, segment and ABC-class choices as
enums, defaults and examples; plus the two parameters every query takes (``format``,
``segments``: an array of the known segments, comma-separated). Responses: the JSON
envelope, CSV and Arrow IPC stream for 200 -- with the query's own columns, their Arrow
types and a row schema (``prefixItems``) when the result schemas are known (the app
reads them from the warehouse: every query run once with no segment, so no row) -- and
the error answers (``{"detail", "param"}``) with their status codes and ``Retry-After``.
The operational endpoints (``/healthz``, ``/readyz``, ``/metrics``, GET and HEAD) and the
catalog are described too.

The document is plain data: :func:`build_openapi` has no side effect and reads no
warehouse; the tests validate it with ``openapi-spec-validator``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from bi_platform.lib.safe_csv import csv_bytes
from bi_platform.retail.queries import ALL_SEGMENTS, CATALOG, BusinessQuery, Param
from bi_platform.serving.cache import ttl_for

__all__ = ["OPENAPI_VERSION", "arrow_json_schema", "build_openapi"]

OPENAPI_VERSION = "3.1.0"
API_PREFIX = "/api/v1"
_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_CODES = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "406": "NotAcceptable",
    "422": "InvalidParameter",
    "429": "TooManyRequests",
    "503": "Unavailable",
}


def arrow_json_schema(data_type: pa.DataType) -> dict[str, Any]:
    """The JSON Schema of one JSON cell of an Arrow column of ``data_type`` (nullable:
    every column may hold nulls; NaN and infinities are sent as null).

    Args:
        data_type: The column's Arrow type.

    Returns:
        The schema, e.g. ``{"type": ["integer", "null"]}``.
    """
    if pa.types.is_boolean(data_type):
        kind: dict[str, Any] = {"type": ["boolean", "null"]}
    elif pa.types.is_integer(data_type):
        kind = {"type": ["integer", "null"]}
    elif pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        kind = {"type": ["number", "null"]}
    elif pa.types.is_timestamp(data_type):
        kind = {"type": ["string", "null"], "format": "date-time"}
    elif pa.types.is_date(data_type):
        kind = {"type": ["string", "null"], "format": "date"}
    elif pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        kind = {"type": ["string", "null"], "description": "hexadecimal"}
    else:
        kind = {"type": ["string", "null"]}
    return kind


def _param_description(query: BusinessQuery, param: Param) -> str:
    text = param.description.rstrip(".") + "."
    if param.type is int:
        text += (
            " An integer in plain digits (e.g. 10): exponent or decimal notation"
            " (1e3, 5.0) is refused with a 422 that says so."
        )
    elif param.type is float:
        text += " A finite decimal number (e.g. 0.25 or 2.5e-1)."
    if param.name == "segmento":
        text += (
            " Case-insensitive; NFC/NFD spellings and surrounding spaces are the same"
            " segment. With a key restricted to some segments, a segment outside them is"
            " a 403"
        )
        if param.choices is not None and ALL_SEGMENTS in param.choices:
            text += f"; {ALL_SEGMENTS} means every segment the key may read."
        else:
            text += (
                "; when omitted, the default applies if the key may read it, otherwise"
                " the key's first segment in the catalog's order."
            )
    elif param.choices is not None:
        text += " Case-insensitive."
    return text


def _param_schema(param: Param, max_length: int) -> dict[str, Any]:
    schema: dict[str, Any]
    if param.type is int:
        schema = {"type": "integer", "format": "int64"}
    elif param.type is float:
        schema = {"type": "number", "format": "double"}
    else:
        schema = {"type": "string", "maxLength": max_length}
    if param.choices is not None:
        schema["enum"] = list(param.choices)
    for key, bound in (("minimum", param.minimum), ("maximum", param.maximum)):
        if bound is not None:
            schema[key] = int(bound) if param.type is int else float(bound)
    if param.default is not None:
        schema["default"] = param.default
    return schema


def _example(param: Param) -> Any:
    if param.choices is not None:
        return next((c for c in param.choices if c != ALL_SEGMENTS), param.default)
    return param.default


def _row_schema(schema: pa.Schema) -> dict[str, Any]:
    prefix = [{**arrow_json_schema(field.type), "title": field.name} for field in schema]
    return {
        "type": "array",
        "prefixItems": prefix,
        "items": False,
        "minItems": len(prefix),
        "maxItems": len(prefix),
    }


def _query_operation(
    query: BusinessQuery,
    result: pa.Schema | None,
    *,
    formats: Mapping[str, str],
    max_length: int,
    secured: bool,
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": param.name,
            "in": "query",
            "required": False,
            "description": _param_description(query, param),
            "schema": _param_schema(param, max_length),
            "example": _example(param),
        }
        for param in query.params
    ]
    parameters += [
        {"$ref": "#/components/parameters/format"},
        {"$ref": "#/components/parameters/segments"},
    ]
    envelope: dict[str, Any] = {"$ref": "#/components/schemas/QueryResult"}
    csv_schema: dict[str, Any] = {
        "type": "string",
        "description": "RFC 4180 CSV with a header row; text cells that a spreadsheet "
        "would read as a formula are prefixed with an apostrophe.",
    }
    if result is not None:
        names = list(result.names)
        envelope = {
            "allOf": [
                envelope,
                {
                    "type": "object",
                    "properties": {
                        "query": {"const": query.name},
                        "columns": {"const": names},
                        "types": {"const": [str(field.type) for field in result]},
                        "rows": {"type": "array", "items": _row_schema(result)},
                    },
                },
            ]
        }
        csv_schema["description"] += " Columns: " + ", ".join(names) + "."
        csv_schema["examples"] = [csv_bytes(result.empty_table()).decode("utf-8")]
    ttl = int(ttl_for(query.name))
    operation: dict[str, Any] = {
        "operationId": query.name,
        "summary": query.question,
        "description": (
            f"{query.description}\n\nCached for {ttl} s per parameters, segments and"
            " warehouse data_version (cache class "
            f"`{query.cache_class}`); rows are restricted to the segments the API key"
            " may read (row-level security on NOMESEGMENTO)."
        ),
        "tags": [query.cache_class],
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "The query's result (JSON by default; CSV or an Arrow IPC "
                "stream by `format` or the Accept header, whose q-values are honoured).",
                "headers": {
                    "X-Cache": {"$ref": "#/components/headers/X-Cache"},
                    "X-Data-Version": {"$ref": "#/components/headers/X-Data-Version"},
                    "Vary": {"$ref": "#/components/headers/Vary"},
                },
                "content": {
                    formats["json"]: {"schema": envelope},
                    formats["csv"].split(";")[0]: {"schema": csv_schema},
                    formats["arrow"]: {
                        "schema": {
                            "type": "string",
                            "contentMediaType": formats["arrow"],
                            "description": "One Arrow IPC stream; the schema metadata "
                            "holds `query` and `data_version`.",
                        }
                    },
                },
            },
            **{
                code: {"$ref": f"#/components/responses/{name}"}
                for code, name in _ERROR_CODES.items()
                if secured or code not in ("401", "403")
            },
        },
        "x-cache-class": query.cache_class,
        "x-cache-ttl-seconds": ttl,
    }
    return operation


def _operational(op_id: str, summary: str, content: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": summary, "content": content}}
    if op_id == "readyz":
        responses["503"] = {"$ref": "#/components/responses/Unavailable"}
    get = {
        "operationId": op_id,
        "summary": summary,
        "tags": ["operations"],
        "security": [],
        "responses": responses,
    }
    head = {
        "operationId": f"{op_id}Head",
        "summary": f"{summary} (headers only)",
        "tags": ["operations"],
        "security": [],
        "responses": {code: {"description": "As GET, without a body."} for code in responses},
    }
    return {"get": get, "head": head}


def _components(
    *, formats: Mapping[str, str], segments: Sequence[str], secured: bool
) -> dict[str, Any]:
    errors: dict[str, Any] = {
        "BadRequest": "The query string is too long or has too many parameters.",
        "Unauthorized": "Missing, invalid or revoked API key (`param` names the header).",
        "Forbidden": "A segment outside the key's segments (`param`: `segments` or `segmento`).",
        "NotFound": "No catalog query of that name (`param`: `name`).",
        "NotAcceptable": "No format the Accept header accepts (`param`: `Accept`); use "
        "`format=` or accept one of JSON, CSV, Arrow.",
        "InvalidParameter": "A parameter is unknown, malformed, not one of its choices or "
        "out of range (`param` names it; `detail` starts with it and says why).",
        "TooManyRequests": "The key's rate limit is spent.",
        "Unavailable": "The warehouse is busy, missing or the server is draining.",
    }
    responses: dict[str, Any] = {}
    for name, text in errors.items():
        response: dict[str, Any] = {
            "description": text,
            "content": {"application/json": {"schema": _ERROR}},
        }
        if name in ("TooManyRequests", "Unavailable"):
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
        if name == "Unauthorized":
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}
            }
        responses[name] = response
    components: dict[str, Any] = {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["detail"],
                "properties": {
                    "detail": {"type": "string", "description": "What is wrong."},
                    "param": {
                        "type": "string",
                        "description": "The parameter (or header) at fault.",
                    },
                },
            },
            "QueryResult": {
                "type": "object",
                "required": [
                    "query",
                    "cached",
                    "data_version",
                    "columns",
                    "types",
                    "row_count",
                    "rows",
                ],
                "properties": {
                    "query": {"type": "string", "description": "The query's name."},
                    "cached": {"type": "boolean", "description": "Served from the cache."},
                    "data_version": {
                        "type": "string",
                        "description": "The warehouse build the rows come from.",
                    },
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "types": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Arrow type of each column.",
                    },
                    "row_count": {"type": "integer", "minimum": 0},
                    "rows": {
                        "type": "array",
                        "items": {"type": "array"},
                        "description": "One array per row, cells in column order.",
                    },
                },
            },
            "Catalog": {
                "type": "object",
                "required": ["queries", "segments", "formats"],
                "properties": {
                    "queries": {"type": "array", "items": {"type": "object"}},
                    "segments": {"type": "array", "items": {"enum": list(segments)}},
                    "formats": {"type": "array", "items": {"enum": list(formats)}},
                    "reserved_params": {"type": "object"},
                },
            },
        },
        "parameters": {
            "format": {
                "name": "format",
                "in": "query",
                "required": False,
                "description": "Response format; overrides the Accept header.",
                "schema": {"type": "string", "enum": list(formats), "default": "json"},
                "example": "csv",
            },
            "segments": {
                "name": "segments",
                "in": "query",
                "required": False,
                "description": "NOMESEGMENTO values to restrict the rows to, "
                "comma-separated (case-insensitive); within the API key's segments "
                "(outside them: 403). Omitted: every segment the key may read.",
                "style": "form",
                "explode": False,
                "schema": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(segments)},
                    "uniqueItems": True,
                    "minItems": 1,
                },
                "example": list(segments[:2]),
            },
        },
        "headers": {
            "X-Cache": {
                "description": "HIT when the body came from the cache.",
                "schema": {"type": "string", "enum": ["HIT", "MISS"]},
            },
            "X-Data-Version": {
                "description": "The warehouse data_version of the rows.",
                "schema": {"type": "string"},
            },
            "Vary": {"description": "Accept.", "schema": {"type": "string"}},
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            },
        },
        "responses": responses,
    }
    if secured:
        components["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
    return components


def build_openapi(
    *,
    formats: Mapping[str, str],
    segments: Sequence[str],
    auth: bool = True,
    max_value_length: int = 256,
    result_schemas: Mapping[str, pa.Schema] | None = None,
    data_version: str | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API.

    Args:
        formats: Format name (``json``, ``arrow``, ``csv``) to media type.
        segments: The known ``NOMESEGMENTO`` values (the ``segments`` enum).
        auth: Whether the query endpoints need an API key (security schemes).
        max_value_length: The longest query-string value accepted.
        result_schemas: The Arrow schema of each query's result, when known: adds the
            columns, types and row schema to its JSON response and the header to its CSV.
        data_version: The warehouse build the result schemas were read from (in
            ``info``).

    Returns:
        The document as plain data (JSON-serialisable).
    """
    schemas = result_schemas or {}
    paths: dict[str, Any] = {
        "/healthz": _operational(
            "healthz",
            "Liveness: the process answers (never touches the warehouse or Redis).",
            {"application/json": {"schema": {"type": "object"}}},
        ),
        "/readyz": _operational(
            "readyz",
            "Readiness: the warehouse is readable and the server is not draining.",
            {"application/json": {"schema": {"type": "object"}}},
        ),
        "/metrics": _operational(
            "metrics",
            "Prometheus metrics (text exposition format).",
            {"text/plain": {"schema": {"type": "string"}}},
        ),
        f"{API_PREFIX}/queries": {
            "get": {
                "operationId": "listQueries",
                "summary": "The query catalog: names, questions and typed parameters.",
                "tags": ["catalog"],
                "responses": {
                    "200": {
                        "description": "The catalog.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Catalog"}}
                        },
                    },
                    **({"401": {"$ref": "#/components/responses/Unauthorized"}} if auth else {}),
                    "429": {"$ref": "#/components/responses/TooManyRequests"},
                },
            }
        },
    }
    for query in CATALOG.values():
        paths[f"{API_PREFIX}/queries/{query.name}"] = {
            "get": _query_operation(
                query,
                schemas.get(query.name),
                formats=formats,
                max_length=max_value_length,
                secured=auth,
            )
        }
    classes = sorted({q.cache_class for q in CATALOG.values()})
    description = (
        "Named BI queries over the retail DuckDB warehouse. Clients name a catalog "
        "query and its parameters; they never send SQL. Every 4xx answers "
        '`{"detail": ..., "param": ...}` naming the parameter (or header) at fault.'
    )
    if auth:
        description += (
            " Query endpoints need an API key (`X-API-Key` or `Authorization: Bearer`);"
            " a key may be limited to some segments (row-level security)."
        )
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "bi_platform query API",
            "version": "1",
            "description": description,
        },
        "servers": [{"url": "/", "description": "This server."}],
        "tags": [
            {"name": "catalog", "description": "What can be asked."},
            *({"name": c, "description": f"Queries of cache class {c}."} for c in classes),
            {"name": "operations", "description": "Health, readiness and metrics."},
        ],
        "paths": paths,
        "components": _components(formats=formats, segments=segments, secured=auth),
    }
    if data_version is not None:
        document["info"]["x-data-version"] = data_version
    if auth:
        document["security"] = [{"ApiKey": []}, {"Bearer": []}]
    return document
