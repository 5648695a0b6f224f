"""The ETL report: self-contained HTML, escaping of every user-controlled value, the report
helpers, and publication with backups."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from bi_platform.etl.estimation import stratified_estimate
from bi_platform.etl.report import (
    _money,
    interval_chart,
    list_backups,
    publish_report,
    render_report,
    system_profile,
    top_products,
)

HOSTILE_PRODUCTS = [
    '<script>alert("p")</script>',
    '" onmouseover="alert(1)',
    "'><img src=x onerror=alert(2)>",
    '=HYPERLINK("http://evil.example","click")',
    "Café & Crème <b>bold</b>",
]


def make_records(
    rows: int = 40_000, products: int = 120, seed: int = 3, hostile: bool = True
) -> pl.DataFrame:
    """Records with the ETL's decoded schema; with ``hostile`` a few of the most frequent
    product names are HTML/CSV injection attempts."""
    rng = np.random.default_rng(seed)
    # Hostile names first: they are among the most frequent, so in the top products.
    names = [*HOSTILE_PRODUCTS] if hostile else []
    names += [f"Product {i:04d}" for i in range(products - len(names))]
    weights = 1.0 / np.arange(1, products + 1) ** 0.7
    pick = rng.choice(products, size=rows, p=weights / weights.sum())
    price = rng.uniform(200, 50_000, products)
    quantity = rng.integers(1, 40, rows).astype(np.uint32)
    return pl.DataFrame(
        {
            "id": np.arange(rows, dtype=np.uint32),
            "timestamp": pl.from_epoch(
                pl.Series(rng.integers(1_650_000_000, 1_700_000_000, rows)), time_unit="s"
            ).dt.replace_time_zone("UTC"),
            "quantity": quantity,
            "value": np.round(price[pick] * quantity).astype(np.int64),
            "product": np.array(names, dtype=object)[pick],
        }
    )


def realistic_context(records: pl.DataFrame | None = None) -> dict[str, Any]:
    """A context like the `etl_report` asset builds: real estimate and top products."""
    records = make_records() if records is None else records
    estimate = stratified_estimate(records.lazy(), fraction=0.02, seed=42)
    files = [
        ("sales_2024_01.bin", "binary", 13_000, 12_994, 6),
        ("sales_2024_02.bin", "binary", 14_000, 14_000, 0),
        ("export_march.csv", "csv", 9_050, 9_000, 50),
        ("export_april.parquet", "parquet", 4_006, 4_006, 0),
        ("truncated.bin", "binary", 1, 0, 1),
    ]
    return {
        "title": "Secure hybrid ETL report",
        "generated_at": "2025-06-01T12:00:00+00:00",
        "files": [
            {
                "source_file": name,
                "format": fmt,
                "size_bytes": n_in * 56,
                "records_in": n_in,
                "records_out": n_out,
                "dead_letter": n_in - n_out,
                "dead_letter_reasons": {},
                "seconds": 0.01 * (i + 1),
                "sha256": hashlib.sha256(name.encode()).hexdigest(),
            }
            for i, (name, fmt, n_in, n_out, _) in enumerate(files)
        ],
        "dead_letter_reasons": {
            "timestamp out of range": 31,
            "csv: wrong number of columns": 20,
            "csv: not a number": 10,
            "product is not valid UTF-8": 5,
            "truncated record": 1,
        },
        "top_products": top_products(records.lazy(), 10),
        "estimates": estimate.as_metadata(),
        "config": {
            "etl_layout": "default",
            "etl_sample_fraction": 0.02,
            "etl_sample_seed": 42,
            "etl_workers": 2,
            "etl_chunk_mb": 64,
            "etl_timestamp_min": datetime(2000, 1, 1, tzinfo=UTC),
            "etl_timestamp_max": datetime(2035, 12, 31, 23, 59, 59, tzinfo=UTC),
            "inbox": Path("/srv/bi/etl/inbox"),
        },
        "timings": {"parse": 1.84, "sample estimate": estimate.seconds, "render": 0.05},
        "system": system_profile(),
        "rejected": [
            {"name": "escape_link.bin", "reason": "symlink resolves outside the inbox"},
            {
                "name": "pages.parquet",
                "reason": "unreadable: corrupt Parquet data",
                "stage": "parse",
                "sha256": "ab" * 32,
            },
        ],
        "duplicates": [
            {
                "name": "copy.bin",
                "key": "copy.bin@0123456789abcdef",
                "duplicate_of": "sales_2024_01.bin@0123456789abcdef",
            }
        ],
    }


class _Collector(HTMLParser):
    """Every start tag with its attributes, and the text content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector


FORBIDDEN_TAGS = {"script", "link", "img", "iframe", "object", "embed", "base", "image", "use"}
URL_ATTRIBUTES = {"src", "href", "xlink:href", "xmlns", "xmlns:xlink", "action", "srcset"}


