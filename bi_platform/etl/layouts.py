"""Binary record layouts: ``struct_config.json`` entries, validated, with their numpy and
Arrow views.

A layout is a name, a :mod:`struct` format with an explicit byte order (``<``, ``>``,
``!`` or ``=``: standard sizes, no alignment padding) and one typed field per format item
(``x`` pad bytes take no field). The packaged ``data/struct_config.json`` holds the
defaults; a user file (``ETL_LAYOUTS_FILE``) of the same shape is merged over
it::

    {"layouts": {"default": {"description": "...", "struct_format": "<IQIq32s",
                             "fields": [{"name": "id", "type": "uint32"}, ...]}}}
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa


class LayoutError(ValueError):
    """A record layout is malformed or unknown (the message says where and why)."""


FIELD_TYPES = frozenset(
    {
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float32",
        "float64",
        "epoch_s",
        "utf8",
    }
)

#: struct code -> the integer/float type it holds (standard sizes).
_NUMERIC_CODES = {
    "b": "int8",
    "B": "uint8",
    "h": "int16",
    "H": "uint16",
    "i": "int32",
    "I": "uint32",
    "l": "int32",
    "L": "uint32",
    "q": "int64",
    "Q": "uint64",
    "f": "float32",
    "d": "float64",
}
_BYTE_ORDERS = {"<": "<", ">": ">", "!": ">", "=": "="}
_ITEM = re.compile(r"\s*(\d*)\s*([A-Za-z?])")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LAYOUT_KEYS = {"description", "struct_format", "fields"}
_FIELD_KEYS = {"name", "type"}

_ARROW_TYPES = {
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "epoch_s": pa.timestamp("s", tz="UTC"),
    "utf8": pa.string(),
}
_NUMPY_KINDS = {
    "uint8": "u1",
    "uint16": "u2",
    "uint32": "u4",
    "uint64": "u8",
    "int8": "i1",
    "int16": "i2",
    "int32": "i4",
    "int64": "i8",
    "float32": "f4",
    "float64": "f8",
}


@dataclass(frozen=True)
class LayoutField:
    """One field of a record: its name and type (one of :data:`FIELD_TYPES`)."""

    name: str
    type: str


@dataclass(frozen=True)
class FieldSpec:
    """Where a field sits in the record: struct code, byte offset and size."""

    name: str
    type: str
    code: str
    offset: int
    size: int

    @property
    def storage(self) -> str:
        """The integer/float type stored in the bytes (``epoch_s`` -> e.g. ``uint64``)."""
        return "utf8" if self.code == "s" else _NUMERIC_CODES[self.code]


def _parse_format(fmt: str) -> tuple[str, list[tuple[str, int, int]]]:
    """(numpy byte order, [(code, offset, size)]) of a struct format; pad bytes dropped."""
    if not fmt or fmt[0] not in _BYTE_ORDERS:
        raise LayoutError(
            f"struct format {fmt!r} must start with an explicit byte order "
            "('<', '>', '!' or '='): native alignment ('@') would insert padding"
        )
    try:
        struct.calcsize(fmt)
    except struct.error as exc:
        raise LayoutError(f"struct format {fmt!r} does not parse: {exc}") from None
    items: list[tuple[str, int, int]] = []
    offset = 0
    body = fmt[1:]
    pos = 0
    while pos < len(body):
        if body[pos].isspace():
            pos += 1
            continue
        match = _ITEM.match(body, pos)
        if match is None:  # pragma: no cover - struct.calcsize rejected it already
            raise LayoutError(f"struct format {fmt!r}: cannot read item at {body[pos:]!r}")
        count = int(match.group(1)) if match.group(1) else 1
        code = match.group(2)
        pos = match.end()
        if code == "x":
            offset += count
        elif code == "s":
            if count == 0:
                raise LayoutError(f"struct format {fmt!r}: '0s' holds no bytes")
            items.append((code, offset, count))
            offset += count
        elif code in _NUMERIC_CODES:
            size = struct.calcsize(fmt[0] + code)
            for _ in range(count):
                items.append((code, offset, size))
                offset += size
        else:
            raise LayoutError(
                f"struct format {fmt!r}: code {code!r} is not supported "
                f"(use {''.join(_NUMERIC_CODES)}, 's' for text or 'x' for padding)"
            )
    return _BYTE_ORDERS[fmt[0]], items


def _compatible(type_: str, code: str) -> bool:
    if type_ == "utf8":
        return code == "s"
    if code == "s":
        return False
    stored = _NUMERIC_CODES[code]
    if type_ == "epoch_s":
        return not stored.startswith("float")
    return stored == type_


@dataclass(frozen=True)
class RecordLayout:
    """A validated fixed-size record layout (raises :class:`LayoutError` when built wrong)."""

    name: str
    struct_format: str
    fields: tuple[LayoutField, ...]
    description: str = ""

    def __post_init__(self) -> None:
        where = f"layout {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise LayoutError("a layout needs a non-empty name")
        if not isinstance(self.struct_format, str):
            raise LayoutError(f"{where}: struct_format must be a string")
        try:
            _, items = _parse_format(self.struct_format)
        except LayoutError as exc:
            raise LayoutError(f"{where}: {exc}") from None
        if len(items) != len(self.fields):
            raise LayoutError(
                f"{where}: struct format {self.struct_format!r} has {len(items)} value "
                f"item(s) but {len(self.fields)} field(s) are declared"
            )
        seen: set[str] = set()
        for field, (code, _, _) in zip(self.fields, items, strict=True):
            if not isinstance(field.name, str) or not _NAME.match(field.name):
                raise LayoutError(f"{where}: field name {field.name!r} is not an identifier")
            if field.name in seen:
                raise LayoutError(f"{where}: field {field.name!r} is declared twice")
            seen.add(field.name)
            if field.type not in FIELD_TYPES:
                raise LayoutError(
                    f"{where}: field {field.name!r} has unsupported type {field.type!r} "
                    f"(supported: {', '.join(sorted(FIELD_TYPES))})"
                )
            if not _compatible(field.type, code):
                raise LayoutError(
                    f"{where}: field {field.name!r} of type {field.type!r} does not match "
                    f"struct code {code!r}"
                )

    @property
    def record_size(self) -> int:
        return struct.calcsize(self.struct_format)

    @cached_property
    def specs(self) -> tuple[FieldSpec, ...]:
        """Each field with its struct code, byte offset and size."""
        _, items = _parse_format(self.struct_format)
        return tuple(
            FieldSpec(f.name, f.type, code, offset, size)
            for f, (code, offset, size) in zip(self.fields, items, strict=True)
        )

    def _dtype(self, text_as_bytes: bool) -> np.dtype:
        order, _ = _parse_format(self.struct_format)
        formats = []
        for spec in self.specs:
            if spec.code == "s":
                formats.append(f"({spec.size},)u1" if text_as_bytes else f"S{spec.size}")
            else:
                formats.append(order + _NUMPY_KINDS[spec.storage])
        return np.dtype(
            {
                "names": [s.name for s in self.specs],
                "formats": formats,
                "offsets": [s.offset for s in self.specs],
                "itemsize": self.record_size,
            }
        )

    @cached_property
    def numpy_dtype(self) -> np.dtype:
        """Structured dtype with the record's byte order and offsets (text fields ``SN``)."""
        return self._dtype(text_as_bytes=False)

    @cached_property
    def decode_dtype(self) -> np.dtype:
        """:attr:`numpy_dtype` with text fields as ``(N,) uint8`` sub-arrays (copied an
        order of magnitude faster than ``SN`` items)."""
        return self._dtype(text_as_bytes=True)

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        """Schema of decoded records (``epoch_s`` -> ``timestamp[s, UTC]``, ``utf8`` ->
        ``string``)."""
        return pa.schema([pa.field(f.name, _ARROW_TYPES[f.type]) for f in self.fields])

    def field(self, name: str) -> LayoutField:
        for f in self.fields:
            if f.name == name:
                return f
        raise LayoutError(f"layout {self.name!r} has no field {name!r}")


