"""Local clusters of the platform's scale-out engines, for trying them on one machine.

Three kinds, each a set of real server processes on 127.0.0.1 (free ports):

* ``spark`` — a Spark standalone cluster from the pyspark wheel: one master and one
  worker JVM (``bin/spark-class org.apache.spark.deploy.master.Master`` /
  ``...deploy.worker.Worker``); the platform uses it with ``SPARK_MASTER``. Applications
  get their executors from the worker (``spark.executor.memory`` 1g by default).
* ``spark-connect`` — a Spark Connect server (``org.apache.spark.sql.connect.service.
  SparkConnectServer``, the jar the wheel ships, started like ``sbin/start-connect-server.sh``
  without daemonizing) in local mode; the platform uses it with ``SPARK_REMOTE``.
* ``dask`` — a ``distributed`` scheduler and worker processes (the ``dask scheduler`` /
  ``dask worker`` programs); the platform uses it with ``DASK_SCHEDULER_ADDRESS``.

Each cluster lives in ``<root>/<kind>/``: ``cluster.json`` (address, processes, logs),
``logs/`` and the engines' scratch directories. Every process is started in its own
session (process group), so :func:`stop` ends it with everything it spawned (executor
JVMs, Python workers, nannies). Memory is bounded (daemons 512 MB, Spark worker 2 GB,
Connect server 1 GB heap, Dask workers 1 GiB each).

``bi-platform cluster up|down|status`` and the test fixtures use this module; it imports
neither Dagster nor Spark (Dask's client only to wait for the workers).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bi_platform.lib.files import write_text_atomic

log = logging.getLogger(__name__)

#: The PostgreSQL JDBC driver the system package (``libpostgresql-jdbc-java``) installs.
POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")

HOST = "127.0.0.1"
KINDS = ("spark", "spark-connect", "dask")
#: The environment variable that points the platform at each kind of cluster.
ENV_VARS = {
    "spark": "SPARK_MASTER",
    "spark-connect": "SPARK_REMOTE",
    "dask": "DASK_SCHEDULER_ADDRESS",
}
STATE_FILE = "cluster.json"
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
#: Variables of the caller's environment that must not leak into the cluster processes
#: (a Connect-mode flag would turn the server's own Python workers into clients).
_DROPPED_ENV = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_MASTER", "MASTER")


class ClusterError(RuntimeError):
    """A cluster could not be started, reached or stopped; names the log to read."""


@dataclass
class ClusterProcess:
    """One server process of a cluster (the leader of its own process group)."""

    name: str
    pid: int
    create_time: float
    log: str

    def running(self) -> bool:
        """True while this very process (same pid and start time) is alive."""
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False


@dataclass
class ClusterState:
    """A started cluster: how to reach it and which processes make it up.

    ``address`` is the value of :attr:`env_var` (``spark://...``, ``sc://...``,
    ``tcp://...``); ``ui`` a web UI when the cluster has one; ``event_log_dir`` where the
    Spark Connect server writes its event log (Spark's JSON listener events).
    """

    kind: str
    address: str
    directory: str
    processes: list[ClusterProcess] = field(default_factory=list)
    ui: str | None = None
    event_log_dir: str | None = None
    details: dict[str, str] = field(default_factory=dict)

    @property
    def env_var(self) -> str:
        return ENV_VARS[self.kind]

    @property
    def env(self) -> dict[str, str]:
        """``{env_var: address}``: what the platform needs to use this cluster."""
        return {self.env_var: self.address}

    @property
    def export_line(self) -> str:
        return f"export {self.env_var}={self.address}"

    def running(self) -> bool:
        """Every process alive and the address accepting connections."""
        if not self.processes or not all(p.running() for p in self.processes):
            return False
        host, port = _host_port(self.address)
        return _port_open(host, port)

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        write_text_atomic(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        """The state saved in ``directory``; None when there is none (or it is unreadable)."""
        path = Path(directory) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        data["processes"] = [ClusterProcess(**p) for p in data.get("processes", [])]
        return cls(**data)


# -- helpers ---------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host, int(port)


def spark_home() -> Path:
    """The pyspark package directory: a complete Spark distribution (bin/, sbin/, jars/)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ClusterError("pyspark is not installed in this environment")
    return Path(spec.origin).parent


def java_home() -> str | None:
    """``JAVA_HOME``, else the installation of the ``java`` on PATH; None without Java."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        return None
    return str(Path(java).resolve().parents[1])


def spark_environment(directory: Path) -> dict[str, str]:
    """Environment of the Spark processes: this venv's Python for Python workers, loopback
    only, daemon heaps of 512 MB, logs/pids/work under ``directory``."""
    home = java_home()
    if home is None:
        raise ClusterError("no Java runtime: Spark needs Java 17+ (run `make system-deps`)")
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    for sub in ("logs", "pids", "work", "conf", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        SPARK_HOME=str(spark_home()),
        JAVA_HOME=home,
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_LOCAL_IP=HOST,
        SPARK_LOG_DIR=str(directory / "logs"),
        SPARK_PID_DIR=str(directory / "pids"),
        SPARK_WORKER_DIR=str(directory / "work"),
        SPARK_CONF_DIR=str(directory / "conf"),  # empty: no stray spark-defaults.conf
        SPARK_LOCAL_DIRS=str(directory / "tmp"),
        SPARK_DAEMON_MEMORY="512m",
        SPARK_NO_DAEMONIZE="1",
    )
    return env


def _spawn(
    name: str, argv: Sequence[str], env: Mapping[str, str], directory: Path
) -> ClusterProcess:
    """Start ``argv`` in a new session with its output in ``logs/<name>.log``."""
    log_path = directory / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    log.info("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
    return ClusterProcess(name, proc.pid, psutil.Process(proc.pid).create_time(), str(log_path))


def _log_tail(process: ClusterProcess, lines: int = 30) -> str:
    try:
        text = Path(process.log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait(
    what: str, ready, processes: Sequence[ClusterProcess], timeout: float, interval: float = 0.3
) -> None:
    """Poll ``ready()`` until true; fail fast (with the log) when a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if not process.running():
                raise ClusterError(
                    f"{process.name} exited while waiting for {what}; its log "
                    f"{process.log}:\n{_log_tail(process)}"
                )
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(interval)
    raise ClusterError(
        f"timed out after {timeout:.0f} s waiting for {what}; logs: "
        + ", ".join(p.log for p in processes)
    )


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


# -- starting --------------------------------------------------------------------------


def start_spark_standalone(
    directory: Path,
    *,
    cores: int = 2,
    worker_memory: str = "2g",
    timeout: float = 120,
) -> ClusterState:
    """A standalone master and one worker (``cores`` cores, ``worker_memory`` for
    executors) in ``directory``; returns once the worker registered with the master.

    Args:
        directory: Where the state, logs and the worker's work dir go (created).
        cores: Cores the worker offers to applications.
        worker_memory: Memory the worker offers to executors (each asks 1g by default).
        timeout: Seconds to wait for the master and the worker.

    Returns:
        The running cluster; ``address`` is ``spark://127.0.0.1:PORT``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    env = spark_environment(directory)
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    address = f"spark://{HOST}:{port}"
    ui = f"http://{HOST}:{ui_port}"
    state = ClusterState("spark", address, str(directory), ui=ui)
    master = _spawn(
        "master",
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            HOST,
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        ],
        env,
        directory,
    )
    state.processes.append(master)
    state.save()
    try:
        _wait(
            "the Spark master",
            lambda: _json(f"{ui}/json/")["status"] == "ALIVE",
            [master],
            timeout,
        )
        worker = _spawn(
            "worker",
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                HOST,
                "--cores",
                str(cores),
                "--memory",
                worker_memory,
                "--webui-port",
                str(worker_ui),
                "--work-dir",
                str(directory / "work"),
                address,
            ],
            env,
            directory,
        )
        state.processes.append(worker)
        state.save()
        _wait(
            "the Spark worker to register",
            lambda: _json(f"{ui}/json/").get("aliveworkers", 0) >= 1,
            [master, worker],
            timeout,
        )
    except BaseException:
        stop(state)
        raise
    state.details = {"cores": str(cores), "worker_memory": worker_memory}
    state.save()
    log.info("Spark standalone cluster %s up (UI %s)", address, ui)
    return state


def start_spark_connect(
    directory: Path,
    *,
    conf: Mapping[str, str] | None = None,
    master: str = "local[2]",
    driver_memory: str = "1g",
    jdbc_jar: Path | None = POSTGRES_JDBC_JAR,
    timeout: float = 180,
) -> ClusterState:
    """A Spark Connect server (the wheel's ``spark-connect`` jar) on ``master``.

    The server is started as ``sbin/start-connect-server.sh --wait`` would start it, but
    directly through ``bin/spark-submit`` so that this module owns its process group. It
    runs with the application settings ``conf`` (the caller's: e.g. the cadastral
    pipeline's, :func:`bi_platform.cadastral.spark_config.connect_server_settings`), the
    PostgreSQL JDBC jar, and an event log under ``directory/events``.

    Args:
        directory: Where the state, logs, event log and scratch space go (created).
        conf: Spark settings of the applications the server runs (SQL tuning,
            serializer...); the server's own master, memory, jars, scratch space, gRPC
            binding and event log are set here and take precedence.
        master: The server's own master (``local[2]``, or a ``spark://`` cluster).
        driver_memory: Heap of the server JVM (which runs local-mode tasks too).
        jdbc_jar: PostgreSQL JDBC driver for the sync's JDBC reads (skipped if missing).
        timeout: Seconds to wait for the gRPC port.

    Returns:
        The running server; ``address`` is ``sc://127.0.0.1:PORT``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    env = spark_environment(directory)
    events = directory / "events"
    events.mkdir(exist_ok=True)
    port = free_port()
    settings = dict(conf or {})
    settings.update(
        {
            "spark.master": master,
            "spark.driver.memory": driver_memory,
            "spark.local.dir": str(directory / "tmp"),
            "spark.app.name": "bi_platform Spark Connect server",
            "spark.connect.grpc.binding.address": HOST,
            "spark.connect.grpc.binding.port": str(port),
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": events.as_uri(),
            # one plain JSON-lines file per application, readable without Spark
            "spark.eventLog.compress": "false",
            "spark.eventLog.rolling.enabled": "false",
        }
    )
    if jdbc_jar is not None and jdbc_jar.exists():
        settings["spark.jars"] = str(jdbc_jar)
    argv = [str(spark_home() / "bin" / "spark-submit"), "--class", CONNECT_SERVER_CLASS]
    for key, value in settings.items():
        argv += ["--conf", f"{key}={value}"]
    argv.append("spark-internal")
    address = f"sc://{HOST}:{port}"
    state = ClusterState("spark-connect", address, str(directory), event_log_dir=str(events))
    server = _spawn("connect-server", argv, env, directory)
    state.processes.append(server)
    state.save()
    try:
        _wait("the Spark Connect server", lambda: _port_open(HOST, port), [server], timeout)
    except BaseException:
        stop(state)
        raise
    state.details = {"master": master, "driver_memory": driver_memory}
    state.save()
    log.info("Spark Connect server %s up (master %s)", address, master)
    return state


def start_dask(
    directory: Path,
    *,
    workers: int = 2,
    threads: int = 1,
    memory_limit: str = "1GiB",
    timeout: float = 90,
) -> ClusterState:
    """A ``distributed`` scheduler and ``workers`` worker processes (behind nannies).

    Args:
        directory: Where the state, logs and the workers' spill directory go (created).
        workers: Worker processes.
        threads: Threads per worker process.
        memory_limit: Memory per worker process (spills, then pauses beyond it).
        timeout: Seconds to wait for every worker to connect.

    Returns:
        The running cluster; ``address`` is ``tcp://127.0.0.1:PORT``.
    """
    from distributed import Client

    directory.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    port = free_port()
    address = f"tcp://{HOST}:{port}"
    state = ClusterState("dask", address, str(directory))
    python = sys.executable
    scheduler = _spawn(
        "scheduler",
        [
            python,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-dashboard",
        ],
        env,
        directory,
    )
    state.processes.append(scheduler)
    state.save()
    try:
        _wait("the Dask scheduler", lambda: _port_open(HOST, port), [scheduler], timeout)
        worker = _spawn(
            "workers",
            [
                python,
                "-m",
                "distributed.cli.dask_worker",
                address,
                "--host",
                HOST,
                "--nworkers",
                str(workers),
                "--nthreads",
                str(threads),
                "--memory-limit",
                memory_limit,
                "--no-dashboard",
                "--local-directory",
                str(directory / "work"),
            ],
            env,
            directory,
        )
        state.processes.append(worker)
        state.save()
        with Client(address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=timeout)
    except BaseException:
        stop(state)
        raise
    state.details = {"workers": str(workers), "threads": str(threads), "memory": memory_limit}
    state.save()
    log.info("Dask cluster %s up (%d worker processes)", address, workers)
    return state


# -- stopping --------------------------------------------------------------------------


def stop(state: ClusterState, timeout: float = 30) -> list[str]:
    """Stop every process of ``state`` with everything it spawned: SIGTERM to each
    process group, then SIGKILL to whatever of it outlived ``timeout``.

    Only processes whose pid *and* start time match the saved state (and the
    descendants they have now) are signalled, so a reused pid is never hit. Returns the
    names of the processes that were running.
    """
    live = [p for p in reversed(state.processes) if p.running()]
    members: list[psutil.Process] = []
    for process in live:
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(process.pid)
            members += [leader, *leader.children(recursive=True)]
    for process in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            log.warning("pid %d (%s) outlived SIGTERM: killing it", proc.pid, proc.name())
            proc.kill()  # psutil checks it is still the same process first
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(OSError):
        (Path(state.directory) / STATE_FILE).unlink()
    stopped = [p.name for p in live]
    log.info("%s cluster stopped (%s)", state.kind, ", ".join(stopped) or "nothing was running")
    return stopped


# -- the CLI's operations --------------------------------------------------------------


def cluster_dir(root: Path, kind: str) -> Path:
    """``<root>/<kind>``: the directory of one kind of cluster."""
    if kind not in KINDS:
        raise ClusterError(f"unknown cluster kind {kind!r}; one of {', '.join(KINDS)}")
    return Path(root) / kind


def up(
    kind: str, root: Path, *, spark_conf: Mapping[str, str] | None = None
) -> tuple[ClusterState, bool]:
    """Start the ``kind`` cluster under ``root`` unless it is already running.

    Args:
        kind: one of :data:`KINDS`.
        root: the directory of every cluster's state.
        spark_conf: application settings of a ``spark-connect`` server (ignored by the
            other kinds).

    Returns:
        ``(state, started)``: ``started`` is False when a running cluster was found.
    """
    directory = cluster_dir(root, kind)
    existing = ClusterState.load(directory)
    if existing is not None:
        if existing.running():
            return existing, False
        stop(existing)  # a half-dead cluster: clear it before starting anew
    if kind == "spark-connect":
        return start_spark_connect(directory, conf=spark_conf), True
    starters = {"spark": start_spark_standalone, "dask": start_dask}
    return starters[kind](directory), True


def down(root: Path, kinds: Sequence[str] = KINDS) -> dict[str, list[str]]:
    """Stop the clusters of ``kinds`` under ``root``; ``{kind: stopped process names}``."""
    result: dict[str, list[str]] = {}
    for kind in kinds:
        state = ClusterState.load(cluster_dir(root, kind))
        if state is not None:
            result[kind] = stop(state)
    return result


def status(root: Path) -> dict[str, ClusterState | None]:
    """``{kind: state}`` of every kind; None when that cluster is not running."""
    found: dict[str, ClusterState | None] = {}
    for kind in KINDS:
        state = ClusterState.load(cluster_dir(root, kind))
        found[kind] = state if state is not None and state.running() else None
    return found


def describe(state: ClusterState) -> str:
    """One line for people: kind, address, processes, web UI and sizes."""
    processes = ", ".join(f"{p.name} pid {p.pid}" for p in state.processes)
    sizes = ", ".join(f"{k} {v}" for k, v in state.details.items())
    text = f"{state.kind}: {state.address} ({processes}"
    text += f"; {sizes})" if sizes else ")"
    if state.ui:
        text += f"; UI {state.ui}"
    return text
