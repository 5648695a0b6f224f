"""The HuggingFace Hub backend of the news dataset repo.

:class:`HubDatasetRepo` commits through ``huggingface_hub`` (one commit per change, the
parent revision checked by the server), reads row counts from Parquet footers and never
lets the token reach a message or a log (:func:`bi_platform.lib.secrets.redact`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

from bi_platform.lib.secrets import redact
from bi_platform.news.dataset_repo import (
    CARD_PATH,
    DEFAULT_BRANCH,
    MONTH_RE,
    REVISION_RE,
    SHARD_RE,
    CommitInfo,
    ConflictError,
    DatasetRepo,
    DatasetRepoError,
    HubError,
    Published,
    PublishedDifference,
    RepoFileNotFoundError,
    RevisionNotFoundError,
    ShardNotFoundError,
    card_data_files,
    dataset_card,
    match_data_files,
    months_of_paths,
    normalise_commit_args,
    shard_path,
    stage_shards,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile


logger = logging.getLogger(__name__)


#: Bytes fetched from the end of a remote shard to read its footer (one request usually).
FOOTER_PROBE_BYTES = 64 * 1024


_TRAILER_ADDED = "Shards-Added"


_TRAILER_DELETED = "Shards-Deleted"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _trailers(added: Sequence[str], deleted: Sequence[str]) -> str:
    lines = []
    if added:
        lines.append(f"{_TRAILER_ADDED}: {' '.join(added)}")
    if deleted:
        lines.append(f"{_TRAILER_DELETED}: {' '.join(deleted)}")
    return "\n".join(lines)


def _parse_trailer(text: str | None, key: str) -> tuple[str, ...]:
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return tuple(m for m in value.split() if MONTH_RE.fullmatch(m))
    return ()


# -- Hub backend ----------------------------------------------------------------------------
class HubDatasetRepo(DatasetRepo):
    """A dataset repo on the HuggingFace Hub (or any Hub-compatible ``endpoint``).

    Reads are pinned to a commit id (resolved once per call), so a call sees one revision
    and downloads are cached under ``cache_dir``. ``row_count`` reads only the Parquet
    footers (HTTP range requests). Commits go through ``create_commit`` with
    ``parent_commit`` set to the head the commit was computed from, so the Hub refuses it
    (HTTP 412/409 -> :class:`ConflictError`) if another writer got in between. The token is
    kept out of reprs, logs and the messages of raised errors.
    """

    def __init__(
        self,
        repo_id: str,
        token: str | SecretStr | None = None,
        endpoint: str | None = None,
        cache_dir: Path | str | None = None,
        *,
        branch: str = DEFAULT_BRANCH,
    ) -> None:
        from huggingface_hub import HfApi, constants

        self.repo_id = repo_id
        self.branch = branch
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._token = SecretStr(secret) if secret else None
        self._api: HfApi = HfApi(endpoint=self.endpoint, token=secret, library_name="bi_platform")
        self._trees: dict[str, dict[str, RepoFile]] = {}
        self._footer_rows: dict[tuple[str, str], int] = {}

    def __repr__(self) -> str:
        return f"HubDatasetRepo({self.repo_id!r}, endpoint={self.endpoint!r})"

    # -- plumbing ---------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, None if self._token is None else self._token.get_secret_value())

    @contextlib.contextmanager
    def _hub(self, action: str) -> Iterator[None]:
        """Translate huggingface_hub/HTTP errors to DatasetRepoErrors without the token."""
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        try:
            yield
        except DatasetRepoError:
            raise
        except HfRevisionNotFound as exc:
            raise RevisionNotFoundError(
                f"{action} on {self.repo_id}: {self._redact(str(exc))}"
            ) from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            first = self._redact(str(exc)).strip().splitlines()
            detail = first[0] if first else type(exc).__name__
            raise HubError(
                f"{action} on {self.repo_id} failed (HTTP {status}): {detail}", status
            ) from None
        except Exception as exc:
            raise HubError(
                f"{action} on {self.repo_id} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            ) from None

    def _resolve(self, revision: str | None) -> str | None:
        """A commit id for ``revision`` (None: the head; None if the repo is empty)."""
        if revision is None:
            return self.head()
        if REVISION_RE.fullmatch(revision):
            return revision
        with self._hub(f"resolve {revision}"):
            return self._api.dataset_info(self.repo_id, revision=revision).sha

    def _tree(self, revision: str) -> dict[str, RepoFile]:
        """Files at a commit id (cached: commits are immutable)."""
        if revision not in self._trees:
            from huggingface_hub.hf_api import RepoFile

            with self._hub(f"list files at {revision}"):
                entries = self._api.list_repo_tree(
                    self.repo_id, recursive=True, revision=revision, repo_type="dataset"
                )
                self._trees[revision] = {e.path: e for e in entries if isinstance(e, RepoFile)}
        return self._trees[revision]

    # -- reading ----------------------------------------------------------------------------
    def head(self) -> str | None:
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        with self._hub("read head"):
            try:
                return self._api.dataset_info(self.repo_id, revision=self.branch).sha
            except (RepositoryNotFoundError, HfRevisionNotFound):
                return None

    def list_shards(self, revision: str | None = None) -> list[str]:
        resolved = self._resolve(revision)
        return [] if resolved is None else months_of_paths(self._tree(resolved))

    def download_shard(self, month: str, revision: str | None = None) -> Path:
        path = shard_path(month)
        resolved = self._resolve(revision)
        if resolved is None:
            raise ShardNotFoundError(f"no shard {month} in {self.repo_id} (empty repo)")
        try:
            return self._download(path, resolved)
        except RepoFileNotFoundError:
            raise ShardNotFoundError(f"no shard {month} at {resolved} in {self.repo_id}") from None

    def _download(self, path: str, resolved: str) -> Path:
        """``path`` at the commit id ``resolved``, through the download cache."""
        from huggingface_hub.errors import EntryNotFoundError

        with self._hub(f"download {path}@{resolved[:12]}"):
            try:
                local = self._api.hf_hub_download(
                    self.repo_id,
                    path,
                    repo_type="dataset",
                    revision=resolved,
                    cache_dir=self.cache_dir,
                )
            except EntryNotFoundError:
                raise RepoFileNotFoundError(
                    f"no file {path} at {resolved} in {self.repo_id}"
                ) from None
        return Path(local)

    def resolve_revision(self, revision: str | None = None) -> str:
        resolved = self._resolve(revision)
        if resolved is None:
            raise RevisionNotFoundError(f"{self.repo_id} has no revision yet (empty repo)")
        return resolved

    def list_files(self, revision: str | None = None) -> list[str]:
        return sorted(self._tree(self.resolve_revision(revision)))

    def download_file(self, path: str, revision: str | None = None) -> Path:
        return self._download(path, self.resolve_revision(revision))

    def published(self) -> Published:
        """What the Hub serves at its head: the card and the files it selects, each read
        at the head's commit id (downloaded on demand through the cache)."""
        head = self.head()
        tree = self._tree(head) if head is not None else {}
        card = (
            self._download(CARD_PATH, head).read_text(encoding="utf-8")
            if head is not None and CARD_PATH in tree
            else None
        )
        patterns, problems = card_data_files(card)

        def open_at_head(path: str) -> Path:
            if head is None:
                raise RepoFileNotFoundError(f"{self.repo_id} is empty")
            return self._download(path, head)

        return Published(
            revision=head,
            card=card,
            patterns=tuple(patterns),
            problems=tuple(problems),
            data_files=tuple(match_data_files(patterns, tree)),
            where=f"hub {self.endpoint}/datasets/{self.repo_id}@{(head or '')[:12]}",
            _open=open_at_head,
        )

    def published_differences(self) -> list[PublishedDifference]:
        """The Hub serves its head's tree itself; what can differ is the card: a problem
        with its ``data_files``, or a shard of the head the card does not select."""
        published = self.published()
        if published.revision is None:
            return []
        diffs = [PublishedDifference(CARD_PATH, problem) for problem in published.problems]
        selected = set(published.data_files)
        diffs += [
            PublishedDifference(path, "a shard of HEAD the card's data_files do not select")
            for path in sorted(self._tree(published.revision))
            if SHARD_RE.fullmatch(path) and path not in selected
        ]
        return diffs

    def _footer_num_rows(self, path: str, revision: str) -> int:
        """Rows of a remote Parquet file from its footer, fetched with range requests."""
        key = (revision, path)
        if key in self._footer_rows:
            return self._footer_rows[key]
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(
            self.repo_id, path, repo_type="dataset", revision=revision, endpoint=self.endpoint
        )
        token = self._token.get_secret_value() if self._token is not None else None
        headers = build_hf_headers(token=token, library_name="bi_platform")

        def tail(nbytes: int) -> bytes:
            response = get_session().get(
                url, headers={**headers, "Range": f"bytes=-{nbytes}"}, follow_redirects=True
            )
            hf_raise_for_status(response)
            return response.content[-nbytes:]  # a server ignoring Range sends it all

        with self._hub(f"read footer of {path}@{revision[:12]}"):
            data = tail(FOOTER_PROBE_BYTES)
            if len(data) < 12 or data[-4:] != b"PAR1":
                raise DatasetRepoError(f"{path}@{revision} is not a Parquet file")
            length = int.from_bytes(data[-8:-4], "little") + 8
            if length > len(data):
                data = tail(length)
            rows = pq.read_metadata(pa.BufferReader(b"PAR1" + data[-length:])).num_rows
        self._footer_rows[key] = rows
        return rows

    def row_count(self, revision: str | None = None) -> int:
        resolved = self._resolve(revision)
        if resolved is None:
            return 0
        return sum(
            self._footer_num_rows(path, resolved)
            for path in self._tree(resolved)
            if SHARD_RE.fullmatch(path)
        )

    def log(self) -> list[CommitInfo]:
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

        with self._hub("list commits"):
            try:
                commits = self._api.list_repo_commits(
                    self.repo_id, repo_type="dataset", revision=self.branch
                )
            except (RepositoryNotFoundError, HfRevisionNotFound):
                return []
        return [
            CommitInfo(
                revision=c.commit_id,
                message=c.title,
                added=_parse_trailer(c.message, _TRAILER_ADDED),
                deleted=_parse_trailer(c.message, _TRAILER_DELETED),
                at=c.created_at,
            )
            for c in commits
        ]

    # -- writing ----------------------------------------------------------------------------
    def commit(
        self,
        shards: Mapping[str, pa.Table],
        *,
        message: str,
        delete: Iterable[str] = (),
        parent_revision: str | None = None,
        verify: Callable[[Mapping[str, Path]], None] | None = None,
    ) -> CommitInfo:
        """See :meth:`DatasetRepo.commit`: one ``create_commit`` with ``parent_commit``."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        message, months, deletes = normalise_commit_args(shards, message, delete)
        head = self.head()
        if parent_revision is not None and parent_revision != head:
            raise ConflictError(f"head of {self.repo_id} is {head}, not {parent_revision}")
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="commit-", dir=self.cache_dir) as tmp:
            staged = stage_shards(shards, months, Path(tmp))
            if verify is not None:
                verify({st.month: st.path for st in staged})
            if head is None:
                with self._hub("create repo"):
                    self._api.create_repo(self.repo_id, repo_type="dataset", exist_ok=True)
                head = self.head()
            tree = self._tree(head) if head is not None else {}
            operations: list[CommitOperationAdd | CommitOperationDelete] = []
            added: list[str] = []
            for st in staged:
                path = shard_path(st.month)
                remote = tree.get(path)
                if remote is not None and (
                    (remote.lfs is not None and remote.lfs.sha256 == st.sha256)
                    or remote.blob_id == st.git_sha1
                ):
                    continue
                operations.append(CommitOperationAdd(path, str(st.path)))
                added.append(st.month)
            deleted = [m for m in deletes if shard_path(m) in tree]
            operations += [CommitOperationDelete(shard_path(m)) for m in deleted]
            months_after = (set(months_of_paths(tree)) - set(deleted)) | {s.month for s in staged}
            card = dataset_card(sorted(months_after), repo_id=self.repo_id).encode()
            remote_card = tree.get(CARD_PATH)
            if remote_card is None or remote_card.blob_id != _git_blob_sha1(card):
                operations.append(CommitOperationAdd(CARD_PATH, card))
            if not operations and head is not None:
                logger.info("commit %r changes nothing in %s; head stays %s", message, self, head)
                return self._head_info(head)
            with self._hub("commit"):
                try:
                    result = self._api.create_commit(
                        self.repo_id,
                        operations,
                        commit_message=message,
                        commit_description=_trailers(added, deleted),
                        repo_type="dataset",
                        revision=self.branch,
                        parent_commit=head,
                    )
                except Exception as exc:
                    response = getattr(exc, "response", None)
                    if response is not None and response.status_code in (409, 412):
                        raise ConflictError(
                            f"{self.repo_id} moved past {head} during the commit"
                        ) from None
                    raise
        if result.oid == head:  # the library found nothing to change after all
            return self._head_info(head)
        logger.info(
            "committed %s to %s: %r (+%s -%s)",
            result.oid[:12],
            self.repo_id,
            message,
            added,
            deleted,
        )
        return CommitInfo(
            revision=result.oid,
            message=message,
            added=tuple(added),
            deleted=tuple(deleted),
            at=datetime.now(UTC),
        )

    def _head_info(self, head: str) -> CommitInfo:
        for info in self.log():
            if info.revision == head:
                return info
        raise RevisionNotFoundError(f"head {head} of {self.repo_id} is not in its history")
