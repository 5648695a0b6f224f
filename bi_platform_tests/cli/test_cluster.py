"""`bi-platform cluster up|status|down` through the installed CLI: each kind of local
cluster outlives the command that started it, answers on the printed address, is found
again by a second `up`, and `down` leaves none of its processes (executors, nannies and
Python workers included)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from bi_platform.runtime import clusters
from bi_platform_tests.conftest import bi_platform_cli

pytestmark = pytest.mark.cluster


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bi_platform_cli(), "cluster", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _said(done: subprocess.CompletedProcess, prefix: str) -> bool:
    """A line of the command's stderr (the log lines aside) starts with ``prefix``."""
    return any(line.startswith(prefix) for line in done.stderr.splitlines())


def _assert_answers(kind: str, address: str, state: clusters.ClusterState) -> None:
    """The cluster does what its kind promises, reached through ``address`` only."""
    if kind == "spark":
        assert state.ui is not None
        master = clusters._json(f"{state.ui}/json/")
        assert master["url"] == address and master["status"] == "ALIVE"
        assert master["aliveworkers"] == 1 and master["cores"] == 2
    elif kind == "spark-connect":
        # A Connect client in its own process (a client turns this process Connect-only).
        code = (
            "import sys; from pyspark.sql import SparkSession; "
            "s = SparkSession.builder.remote(sys.argv[1]).getOrCreate(); "
            "print(s.range(1000).selectExpr('sum(id) AS t').first()['t'])"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, address],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split()[-1] == str(sum(range(1000)))
    else:
        from distributed import Client

        with Client(address, timeout=30, set_as_default=False) as client:
            pids = client.run(os.getpid)
            assert len(pids) == 2 and os.getpid() not in pids.values()
            assert client.submit(sum, [1, 2, 3]).result() == 6


@pytest.mark.parametrize("kind", clusters.KINDS)
def test_cluster_up_status_down(kind: str) -> None:
    home = Path(tempfile.mkdtemp(prefix="bi_home_cluster_"))
    env = {**os.environ, "BI_PLATFORM_HOME": str(home)}
    root = home / "clusters"
    try:
        up = _cli(env, "up", kind)
        assert up.returncode == 0, up.stderr[-3000:]
        assert _said(up, f"started {kind}: ")
        variable, _, address = up.stdout.strip().removeprefix("export ").partition("=")
        assert variable == clusters.ENV_VARS[kind]
        state = clusters.ClusterState.load(root / kind)
        assert state is not None and state.address == address
        assert state.running()  # the command exited, the cluster did not
        _assert_answers(kind, address, state)

        status = json.loads(_cli(env, "status", "--json").stdout)
        assert status[kind] == {"address": address, "env": {variable: address}}
        assert [k for k, v in status.items() if v is None] == [
            k for k in clusters.KINDS if k != kind
        ]

        again = _cli(env, "up", kind)
        assert again.returncode == 0 and _said(again, f"already running {kind}: ")
        assert again.stdout == up.stdout

        tree = [psutil.Process(p.pid) for p in state.processes]
        tree += [child for proc in list(tree) for child in proc.children(recursive=True)]
        down = _cli(env, "down", kind)
        assert down.returncode == 0, down.stderr[-3000:]
        assert down.stdout.startswith(f"{kind}: stopped ")
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert alive == [], [p.info for p in alive]
        assert clusters.ClusterState.load(root / kind) is None
        assert f"{kind}: not running" in _cli(env, "status").stdout
        assert _cli(env, "down").returncode == 0  # nothing left: still fine
    finally:
        clusters.down(root)
        time.sleep(0.1)
        shutil.rmtree(home, ignore_errors=True)
