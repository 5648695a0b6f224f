"""Inbox confinement (links never followed, checks on the open descriptor), size limit,
hashing and the audit log."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from bi_platform.etl.security import (
    AUDIT_DETAIL_MAX,
    AuditLog,
    FileIdentity,
    InputChangedError,
    UnsafeInputError,
    open_inbox_file,
    resolve_inbox_file,
    sha256_fd,
)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    box = tmp_path / "inbox"
    box.mkdir()
    (box / "good.bin").write_bytes(b"\x01" * 56)
    (tmp_path / "secret.txt").write_text("outside the inbox")
    return box


def test_a_regular_file_in_the_inbox_is_accepted(inbox: Path) -> None:
    assert resolve_inbox_file(inbox, "good.bin") == inbox / "good.bin"
    (inbox / "day1").mkdir()
    (inbox / "day1" / "part.csv").write_text("id\n")
    assert resolve_inbox_file(inbox, "day1/part.csv") == inbox / "day1" / "part.csv"
    with open_inbox_file(inbox, "good.bin", max_bytes=56) as opened:
        assert opened.size == 56 and opened.name == "good.bin"
        assert opened.identity == FileIdentity.of((inbox / "good.bin").stat())
        assert opened.sha256() == hashlib.sha256(b"\x01" * 56).hexdigest()
    with pytest.raises(OSError):
        os.fstat(opened.fd)  # closed on exit


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../secret.txt", "'..' is refused"),
        ("day1/../../secret.txt", "'..' is refused"),
        ("..\\secret.txt", "'..' is refused"),
        ("/etc/passwd", "absolute names are refused"),
        ("C:\\Windows\\win.ini", "absolute names are refused"),
        ("", "empty file name"),
        ("bad\x00name.bin", "NUL byte"),
        ("missing.bin", "no such file"),
    ],
)
def test_unsafe_names_are_refused(inbox: Path, name: str, message: str) -> None:
    with pytest.raises(UnsafeInputError, match=message):
        resolve_inbox_file(inbox, name)


def test_absolute_path_to_a_file_inside_the_inbox_is_still_refused(inbox: Path) -> None:
    with pytest.raises(UnsafeInputError, match="absolute names are refused"):
        resolve_inbox_file(inbox, str(inbox / "good.bin"))


def test_a_symlink_escaping_the_inbox_is_refused(inbox: Path) -> None:
    (inbox / "escape.csv").symlink_to(inbox.parent / "secret.txt")
    with pytest.raises(UnsafeInputError, match=r"'escape\.csv': a symbolic link is refused"):
        resolve_inbox_file(inbox, "escape.csv")
    (inbox / "linked_dir").symlink_to(inbox.parent, target_is_directory=True)
    with pytest.raises(UnsafeInputError, match="symbolic link"):  # a link above the file
        resolve_inbox_file(inbox, "linked_dir/secret.txt")


def test_no_symlink_is_followed_even_inside_the_inbox(inbox: Path) -> None:
    (inbox / "latest.bin").symlink_to("good.bin")
    with pytest.raises(UnsafeInputError, match="symbolic link"):
        resolve_inbox_file(inbox, "latest.bin")


def test_a_hard_link_to_a_file_outside_the_inbox_is_refused(inbox: Path) -> None:
    """The link's name is a plain file in the inbox; its descriptor shows 2 links."""
    os.link(inbox.parent / "secret.txt", inbox / "report.csv")
    with pytest.raises(UnsafeInputError, match=r"'report\.csv': a hard link \(2 names"):
        resolve_inbox_file(inbox, "report.csv")
    os.link(inbox / "good.bin", inbox / "same.bin")  # two names inside: refused too
    with pytest.raises(UnsafeInputError, match="hard link"):
        resolve_inbox_file(inbox, "same.bin")


