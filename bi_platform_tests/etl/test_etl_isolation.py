"""One file never takes the others down; confinement holds between registration and run;
content identity (duplicates, reverts) decides what the report covers; a refused layout
is audited. Each test drives the Dagster assets, checks and sensors on its own inbox."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bi_platform.etl import assets as etl_assets
from bi_platform.etl import checks as etl_checks_module
from bi_platform.etl.assets import (
    RECORDS,
    etl_ingest_file,
    etl_report,
    etl_sample_estimates,
    file_states,
    read_summary,
)
from bi_platform.etl.automation import (
    etl_inbox_sensor,
    pending_partitions,
    register_inbox_partitions,
    report_is_stale,
)
from bi_platform.etl.checks import etl_checks
from bi_platform.etl.inbox import split_partition_key
from bi_platform.etl.layouts import LayoutError
from bi_platform.etl.resources import EtlResource
from bi_platform.etl.security import AuditLog

T0 = 1_704_067_200  # 2024-01-01
SECRET = b"TOP-SECRET-OUTSIDE-BYTES"


def records(n: int, first: int = 1, product: bytes = b"Leite 1L") -> bytes:
    return b"".join(
        struct.pack("<IQIq32s", i, T0 + i, 1 + i % 4, 250 * (1 + i % 7), product)
        for i in range(first, first + n)
    )


def corrupt_parquet(rows: int = 300) -> bytes:
    table = pa.table(
        {
            "id": pa.array(range(1, rows + 1), pa.uint32()),
            "timestamp": pa.array([T0 * 1000] * rows, pa.timestamp("ms", tz="UTC")),
            "quantity": pa.array([1] * rows, pa.uint32()),
            "value": pa.array([100] * rows, pa.int64()),
            "product": ["Arroz"] * rows,
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = bytearray(sink.getvalue().to_pybytes())
    meta = pq.read_metadata(pa.BufferReader(bytes(data)))
    for column in range(meta.num_columns):
        chunk = meta.row_group(0).column(column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start : start + 16] = b"\xff" * 16
    return bytes(data)


@dataclass
class Lab:
    """An ETL directory, its resource and a Dagster instance."""

    root: Path
    etl: EtlResource
    instance: dg.DagsterInstance

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def drop(self, name: str, data: bytes) -> None:
        (self.inbox / name).write_bytes(data)

    def register(self) -> list[str]:
        return register_inbox_partitions(
            self.instance, self.inbox, self.etl.max_bytes, self.etl.audit_path
        ).current

    def key(self, name: str) -> str:
        return next(k for k in self.register() if split_partition_key(k)[0] == name)

    def run(self, key: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [etl_ingest_file, *etl_checks],
            instance=self.instance,
            resources={"etl": self.etl},
            partition_key=key,
            raise_on_error=False,
        )

    def run_pending(self) -> dict[str, dg.ExecuteInProcessResult]:
        return {key: self.run(key) for key in pending_partitions(self.instance, self.register())}

    def report(self) -> dict:
        result = dg.materialize(
            [etl_sample_estimates, etl_report],
            instance=self.instance,
            resources={"etl": self.etl},
            raise_on_error=False,
        )
        assert result.success
        return json.loads((self.root / "estimates" / "estimates.json").read_text())

    def audit(self) -> list[dict]:
        return AuditLog(self.etl.audit_path).entries()

    def outcome(self, key: str) -> dict:
        summary = read_summary(self.etl, key)
        assert summary is not None, key
        return summary


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    root = tmp_path / "etl"
    (root / "inbox").mkdir(parents=True)
    etl = EtlResource(etl_dir=str(root), workers=1, max_file_mb=4)
    return Lab(root, etl, dg.DagsterInstance.ephemeral())


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_one_bad_file_never_fails_hides_or_blocks_another(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Parquet file with corrupt pages, a CSV full of bare CRs and broken quotes, and a
    file whose parse raises: each gets its outcome in a run that completes; the good files
    count, the bad ones are listed with their reason; nothing is retried until its content
    changes, then only the new content runs."""
    lab.drop("good.bin", records(400))
    lab.drop("pages.parquet", corrupt_parquet())
    lab.drop(
        "crlf.csv",
        b"id,timestamp,quantity,value,product\r\n"
        b"1,1704067200,1,100,Leite\r\n2,1704067200,1,1\r00,Leite\r\n"
        b'3,1704067200,1,100,"Caf\xc3\xa9\n4,1704067200,1,100,Sal"\r\n\r\n5,1704067200,2,5,\xff\r\n',
    )
    lab.drop("boom.bin", records(10, first=900))
    real_parse = etl_assets.parse_file

    def parse(path: Path, *args, **kwargs):
        if Path(path).name == "boom.bin":
            raise RuntimeError("a bug met by this file only")
        return real_parse(path, *args, **kwargs)

    monkeypatch.setattr(etl_assets, "parse_file", parse)
    runs = lab.run_pending()
    assert len(runs) == 4 and all(r.success for r in runs.values())
    outcomes = {split_partition_key(k)[0]: lab.outcome(k) for k in runs}
    assert {n: o["outcome"] for n, o in outcomes.items()} == {
        "good.bin": "processed",
        "crlf.csv": "processed",
        "pages.parquet": "rejected",
        "boom.bin": "rejected",
    }
    assert "corrupt Parquet data" in outcomes["pages.parquet"]["reason"]
    assert "RuntimeError: a bug met by this file only" in outcomes["boom.bin"]["reason"]
    crlf = outcomes["crlf.csv"]
    assert crlf["records_in"] == 5 == crlf["records_out"] + crlf["dead_letter"]
    for key, result in runs.items():
        checks = _checks(result)
        assert checks["records_reconcile"], key
        assert checks["file_accepted"] == (lab.outcome(key)["outcome"] != "rejected")
    audited = {e["name"]: e["result"] for e in lab.audit()}
    assert audited["pages.parquet"] == audited["boom.bin"] == "rejected"

    # not retried: materialize has nothing pending, the sensor requests nothing
    assert pending_partitions(lab.instance, lab.register()) == []
    context = dg.build_sensor_context(instance=lab.instance, resources={"etl": lab.etl})
    assert etl_inbox_sensor(context).run_requests == []

    published = lab.report()
    assert sorted(split_partition_key(k)[0] for k in published["partitions"]) == [
        "crlf.csv",
        "good.bin",
    ]
    assert {r["name"]: r["reason"] for r in published["rejected"]} == {
        "boom.bin": outcomes["boom.bin"]["reason"],
        "pages.parquet": outcomes["pages.parquet"]["reason"],
    }
    html = (lab.root / "report" / "report.html").read_text()
    assert "a bug met by this file only" in html and "pages.parquet" in html

    # a corrected file is a new version: it runs, the rejected version is superseded
    monkeypatch.setattr(etl_assets, "parse_file", real_parse)
    lab.drop("boom.bin", records(11, first=900))
    (rerun,) = lab.run_pending().values()
    assert rerun.success and lab.outcome(lab.key("boom.bin"))["outcome"] == "processed"
    assert report_is_stale(lab.instance, lab.etl)[0]
    published = lab.report()
    assert lab.key("boom.bin") in published["partitions"]
    assert [r["name"] for r in published["rejected"]] == ["pages.parquet"]


