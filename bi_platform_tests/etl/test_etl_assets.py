"""The etl group end to end on the ``small`` sample inbox: registration (scan + audit),
one run per file like the sensor's, the checks, estimates, the report and its backup; the
sensor's partitions for re-dropped and changed files; and the Dagster CLI path of
``make run`` (register, then a partition range) against a real instance directory."""

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from bi_platform.etl.assets import (
    DEAD_LETTER,
    RECORDS,
    etl_ingest_file,
    etl_report,
    etl_sample_estimates,
    processed_files,
)
from bi_platform.etl.automation import (
    etl_inbox_sensor,
    etl_report_sensor,
    pending_partitions,
    register_inbox_partitions,
)
from bi_platform.etl.checks import etl_checks
from bi_platform.etl.definitions import defs
from bi_platform.etl.definitions import resources as etl_resources
from bi_platform.etl.inbox import split_partition_key
from bi_platform.etl.resources import EtlResource
from bi_platform.etl.sample import DEAD_LETTER as EXPECT_DEAD_LETTER
from bi_platform.etl.sample import (
    DUPLICATE,
    PROCESSED,
    REJECTED,
    REJECTED_FILE,
    read_manifest,
    write_etl_sources,
)
from bi_platform.etl.security import AuditLog
from bi_platform.lib.safe_csv import FORMULA_PREFIXES

MAX_FILE_MB = "2"
DAGSTER = str(Path(sys.executable).parent / "dagster")
IN_PROCESS = json.dumps({"execution": {"config": {"in_process": {}}}})  # faster in tests


@pytest.fixture(scope="module")
def etl_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("etl_assets_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BI_PLATFORM_HOME", str(home))
        patch.setenv("ETL_MAX_FILE_MB", MAX_FILE_MB)
        patch.setenv("ETL_WORKERS", "1")
        write_etl_sources(home, "small")
        yield home


def _materialize(assets: list, instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        instance=instance,
        resources={"etl": EtlResource()},
        raise_on_error=False,
        **kwargs,
    )


@dataclass
class Pipeline:
    home: Path
    instance: dg.DagsterInstance
    manifest: dict
    registration: tuple
    file_runs: dict[str, dg.ExecuteInProcessResult]
    report_runs: list[dg.ExecuteInProcessResult]

    @property
    def etl_dir(self) -> Path:
        return self.home / "etl"

    def expect(self, outcome: str) -> set[str]:
        return {n for n, f in self.manifest["files"].items() if f["expect"] == outcome}

    def key_of(self, name: str) -> str:
        return next(k for k in self.registration.current if split_partition_key(k)[0] == name)

    @property
    def parsed(self) -> set[str]:
        """Files whose records count (processed, some dead-lettered)."""
        return self.expect(PROCESSED) | self.expect(EXPECT_DEAD_LETTER)

    @property
    def accepted(self) -> set[str]:
        return self.parsed | self.expect(REJECTED_FILE) | self.expect(DUPLICATE)


@pytest.fixture(scope="module")
def pipeline(etl_home: Path) -> Pipeline:
    instance = dg.DagsterInstance.ephemeral()
    etl = EtlResource()
    registration = register_inbox_partitions(instance, etl.inbox_dir, etl.max_bytes)
    file_runs = {
        key: _materialize([etl_ingest_file, *etl_checks], instance, partition_key=key)
        for key in registration.current
    }
    report_runs = [_materialize([etl_sample_estimates, etl_report], instance) for _ in range(2)]
    return Pipeline(
        etl_home, instance, read_manifest(etl_home), registration, file_runs, report_runs
    )


