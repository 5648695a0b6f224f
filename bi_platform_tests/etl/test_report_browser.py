"""The report in a real browser: headless Chromium (Debian's ``chromium``) opens it from disk,
makes no network request, draws the SVG charts, and leaves a full-page screenshot."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from bi_platform.etl.report import render_report
from bi_platform_tests.conftest import CHROMIUM_ARGS, chromium_executable
from bi_platform_tests.etl.test_report import realistic_context

logger = logging.getLogger(__name__)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(("viewport", "name"), [((1440, 900), "desktop"), ((390, 844), "mobile")])
def test_report_renders_offline_in_chromium(
    tmp_path: Path, viewport: tuple[int, int], name: str, record_property
) -> None:
    report = tmp_path / "report.html"
    report.write_text(render_report(realistic_context()), encoding="utf-8")
    screenshot = tmp_path / f"report-{name}.png"
    requests: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_load_state("networkidle")
            charts = page.locator("svg.chart")
            assert charts.count() == 4
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box is not None
                assert box["width"] > 150, (i, box)
                assert box["height"] > 40, (i, box)
            bars = page.locator("svg.chart rect.bar")
            assert bars.count() == 10 + 5  # top products + dead-letter reasons
            assert all((bars.nth(i).bounding_box() or {}).get("width", 0) > 0 for i in range(15))
            assert page.locator("svg.chart circle.est").count() == 2
            assert page.locator("svg.chart line.exact").count() == 2
            # Hostile product names are text, not markup: no script element, no alert.
            assert page.locator("script").count() == 0
            assert page.locator("img").count() == 0
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(10, 14, 39)"  # #0a0e27
            # Nothing wider than the viewport (responsive), tables scroll inside their card.
            overflow = page.evaluate("document.documentElement.scrollWidth") - viewport[0]
            assert overflow <= 1, f"page is {overflow}px wider than the viewport"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert requests == [report.as_uri()], f"unexpected requests: {requests}"
    data = screenshot.read_bytes()
    width, height = png_size(data)
    assert width == viewport[0]
    assert height > viewport[1]  # a full page, longer than one screen
    assert len(data) > 50_000
    record_property(f"screenshot_{name}", str(screenshot))
    logger.info("report screenshot (%s): %s", name, screenshot)
