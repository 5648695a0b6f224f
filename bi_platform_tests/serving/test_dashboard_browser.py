"""The BI dashboard (``GET /``) in headless Chromium against a live API: a user types a
key restricted to TECIDOS, the page draws its charts and tables from the API with that
key (kept in sessionStorage, never in a URL), no other segment appears anywhere, the
page asks nothing of any other origin, and a screenshot is left in
``test-artifacts/serving/``."""

from __future__ import annotations

import logging
import re

import pytest
from playwright.sync_api import expect, sync_playwright

from bi_platform.retail.schema import SEGMENTS
from bi_platform_tests.conftest import ARTIFACTS_DIR, CHROMIUM_ARGS, chromium_executable
from bi_platform_tests.serving.conftest import Deploy, Deployment

logger = logging.getLogger(__name__)

SCREENSHOTS = ARTIFACTS_DIR / "serving"


@pytest.fixture(scope="module")
def api(deploy: Deploy) -> Deployment:
    return deploy("memory")


def _other_segments_in(text: str, allowed: set[str]) -> list[str]:
    return [
        segment
        for segment in SEGMENTS
        if segment not in allowed and re.search(rf"(?<![\w]){re.escape(segment)}(?![\w])", text)
    ]


@pytest.mark.parametrize(("viewport", "label"), [((1440, 1000), "desktop"), ((390, 844), "mobile")])
def test_the_dashboard_renders_a_restricted_keys_segment_only(
    api: Deployment, viewport: tuple[int, int], label: str
) -> None:
    secret = api.secrets["tecidos"]
    requests: list[str] = []
    api_calls: list[tuple[str, str | None]] = []
    console_errors: list[str] = []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("request", lambda request: requests.append(request.url))
            page.on(
                "request",
                lambda request: (
                    api_calls.append((request.url, request.headers.get("x-api-key")))
                    if "/api/v1/" in request.url
                    else None
                ),
            )
            page.on(
                "console",
                lambda message: (
                    console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            page.goto(api.url + "/", wait_until="load")
            assert page.locator("body").get_attribute("data-state") == "idle"
            page.fill("#key", secret)
            page.click("#load")
            page.wait_for_selector("body[data-state='ready']", timeout=30_000)

            # every widget loaded (none in error)
            widgets = page.locator("main section.card")
            assert widgets.count() == 8
            for i in range(widgets.count()):
                assert widgets.nth(i).get_attribute("data-loaded") == "true", (
                    widgets.nth(i).get_attribute("id"),
                    widgets.nth(i).inner_text()[:300],
                )
            # charts drawn with real geometry
            charts = page.locator("svg.chart")
            assert charts.count() >= 7
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box is not None and box["width"] > 150 and box["height"] > 10, (i, box)
            bars = page.locator("svg.chart rect.bar")
            assert bars.count() > 10
            widths = [float(bars.nth(i).get_attribute("width") or 0) for i in range(bars.count())]
            assert max(widths) > 100
            lines = page.locator("#w-months svg polyline.series")
            assert lines.count() == 1  # one segment readable: one line
            points = (lines.first.get_attribute("points") or "").split()
            assert len(points) == 12  # twelve months
            assert page.locator("table tbody tr").count() > 20

            # row-level security: TECIDOS only, everywhere on the page
            tagged = page.eval_on_selector_all(
                "[data-segment]", "nodes => nodes.map(n => n.dataset.segment)"
            )
            assert tagged and set(tagged) == {"TECIDOS"}
            options = page.eval_on_selector_all("#segment option", "os => os.map(o => o.value)")
            assert options == ["", "TECIDOS"]
            text = page.inner_text("body")
            assert "TECIDOS" in text
            assert _other_segments_in(text, {"TECIDOS"}) == []
            assert _other_segments_in(page.content(), {"TECIDOS"}) == []

            # the key: in sessionStorage, sent as a header, never in a URL or the page
            stored = page.evaluate("sessionStorage.getItem('bi_api_key')")
            assert stored == secret
            assert page.input_value("#key") == ""
            assert api_calls and all(key == secret for _, key in api_calls)
            assert all(secret not in url for url in requests)
            assert secret not in page.content()
            assert all(url.startswith(api.url) for url in requests), requests
            assert console_errors == [], console_errors

            # the segment filter re-renders from the API
            page.select_option("#segment", "TECIDOS")
            page.wait_for_selector("body[data-state='ready']", timeout=30_000)
            assert page.locator("#w-months svg polyline.series").count() == 1

            overflow = page.evaluate("document.documentElement.scrollWidth") - viewport[0]
            assert overflow <= 1, f"page is {overflow}px wider than the viewport"
            screenshot = SCREENSHOTS / f"dashboard-tecidos-{label}.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
            logger.info("dashboard screenshot: %s", screenshot)

            # forgetting the key clears it; a reload does not log back in
            page.click("#forget")
            assert page.evaluate("sessionStorage.getItem('bi_api_key')") is None
        finally:
            browser.close()


def test_a_refused_key_is_reported_and_not_kept(api: Deployment) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(api.url + "/dashboard", wait_until="load")
            page.fill("#key", "bik_0123456789abcdef_" + "A" * 43)
            page.click("#load")
            page.wait_for_selector("body[data-state='error']", timeout=30_000)
            assert "refused" in page.inner_text("#status")
            assert page.evaluate("sessionStorage.getItem('bi_api_key')") is None
            assert page.locator("svg.chart").count() == 0
        finally:
            browser.close()


def test_the_docs_page_renders_every_operation(api: Deployment) -> None:
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(api.url + "/docs", wait_until="load")
            page.wait_for_selector("body[data-state='ready']", timeout=30_000)
            assert page.locator("details.op").count() == 25 + 1 + 3 * 2
            page.fill("#key", api.secrets["full"])
            page.click("#save")
            op = page.locator("#op-top_products_by_une")
            op.locator("summary").click()
            op.locator("button", has_text="Send").click()
            expect(op.locator("pre")).to_contain_text("\n200 application/json", timeout=30_000)
            assert '"rows"' in op.locator("pre").inner_text()
            assert all(url.startswith(api.url) for url in requests), requests
            assert all(api.secrets["full"] not in url for url in requests)
            page.screenshot(path=str(SCREENSHOTS / "docs.png"), full_page=False)
        finally:
            browser.close()
