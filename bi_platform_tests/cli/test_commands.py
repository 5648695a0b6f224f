"""The ``bi-platform`` command tree: every command and group where it always was, whichever
module of :mod:`bi_platform.cli` defines it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import click
from click.testing import CliRunner

from bi_platform.cli import main

COMMANDS = {
    "api-key": {"create", "list", "revoke"},
    "assets": None,
    "bench": {"cadastral", "engines", "etl", "news", "serving"},
    "cluster": {"down", "status", "up"},
    "delta": {"history", "restore"},
    "down": None,
    "env": None,
    "etl": {"register"},
    "materialize": None,
    "news": {"checkout", "log", "resync", "verify"},
    "seed": None,
    "serve": None,
    "status": None,
    "ui": None,
    "up": None,
}


def test_command_tree() -> None:
    tree = {
        name: set(cmd.commands) if isinstance(cmd, click.Group) else None
        for name, cmd in main.commands.items()
    }
    assert tree == COMMANDS


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name, subcommands in COMMANDS.items():
        for args in [[name]] + [[name, sub] for sub in sorted(subcommands or ())]:
            result = runner.invoke(main, [*args, "--help"])
            assert result.exit_code == 0, (args, result.output)
            assert "Usage:" in result.output


def test_module_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bi_platform.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bench" in done.stdout and "materialize" in done.stdout


def test_runtime_holds_no_cli() -> None:
    assert importlib.util.find_spec("bi_platform.runtime.cli") is None
