"""The API's HTML pages: the BI dashboard (``/``, ``/dashboard``) and the API docs
(``/docs``), shipped in the package (``bi_platform/serving/static/*.html``).

Each page is one self-contained file -- inline CSS, inline JavaScript, charts drawn as
inline SVG -- that loads nothing from anywhere: no CDN, no font, no image. It talks to
this server only (``fetch`` of ``/openapi.json`` and ``/api/v1/...``), with the API key
the user types, kept in ``sessionStorage`` and sent as the ``X-API-Key`` header, never in
a URL. The pages themselves hold no data, so they need no key.

Responses carry a Content-Security-Policy that allows exactly the page's own inline
``<script>`` and ``<style>`` blocks (by their SHA-256) and connections to this origin;
anything else (another origin, an injected script, a frame) is refused by the browser.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from starlette.responses import Response

__all__ = ["PAGES", "Page", "load_page", "page_response"]

#: The pages shipped in ``bi_platform/serving/static``.
PAGES = ("dashboard.html", "docs.html")
_BLOCK = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class Page:
    """One page: its bytes and the headers it is served with."""

    body: bytes
    headers: dict[str, str]


def _hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


@functools.cache
def load_page(name: str) -> Page:
    """The page ``name`` (one of :data:`PAGES`) with its Content-Security-Policy.

    Args:
        name: The file name under ``bi_platform/serving/static``.

    Returns:
        The page, read once per process.
    """
    if name not in PAGES:
        raise ValueError(f"unknown page {name!r}")
    text = resources.files("bi_platform.serving").joinpath("static", name).read_text("utf-8")
    scripts = [_hash(m.group(2)) for m in _BLOCK.finditer(text) if m.group(1) == "script"]
    styles = [_hash(m.group(2)) for m in _BLOCK.finditer(text) if m.group(1) == "style"]
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + (" ".join(scripts) or "'none'"),
            "style-src " + (" ".join(styles) or "'none'"),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }
    return Page(text.encode("utf-8"), headers)


def page_response(name: str) -> Response:
    """The HTML response of page ``name``.

    Args:
        name: One of :data:`PAGES`.

    Returns:
        The response (``text/html``, with the page's security headers).
    """
    page = load_page(name)
    return Response(page.body, media_type="text/html; charset=utf-8", headers=page.headers)
