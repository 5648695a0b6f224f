"""Record layouts: the packaged struct_config.json, user files merged over it, validation
errors that say what is wrong, and numpy/Arrow views that agree with ``struct``."""

import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bi_platform.etl.layouts import (
    FIELD_TYPES,
    LayoutError,
    LayoutField,
    RecordLayout,
    get_layout,
    load_layouts,
    parse_layouts,
)


def _doc(**layouts: dict) -> str:
    return json.dumps({"layouts": layouts})


def _fields(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "type": t} for n, t in pairs]


DEFAULT_FIELDS = _fields(
    ("id", "uint32"),
    ("timestamp", "epoch_s"),
    ("quantity", "uint32"),
    ("value", "int64"),
    ("product", "utf8"),
)


def test_default_layout_matches_the_issue() -> None:
    layout = get_layout("default")
    assert layout.struct_format == "<IQIq32s"
    assert layout.record_size == 56
    assert [(f.name, f.type) for f in layout.fields] == [
        ("id", "uint32"),
        ("timestamp", "epoch_s"),
        ("quantity", "uint32"),
        ("value", "int64"),
        ("product", "utf8"),
    ]
    assert layout.arrow_schema == pa.schema(
        [
            ("id", pa.uint32()),
            ("timestamp", pa.timestamp("s", tz="UTC")),
            ("quantity", pa.uint32()),
            ("value", pa.int64()),
            ("product", pa.string()),
        ]
    )
    assert [s.offset for s in layout.specs] == [0, 4, 12, 16, 24]
    assert layout.field("value").type == "int64"
    with pytest.raises(LayoutError, match="no field 'price'"):
        layout.field("price")


@pytest.mark.parametrize("name", sorted(load_layouts()))
def test_numpy_dtype_decodes_what_struct_packs(name: str) -> None:
    layout = get_layout(name)
    rows = [
        (7, 1_700_000_000, 3, -1_250, "Café Pilão 500g".encode()),
        (2**16 - 1, 1_600_000_000, 65_535, 2**40, b"x" * 32),
    ]
    data = b"".join(struct.pack(layout.struct_format, *row) for row in rows)
    decoded = np.frombuffer(data, layout.numpy_dtype)
    assert layout.numpy_dtype.itemsize == layout.record_size
    for record, row in zip(decoded, rows, strict=True):
        assert tuple(record[f.name] for f in layout.fields[:4]) == row[:4]
        assert record["product"] == row[4]  # NUL padding is stripped by numpy's S32
    same = np.frombuffer(data, layout.decode_dtype)
    assert bytes(same["product"][0]).rstrip(b"\0") == rows[0][4]


def test_padding_and_repeat_counts_are_understood() -> None:
    layout = RecordLayout(
        "padded",
        ">H2x2i8s",
        (
            LayoutField("kind", "uint16"),
            LayoutField("a", "int32"),
            LayoutField("b", "int32"),
            LayoutField("label", "utf8"),
        ),
    )
    assert layout.record_size == 2 + 2 + 8 + 8
    assert [s.offset for s in layout.specs] == [0, 4, 8, 12]
    data = struct.pack(">H2x2i8s", 5, -1, 9, b"ok")
    record = np.frombuffer(data, layout.numpy_dtype)[0]
    assert (record["kind"], record["a"], record["b"], record["label"]) == (5, -1, 9, b"ok")


def test_user_file_adds_and_overrides_layouts(tmp_path: Path) -> None:
    extra = tmp_path / "layouts.json"
    extra.write_text(
        _doc(
            default={"struct_format": "<IQIq16s", "fields": DEFAULT_FIELDS},
            tiny={
                "description": "two fields",
                "struct_format": "<Hf",
                "fields": _fields(("code", "uint16"), ("ratio", "float32")),
            },
        )
    )
    layouts = load_layouts(extra)
    assert {"default", "compact", "network", "tiny"} <= set(layouts)
    assert layouts["default"].record_size == 40
    assert get_layout("tiny", extra).description == "two fields"
    assert get_layout("default").record_size == 56  # packaged file untouched


def test_unknown_layout_lists_the_known_ones() -> None:
    with pytest.raises(LayoutError, match=r"unknown record layout 'nope' \(known: .*default"):
        get_layout("nope")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"struct_format": "<IQz", "fields": DEFAULT_FIELDS}, "does not parse"),
        ({"struct_format": "IQIq32s", "fields": DEFAULT_FIELDS}, "explicit byte order"),
        ({"struct_format": "@IQIq32s", "fields": DEFAULT_FIELDS}, "explicit byte order"),
        ({"struct_format": "<IQIq", "fields": DEFAULT_FIELDS}, "4 value item.* 5 field"),
        (
            {"struct_format": "<I?", "fields": _fields(("a", "uint32"), ("b", "uint8"))},
            "code '\\?' is not supported",
        ),
        (
            {"struct_format": "<II", "fields": _fields(("a", "uint32"), ("b", "decimal"))},
            "unsupported type 'decimal'",
        ),
        (
            {"struct_format": "<IQ", "fields": _fields(("a", "uint32"), ("b", "uint32"))},
            "'b' of type 'uint32' does not match struct code 'Q'",
        ),
        (
            {"struct_format": "<I8s", "fields": _fields(("a", "uint32"), ("b", "int64"))},
            "does not match struct code 's'",
        ),
        (
            {"struct_format": "<Id", "fields": _fields(("a", "uint32"), ("t", "epoch_s"))},
            "'t' of type 'epoch_s' does not match struct code 'd'",
        ),
        (
            {"struct_format": "<II", "fields": _fields(("a", "uint32"), ("a", "uint32"))},
            "declared twice",
        ),
        (
            {"struct_format": "<II", "fields": _fields(("a", "uint32"), ("b c", "uint32"))},
            "not an identifier",
        ),
        ({"struct_format": "<I"}, "missing 'fields'"),
        ({"struct_format": "<I", "fields": []}, "non-empty list"),
        ({"struct_format": "<I", "fields": [{"name": "a"}]}, "'name' and 'type'"),
        ({"struct_format": "<I", "fields": _fields(("a", "uint32")), "sep": ","}, "unknown key"),
    ],
)
def test_invalid_layouts_are_rejected_with_the_reason(layout: dict, message: str) -> None:
    with pytest.raises(LayoutError, match=message) as caught:
        parse_layouts(_doc(broken=layout), "my_layouts.json")
    assert "my_layouts.json" in str(caught.value)
    assert "broken" in str(caught.value)


def test_malformed_documents_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="invalid JSON"):
        parse_layouts("{", "x.json")
    with pytest.raises(LayoutError, match="'layouts' object"):
        parse_layouts(json.dumps({"default": {}}), "x.json")
    with pytest.raises(LayoutError, match="cannot read the layouts file"):
        load_layouts(tmp_path / "missing.json")


def test_field_types_are_the_contract_set() -> None:
    assert {
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
    } == FIELD_TYPES
