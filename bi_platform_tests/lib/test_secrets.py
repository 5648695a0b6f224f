"""Secrets kept out of logs: URL password masking and token redaction."""

from __future__ import annotations

import pytest

from bi_platform.lib.secrets import mask_password, redact


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://postgres@127.0.0.1:5432/db", "postgresql://postgres@127.0.0.1:5432/db"),
        ("postgresql://u:s3cr%40t@db.example:5432/x", "postgresql://u:***@db.example:5432/x"),
        ("postgresql://u:p@h/x?sslmode=require", "postgresql://u:***@h/x?sslmode=require"),
    ],
)
def test_mask_password(url: str, masked: str) -> None:
    assert mask_password(url) == masked


def test_redact_replaces_every_occurrence() -> None:
    assert redact("token abc in abc", "abc") == "token *** in ***"
    assert redact("nothing", None) == "nothing"
    assert redact("nothing", "") == "nothing"
