"""Atomic writes: the target is old or new, never partial; fsync rules; permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bi_platform.lib import files
from bi_platform.lib.files import atomic_path, write_bytes_atomic, write_text_atomic


def test_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    assert write_text_atomic(target, "new") == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_block_leaves_the_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert tmp.name.startswith(".a.bin.") and tmp.name.endswith(".tmp")
        raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


@pytest.mark.parametrize(("durable", "expected"), [(True, 2), (False, 0)])
def test_durable_fsyncs_the_file_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, expected: int
) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    write_bytes_atomic(tmp_path / "x", b"data", durable=durable)
    assert len(calls) == expected


def test_mode_is_set_before_any_data_is_written(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    with atomic_path(target, mode=0o600) as tmp:
        assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
        tmp.write_text("{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_text_atomic(target, "{}", mode=0o640)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