def assert_no_active_content(html: str) -> _Collector:
    doc = parse(html)
    for tag, attrs in doc.tags:
        assert tag not in FORBIDDEN_TAGS, tag
        for name in attrs:
            assert not name.startswith("on"), (tag, name)
            assert name not in URL_ATTRIBUTES, (tag, name)
    return doc


@pytest.fixture(scope="module")
def context() -> dict[str, Any]:
    return realistic_context()


def test_report_is_self_contained_and_complete(context: dict[str, Any]) -> None:
    benign = make_records(hostile=False)
    html = render_report({**context, "top_products": top_products(benign.lazy(), 10)})
    # No URL of any kind.
    for needle in ("http", "//", "xmlns", "url(", "@import", "@font-face"):
        assert needle not in html, needle
    doc = assert_no_active_content(html)
    tags = [tag for tag, _ in doc.tags]
    assert tags.count("svg") == 4  # top products, dead-letter reasons, quantity, value
    assert tags.count("style") == 1
    assert "#0a0e27" in html
    assert "#7c3aed" in html
    assert "@media (max-width: 700px)" in html
    assert '<meta name="viewport"' in html
    text = " ".join(doc.text)
    for expected in (
        "Top products by value",
        "Dead-letter reasons",
        "timestamp out of range",
        "sales_2024_01.bin",
        hashlib.sha256(b"export_march.csv").hexdigest(),  # a full sha256
        "Quantity (units)",
        "Value (currency units)",
        "95% interval",
        "etl_sample_seed",
        "Logical cores",
        "RAM (GiB)",
        "symlink resolves outside the inbox",
    ):
        assert expected in text, expected
    # Totals: 40,057 in = 40,000 out + 57 dead-letter.
    assert "40,057" in text
    assert "reconciled" in text
    gpu = context["system"]["gpu"]
    assert (gpu or "none") in text


def test_every_user_controlled_value_is_escaped(context: dict[str, Any]) -> None:
    evil = '<script>alert("x")</script>'
    hostile = {
        **context,
        "title": f"Report {evil}",
        "generated_at": evil,
        "files": [
            {**context["files"][0], "source_file": '"><svg onload=alert(1)>.bin', "format": evil}
        ],
        "dead_letter_reasons": {'<img src=x onerror="alert(3)">': 4, evil: 1},
        "config": {"inbox": "</style><script>alert(4)</script>", evil: "x"},
        "timings": {evil: 1.0},
        "rejected": [("<iframe src=javascript:alert(5)>", evil)],
        "duplicates": [{"name": evil, "key": "k", "duplicate_of": evil}],
    }
    assert {p for p, _ in hostile["top_products"]} >= set(HOSTILE_PRODUCTS)
    html = render_report(hostile)
    assert "<script" not in html
    assert "<img" not in html
    assert "<iframe" not in html
    doc = assert_no_active_content(html)
    text = "".join(doc.text)
    # The hostile strings are shown as text, intact.
    assert evil in text
    assert '"><svg onload=alert(1)>.bin' in text
    for product in HOSTILE_PRODUCTS:
        assert f"{product}: " in text, product  # the full name, in the bar's tooltip
    assert "&lt;script&gt;" in html
    assert "&#34;" in html or "&quot;" in html


def test_rejected_files_duplicates_and_the_real_sample_are_shown(
    context: dict[str, Any],
) -> None:
    html = render_report(context)
    text = " ".join(parse(html).text)
    assert "Rejected files" in text and "Duplicates" in text
    assert "unreadable: corrupt Parquet data" in text and "pages.parquet" in text
    assert "copy.bin" in text and "sales_2024_01.bin@0123456789abcdef" in text
    for stage in ("inbox", "read"):
        assert f'<span class="badge bad">{stage}</span>' in html
    estimates = context["estimates"]
    assert f"{estimates['sample_fraction'] * 100:.3g}% of the records" in text
    assert "configured fraction" in text and "2%" in text
    assert f"Sample size: {estimates['size_reason']}." in text
    assert "1 duplicate(s)" in text and "2 rejected" in text


def test_every_chart_is_in_one_unit() -> None:
    """The value's interval chart: ticks in currency units, like its labels (it is stored
    in cents); quantity in units."""
    cents = {"estimate": 73_000_000_00, "ci_low": 70_000_000_00, "ci_high": 76_000_000_00}
    chart = interval_chart({**cents, "exact": 73_500_000_00}, _money, 100.0)
    ticks = [t["label"] for t in chart["ticks"]]
    assert all(t.endswith("M") for t in ticks)
    assert 65 < float(ticks[0][:-1]) < 75 and 75 < float(ticks[-1][:-1]) < 85  # millions
    assert chart["estimate_label"] == "73,000,000.00"
    html = render_report(realistic_context())
    assert "axis and figures in currency units" in html
    assert "axis and figures in units" in html
    assert "in currency units (value is stored in cents)" in html
    assert "(number of records; files that count)" in html


def test_money_is_exact_for_any_integer() -> None:
    assert _money(2**64) == "184,467,440,737,095,516.16"
    assert _money(-105) == "-1.05"
    assert _money(7) == "0.07"
    assert _money(1234.5) == "12.35" or _money(1234.5) == "12.34"  # float cents: rounded
    assert _money(None) == "—"


