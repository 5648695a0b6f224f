"""Every Dagster command the README and `bi-platform --help` show users runs, as typed,
against the materialized platform: `dagster ...` and `dg ...` lines of the README's
```bash blocks and of every `bi-platform` command's help.

The commands run outside the checkout (so its .env cannot redirect them) with the
platform's environment; `dg` commands get `--target-path <checkout>` (in the checkout they find
the project by themselves).
"""

from __future__ import annotations

import re
import shlex

import click
import pytest

from bi_platform.cli import main
from bi_platform_tests.conftest import REPO_ROOT, Platform

#: Commands that start servers or need the daemon: run by test_daemon / test_ui_browser.
LONG_RUNNING = ("dagster dev", "dagster-daemon", "dagster-webserver", "dagster sensor start")
PROGRAMS = ("dagster ", "dg ")


def _commands(text: str) -> list[str]:
    """`dagster`/`dg` command lines of ``text`` (a trailing `# comment` dropped)."""
    found = []
    for raw in text.splitlines():
        line = raw.strip().removeprefix("$ ").removeprefix(".venv/bin/")
        if line.startswith(PROGRAMS) and not line.startswith(LONG_RUNNING):
            found.append(re.sub(r"\s+#.*$", "", line))
    return found


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    return [command for block in blocks for command in _commands(block)]


def help_commands() -> list[str]:
    """The `dagster`/`dg` lines in the help of every `bi-platform` command."""
    found = []

    def walk(command: click.Command, names: list[str]) -> None:
        with click.Context(command, info_name=" ".join(names)) as ctx:
            found.extend(_commands(command.get_help(ctx)))
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*names, name])

    walk(main, ["bi-platform"])
    return found


COMMANDS = sorted(set(readme_commands()) | set(help_commands()))


def test_the_readme_shows_selections_to_run() -> None:
    assert len(COMMANDS) >= 6
    assert any(c.startswith("dg launch --assets") for c in COMMANDS)
    assert any("--partition" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_users_type_runs(platform: Platform, command: str) -> None:
    assert platform.materialize.returncode == 0, platform.materialize.stdout[-2000:]
    argv = shlex.split(command)
    if argv[0] == "dg":
        argv = [*argv, "--target-path", str(REPO_ROOT)]
    result = platform.run(*argv, check=False, timeout=900)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
