"""The local backend of the news dataset repo (the default).

Content-addressed objects and one JSON manifest per revision live under ``root/.repo/``;
``HEAD`` is swapped atomically (:func:`bi_platform.lib.files.write_bytes_atomic`); ``root/``
is the working copy (what ``datasets.load_dataset(root)`` reads) and shows the head. See
:class:`LocalDatasetRepo` for the layout and the crash guarantees.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from bi_platform.lib.files import fsync_path, replace_durably, write_bytes_atomic
from bi_platform.news.dataset_repo import (
    CARD_PATH,
    DATA_DIR,
    DEFAULT_BRANCH,
    REVISION_RE,
    SHARD_RE,
    CommitInfo,
    ConflictError,
    DatasetRepo,
    Published,
    PublishedDifference,
    RepoFileNotFoundError,
    RevisionNotFoundError,
    ShardNotFoundError,
    card_data_files,
    crash_point,
    dataset_card,
    match_data_files,
    months_of_paths,
    normalise_commit_args,
    shard_path,
    stage_shards,
)

logger = logging.getLogger(__name__)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- local backend --------------------------------------------------------------------------
class LocalDatasetRepo(DatasetRepo):
    """A dataset repo in a local directory; the default backend.

    On disk (``root`` is what users look at; ``.repo/`` is the store)::

        root/README.md, root/data/YYYY-MM.parquet   working copy of the head revision
        root/.repo/objects/ab/<sha256>.parquet      immutable, read-only file contents
        root/.repo/commits/<revision>.json          one manifest per revision: parent,
                                                    message, time, added/deleted months,
                                                    {path: object} of every file
        root/.repo/HEAD                             the head revision (swapped atomically)
        root/.repo/WORKTREE                         revision the working copy shows
        root/.repo/lock                             file lock held by commits and gc

    A revision is the sha1 of its manifest. A commit writes objects, then the manifest,
    then replaces ``HEAD`` with ``os.replace`` (the commit point), then updates the working
    copy file by file (each file replaced atomically: a hard link to its object, a copy
    where links fail), then writes ``WORKTREE``. Readers of the store never take the lock:
    they read ``HEAD`` once and then only immutable files.

    HEAD and the working copy cannot move in one atomic step, so the protocol is: HEAD
    first, working copy after, and every writer heals first. A crash before the swap
    leaves the head and the working copy unchanged (orphan objects go with :meth:`gc`). A
    crash after it leaves the working copy (what ``datasets.load_dataset(root)`` reads)
    behind ``HEAD`` until the next :meth:`sync_working_copy`, which every commit runs
    under the lock before anything else (and :func:`~bi_platform.news.hf_sync.sync_to_hf`
    before it plans). Meanwhile :meth:`published_differences` reports the stale files
    (the ``working_copy_matches_head`` gate fails), comparing contents, not the
    ``WORKTREE`` marker.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().absolute()
        self._store = self.root / ".repo"
        self._manifests: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"LocalDatasetRepo({str(self.root)!r})"

    # -- reading ----------------------------------------------------------------------------
    def head(self) -> str | None:
        try:
            revision = (self._store / "HEAD").read_text().strip()
        except FileNotFoundError:
            return None
        return revision or None

    def _manifest(self, revision: str) -> dict[str, Any]:
        if revision in self._manifests:
            return self._manifests[revision]
        if not isinstance(revision, str) or not REVISION_RE.fullmatch(revision):
            raise RevisionNotFoundError(f"not a revision of {self.root}: {revision!r}")
        try:
            manifest = json.loads((self._store / "commits" / f"{revision}.json").read_text())
        except FileNotFoundError:
            raise RevisionNotFoundError(f"no revision {revision} in {self.root}") from None
        self._manifests[revision] = manifest
        return manifest

    def _files(self, revision: str | None) -> dict[str, dict[str, Any]]:
        if revision is None or revision == DEFAULT_BRANCH:
            revision = self.head()
        return {} if revision is None else self._manifest(revision)["files"]

    def _object(self, entry: Mapping[str, Any], revision: str | None) -> Path:
        path = self._store / "objects" / entry["object"]
        if not path.exists():
            raise RevisionNotFoundError(f"revision {revision} of {self.root} was pruned")
        return path

    def list_shards(self, revision: str | None = None) -> list[str]:
        return months_of_paths(self._files(revision))

    def download_shard(self, month: str, revision: str | None = None) -> Path:
        entry = self._files(revision).get(shard_path(month))
        if entry is None:
            raise ShardNotFoundError(f"no shard {month} at {revision or 'head'} in {self.root}")
        return self._object(entry, revision)

    def resolve_revision(self, revision: str | None = None) -> str:
        if revision is None or revision in (DEFAULT_BRANCH, "HEAD"):
            head = self.head()
            if head is None:
                raise RevisionNotFoundError(f"{self.root} has no revision yet (empty repo)")
            return head
        revision = revision.strip().lower()
        if REVISION_RE.fullmatch(revision):
            self._manifest(revision)
            return revision
        if re.fullmatch(r"[0-9a-f]{4,39}", revision):
            found = sorted(p.stem for p in (self._store / "commits").glob(f"{revision}*.json"))
            if len(found) == 1:
                return found[0]
            if found:
                raise RevisionNotFoundError(
                    f"{revision!r} is ambiguous in {self.root}: {', '.join(f[:12] for f in found)}"
                )
        raise RevisionNotFoundError(f"no revision {revision!r} in {self.root}")

    def list_files(self, revision: str | None = None) -> list[str]:
        return sorted(self._files(self.resolve_revision(revision)))

    def download_file(self, path: str, revision: str | None = None) -> Path:
        resolved = self.resolve_revision(revision)
        entry = self._files(resolved).get(path)
        if entry is None:
            raise RepoFileNotFoundError(f"no file {path} at {resolved} in {self.root}")
        return self._object(entry, resolved)

    def _shown_files(self) -> set[str]:
        """Repo paths of the working copy that users could read: the card and every
        non-hidden file under ``data/`` (what the default ``data_files`` look at)."""
        shown = {CARD_PATH} if (self.root / CARD_PATH).is_file() else set()
        data = self.root / DATA_DIR
        if data.is_dir():
            for path in data.rglob("*"):
                rel = path.relative_to(self.root).as_posix()
                if path.is_file() and not any(p.startswith(".") for p in rel.split("/")):
                    shown.add(rel)
        return shown

    def published(self) -> Published:
        """The working copy: ``root/README.md`` and the files its ``data_files`` select."""
        card_file = self.root / CARD_PATH
        card = card_file.read_text(encoding="utf-8") if card_file.is_file() else None
        patterns, problems = card_data_files(card)
        candidates = {
            p.relative_to(self.root).as_posix()
            for pattern in patterns
            for p in self.root.glob(pattern)
            if p.is_file()
        }
        return Published(
            revision=self.head(),
            card=card,
            patterns=tuple(patterns),
            problems=tuple(problems),
            data_files=tuple(match_data_files(patterns, candidates)),
            where=f"working copy {self.root}",
            _open=lambda path: self.root / path,
        )

    def published_differences(self) -> list[PublishedDifference]:
        """The working copy vs ``HEAD``'s manifest: same files, same sha256 (every file is
        hashed), and the card selects exactly ``HEAD``'s shards."""
        head = self.head()
        expected = self._files(head)
        published = self.published()
        diffs = [
            PublishedDifference(CARD_PATH, problem)
            for problem in (published.problems if head is not None else ())
        ]
        shown = self._shown_files() | set(published.data_files)
        for path in sorted(set(expected) | shown):
            entry = expected.get(path)
            local = self.root / path
            if entry is None:
                problem = f"in the working copy, not in HEAD {head}"
                diffs.append(PublishedDifference(path, problem))
            elif not local.is_file():
                problem = f"in HEAD {head}, missing from the working copy"
                diffs.append(PublishedDifference(path, problem))
            else:
                digest = _sha256_file(local)
                if digest != entry["sha256"]:
                    diffs.append(
                        PublishedDifference(
                            path,
                            f"content differs from HEAD {head} "
                            f"(sha256 {digest[:12]} != {entry['sha256'][:12]})",
                        )
                    )
        selected = set(published.data_files)
        reported = {d.path for d in diffs}
        diffs += [
            PublishedDifference(path, "a shard of HEAD the card's data_files do not select")
            for path in sorted(expected)
            if SHARD_RE.fullmatch(path) and path not in selected and path not in reported
        ]
        return diffs

    def sync_working_copy(self) -> list[str]:
        """Under the lock: drop a crashed commit's staging; make the working copy ``HEAD``.

        Returns:
            The repo paths rewritten or removed (empty when the working copy was right).
        """
        with self._lock():
            return self._recover()

    def row_count(self, revision: str | None = None) -> int:
        files = self._files(revision)
        return sum(
            pq.read_metadata(self._object(files[path], revision)).num_rows
            for path in files
            if SHARD_RE.fullmatch(path)
        )

    def _info(self, manifest: Mapping[str, Any]) -> CommitInfo:
        return CommitInfo(
            revision=manifest["revision"],
            message=manifest["message"],
            added=tuple(manifest["added"]),
            deleted=tuple(manifest["deleted"]),
            at=datetime.fromisoformat(manifest["at"]),
        )

    def log(self) -> list[CommitInfo]:
        history = []
        revision = self.head()
        while revision is not None:
            manifest = self._manifest(revision)
            history.append(self._info(manifest))
            revision = manifest["parent"]
        return history

    # -- writing ----------------------------------------------------------------------------
    def _lock(self) -> FileLock:
        self._store.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self._store / "lock"))

    def _store_object(self, src: Path, sha256: str, suffix: str) -> str:
        """Move ``src`` into the object store (content-addressed, read-only); its key."""
        key = f"{sha256[:2]}/{sha256}{suffix}"
        dest = self._store / "objects" / key
        if dest.exists():
            src.unlink()
            return key
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.chmod(0o444)
        replace_durably(src, dest)
        return key

    def _before_head_swap(self, revision: str) -> None:
        """Seam for crash tests: the new revision is durable, HEAD not yet moved."""
        crash_point("repo:objects_written")

    def commit(
        self,
        shards: Mapping[str, pa.Table],
        *,
        message: str,
        delete: Iterable[str] = (),
        parent_revision: str | None = None,
        verify: Callable[[Mapping[str, Path]], None] | None = None,
    ) -> CommitInfo:
        """See :meth:`DatasetRepo.commit`. Under the lock: heal the working copy, stage and
        ``verify``, store objects and the manifest, move ``HEAD``, update the working copy."""
        message, months, deletes = normalise_commit_args(shards, message, delete)
        with self._lock():
            self._recover()
            head = self.head()
            if parent_revision is not None and parent_revision != head:
                raise ConflictError(f"head of {self.root} is {head}, not {parent_revision}")
            base = self._files(head)
            tmp = self._store / "tmp" / uuid.uuid4().hex
            tmp.mkdir(parents=True)
            try:
                staged = stage_shards(shards, months, tmp)
                if verify is not None:
                    verify({st.month: st.path for st in staged})
                files = dict(base)
                added: list[str] = []
                for st in staged:
                    path = shard_path(st.month)
                    if base.get(path, {}).get("sha256") == st.sha256:
                        continue
                    key = self._store_object(st.path, st.sha256, ".parquet")
                    files[path] = {"object": key, "sha256": st.sha256, "size": st.size}
                    added.append(st.month)
                deleted = [m for m in deletes if files.pop(shard_path(m), None) is not None]
                card = dataset_card(months_of_paths(files)).encode()
                card_sha = hashlib.sha256(card).hexdigest()
                if base.get(CARD_PATH, {}).get("sha256") != card_sha:
                    card_tmp = tmp / CARD_PATH
                    card_tmp.write_bytes(card)
                    key = self._store_object(card_tmp, card_sha, ".md")
                    files[CARD_PATH] = {"object": key, "sha256": card_sha, "size": len(card)}
                if head is not None and files == base:
                    logger.info(
                        "commit %r changes nothing in %s; head stays %s", message, self, head
                    )
                    return self._info(self._manifest(head))
                manifest: dict[str, Any] = {
                    "parent": head,
                    "message": message,
                    "at": datetime.now(UTC).isoformat(),
                    "added": added,
                    "deleted": deleted,
                    "files": files,
                }
                revision = hashlib.sha1(
                    json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
                ).hexdigest()
                manifest = {"revision": revision, **manifest}
                commits = self._store / "commits"
                commits.mkdir(exist_ok=True)
                write_bytes_atomic(
                    commits / f"{revision}.json", json.dumps(manifest, indent=1).encode()
                )
                self._before_head_swap(revision)
                write_bytes_atomic(self._store / "HEAD", f"{revision}\n".encode())
                crash_point("repo:head_moved")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            logger.info(
                "committed %s to %s: %r (+%s -%s)",
                revision[:12],
                self.root,
                message,
                added,
                deleted,
            )
            self._sync_worktree(revision)
            return self._info(manifest)

    def _recover(self) -> list[str]:
        """Under the lock: drop staging left by a crash; make the working copy ``HEAD``.

        Returns:
            The repo paths of the working copy rewritten or removed.
        """
        shutil.rmtree(self._store / "tmp", ignore_errors=True)
        head = self.head()
        if head is None:
            return []
        repaired = self._sync_worktree(head)
        if repaired:
            logger.warning(
                "%s: the working copy was behind HEAD %s (a crash after the commit point?); "
                "repaired %d file(s): %s",
                self,
                head[:12],
                len(repaired),
                repaired[:10],
            )
        return repaired

    def _shown_revision(self) -> str | None:
        try:
            return (self._store / "WORKTREE").read_text().strip() or None
        except FileNotFoundError:
            return None

    def _sync_worktree(self, revision: str) -> list[str]:
        """Make ``root/`` show ``revision``: hard links to the objects (copies as fallback).

        A file already showing the right content (the object itself, or a copy with the
        same sha256) is left alone; every other one is replaced atomically (temporary
        file + rename). Then cards and shards not in ``revision`` are removed and
        ``WORKTREE`` records ``revision``.

        Returns:
            The repo paths rewritten or removed.
        """
        files = self._files(revision)
        changed: list[str] = []
        for path, entry in files.items():
            src = self._object(entry, revision)
            dest = self.root / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if dest.samefile(src):
                    continue
                if (
                    dest.is_file()
                    and dest.stat().st_size == entry.get("size", -1)
                    and _sha256_file(dest) == entry["sha256"]
                ):
                    continue
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            tmp.replace(dest)
            changed.append(path)
            if len(changed) == 1:
                crash_point("repo:worktree_partial")
        for leftover in [*self.root.glob(".*.tmp"), *(self.root / DATA_DIR).glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)  # from a crash in a previous sync
        shown = [self.root / CARD_PATH, *(self.root / DATA_DIR).glob("*.parquet")]
        for dest in shown:
            path = dest.relative_to(self.root).as_posix()
            if dest.exists() and path not in files:
                dest.unlink()
                changed.append(path)
        if changed or self._shown_revision() != revision:
            fsync_path(self.root / DATA_DIR)
            fsync_path(self.root)
            crash_point("repo:worktree_updated")
            write_bytes_atomic(self._store / "WORKTREE", f"{revision}\n".encode())
        return changed

    def gc(self, keep: int | None = None) -> int:
        """Delete objects not used by the newest ``keep`` revisions (None: by any revision).

        Manifests stay, so :meth:`log` is complete; reading a pruned revision raises
        :class:`RevisionNotFoundError`. Returns the number of files deleted.
        """
        with self._lock():
            self._recover()
            history = self.log()
            kept = history if keep is None else history[: max(keep, 1)]
            live = {
                entry["object"]
                for c in kept
                for entry in self._manifest(c.revision)["files"].values()
            }
            removed = 0
            for obj in (self._store / "objects").glob("*/*"):
                if obj.relative_to(self._store / "objects").as_posix() not in live:
                    obj.unlink()
                    removed += 1
            reachable = {c.revision for c in history}
            for manifest in (self._store / "commits").glob("*.json"):
                if manifest.stem not in reachable:  # left by a crash before the HEAD swap
                    manifest.unlink()
                    removed += 1
            logger.info("gc of %s: %d file(s) deleted", self.root, removed)
            return removed
