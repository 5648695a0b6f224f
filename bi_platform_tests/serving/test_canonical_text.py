"""One segment, whatever its Unicode spelling: ``canonical_text`` (NFC, trimmed) on the API
keys (created by the store or ``bi-platform api-key create``, or read from an older file
with NFD values) and on every text the query API receives, against a real uvicorn server
with the in-process and the Redis cache."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from bi_platform.cli import main as cli
from bi_platform.retail.schema import SEGMENTS
from bi_platform.serving.auth import ApiKey, ApiKeyStore
from bi_platform.serving.queries import execute
from bi_platform.serving.text import canonical_text
from bi_platform_tests.serving.conftest import Deploy, Deployment

ARMARINHO = "ARMARINHO E CONFECÇÃO"
ARMARINHO_NFD = unicodedata.normalize("NFD", ARMARINHO)
CASA = "CASA E DECORAÇÃO"
CASA_NFD = unicodedata.normalize("NFD", CASA)
#: Whitespace a client or a spreadsheet may leave around a name.
PADDING = st.text(alphabet=" \t\n\r\u00a0\u2003\u3000", max_size=4)


def test_the_spellings_differ_and_the_segments_are_canonical() -> None:
    assert ARMARINHO_NFD != ARMARINHO and CASA_NFD != CASA
    assert all(canonical_text(s) == s for s in SEGMENTS)


# --------------------------------------------------------------------------------------
# canonical_text: properties
# --------------------------------------------------------------------------------------
@given(st.text())
def test_canonical_text_is_idempotent(value: str) -> None:
    once = canonical_text(value)
    assert canonical_text(once) == once
    assert unicodedata.is_normalized("NFC", once) and once == once.strip()


@given(st.text())
def test_canonical_text_ignores_the_normal_form(value: str) -> None:
    forms = {canonical_text(unicodedata.normalize(f, value)) for f in ("NFC", "NFD")}
    assert forms == {canonical_text(value)}


@given(
    st.sampled_from(SEGMENTS),
    st.sampled_from(["NFC", "NFD"]),
    PADDING,
    PADDING,
)
def test_every_spelling_of_a_segment_is_that_segment(
    segment: str, form: str, left: str, right: str
) -> None:
    assert canonical_text(left + unicodedata.normalize(form, segment) + right) == segment


def test_canonical_text_refuses_non_strings() -> None:
    with pytest.raises(TypeError):
        canonical_text(b"TECIDOS")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# API keys: stored NFC, older NFD files read NFC
# --------------------------------------------------------------------------------------
def test_a_key_created_with_the_nfd_spelling_is_stored_nfc(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    key, secret = ApiKeyStore(path).create("nfd", [ARMARINHO_NFD, f"  {ARMARINHO} ", "TECIDOS"])
    assert key.segments == (ARMARINHO, "TECIDOS")
    assert json.loads(path.read_text(encoding="utf-8"))["keys"][0]["segments"] == [
        ARMARINHO,
        "TECIDOS",
    ]
    assert ApiKeyStore(path).verify(secret) == key


def test_an_older_file_with_nfd_segments_is_read_nfc(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    store = ApiKeyStore(path)
    key, secret = store.create("old", [ARMARINHO])
    document = json.loads(path.read_text(encoding="utf-8"))
    document["keys"][0]["segments"] = [ARMARINHO_NFD, ARMARINHO, f" {CASA_NFD}"]
    path.write_text(json.dumps(document), encoding="utf-8")
    fresh = ApiKeyStore(path)
    read = fresh.verify(secret)
    assert read is not None and read.segments == (ARMARINHO, CASA)
    assert fresh.get(key.key_id).segments == (ARMARINHO, CASA)
    # the next write stores the canonical spelling
    fresh.revoke(key.key_id)
    assert json.loads(path.read_text(encoding="utf-8"))["keys"][0]["segments"] == [ARMARINHO, CASA]


def test_an_api_key_value_is_canonical_however_built() -> None:
    key = ApiKey("0123456789abcdef", "k", (ARMARINHO_NFD, "TECIDOS "), "2024-01-01", None)
    assert key.segments == (ARMARINHO, "TECIDOS")
    assert ApiKey("0123456789abcdef", "k", None, "2024-01-01", None).segments is None


def test_cli_create_accepts_an_nfd_or_padded_known_segment_and_stores_nfc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "keys.json"
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path))
    monkeypatch.setenv("SERVING_API_KEYS_FILE", str(keys_file))
    created = CliRunner().invoke(
        cli, ["api-key", "create", "--name", "nfd", "--segments", f"{ARMARINHO_NFD} , TECIDOS "]
    )
    assert created.exit_code == 0, created.output
    assert created.stdout.strip().startswith("bik_")
    (stored,) = ApiKeyStore(keys_file).list()
    assert stored.segments == (ARMARINHO, "TECIDOS")
    raw = json.loads(keys_file.read_text(encoding="utf-8"))["keys"][0]["segments"]
    assert raw == [ARMARINHO, "TECIDOS"]


def test_cli_create_still_refuses_an_unknown_segment_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "keys.json"
    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path))
    monkeypatch.setenv("SERVING_API_KEYS_FILE", str(keys_file))
    refused = CliRunner().invoke(
        cli, ["api-key", "create", "--name", "x", "--segments", f"{ARMARINHO_NFD},ARMARINHOS"]
    )
    assert refused.exit_code != 0
    assert "ARMARINHOS" in refused.output and "unknown segments" in refused.output
    assert ApiKeyStore(keys_file).list() == []


# --------------------------------------------------------------------------------------
# The query API
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["memory", "redis"])
def api(request: pytest.FixtureRequest, deploy: Deploy, redis_server: str) -> Deployment:
    deployment = deploy(request.param, redis=redis_server)
    deployment.add_key("armarinho", (ARMARINHO,))  # the NFC spelling
    deployment.add_key("armarinho-nfd", (ARMARINHO_NFD,))  # created with the NFD spelling
    return deployment


def _get(api: Deployment, name: str, key: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{api.url}/api/v1/queries/{name}", params=params, headers=api.headers(key), timeout=30
    )


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def _segment_column(body: dict[str, Any]) -> set[str]:
    index = body["columns"].index("NOMESEGMENTO")
    return {row[index] for row in body["rows"]}


def test_the_key_created_with_nfd_is_stored_nfc(api: Deployment) -> None:
    assert api.store.get(api.key_ids["armarinho-nfd"]).segments == (ARMARINHO,)


def test_segments_nfd_on_an_nfc_key_is_its_segment_one_result_one_cache_entry(
    api: Deployment,
) -> None:
    limite = str(random.randint(1, 1000))  # an entry no other test made
    nfc = _get(api, "top_products_by_une", "armarinho", segments=ARMARINHO, limite=limite)
    nfd = _get(api, "top_products_by_une", "armarinho", segments=ARMARINHO_NFD, limite=limite)
    padded = _get(
        api, "top_products_by_une", "armarinho", segments=f" {ARMARINHO_NFD}\t", limite=limite
    )
    nfc_body, nfd_body, padded_body = _ok(nfc), _ok(nfd), _ok(padded)
    assert [r.headers["x-cache"] for r in (nfc, nfd, padded)] == ["MISS", "HIT", "HIT"]
    assert nfc_body["rows"] and nfc_body["rows"] == nfd_body["rows"] == padded_body["rows"]
    assert _segment_column(nfc_body) == {ARMARINHO}
    # the same rows as an unrestricted key asking for the segment
    full = _ok(_get(api, "top_products_by_une", "full", segments=ARMARINHO_NFD, limite=limite))
    assert full["rows"] == nfc_body["rows"]


def test_segmento_nfd_of_its_own_segment_gets_its_rows(api: Deployment) -> None:
    limite = str(random.randint(1, 1000))
    expected = _ok(_get(api, "top_products_by_segment", "full", segmento=ARMARINHO, limite=limite))
    assert expected["rows"] and _segment_column(expected) == {ARMARINHO}
    cache = []
    for key in ("armarinho", "armarinho-nfd"):
        for spelling in (ARMARINHO_NFD, ARMARINHO, f"  {ARMARINHO_NFD} "):
            response = _get(api, "top_products_by_segment", key, segmento=spelling, limite=limite)
            assert _ok(response)["rows"] == expected["rows"], (key, spelling)
            cache.append(response.headers["x-cache"])
    # both keys read the same segment, in any spelling: one entry
    assert cache == ["MISS"] + ["HIT"] * 5


def test_the_nfd_created_key_reads_the_nfc_rows(api: Deployment) -> None:
    """Its default scope (no segments asked) is the segment's rows, not nothing."""
    own = _ok(_get(api, "segment_ranking_quarter", "armarinho-nfd"))
    assert _segment_column(own) == {ARMARINHO}
    assert own["rows"] == _ok(_get(api, "segment_ranking_quarter", "armarinho"))["rows"]