def test_render_without_data_says_so() -> None:
    html = render_report({"system": {"cores_logical": 2, "gpu": None}})
    text = " ".join(parse(html).text)
    assert "No records yet." in text
    assert "No dead-letter entries" in text
    assert "No estimate in this run." in text
    assert "No file processed." in text
    assert "No file rejected." in text
    assert "none" in text  # the GPU
    assert_no_active_content(html)


def test_top_products_sums_value_and_breaks_ties_by_name() -> None:
    records = pl.LazyFrame(
        {
            "product": ["b", "a", "c", "b", "d", "a"],
            "value": pl.Series([5, 4, 10, 5, 1, 6], dtype=pl.Int64),
        }
    )
    assert top_products(records, 3) == [("a", 10.0), ("b", 10.0), ("c", 10.0)]
    assert top_products(records, 10)[-1] == ("d", 1.0)
    assert top_products(records.filter(pl.col("value") < 0)) == []
    huge = pl.LazyFrame({"product": ["x"] * 4, "value": pl.Series([2**62] * 4, dtype=pl.Int64)})
    assert top_products(huge) == [("x", 2**64)]  # exact: no int64 wrap


def test_system_profile_reports_the_machine() -> None:
    profile = system_profile()
    assert profile["cores_logical"] >= 1
    assert profile["cores_physical"] is None or profile["cores_physical"] >= 1
    assert profile["ram_gb"] > 0
    assert profile["python"].count(".") == 2
    assert set(profile["libraries"]) == {"polars", "pyarrow", "numpy"}
    if shutil.which("nvidia-smi") is None:
        assert profile["gpu"] is None
    else:
        assert profile["gpu"] is None or isinstance(profile["gpu"], str)
    json.dumps(profile)


# -- publication -------------------------------------------------------------------------------

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def test_publish_backs_up_previous_outputs(tmp_path: Path) -> None:
    report_dir, backups = tmp_path / "report", tmp_path / "backup"
    first = publish_report(
        report_dir, {"report.html": "<p>one</p>", "report.json": b"{}"}, backups, now=T0
    )
    assert first == {
        "report.html": report_dir / "report.html",
        "report.json": report_dir / "report.json",
    }
    assert list_backups(backups) == []  # nothing to back up the first time

    publish_report(report_dir, {"report.html": "<p>two</p>"}, backups, now=T0)
    (backup,) = list_backups(backups)
    assert backup.name == "20250601T120000Z"
    assert (backup / "report.html").read_text() == "<p>one</p>"
    assert (backup / "report.json").read_bytes() == b"{}"
    assert (report_dir / "report.html").read_text() == "<p>two</p>"
    assert not (report_dir / "report.json").exists()  # not rewritten: moved to the backup

    # Same second again: a distinct directory; a non-UTC clock gives the UTC name.
    publish_report(report_dir, {"report.html": "<p>three</p>"}, backups, now=T0)
    local = T0.astimezone(timezone(timedelta(hours=-3)))
    publish_report(report_dir, {"report.html": "<p>four</p>"}, backups, now=local)
    names = [p.name for p in list_backups(backups)]
    assert names == ["20250601T120000Z", "20250601T120000Z-1", "20250601T120000Z-2"]
    assert (backups / "20250601T120000Z-1" / "report.html").read_text() == "<p>two</p>"
    assert (backups / "20250601T120000Z-2" / "report.html").read_text() == "<p>three</p>"
    assert not list(report_dir.glob("*.tmp"))


def test_publish_keeps_only_the_last_backups(tmp_path: Path) -> None:
    report_dir, backups = tmp_path / "report", tmp_path / "backup"
    (backups / "notes").mkdir(parents=True)  # not a backup: never touched
    for i in range(8):
        publish_report(
            report_dir, {"report.html": f"run {i}"}, backups, keep=3, now=T0 + timedelta(hours=i)
        )
    kept = list_backups(backups)
    assert [p.name for p in kept] == ["20250601T170000Z", "20250601T180000Z", "20250601T190000Z"]
    assert [(p / "report.html").read_text() for p in kept] == ["run 4", "run 5", "run 6"]
    assert (report_dir / "report.html").read_text() == "run 7"
    assert (backups / "notes").is_dir()

    publish_report(report_dir, {"report.html": "run 8"}, backups, keep=0, now=T0 + timedelta(9))
    assert list_backups(backups) == []


def test_publish_rejects_names_outside_the_report_dir(tmp_path: Path) -> None:
    for name in ("../escape.html", "sub/report.html", "..", "", "report.html.tmp"):
        with pytest.raises(ValueError, match="report output name"):
            publish_report(tmp_path / "report", {name: "x"}, tmp_path / "backup")
    assert not (tmp_path / "escape.html").exists()
    with pytest.raises(ValueError, match="keep"):
        publish_report(tmp_path / "report", {"a.html": "x"}, tmp_path / "backup", keep=-1)