def _layout_from_json(name: str, raw: object, source: str) -> RecordLayout:
    where = f"{source}: layout {name!r}"
    if not isinstance(raw, dict):
        raise LayoutError(f"{where} must be an object")
    unknown = set(raw) - _LAYOUT_KEYS
    if unknown:
        raise LayoutError(f"{where}: unknown key(s) {sorted(unknown)}")
    for key in ("struct_format", "fields"):
        if key not in raw:
            raise LayoutError(f"{where}: missing {key!r}")
    if not isinstance(raw["fields"], list) or not raw["fields"]:
        raise LayoutError(f"{where}: 'fields' must be a non-empty list")
    fields = []
    for i, entry in enumerate(raw["fields"]):
        if not isinstance(entry, dict) or set(entry) != _FIELD_KEYS:
            raise LayoutError(f"{where}: field #{i} must be an object with 'name' and 'type'")
        fields.append(LayoutField(entry["name"], entry["type"]))
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise LayoutError(f"{where}: 'description' must be a string")
    try:
        return RecordLayout(name, raw["struct_format"], tuple(fields), description)
    except LayoutError as exc:
        raise LayoutError(f"{source}: {exc}") from None


def parse_layouts(text: str, source: str = "<layouts>") -> dict[str, RecordLayout]:
    """The layouts of a ``struct_config.json`` document (``source`` names it in errors)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutError(f"{source}: invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layouts"), dict):
        raise LayoutError(f"{source}: expected an object with a 'layouts' object")
    return {name: _layout_from_json(name, raw, source) for name, raw in doc["layouts"].items()}


def load_layouts(extra_file: Path | None = None) -> dict[str, RecordLayout]:
    """The packaged layouts, with those of ``extra_file`` (if any) merged over them."""
    packaged = resources.files("bi_platform.etl").joinpath("data/struct_config.json")
    layouts = parse_layouts(packaged.read_text(encoding="utf-8"), "struct_config.json")
    if extra_file is not None:
        path = Path(extra_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LayoutError(f"{path}: cannot read the layouts file: {exc}") from None
        layouts.update(parse_layouts(text, str(path)))
    return layouts


def get_layout(name: str, extra_file: Path | None = None) -> RecordLayout:
    """The layout called ``name`` (:class:`LayoutError` listing the known ones if absent)."""
    layouts = load_layouts(extra_file)
    try:
        return layouts[name]
    except KeyError:
        raise LayoutError(
            f"unknown record layout {name!r} (known: {', '.join(sorted(layouts))})"
        ) from None