def test_a_failed_reconcile_rejects_that_file_and_fails_its_run_only(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab.drop("a.bin", records(50))
    lab.drop("b.bin", records(60, first=100))
    real_count = etl_checks_module.count_source_records

    def miscount(fd: int, size: int, fmt: str, layout) -> int:
        count = real_count(fd, size, fmt, layout)
        return count + 1 if size == 60 * 56 else count

    monkeypatch.setattr(etl_checks_module, "count_source_records", miscount)
    runs = {split_partition_key(k)[0]: r for k, r in lab.run_pending().items()}
    assert runs["a.bin"].success
    assert not runs["b.bin"].success  # the blocking check failed
    assert not _checks(runs["b.bin"])["records_reconcile"]
    b_key = lab.key("b.bin")
    summary = lab.outcome(b_key)
    assert summary["outcome"] == "rejected"
    assert summary["reason"] == "records do not reconcile: 61 in, 60 out, 0 dead-lettered"
    assert any(
        e["name"] == "b.bin" and e["result"] == "rejected" and "reconcile" in e["detail"]
        for e in lab.audit()
    )
    assert pending_partitions(lab.instance, lab.register()) == []  # not retried
    states = file_states(lab.instance, lab.etl)
    assert [f.name for f in states.counted] == ["a.bin"]
    assert [(f.key, f.reason) for f in states.rejected] == [(b_key, summary["reason"])]
    published = lab.report()
    assert published["partitions"] == [lab.key("a.bin")]
    assert published["estimates"]["population"] == 50


def test_links_and_swaps_between_registration_and_run_are_refused(lab: Lab) -> None:
    """The file is registered as a plain file, then replaced before its run: by a hard
    link to an outside file with the same bytes, by a symbolic link, by other content.
    Each run fails with the reason, is audited, and nothing outside is read."""
    outside = lab.root.parent / "outside.csv"
    body = b"id,timestamp,quantity,value,product\n1,1704067200,1,100," + SECRET + b"\n"
    outside.write_bytes(body)
    lab.drop("a.csv", body)
    key = lab.key("a.csv")

    (lab.inbox / "a.csv").unlink()
    os.link(outside, lab.inbox / "a.csv")  # same content: the registered key still fits
    failed = lab.run(key)
    assert not failed.success
    message = next(e for e in failed.all_events if e.is_step_failure).event_specific_data
    assert "hard link" in message.error.message
    (lab.inbox / "a.csv").unlink()
    (lab.inbox / "a.csv").symlink_to(outside)
    failed = lab.run(key)
    assert not failed.success
    assert (
        "symbolic link"
        in next(e for e in failed.all_events if e.is_step_failure).event_specific_data.error.message
    )
    results = [(e["name"], e["result"]) for e in lab.audit()]
    assert results == [("a.csv", "refused"), ("a.csv", "refused")]
    for directory in ("records", "dead_letter"):
        for output in (lab.root / directory).glob("*"):
            assert SECRET not in output.read_bytes()
            assert SECRET.hex().encode() not in output.read_bytes()
    assert not (lab.root / "records" / f"{key}.parquet").exists()

    (lab.inbox / "a.csv").unlink()
    lab.drop("a.csv", body.replace(SECRET, b"Leite"))  # a plain file, other content
    failed = lab.run(key)
    assert (
        "changed since partition"
        in next(e for e in failed.all_events if e.is_step_failure).event_specific_data.error.message
    )


def test_the_same_content_under_two_names_counts_once(lab: Lab) -> None:
    content = records(200)
    lab.drop("a.bin", content)
    lab.drop("copy_of_a.bin", content)
    runs = lab.run_pending()
    assert all(r.success for r in runs.values())
    a_key, copy_key = lab.key("a.bin"), lab.key("copy_of_a.bin")
    copy = lab.outcome(copy_key)
    assert copy["outcome"] == "duplicate" and copy["parsed"] is False
    assert copy["duplicate_of"] == a_key and copy["records_out"] == 0
    published = lab.report()
    assert published["partitions"] == [a_key]
    assert published["estimates"]["population"] == 200  # not 400
    assert published["duplicates"] == [
        {"name": "copy_of_a.bin", "key": copy_key, "duplicate_of": a_key, "sha256": copy["sha256"]}
    ]
    # a.bin gets other content: the copy now holds the first content alone and counts
    # (with the records parsed once, under a.bin's first version)
    lab.drop("a.bin", records(50, first=1_000))
    assert all(r.success for r in lab.run_pending().values())
    states = file_states(lab.instance, lab.etl)
    counted = {f.key: f.records_key for f in states.counted}
    assert counted == {lab.key("a.bin"): lab.key("a.bin"), copy_key: a_key}
    assert states.duplicates == [] and states.superseded == [a_key]
    assert report_is_stale(lab.instance, lab.etl)[0]
    assert lab.report()["estimates"]["population"] == 250


def test_a_revert_to_earlier_content_is_what_the_report_covers(lab: Lab) -> None:
    """v1, then v2, then v1 again: the v1 partition exists and was processed, so nothing
    runs; the report still follows the file's current content."""
    first, second = records(100), records(30, first=500)
    lab.drop("a.bin", first)
    lab.run_pending()
    v1 = lab.key("a.bin")
    assert lab.report()["partitions"] == [v1]
    lab.drop("a.bin", second)
    lab.run_pending()
    v2 = lab.key("a.bin")
    assert lab.report()["partitions"] == [v2]
    lab.drop("a.bin", first)  # the revert
    assert lab.key("a.bin") == v1 and pending_partitions(lab.instance, [v1]) == []
    stale, _ = report_is_stale(lab.instance, lab.etl)
    assert stale
    published = lab.report()
    assert published["partitions"] == [v1] and published["superseded"] == [v2]
    assert published["estimates"]["population"] == 100
    assert not report_is_stale(lab.instance, lab.etl)[0]


def test_a_refused_layout_is_audited(lab: Lab) -> None:
    lab.drop("a.bin", records(5))
    key = lab.key("a.bin")
    etl = EtlResource(etl_dir=str(lab.root), layout="no_such_layout")
    with pytest.raises(LayoutError, match="unknown record layout 'no_such_layout'"):
        etl.record_layout()
    result = dg.materialize(
        [etl_ingest_file],
        instance=lab.instance,
        resources={"etl": etl},
        partition_key=key,
        raise_on_error=False,
    )
    assert not result.success
    layouts = [e for e in lab.audit() if e["name"] == "layout:no_such_layout"]
    assert len(layouts) == 1  # audited once for the same refusal, not on every use
    assert layouts[0]["result"] == "refused"
    assert "unknown record layout 'no_such_layout'" in layouts[0]["detail"]
    assert not lab.instance.get_materialized_partitions(RECORDS)  # retried once fixed
    assert pending_partitions(lab.instance, [key]) == [key]
