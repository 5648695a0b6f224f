"""API keys: hashed storage, verification, revocation seen by other store instances
(other processes), malformed input and concurrent writers."""

from __future__ import annotations

import json
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bi_platform.serving.auth import (
    ApiKey,
    ApiKeyStore,
    ApiKeyStoreError,
    UnknownApiKeyError,
)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "serving" / "api_keys.json"


def test_create_stores_only_the_hash_in_a_private_file(
    keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ApiKeyStore(keys_file)
    with caplog.at_level("DEBUG"):
        key, secret = store.create("finance team", ["SEG B", "SEG A", "SEG B"])
    assert secret.startswith(f"bik_{key.key_id}_") and len(secret) > 50
    assert key.segments == ("SEG A", "SEG B") and key.revoked_at is None
    assert key.name == "finance team" and key.created_at
    text = keys_file.read_text()
    assert secret not in text and secret.split("_", 2)[2] not in text
    document = json.loads(text)
    assert document["keys"][0]["key_id"] == key.key_id
    assert len(document["keys"][0]["sha256"]) == 64
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert secret not in caplog.text and key.key_id in caplog.text
    assert store.verify(secret) == key
    assert "bik_" not in repr(key)


def test_verify_rejects_unknown_malformed_and_tampered_secrets(keys_file: Path) -> None:
    store = ApiKeyStore(keys_file)
    key, secret = store.create("ops", None)
    assert store.verify(secret) == key and key.segments is None
    other_store = ApiKeyStore(keys_file.with_name("other.json"))
    _, foreign = other_store.create("elsewhere", None)
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    bad = [
        "",
        "bik_",
        foreign,
        tampered,
        secret + "x",
        " " + secret,
        secret.upper(),
        f"bik_{key.key_id}_' OR '1'='1",
        "' OR 1=1; --",
        "bik_" + "0" * 16 + "_" + "a" * 43,
        "x" * 10_000,
        "bik_ü" + secret[5:],
        None,
        12345,
        b"bytes",
    ]
    for candidate in bad:
        assert store.verify(candidate) is None, candidate  # type: ignore[arg-type]


def test_revocation_is_seen_by_a_store_that_already_loaded_the_file(keys_file: Path) -> None:
    server_side = ApiKeyStore(keys_file)  # a running API worker
    cli_side = ApiKeyStore(keys_file)  # `bi-platform api-key revoke` in another process
    key, secret = cli_side.create("analyst", ["SEG A"])
    _, other_secret = cli_side.create("another", None)
    assert server_side.verify(secret) == key
    revoked = cli_side.revoke(key.key_id)
    assert revoked.revoked_at is not None and revoked.key_id == key.key_id
    assert server_side.verify(secret) is None
    assert server_side.verify(other_secret) is not None
    assert cli_side.revoke(key.key_id) == revoked  # idempotent, first time kept
    listed = {k.key_id: k for k in server_side.list()}
    assert listed[key.key_id].revoked and listed[key.key_id].segments is not None
    assert server_side.get(key.key_id) == revoked
    with pytest.raises(UnknownApiKeyError):
        cli_side.revoke("0123456789abcdef")
    with pytest.raises(UnknownApiKeyError):
        server_side.get("nope")


def test_invalid_key_definitions_are_rejected(keys_file: Path) -> None:
    store = ApiKeyStore(keys_file)
    with pytest.raises(ValueError):
        store.create("", None)
    with pytest.raises(ValueError):
        store.create("empty segments", [])
    with pytest.raises(ValueError):
        store.create("blank segment", ["SEG A", "  "])
    with pytest.raises(TypeError):
        store.create("string segments", "SEG A")  # type: ignore[arg-type]
    assert store.list() == []
    assert ApiKeyStore(keys_file).verify("bik_0123456789abcdef_" + "a" * 43) is None


def test_a_corrupt_file_fails_closed(keys_file: Path) -> None:
    store = ApiKeyStore(keys_file)
    _, secret = store.create("ops", None)
    assert store.verify(secret) is not None
    time.sleep(0.01)
    keys_file.write_text("{not json")
    assert store.verify(secret) is None
    with pytest.raises(ApiKeyStoreError):
        store.create("another", None)
    with pytest.raises(ApiKeyStoreError):
        store.list()


def test_concurrent_creates_from_two_stores_keep_every_key(keys_file: Path) -> None:
    stores = [ApiKeyStore(keys_file), ApiKeyStore(keys_file)]

    def create(i: int) -> tuple[ApiKey, str]:
        return stores[i % 2].create(f"user {i}", [f"SEG {i % 3}"])

    with ThreadPoolExecutor(max_workers=8) as executor:
        created = list(executor.map(create, range(24)))
    fresh = ApiKeyStore(keys_file)
    assert len(fresh.list()) == 24
    for key, secret in created:
        assert fresh.verify(secret) == key


def test_verify_is_fast(keys_file: Path) -> None:
    store = ApiKeyStore(keys_file)
    secrets = [store.create(f"k{i}", None)[1] for i in range(20)]
    started = time.perf_counter()
    for i in range(5_000):
        assert store.verify(secrets[i % 20]) is not None
    per_call = (time.perf_counter() - started) / 5_000
    assert per_call < 200e-6, f"verify took {per_call * 1e6:.0f} µs"
