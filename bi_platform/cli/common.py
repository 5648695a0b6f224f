"""What every command module of the CLI shares."""

from __future__ import annotations

import sys
from typing import NoReturn

import click


def fail(exc: Exception) -> NoReturn:
    """Print ``error: EXC`` to stderr and exit 1."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)
