"""The inbox scan: which files are accepted, why the others are rejected, and the
partition keys (Dagster-safe, stable for identical content, new for changed content)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS

from bi_platform.etl.inbox import (
    check_name,
    hash_cache,
    partition_key,
    scan_inbox,
    split_partition_key,
)
from bi_platform.etl.security import UnsafeInputError

SHA = "0123456789abcdef" * 4
MB = 2**20


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.bin").write_bytes(b"\x01" * 56)
    (inbox / "b.csv").write_text("id,timestamp,quantity,value,product\n")
    pq.write_table(pa.table({"id": [1, 2]}), inbox / "c.parquet")
    return inbox


def test_partition_key_round_trip_and_is_dagster_safe() -> None:
    key = partition_key("records_0001.bin", SHA)
    assert key == "records_0001.bin@0123456789abcdef"
    assert split_partition_key(key) == ("records_0001.bin", "0123456789abcdef")
    assert not any(bad in key for bad in INVALID_PARTITION_SUBSTRINGS)


@pytest.mark.parametrize(
    "name",
    ["../x.bin", "/etc/passwd", "a b.bin", "x@y.bin", "a...b.bin", "a..bin", ".hidden.bin",
     "-rf.bin", "naïve.bin", "a\nb.bin", "x" * 201],
)  # fmt: skip
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeInputError, match="unsupported file name"):
        check_name(name)
    with pytest.raises(UnsafeInputError):
        partition_key(name, SHA)


@pytest.mark.parametrize("key", ["a.bin", "a.bin@xyz", "a.bin@0123", "../a.bin@0123456789abcdef"])
def test_split_refuses_foreign_keys(key: str) -> None:
    with pytest.raises(ValueError, match="not an ETL partition key"):
        split_partition_key(key)


def test_partition_key_needs_a_hex_digest() -> None:
    with pytest.raises(ValueError, match="sha256"):
        partition_key("a.bin", "not-a-digest")


def test_scan_accepts_good_files_sorted_with_hashes(inbox: Path) -> None:
    accepted, rejected = scan_inbox(inbox, MB)
    assert rejected == []
    assert [f.name for f in accepted] == ["a.bin", "b.csv", "c.parquet"]
    assert [f.format for f in accepted] == ["binary", "csv", "parquet"]
    first = accepted[0]
    assert first.size == 56
    assert first.sha256 == sha256_file(inbox / "a.bin")
    assert first.partition_key == f"a.bin@{first.sha256[:16]}"


def test_scan_rejects_with_reasons(inbox: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("id\n1\n")
    (inbox / "escape.csv").symlink_to(outside)
    (inbox / "inside_link.bin").symlink_to("a.bin")  # a link, even inside: refused
    (inbox / "dangling.bin").symlink_to(tmp_path / "missing.bin")
    os.link(outside, inbox / "hard.csv")  # a plain name for an outside file
    big = inbox / "big.bin"
    with big.open("wb") as f:
        f.truncate(MB + 1)  # sparse
    (inbox / "empty.bin").write_bytes(b"")
    (inbox / "notes.txt").write_text("hello")
    (inbox / "fake.parquet").write_bytes(b"PAR1 not really a Parquet file")
    (inbox / "sub.csv").mkdir()
    (inbox / "bad name.csv").write_text("id\n")
    # ignored: hidden files and uploads in progress
    (inbox / ".seed_manifest.json").write_text("{}")
    (inbox / "upload.bin.tmp").write_bytes(b"x")
    (inbox / "upload.bin.part").write_bytes(b"x")

    accepted, rejected = scan_inbox(inbox, MB)
    reasons = dict(rejected)
    assert [f.name for f in accepted] == ["a.bin", "b.csv", "c.parquet"]
    assert sorted(reasons) == [
        "bad name.csv", "big.bin", "dangling.bin", "empty.bin", "escape.csv", "fake.parquet",
        "hard.csv", "inside_link.bin", "notes.txt", "sub.csv",
    ]  # fmt: skip
    assert "symbolic link" in reasons["escape.csv"]
    assert "symbolic link" in reasons["inside_link.bin"]
    assert "hard link" in reasons["hard.csv"]
    assert "exceeds the limit" in reasons["big.bin"]
    assert "empty file" in reasons["empty.bin"]
    assert "unsupported file type '.txt'" in reasons["notes.txt"]
    assert "not a readable Parquet file" in reasons["fake.parquet"]
    assert "directory" in reasons["sub.csv"]
    assert "unsupported file name" in reasons["bad name.csv"]
    assert "symbolic link" in reasons["dangling.bin"]
    assert big.stat().st_blocks * 512 < MB  # never read, still sparse


def test_missing_inbox_is_empty(tmp_path: Path) -> None:
    assert scan_inbox(tmp_path / "nowhere", MB) == ([], [])


def test_identical_redrop_same_key_changed_file_new_key(inbox: Path) -> None:
    before = {f.name: f.partition_key for f in scan_inbox(inbox, MB)[0]}
    content = (inbox / "a.bin").read_bytes()
    (inbox / "a.bin").unlink()
    (inbox / "a.bin").write_bytes(content)  # the same file dropped again
    again = {f.name: f.partition_key for f in scan_inbox(inbox, MB)[0]}
    assert again == before
    (inbox / "a.bin").write_bytes(content + b"\x02" * 56)
    changed = {f.name: f.partition_key for f in scan_inbox(inbox, MB)[0]}
    assert changed["a.bin"] != before["a.bin"]
    assert changed["b.csv"] == before["b.csv"]
    # a copy under another name is another partition (keys are name + content)
    shutil.copy(inbox / "b.csv", inbox / "b2.csv")
    keys = {f.name: f.partition_key for f in scan_inbox(inbox, MB)[0]}
    assert keys["b2.csv"].split("@")[1] == keys["b.csv"].split("@")[1]
    assert keys["b2.csv"] != keys["b.csv"]


def test_known_hashes_skip_rehashing_unchanged_files(inbox: Path) -> None:
    accepted, _ = scan_inbox(inbox, MB)
    known = hash_cache(accepted)
    assert set(known["a.bin"]) == {"dev", "ino", "size", "mtime_ns", "ctime_ns", "sha256"}
    known["a.bin"]["sha256"] = "f" * 64  # what a cached digest would be trusted for
    cached = {f.name: f.sha256 for f in scan_inbox(inbox, MB, known=known)[0]}
    assert cached["a.bin"] == "f" * 64
    # same size and the old mtime restored: the status-change time still moved
    stat = (inbox / "a.bin").stat()
    (inbox / "a.bin").write_bytes(b"\x09" * 56)
    os.utime(inbox / "a.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rehashed = {f.name: f.sha256 for f in scan_inbox(inbox, MB, known=known)[0]}
    assert rehashed["a.bin"] == sha256_file(inbox / "a.bin")
    # a cache of the old shape (size and mtime only) is never trusted
    old = {"a.bin": {"size": 56, "mtime_ns": stat.st_mtime_ns, "sha256": "f" * 64}}
    assert scan_inbox(inbox, MB, known=old)[0][0].sha256 == sha256_file(inbox / "a.bin")


def test_the_shared_hash_cache_file(inbox: Path, tmp_path: Path) -> None:
    cache = tmp_path / "state" / "hashes.json"
    first, _ = scan_inbox(inbox, MB, cache_path=cache)
    saved = json.loads(cache.read_text())
    assert {name: entry["sha256"] for name, entry in saved.items()} == {
        f.name: f.sha256 for f in first
    }
    saved["b.csv"]["sha256"] = "e" * 64
    cache.write_text(json.dumps(saved))
    again = {f.name: f.sha256 for f in scan_inbox(inbox, MB, cache_path=cache)[0]}
    assert again["b.csv"] == "e" * 64  # same identity: the cached hash is used
    cache.write_text("not json")
    assert scan_inbox(inbox, MB, cache_path=cache)[0] == first  # unreadable: ignored
