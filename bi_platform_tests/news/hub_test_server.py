"""TEST FIXTURE: a small local imitation of the HuggingFace Hub, for HubDatasetRepo's tests.

Not part of the platform and not a mock of ``huggingface_hub``: a real HTTP server
(FastAPI + uvicorn in a background thread, bound to 127.0.0.1 on a free port) that answers
just the requests ``huggingface_hub`` 2.x makes for what :class:`HubDatasetRepo` does, in
the shapes read from the library's source:

==========================================================  ==================================
``POST /api/repos/create``                                  create_repo (initial commit with
                                                            ``.gitattributes``, as the Hub)
``POST /api/validate-yaml``                                 README front matter check
``GET  /api/{type}s/{ns}/{name}[/revision/{rev}]``          repo_info / dataset_info (``sha``)
``POST /api/{type}s/{ns}/{name}/preupload/{rev}``           upload mode per file (``lfs`` for
                                                            ``.gitattributes`` LFS patterns or
                                                            >= 10 MiB, else ``regular``)
``POST /{type}s/{ns}/{name}.git/info/lfs/objects/batch``    LFS batch API (``basic`` transfer)
``PUT  /lfs-storage/{type}s/{ns}/{name}/{oid}``             LFS object upload ("presigned")
``POST /lfs-storage/{type}s/{ns}/{name}/{oid}/verify``      LFS verify
``POST /api/{type}s/{ns}/{name}/commit/{rev}``              create_commit (NDJSON: header,
                                                            file/base64, lfsFile, deletedFile,
                                                            deletedFolder; ``parentCommit`` ->
                                                            412 if the branch moved)
``GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]``       list_repo_tree (one page)
``GET  /api/{type}s/{ns}/{name}/commits/{rev}``             list_repo_commits (one page)
``HEAD|GET /{type}s/{ns}/{name}/resolve/{rev}/{path}``      hf_hub_download, Range reads
==========================================================  ==================================

Storage is in memory with real commits (sha1 ids, parents, immutable file maps), git blob
ids for regular files and sha256 LFS objects. Writes need ``Authorization: Bearer <token>``
when the server has a token; reads are public. Files are served directly (no CDN redirect)
and Xet is not implemented: :func:`hub_client_environment` disables Xet in the client so
LFS files take the classic LFS batch path. :meth:`HubTestServer.fail_next` makes an
endpoint answer an error, to test failure handling.

Fixtures: ``hub_test_server`` (module-scoped, the server object) and ``hub_server`` (its
endpoint URL). While they are active every ``huggingface_hub`` request goes through a guard
that refuses any host but 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

TEST_USER = "test-user"
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = (
    "*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    "*.arrow filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    """A file at a commit: regular (content inline) or LFS (content in the LFS store)."""

    oid: str
    size: int
    content: bytes | None = None
    lfs_sha256: str | None = None
    pointer_size: int = 0


@dataclass(frozen=True)
class StoredCommit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: datetime
    files: dict[str, StoredFile]


@dataclass
class StoredRepo:
    repo_type: str
    repo_id: str
    commits: dict[str, StoredCommit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    host: str
    authorization: str | None
    range: str | None
    kind: str


class HubError(Exception):
    """An error answer, shaped as the Hub's (JSON ``error`` + X-Error-* headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


def _kind(method: str, path: str) -> str:
    """Endpoint family of a request, used by fail_next and in the request log."""
    rules: list[tuple[str, str]] = [
        ("create", r"^/api/repos/create$"),
        ("validate-yaml", r"^/api/validate-yaml$"),
        ("preupload", r"^/api/\w+/[^/]+/[^/]+/preupload/"),
        ("commit", r"^/api/\w+/[^/]+/[^/]+/commit/"),
        ("tree", r"^/api/\w+/[^/]+/[^/]+/tree/"),
        ("commits", r"^/api/\w+/[^/]+/[^/]+/commits/"),
        ("info", r"^/api/\w+/[^/]+/[^/]+(/revision/.*)?$"),
        ("lfs-batch", r"\.git/info/lfs/objects/batch$"),
        ("lfs-verify", r"^/lfs-storage/.*/verify$"),
        ("lfs-upload", r"^/lfs-storage/"),
        ("resolve", r"^/\w+/[^/]+/[^/]+/resolve/"),
    ]
    for kind, pattern in rules:
        if re.search(pattern, path):
            return kind
    return f"other:{method}"