def test_unsafe_files_are_rejected_and_audited_once(pipeline: Pipeline) -> None:
    rejected = dict(pipeline.registration.rejected)
    assert set(rejected) == pipeline.expect(REJECTED)
    assert "symbolic link" in rejected["escape.csv"]
    assert "hard link" in rejected["escape_hardlink.csv"]
    assert "exceeds the limit" in rejected["bad_oversize.bin"]
    assert "empty file" in rejected["bad_empty.bin"]
    assert "unsupported file type" in rejected["bad_format.txt"]
    etl = EtlResource()
    register_inbox_partitions(pipeline.instance, etl.inbox_dir, etl.max_bytes)  # again
    entries = AuditLog(pipeline.etl_dir / "audit.jsonl").entries()
    refused = [e["name"] for e in entries if e["result"] == "rejected" and e["sha256"] is None]
    assert sorted(refused) == sorted(rejected)  # once each, not on every scan
    by_result = {
        result: {e["name"] for e in entries if e["result"] == result and e["sha256"]}
        for result in ("processed", "duplicate", "rejected")
    }
    assert by_result == {
        "processed": pipeline.parsed,
        "duplicate": pipeline.expect(DUPLICATE),
        "rejected": pipeline.expect(REJECTED_FILE),  # read, then rejected as a whole
    }
    assert all(len(e["sha256"] or "") == 64 for e in entries if e["result"] == "processed")
    secret = (pipeline.etl_dir / "outside_inbox" / "escape_target.csv").read_bytes()
    for output in (*pipeline.etl_dir.glob("records/*"), *pipeline.etl_dir.glob("dead_letter/*")):
        assert b"Segredo" not in output.read_bytes(), output  # the outside file never read
        assert secret.hex().encode() not in output.read_bytes(), output


def test_every_accepted_file_runs_and_reconciles(pipeline: Pipeline) -> None:
    """Every accepted file's run succeeds, rejected and duplicate files included: one bad
    file never fails another; ``file_accepted`` warns exactly for the rejected ones."""
    assert {split_partition_key(k)[0] for k in pipeline.file_runs} == pipeline.accepted
    for key, result in pipeline.file_runs.items():
        name = split_partition_key(key)[0]
        assert result.success, key
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert checks["records_reconcile"].passed, key
        assert checks["file_accepted"].passed == (name not in pipeline.expect(REJECTED_FILE))
        meta = checks["records_reconcile"].metadata
        counts = meta["per_file"].value[key]
        summary = json.loads((pipeline.etl_dir / "records" / f"{key}.json").read_text())
        assert counts == [summary["records_in"], summary["records_out"], summary["dead_letter"]]
        if summary["parsed"]:
            assert counts[0] == counts[1] + counts[2] > 0, key
        else:  # a duplicate or an unreadable file loads nothing
            assert counts == [0, 0, 0], key
        rate_ok = checks["dead_letter_rate"].passed
        assert rate_ok == (summary["dead_letter"] <= 0.05 * summary["records_in"]), key
    assert pending_partitions(pipeline.instance, pipeline.registration.current) == []


def test_good_files_load_fully_bad_ones_dead_letter_with_reasons(pipeline: Pipeline) -> None:
    reasons = {}
    for name in pipeline.parsed:
        key = pipeline.key_of(name)
        summary = json.loads((pipeline.etl_dir / "records" / f"{key}.json").read_text())
        reasons[name] = summary["dead_letter_reasons"]
        if name in pipeline.expect(PROCESSED):
            assert summary["dead_letter"] == 0, name
            assert summary["records_out"] == pipeline.manifest["files"][name]["records"]
        else:
            assert summary["dead_letter"] > 0, name
    assert set(reasons["bad_truncated.bin"]) == {"truncated_record"}
    assert reasons["bad_truncated.bin"]["truncated_record"] == 1
    assert set(reasons["bad_utf8.bin"]) == {"invalid_utf8"}
    assert set(reasons["bad_timestamps.bin"]) >= {"timestamp_out_of_range"}
    assert set(reasons["bad_schema.parquet"]) == {"missing_field"}
    assert set(reasons["bad_columns.csv"]) >= {
        "malformed_row",
        "bad_number",
        "bad_timestamp",
        "missing_value",
        "out_of_range",
        "timestamp_out_of_range",
    }
    assert set(reasons["bad_newlines.csv"]) == {
        "bare_cr",
        "unclosed_quote",
        "malformed_row",
        "invalid_utf8",
    }