def test_a_different_segment_is_still_403_in_any_spelling(api: Deployment) -> None:
    for key in ("armarinho", "armarinho-nfd"):
        for params in (
            {"segments": CASA_NFD},
            {"segments": CASA},
            {"segments": f"{ARMARINHO_NFD},{CASA_NFD}"},
            {"segments": "TECIDOS"},
            {"segmento": CASA_NFD},
            {"segmento": "tecidos"},
        ):
            response = _get(api, "top_products_by_segment", key, **params)
            assert response.status_code == 403, (key, params, response.text)
            assert "rows" not in response.json()
    # a key restricted to TECIDOS cannot reach ARMARINHO through its NFD spelling
    for params in ({"segments": ARMARINHO_NFD}, {"segmento": ARMARINHO_NFD}):
        assert _get(api, "top_products_by_segment", "tecidos", **params).status_code == 403
    # a name that is not a segment in any spelling is still unknown
    response = _get(api, "sales_by_une", "armarinho", segments="ARMARINHO E CONFECCAO")
    assert response.status_code == 422 and response.json()["param"] == "segments"


def test_a_key_file_with_nfd_values_keeps_working(api: Deployment) -> None:
    """A key file written before the keys were canonical (NFD segments) is read NFC by
    the running server."""
    secret = api.add_key("older-file", (ARMARINHO,))
    document = json.loads(api.store.path.read_text(encoding="utf-8"))
    (entry,) = [k for k in document["keys"] if k["key_id"] == api.key_ids["older-file"]]
    entry["segments"] = [ARMARINHO_NFD]
    api.store.path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    written = json.loads(api.store.path.read_text(encoding="utf-8"))["keys"]
    assert [ARMARINHO_NFD] in [k["segments"] for k in written]
    headers = {"X-API-Key": secret}
    url = f"{api.url}/api/v1/queries/segment_ranking_quarter"
    rows = _ok(httpx.get(url, headers=headers, timeout=30))
    assert _segment_column(rows) == {ARMARINHO}
    asked = _ok(httpx.get(url, headers=headers, params={"segments": ARMARINHO_NFD}))
    assert asked["rows"] == rows["rows"]
    assert httpx.get(url, headers=headers, params={"segments": CASA}).status_code == 403


def test_execute_takes_the_segments_in_any_spelling(api: Deployment) -> None:
    pool = api.app.state.pool
    nfc = execute(pool, "top_products_by_segment", {"segmento": ARMARINHO}, segments=[ARMARINHO])
    nfd = execute(
        pool, "top_products_by_segment", {"segmento": ARMARINHO_NFD}, segments=[ARMARINHO_NFD]
    )
    assert nfc.table.num_rows > 0 and nfd.table.equals(nfc.table)
    assert nfd.params == nfc.params
