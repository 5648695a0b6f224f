"""The Dagster UI in a real browser: `dagster-webserver` on the checkout's workspace.yaml
over the materialized platform, driven by headless Chromium (Debian's), and its GraphQL API.

Screenshots are left in ``test-artifacts/ui/``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from bi_platform.definitions import defs
from bi_platform.runtime.postgres import free_port
from bi_platform_tests.conftest import (
    ARTIFACTS_DIR,
    CHROMIUM_ARGS,
    REPO_ROOT,
    VENV_BIN,
    Platform,
    chromium_executable,
)

pytestmark = pytest.mark.browser

GROUPS = ("retail", "serving", "news", "cadastral", "etl")
SHOTS = ARTIFACTS_DIR / "ui"
#: Materializable assets that are not one table (no single column schema).
NOT_ONE_TABLE = {"news/news_reference_data", "serving/bi_warehouse", "etl/etl_report"}


@dataclass(frozen=True)
class WebServer:
    url: str

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.load(response)
        assert "errors" not in payload, payload["errors"]
        return payload["data"]


@pytest.fixture(scope="module")
def webserver(platform: Platform) -> Iterator[WebServer]:
    assert platform.materialize.returncode == 0, platform.materialize.stdout[-2000:]
    port = free_port()
    log = (platform.home / "webserver.log").open("w")
    process = subprocess.Popen(
        ["env", "--default-signal=INT,TERM", str(VENV_BIN / "dagster-webserver"),
         "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        env=platform.env, cwd=platform.home, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                    break
            except OSError:
                assert process.poll() is None, (platform.home / "webserver.log").read_text()
                assert time.monotonic() < deadline, "dagster-webserver did not answer in 120 s"
                time.sleep(1)
        yield WebServer(url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def browser_page(webserver: WebServer) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _open(page: Page, webserver: WebServer, path: str) -> None:
    page.goto(f"{webserver.url}{path}", wait_until="networkidle")


def test_the_asset_graph_shows_the_five_groups(browser_page: Page, webserver: WebServer) -> None:
    _open(browser_page, webserver, "/asset-groups")
    for group in GROUPS:
        expect(browser_page.get_by_text(group, exact=True).first).to_be_visible()
    browser_page.screenshot(path=SHOTS / "asset-graph.png")


@pytest.mark.parametrize("asset", ["retail/admmat", "news/news_pg", "cadastral/coletapedt001"])
def test_an_asset_page_shows_description_row_count_and_columns(
    browser_page: Page, webserver: WebServer, platform: Platform, asset: str
) -> None:
    graph = defs.resolve_asset_graph()
    key = next(k for k in graph.get_all_asset_keys() if k.to_user_string() == asset)
    description = graph.get(key).description
    _open(browser_page, webserver, f"/assets/{asset}")
    page = browser_page
    expect(page.get_by_text(description.split(".")[0], exact=False).first).to_be_visible()
    expect(page.get_by_text("Row count", exact=True).first).to_be_visible()
    expect(page.get_by_text("Columns", exact=True).first).to_be_visible()
    page.screenshot(path=SHOTS / f"asset-{asset.replace('/', '-')}.png", full_page=True)
    body = page.inner_text("body")
    if asset == "news/news_pg":  # the table as it is now, after the daily ingests
        with psycopg.connect(platform.env["DATABASE_URL"]) as conn:
            rows = conn.execute("SELECT count(*) FROM news").fetchone()[0]
        assert f"Row count\n{rows:,}" in body
        assert "content_hash" in body  # a column of the schema
    if asset == "retail/admmat":
        assert "NOMESEGMENTO" in body


def test_the_automation_page_lists_schedules_and_sensors(
    browser_page: Page, webserver: WebServer
) -> None:
    repository = defs.get_repository_def()
    names = [s.name for s in repository.schedule_defs] + [s.name for s in repository.sensor_defs]
    assert len(names) >= 8
    _open(browser_page, webserver, "/automation")
    for name in names:
        expect(browser_page.get_by_text(name, exact=True).first).to_be_visible()
    browser_page.screenshot(path=SHOTS / "automation.png", full_page=True)


ASSETS_QUERY = """
query {
  assetNodes {
    assetKey { path }
    description
    kinds
    isMaterializable
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    assetMaterializations(limit: 1) {
      metadataEntries {
        label
        ... on IntMetadataEntry { intValue }
        ... on TableSchemaMetadataEntry { schema { columns { name } } }
      }
    }
  }
}
"""


def test_graphql_every_asset_is_described_and_reports_rows_and_schema(
    webserver: WebServer, platform: Platform
) -> None:
    nodes = webserver.graphql(ASSETS_QUERY)["assetNodes"]
    assert len(nodes) == len(defs.resolve_asset_graph().get_all_asset_keys())
    problems = []
    for node in nodes:
        name = "/".join(node["assetKey"]["path"])
        for field in ("description", "kinds", "owners"):
            if not node[field]:
                problems.append(f"{name}: no {field}")
        if not node["isMaterializable"]:
            continue  # raw exports: written outside Dagster
        materializations = node["assetMaterializations"]
        if not materializations:
            problems.append(f"{name}: never materialized")
            continue
        entries = {e["label"]: e for e in materializations[0]["metadataEntries"]}
        if "dagster/row_count" not in entries:
            problems.append(f"{name}: no dagster/row_count")
        schema = entries.get("dagster/column_schema")
        if name not in NOT_ONE_TABLE and not (schema and schema["schema"]["columns"]):
            problems.append(f"{name}: no dagster/column_schema")
    assert problems == []
    by_name = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    latest = by_name["news/news_pg"]["assetMaterializations"][0]["metadataEntries"]
    rows = next(e["intValue"] for e in latest if e["label"] == "dagster/row_count")
    with psycopg.connect(platform.env["DATABASE_URL"]) as conn:
        assert rows == conn.execute("SELECT count(*) FROM news").fetchone()[0]
