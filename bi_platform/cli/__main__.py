"""``python -m bi_platform.cli``: the ``bi-platform`` command."""

from bi_platform.cli import main

main()