def test_a_swap_after_the_check_changes_nothing_read(inbox: Path) -> None:
    """Once open, the checked file is what is read: renaming another file (or a link to
    an outside file) over the name does not change the bytes read through the
    descriptor; the swap (the inode lost its name) and writes to the file itself are
    detected, so the read is done again."""
    content = (inbox / "good.bin").read_bytes()
    with open_inbox_file(inbox, "good.bin") as opened:
        opened.check_unchanged()
        (inbox / "evil.bin").write_bytes(b"outside bytes" * 10)
        (inbox / "evil.bin").replace(inbox / "good.bin")
        (inbox / "good.bin").unlink()
        (inbox / "good.bin").symlink_to(inbox.parent / "secret.txt")
        assert os.pread(opened.fd, 100, 0) == content
        assert opened.sha256() == hashlib.sha256(content).hexdigest()
        with pytest.raises(InputChangedError, match="changed while it was being read"):
            opened.check_unchanged()
    (inbox / "good.bin").unlink()
    (inbox / "good.bin").write_bytes(content)
    with open_inbox_file(inbox, "good.bin") as opened:
        with (inbox / "good.bin").open("ab") as writer:
            writer.write(b"\x02" * 56)
        with pytest.raises(InputChangedError, match=r"size 56 -> 112"):
            opened.check_unchanged()


def test_dangling_links_directories_and_fifos_are_refused(inbox: Path) -> None:
    (inbox / "dangling.bin").symlink_to(inbox / "gone.bin")
    with pytest.raises(UnsafeInputError, match="symbolic link"):
        resolve_inbox_file(inbox, "dangling.bin")
    (inbox / "folder.bin").mkdir()
    with pytest.raises(UnsafeInputError, match="a directory"):
        resolve_inbox_file(inbox, "folder.bin")
    os.mkfifo(inbox / "pipe.bin")
    with pytest.raises(UnsafeInputError, match="not a regular file"):
        resolve_inbox_file(inbox, "pipe.bin")


def test_missing_inbox_is_reported(tmp_path: Path) -> None:
    with pytest.raises(UnsafeInputError, match=r"inbox .* is not accessible"):
        resolve_inbox_file(tmp_path / "nowhere", "a.bin")


def test_size_limit(tmp_path: Path) -> None:
    inbox = tmp_path / "box"
    inbox.mkdir()
    (inbox / "big.bin").write_bytes(b"\0" * 1000)
    with open_inbox_file(inbox, "big.bin", 1000) as opened:
        assert opened.size == 1000
    with pytest.raises(UnsafeInputError, match=r"'big.bin': 1,000 bytes exceeds the limit of 999"):
        resolve_inbox_file(inbox, "big.bin", 999)
    sparse = inbox / "sparse.bin"
    with sparse.open("wb") as f:
        f.truncate(5 * 2**30)  # no disk used; the limit looks at the descriptor's size only
    with pytest.raises(UnsafeInputError, match="exceeds the limit"):
        resolve_inbox_file(inbox, "sparse.bin", 2**30)


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    payload = os.urandom(9 * 2**20 + 17)
    path.write_bytes(payload)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)  # positional reads: the offset does not matter
        assert sha256_fd(fd) == hashlib.sha256(payload).hexdigest()
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
    finally:
        os.close(fd)


def test_size_limit_is_checked_on_the_descriptor(inbox: Path) -> None:
    with pytest.raises(UnsafeInputError, match="exceeds the limit of 55 bytes"):
        resolve_inbox_file(inbox, "good.bin", max_bytes=55)


def test_audit_log_appends_json_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "etl" / "audit.jsonl")
    assert log.entries() == []
    log.record(name="a.bin", size=56, sha256="ab" * 32, result="processed", detail="1 in, 1 out")
    log.record(name="../x", size=None, sha256=None, result="rejected", detail="x" * 5000)
    lines = (tmp_path / "etl" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2
    parsed = [json.loads(line) for line in lines]
    assert parsed == log.entries()
    first, second = parsed
    assert set(first) == {"ts", "name", "size", "sha256", "result", "detail"}
    assert first["name"] == "a.bin" and first["size"] == 56 and first["result"] == "processed"
    assert first["ts"].endswith("+00:00")
    assert second["sha256"] is None and len(second["detail"]) == AUDIT_DETAIL_MAX
    AuditLog(tmp_path / "etl" / "audit.jsonl").record(
        name="b.csv", size=1, sha256="cd" * 32, result="processed"
    )
    assert [e["name"] for e in log.entries()] == ["a.bin", "../x", "b.csv"]


def test_audit_log_skips_unreadable_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"name": "ok"}\nnot json\n\n')
    assert AuditLog(path).entries() == [{"name": "ok"}]