class HubTestServer:
    """The fake Hub. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[tuple[str, str], StoredRepo] = {}
        self.requests: list[RecordedRequest] = []
        #: Hosts the guarded client reached (set by :func:`hub_client_environment` users).
        self.client_hosts: list[str] = []
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> HubTestServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by accepted connections; without it each response waits ~40 ms (Nagle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            loop="asyncio",
            http="h11",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="hub-test"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("hub test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> HubTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ------------------------------------------------------------------------
    def fail_next(self, kind: str, status: int = 500, times: int = 1) -> None:
        """Make the next ``times`` requests of endpoint family ``kind`` answer ``status``."""
        with self._lock:
            self._failures.setdefault(kind, []).extend([status] * times)

    def head_of(self, repo_id: str, repo_type: str = "dataset", branch: str = "main") -> str | None:
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            return None if repo is None else repo.branches.get(branch)

    def files_at(self, repo_id: str, revision: str, repo_type: str = "dataset") -> dict[str, bytes]:
        """Every file's content at a revision (for assertions)."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commits[self._resolve(repo, revision)]
            return {p: self._content(repo, f) for p, f in commit.files.items()}

    # -- storage helpers ----------------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str) -> StoredRepo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _resolve(repo: StoredRepo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        if len(revision) >= 7:
            matches = [oid for oid in repo.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    @staticmethod
    def _content(repo: StoredRepo, stored: StoredFile) -> bytes:
        if stored.content is not None:
            return stored.content
        assert stored.lfs_sha256 is not None
        return repo.lfs[stored.lfs_sha256]

    def _new_commit(
        self,
        repo: StoredRepo,
        parent: str | None,
        title: str,
        message: str,
        files: dict[str, StoredFile],
        branch: str = "main",
    ) -> StoredCommit:
        seed = json.dumps(
            [parent, title, message, time.time_ns(), sorted((p, f.oid) for p, f in files.items())]
        )
        oid = hashlib.sha1(seed.encode()).hexdigest()
        commit = StoredCommit(oid, parent, title, message, datetime.now(UTC), files)
        repo.commits[oid] = commit
        repo.branches[branch] = oid
        return commit

    def _check_write(self, request: Request) -> None:
        if self.token is None:
            return
        if request.headers.get("authorization") != f"Bearer {self.token}":
            raise HubError(401, "Invalid credentials in Authorization header")

    @staticmethod
    def _lfs_patterns(repo: StoredRepo, commit: StoredCommit | None) -> list[str]:
        stored = commit.files.get(".gitattributes") if commit else None
        text = HubTestServer._content(repo, stored).decode() if stored else ""
        return [
            line.split()[0] for line in text.splitlines() if "filter=lfs" in line and line.split()
        ]

    # -- the app ------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI()
        server = self

        @app.exception_handler(HubError)
        async def _hub_error(request: Request, exc: HubError) -> JSONResponse:
            headers = {"X-Error-Message": exc.message, **exc.headers}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

        @app.middleware("http")
        async def _record_and_inject(request: Request, call_next: Callable[..., Any]) -> Response:
            kind = _kind(request.method, request.url.path)
            with server._lock:
                server.requests.append(
                    RecordedRequest(
                        request.method,
                        request.url.path,
                        request.url.hostname or "",
                        request.headers.get("authorization"),
                        request.headers.get("range"),
                        kind,
                    )
                )
                pending = server._failures.get(kind)
                status = pending.pop(0) if pending else None
            if status is not None:
                message = f"Injected failure ({status}) for {kind}"
                return JSONResponse(
                    {"error": message}, status_code=status, headers={"X-Error-Message": message}
                )
            return await call_next(request)

        def repo_key(plural: str, ns: str, name: str) -> tuple[str, str]:
            if plural not in _PLURALS:
                raise HubError(404, f"Unknown repo type {plural}")
            return _PLURALS[plural], f"{ns}/{name}"

        @app.post("/api/repos/create")
        async def create_repo(request: Request) -> JSONResponse:
            server._check_write(request)
            body = await request.json()
            repo_type = body.get("type") or "model"
            repo_id = f"{body.get('organization') or TEST_USER}/{body['name']}"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{server.url}/{prefix}{repo_id}"
            with server._lock:
                if (repo_type, repo_id) in server.repos:
                    raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
                repo = StoredRepo(repo_type, repo_id)
                data = GITATTRIBUTES.encode()
                files = {".gitattributes": StoredFile(_git_blob_oid(data), len(data), data)}
                server._new_commit(repo, None, "initial commit", "", files)
                server.repos[(repo_type, repo_id)] = repo
            return JSONResponse({"url": url, "name": repo_id, "id": uuid.uuid4().hex})

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request) -> JSONResponse:
            body = await request.json()
            content: str = body.get("content", "")
            if content.startswith("---"):
                front = content.split("---", 2)[1]
                try:
                    meta = yaml.safe_load(front)
                except yaml.YAMLError as exc:
                    return JSONResponse({"errors": [{"message": str(exc)}]}, status_code=400)
                if meta is not None and not isinstance(meta, dict):
                    return JSONResponse(
                        {"errors": [{"message": "metadata must be a mapping"}]}, status_code=400
                    )
            return JSONResponse({"warnings": []})

        def info(plural: str, ns: str, name: str, revision: str) -> JSONResponse:
            repo_type, repo_id = repo_key(plural, ns, name)
            with server._lock:
                repo = server._repo(repo_type, repo_id)
                commit = repo.commits[server._resolve(repo, revision)]
                created = min(c.date for c in repo.commits.values())
                return JSONResponse(
                    {
                        "id": repo_id,
                        "_id": repo_id,
                        "author": ns,
                        "sha": commit.oid,
                        "private": False,
                        "disabled": False,
                        "gated": False,
                        "tags": [],
                        "createdAt": created.isoformat().replace("+00:00", "Z"),
                        "lastModified": commit.date.isoformat().replace("+00:00", "Z"),
                        "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                    }
                )

        @app.get("/api/{plural}/{ns}/{name}")
        def repo_info(plural: str, ns: str, name: str) -> JSONResponse:
            return info(plural, ns, name, "main")

        @app.get("/api/{plural}/{ns}/{name}/revision/{revision:path}")
        def repo_info_at(plural: str, ns: str, name: str, revision: str) -> JSONResponse:
            return info(plural, ns, name, revision)

        @app.post("/api/{plural}/{ns}/{name}/preupload/{revision:path}")
        async def preupload(
            plural: str, ns: str, name: str, revision: str, request: Request
        ) -> JSONResponse:
            server._check_write(request)
            body = await request.json()
            repo_type, repo_id = repo_key(plural, ns, name)
            with server._lock:
                repo = server._repo(repo_type, repo_id)
                commit = repo.commits[server._resolve(repo, revision)] if repo.branches else None
                patterns = server._lfs_patterns(repo, commit)
                answers = []
                for item in body["files"]:
                    path, size = item["path"], item["size"]
                    name_only = path.rsplit("/", 1)[-1]
                    lfs = size >= LFS_THRESHOLD or any(
                        fnmatch.fnmatch(name_only, p) or fnmatch.fnmatch(path, p) for p in patterns
                    )
                    existing = commit.files.get(path) if commit else None
                    oid = None
                    if existing is not None:
                        oid = existing.lfs_sha256 or existing.oid
                    answers.append(
                        {
                            "path": path,
                            "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False,
                            "oid": oid,
                        }
                    )
            return JSONResponse({"files": answers, "commitOid": commit.oid if commit else None})

        @app.post("/{plural}/{ns}/{name}.git/info/lfs/objects/batch")
        async def lfs_batch(plural: str, ns: str, name: str, request: Request) -> JSONResponse:
            server._check_write(request)
            body = await request.json()
            repo_type, repo_id = repo_key(plural, ns, name)
            objects = []
            with server._lock:
                repo = server._repo(repo_type, repo_id)
                for obj in body.get("objects", []):
                    oid, size = obj["oid"], obj["size"]
                    answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                    if oid not in repo.lfs:
                        href = f"{server.url}/lfs-storage/{plural}/{repo_id}/{oid}"
                        answer["actions"] = {
                            "upload": {"href": href, "header": {}},
                            "verify": {"href": f"{href}/verify", "header": {}},
                        }
                    objects.append(answer)
            return JSONResponse(
                {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                media_type="application/vnd.git-lfs+json",
            )

        @app.put("/lfs-storage/{plural}/{ns}/{name}/{oid}")
        async def lfs_upload(
            plural: str, ns: str, name: str, oid: str, request: Request
        ) -> Response:
            data = await request.body()
            if hashlib.sha256(data).hexdigest() != oid:
                raise HubError(400, "LFS object does not match its oid")
            repo_type, repo_id = repo_key(plural, ns, name)
            with server._lock:
                server._repo(repo_type, repo_id).lfs[oid] = data
            return Response(status_code=200)

        @app.post("/lfs-storage/{plural}/{ns}/{name}/{oid}/verify")
        async def lfs_verify(
            plural: str, ns: str, name: str, oid: str, request: Request
        ) -> JSONResponse:
            server._check_write(request)
            body = await request.json()
            repo_type, repo_id = repo_key(plural, ns, name)
            with server._lock:
                data = server._repo(repo_type, repo_id).lfs.get(oid)
            if data is None or len(data) != body.get("size"):
                raise HubError(404, f"LFS object {oid} not found")
            return JSONResponse({"ok": True})

        @app.post("/api/{plural}/{ns}/{name}/commit/{revision:path}")
        async def commit(
            plural: str, ns: str, name: str, revision: str, request: Request
        ) -> JSONResponse:
            server._check_write(request)
            lines = [json.loads(line) for line in (await request.body()).splitlines() if line]
            if not lines or lines[0].get("key") != "header":
                raise HubError(400, "The first line of the payload must be the header")
            header = lines[0]["value"]
            repo_type, repo_id = repo_key(plural, ns, name)
            with server._lock:
                repo = server._repo(repo_type, repo_id)
                head = repo.branches.get(revision)
                if head is None and repo.branches:
                    raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                parent_commit = header.get("parentCommit")
                if parent_commit and not (head or "").startswith(parent_commit):
                    raise HubError(
                        412, "A commit has happened since. Please refresh and try again."
                    )
                files = dict(repo.commits[head].files) if head else {}
                for line in lines[1:]:
                    key, value = line["key"], line["value"]
                    path = value["path"]
                    if key == "file":
                        data = base64.b64decode(value["content"])
                        files[path] = StoredFile(_git_blob_oid(data), len(data), data)
                    elif key == "lfsFile":
                        oid = value["oid"]
                        if oid not in repo.lfs:
                            raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
                        size = len(repo.lfs[oid])
                        pointer = (
                            f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\n"
                            f"size {size}\n"
                        ).encode()
                        files[path] = StoredFile(
                            _git_blob_oid(pointer), size, None, oid, len(pointer)
                        )
                    elif key == "deletedFile":
                        if files.pop(path, None) is None:
                            raise HubError(
                                404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                            )
                    elif key == "deletedFolder":
                        prefix = path.rstrip("/") + "/"
                        files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                    else:
                        raise HubError(400, f"Unknown operation {key}")
                new = server._new_commit(
                    repo, head, header["summary"], header.get("description", ""), files, revision
                )
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return JSONResponse(
                {
                    "success": True,
                    "commitOid": new.oid,
                    "commitUrl": f"{server.url}/{prefix}{repo_id}/commit/{new.oid}",
                    "hookOutput": "",
                    "pullRequestUrl": None,
                }
            )

        def tree(plural: str, ns: str, name: str, revision: str, path: str, request: Request):
            repo_type, repo_id = repo_key(plural, ns, name)
            recursive = request.query_params.get("recursive", "false").lower() == "true"
            with server._lock:
                repo = server._repo(repo_type, repo_id)
                commit = repo.commits[server._resolve(repo, revision)]
                prefix = path.strip("/") + "/" if path.strip("/") else ""
                if prefix and not any(p.startswith(prefix) for p in commit.files):
                    raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
                entries: dict[str, dict[str, Any]] = {}
                for file_path, stored in sorted(commit.files.items()):
                    if not file_path.startswith(prefix):
                        continue
                    rest = file_path[len(prefix) :].split("/")
                    for depth in range(1, len(rest)):
                        directory = prefix + "/".join(rest[:depth])
                        if depth == 1 or recursive:
                            entries.setdefault(
                                directory,
                                {
                                    "type": "directory",
                                    "oid": hashlib.sha1(directory.encode()).hexdigest(),
                                    "size": 0,
                                    "path": directory,
                                },
                            )
                    if len(rest) > 1 and not recursive:
                        continue
                    entry: dict[str, Any] = {
                        "type": "file",
                        "oid": stored.oid,
                        "size": stored.size,
                        "path": file_path,
                    }
                    if stored.lfs_sha256 is not None:
                        entry["lfs"] = {
                            "oid": stored.lfs_sha256,
                            "size": stored.size,
                            "pointerSize": stored.pointer_size,
                        }
                    entries[file_path] = entry
            return JSONResponse([entries[k] for k in sorted(entries)])

        @app.get("/api/{plural}/{ns}/{name}/tree/{revision}")
        def tree_root(plural: str, ns: str, name: str, revision: str, request: Request):
            return tree(plural, ns, name, revision, "", request)

        @app.get("/api/{plural}/{ns}/{name}/tree/{revision}/{path:path}")
        def tree_path(plural: str, ns: str, name: str, revision: str, path: str, request: Request):
            return tree(plural, ns, name, revision, path, request)

        @app.get("/api/{plural}/{ns}/{name}/commits/{revision:path}")
        def commits(plural: str, ns: str, name: str, revision: str) -> JSONResponse:
            repo_type, repo_id = repo_key(plural, ns, name)
            out = []
            with server._lock:
                repo = server._repo(repo_type, repo_id)
                oid: str | None = server._resolve(repo, revision)
                while oid is not None:
                    c = repo.commits[oid]
                    out.append(
                        {
                            "id": c.oid,
                            "title": c.title,
                            "message": c.message,
                            "authors": [{"user": TEST_USER, "avatar": ""}],
                            "date": c.date.isoformat().replace("+00:00", "Z"),
                        }
                    )
                    oid = c.parent
            return JSONResponse(out)

        @app.api_route(
            "/{plural}/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"]
        )
        def resolve(
            plural: str, ns: str, name: str, revision: str, path: str, request: Request
        ) -> Response:
            repo_type, repo_id = repo_key(plural, ns, name)
            with server._lock:
                repo = server._repo(repo_type, repo_id)
                commit = repo.commits[server._resolve(repo, revision)]
                stored = commit.files.get(path)
                if stored is None:
                    raise HubError(
                        404,
                        "Entry not found",
                        "EntryNotFound",
                        headers={"X-Repo-Commit": commit.oid},
                    )
                data = server._content(repo, stored)
            headers = {
                "X-Repo-Commit": commit.oid,
                "ETag": f'"{stored.lfs_sha256 or stored.oid}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if stored.lfs_sha256 is not None:
                headers["X-Linked-Etag"] = f'"{stored.lfs_sha256}"'
                headers["X-Linked-Size"] = str(stored.size)
            status, body = 200, data
            match = _RANGE.fullmatch(request.headers.get("range", "").strip())
            if match and (match.group(1) or match.group(2)):
                first, last = match.groups()
                if first:
                    start, end = int(first), min(int(last or len(data) - 1), len(data) - 1)
                else:
                    start, end = max(len(data) - int(last), 0), len(data) - 1
                if start > end:
                    raise HubError(416, "Range not satisfiable")
                status, body = 206, data[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            headers["Content-Length"] = str(len(body))
            if request.method == "HEAD":
                return Response(status_code=status, headers=headers)
            return Response(content=body, status_code=status, headers=headers)

        return app


@contextlib.contextmanager
def hub_client_environment(allowed_host: str = "127.0.0.1") -> Iterator[list[str]]:
    """Configure ``huggingface_hub`` for tests against the local server; yield hosts reached.

    Telemetry off (it also stops the user-agent's agent detection from calling the real
    Hub), progress bars off, offline mode off, Xet off (no CAS server here), and every
    request of the library's HTTP client goes through a guard that records its host and
    refuses anything but ``allowed_host``.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http, disable_progress_bars, enable_progress_bars

    hosts: list[str] = []

    def guard(request: httpx2.Request) -> None:
        hosts.append(request.url.host)
        if request.url.host != allowed_host:
            raise RuntimeError(f"test request to {request.url.host} refused")

    def client_factory() -> httpx2.Client:
        return httpx2.Client(
            event_hooks={"request": [_http.hf_request_event_hook, guard]},
            follow_redirects=True,
            timeout=30,
        )

    with pytest.MonkeyPatch.context() as patch:
        for name, value in (
            ("HF_HUB_DISABLE_TELEMETRY", True),
            ("HF_HUB_DISABLE_XET", True),
            ("HF_HUB_OFFLINE", False),
        ):
            patch.setenv(name, "1" if value else "0")
            patch.setattr(constants, name, value)
        disable_progress_bars()
        _http.set_client_factory(client_factory)
        try:
            yield hosts
            stray = sorted(set(hosts) - {allowed_host})
            assert not stray, f"huggingface_hub tried to reach {stray}"
        finally:
            _http.set_client_factory(_http.default_client_factory)
            enable_progress_bars()


#: Token the fixture server expects for writes.
TEST_TOKEN = "hf_TESTTOKEN_0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def hub_test_server() -> Iterator[HubTestServer]:
    """A running :class:`HubTestServer` (write token :data:`TEST_TOKEN`), client guarded."""
    with hub_client_environment() as hosts, HubTestServer(token=TEST_TOKEN) as server:
        server.client_hosts = hosts
        yield server


@pytest.fixture(scope="module")
def hub_server(hub_test_server: HubTestServer) -> str:
    """Endpoint URL of the module's local Hub test server."""
    return hub_test_server.url