def test_misaligned_and_corrupt_files_are_rejected_with_their_reason(pipeline: Pipeline) -> None:
    """The wrong-size file: none of its records accepted (not even those that decode to
    plausible values by chance), all dead-lettered; the Parquet file with corrupt pages:
    rejected as unreadable instead of failing its run."""
    summaries = {
        name: json.loads(
            (pipeline.etl_dir / "records" / f"{pipeline.key_of(name)}.json").read_text()
        )
        for name in pipeline.expect(REJECTED_FILE)
    }
    misaligned = summaries["bad_record_size.dat"]
    assert misaligned["outcome"] == "rejected" and misaligned["reason"].startswith("misaligned")
    assert misaligned["records_out"] == 0
    assert misaligned["dead_letter"] == misaligned["records_in"] == -(-30_000 // 56)
    key = pipeline.key_of("bad_record_size.dat")
    assert pq.read_metadata(pipeline.etl_dir / "records" / f"{key}.parquet").num_rows == 0
    pages = summaries["bad_pages.parquet"]
    assert pages["outcome"] == "rejected" and pages["parsed"] is False
    assert "corrupt Parquet data" in pages["reason"]
    run = pipeline.file_runs[pipeline.key_of("bad_pages.parquet")]
    (event,) = [e for e in run.get_asset_materialization_events() if e.asset_key == RECORDS]
    meta = event.materialization.metadata
    assert meta["outcome"].value == "rejected" and "corrupt" in meta["reason"].value


def test_outputs_dead_letter_csv_and_metadata(pipeline: Pipeline) -> None:
    key = pipeline.key_of("bad_columns.csv")
    records = pq.read_table(pipeline.etl_dir / "records" / f"{key}.parquet")
    products = set(records.column("product").to_pylist())
    assert '=HYPERLINK("x";"Clique")' in products  # data kept as is in Parquet
    assert 'Biscoito "Maria", 200g' in products
    dead = pq.read_table(pipeline.etl_dir / "dead_letter" / f"{key}.parquet")
    with (pipeline.etl_dir / "dead_letter" / f"{key}.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == dead.num_rows + 1
    assert not any(cell.startswith(FORMULA_PREFIXES) for row in rows for cell in row)

    result = pipeline.file_runs[key]
    [records_mat] = result.asset_materializations_for_node("etl_ingest_file")[:1]
    by_key = {
        m.asset_key: m.metadata for m in result.asset_materializations_for_node("etl_ingest_file")
    }
    assert records_mat.partition == key
    meta = by_key[RECORDS]
    assert meta["dagster/row_count"].value == meta["records_out"].value == records.num_rows
    assert meta["records_in"].value == records.num_rows + dead.num_rows
    assert meta["sha256"].value.startswith(split_partition_key(key)[1])
    assert meta["path"].value.endswith(f"{key}.parquet")
    columns = [c.name for c in meta["dagster/column_schema"].value.columns]
    assert columns == ["id", "timestamp", "quantity", "value", "product"]
    assert by_key[DEAD_LETTER]["dagster/row_count"].value == dead.num_rows
    assert by_key[DEAD_LETTER]["reasons"].value["malformed_row"] > 0


def test_estimates_and_report_with_backup(pipeline: Pipeline) -> None:
    first, second = pipeline.report_runs
    assert first.success and second.success
    files, superseded = processed_files(pipeline.instance, EtlResource())
    assert {f.name for f in files} == pipeline.parsed and superseded == []
    estimates = first.asset_materializations_for_node("etl__etl_sample_estimates")[0].metadata
    assert estimates["population"].value == sum(f.records_out for f in files)
    for column in ("quantity", "value"):
        values = estimates["estimates"].value[column]
        assert values["exact"] > 0 and values["relative_error"] < 0.1, (column, values)
    report = pipeline.etl_dir / "report" / "report.html"
    meta = second.asset_materializations_for_node("etl__etl_report")[0].metadata
    assert meta["path"].value == str(report)
    html = report.read_text()
    assert "records_0001.bin" in html and "http" not in html
    data = json.loads((pipeline.etl_dir / "report" / "report.json").read_text())
    assert len(data["files"]) == len(files)
    assert data["dead_letter_reasons"]["invalid_utf8"] > 0
    rejected = {r["name"]: r for r in data["rejected"]}
    assert set(rejected) == pipeline.expect(REJECTED) | pipeline.expect(REJECTED_FILE)
    assert rejected["bad_record_size.dat"]["stage"] == "parse"
    assert rejected["escape_hardlink.csv"]["stage"] == "inbox"
    assert all(r["reason"] for r in rejected.values())
    (duplicate,) = data["duplicates"]
    assert duplicate["name"] == "export_0001_copy.csv"
    assert duplicate["duplicate_of"] == pipeline.key_of("export_0001.csv")
    for name in ("bad_pages.parquet", "export_0001_copy.csv", "Rejected files", "Duplicates"):
        assert name in html
    estimates = estimates["estimates"].value
    assert estimates["value"]["exact"] == int(estimates["value"]["exact"])
    header = (pipeline.etl_dir / "report" / "estimates.csv").read_text().splitlines()[0]
    assert header.startswith("column,estimate,standard_error,ci_low,ci_high")
    backups = sorted((pipeline.etl_dir / "backup").iterdir())
    assert len(backups) == 1  # the first report, moved aside by the second
    assert (backups[0] / "report.html").is_file()


def test_the_report_refreshes_when_the_files_that_count_change(pipeline: Pipeline) -> None:
    """The report sensor compares the files that count with those the published
    estimates cover: nothing to do after the pipeline, one refresh after a new file's
    successful run, nothing again once the refresh published it."""
    etl = EtlResource()

    def tick() -> dg.SensorResult:
        context = dg.build_sensor_context(instance=pipeline.instance, resources={"etl": etl})
        return etl_report_sensor(context)

    assert tick().run_requests == []
    shutil.copy(etl.inbox_dir / "records_0002.bin", etl.inbox_dir / "late_0002.bin")
    registration = register_inbox_partitions(pipeline.instance, etl.inbox_dir, etl.max_bytes)
    (late,) = [k for k in registration.added if k.startswith("late_0002.bin@")]
    job = defs.resolve_job_def("etl_file_job")
    run = job.execute_in_process(
        partition_key=late, instance=pipeline.instance, resources=etl_resources()
    )
    assert run.success
    assert {e.check_name for e in run.get_asset_check_evaluations()} == {
        "records_reconcile",
        "dead_letter_rate",
        "file_accepted",
    }
    (request,) = tick().run_requests
    assert request.run_key.startswith("files:")
    assert tick().run_requests[0].run_key == request.run_key  # same state, same key
    refresh = defs.resolve_job_def("etl_report_job").execute_in_process(
        instance=pipeline.instance, resources=etl_resources()
    )
    assert refresh.success
    assert tick().run_requests == []


def test_a_changed_or_vanished_file_fails_with_the_reason(tmp_path: Path, etl_home: Path) -> None:
    inbox = tmp_path / "etl" / "inbox"
    inbox.mkdir(parents=True)
    shutil.copy(etl_home / "etl" / "inbox" / "records_0001.bin", inbox / "a.bin")
    shutil.copy(etl_home / "etl" / "inbox" / "export_0001.csv", inbox / "b.csv")
    instance = dg.DagsterInstance.ephemeral()
    etl = EtlResource(etl_dir=str(tmp_path / "etl"))
    registration = register_inbox_partitions(instance, inbox, etl.max_bytes)
    assert pending_partitions(instance, registration.current) == registration.current
    a_key, b_key = registration.current
    (inbox / "a.bin").write_bytes((inbox / "a.bin").read_bytes()[:560])
    (inbox / "b.csv").unlink()
    for key, reason in ((a_key, "changed since partition"), (b_key, "vanished")):
        result = dg.materialize(
            [etl_ingest_file],
            instance=instance,
            resources={"etl": etl},
            partition_key=key,
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert reason in str(failure.event_specific_data.error.message), key
    entries = AuditLog(tmp_path / "etl" / "audit.jsonl").entries()
    assert [e["result"] for e in entries] == ["failed", "failed"]
    # registering again drops the two partitions that can never run, adds the new a.bin
    again = register_inbox_partitions(instance, inbox, etl.max_bytes)
    assert again.all_keys == again.current == again.added != [a_key]


def test_sensor_adds_new_files_once(tmp_path: Path, etl_home: Path) -> None:
    inbox = tmp_path / "etl" / "inbox"
    inbox.mkdir(parents=True)
    source = etl_home / "etl" / "inbox"
    for name in ("records_0001.bin", "export_0001.parquet", "bad_empty.bin"):
        shutil.copy(source / name, inbox / name)
    (inbox / "escape.bin").symlink_to(source / "records_0002.bin")
    instance = dg.DagsterInstance.ephemeral()
    resources = {"etl": EtlResource(etl_dir=str(tmp_path / "etl"))}

    def tick(cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        result = etl_inbox_sensor(context)
        for request in result.dynamic_partitions_requests:  # what the daemon applies
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        return result

    first = tick(None)
    keys = [r.partition_key for r in first.run_requests]
    assert [split_partition_key(k)[0] for k in keys] == ["export_0001.parquet", "records_0001.bin"]
    assert [r.run_key for r in first.run_requests] == keys
    assert list(instance.get_dynamic_partitions("etl_files")) == keys

    second = tick(first.cursor)
    assert second.run_requests == [] and second.dynamic_partitions_requests == []

    content = (inbox / "records_0001.bin").read_bytes()
    (inbox / "records_0001.bin").unlink()
    (inbox / "records_0001.bin").write_bytes(content)  # identical re-drop
    third = tick(second.cursor)
    assert third.run_requests == []

    (inbox / "records_0001.bin").write_bytes(content[: 56 * 100])  # changed content
    fourth = tick(third.cursor)
    [changed] = [r.partition_key for r in fourth.run_requests]
    assert split_partition_key(changed)[0] == "records_0001.bin" and changed not in keys
    assert len(instance.get_dynamic_partitions("etl_files")) == 3

    audit = AuditLog(tmp_path / "etl" / "audit.jsonl").entries()
    assert sorted(e["name"] for e in audit) == ["bad_empty.bin", "escape.bin"]  # once each


def test_the_records_can_be_materialized_alone(tmp_path: Path, etl_home: Path) -> None:
    """`etl/etl_records` alone is a valid selection: the parse writes both files, the run
    reports only the records (and their reconcile check)."""
    inbox = tmp_path / "etl" / "inbox"
    inbox.mkdir(parents=True)
    shutil.copy(etl_home / "etl" / "inbox" / "export_0001.csv", inbox / "export_0001.csv")
    instance = dg.DagsterInstance.ephemeral()
    etl = EtlResource(etl_dir=str(tmp_path / "etl"))
    (key,) = register_inbox_partitions(instance, inbox, etl.max_bytes).current
    result = dg.materialize(
        [etl_ingest_file, *etl_checks],
        instance=instance,
        resources={"etl": etl},
        partition_key=key,
        selection=dg.AssetSelection.assets(RECORDS),
    )
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {RECORDS}
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["dagster/row_count"].value == meta["records_out"].value > 0
    assert pending_partitions(instance, [key]) == []


def test_cli_materializes_one_file_with_a_selection_users_type(
    etl_home: Path, tmp_path: Path
) -> None:
    """`dagster asset materialize --select etl/etl_records --partition KEY`, then the
    report job's assets. Run outside the checkout, whose .env would point Dagster at the
    services' instance."""
    home = tmp_path / "home"
    inbox = home / "etl" / "inbox"
    inbox.mkdir(parents=True)
    for name in ("records_0001.bin", "bad_utf8.bin", "bad_empty.bin"):
        shutil.copy(etl_home / "etl" / "inbox" / name, inbox / name)
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "BI_PLATFORM_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "ETL_MAX_FILE_MB": MAX_FILE_MB,
        "ETL_WORKERS": "1",
    }
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        registration = register_inbox_partitions(instance, inbox, 2 * 2**20)
        pending = pending_partitions(instance, registration.current)
    assert len(pending) == 2

    def materialize(selection: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [DAGSTER, "asset", "materialize", "-m", "bi_platform.etl.definitions",
             "--select", selection, "--config-json", IN_PROCESS, *extra],
            capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
        )  # fmt: skip

    for key in pending:
        files = materialize("etl/etl_records", "--partition", key)
        assert files.returncode == 0, files.stderr[-3000:]
    report = materialize("etl/etl_sample_estimates,etl/etl_report")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (home / "etl" / "report" / "report.html").is_file()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.get_materialized_partitions(RECORDS) == set(registration.current)
        assert pending_partitions(instance, registration.current) == []
        checks = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(RECORDS, "records_reconcile"), limit=5
        )
        assert [c.status.value for c in checks] == ["SUCCEEDED", "SUCCEEDED"]
