"""The API documentation loads nothing from another origin.

/docs lives on the origin whose sessionStorage holds the seller's admin token and the buyers'
session tokens: a script from a CDN there could read them. Its Swagger UI assets come from the
project's own pinned, hashed package, under the same Content-Security-Policy as the portal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Request, Route, sync_playwright

from broker_auth.portal.mount import CONTENT_SECURITY_POLICY
from testing.broker_auth import AuthStack
from tests.broker_auth.conftest import AuthStackFactory
from tests.portal.conftest import CHROMIUM, CHROMIUM_ARGS

ASSET = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    return auth_stack_factory("docs")


def same_origin(stack: AuthStack, url: str) -> bool:
    a, b = urlsplit(url), urlsplit(stack.api_url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def check_page(stack: AuthStack, path: str) -> list[str]:
    """The page's asset URLs; each one on this origin and served."""
    page_url = stack.api_url + path
    r = httpx.get(page_url, timeout=15)
    assert r.status_code == 200, (path, r.status_code)
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    # The policy allows no inline script: the page has none (it would not run).
    assert not INLINE_SCRIPT.search(r.text), INLINE_SCRIPT.findall(r.text)
    assets = [urljoin(page_url, a) for a in ASSET.findall(r.text)]
    assert assets, r.text
    for url in assets:
        assert same_origin(stack, url), f"{path} references {url}"
        got = httpx.get(url, timeout=15)
        assert got.status_code == 200, (url, got.status_code)
        assert got.content
    return assets


def test_docs_reference_only_their_own_origin(stack: AuthStack) -> None:
    assets = check_page(stack, "/docs")
    names = {Path(urlsplit(a).path).name for a in assets}
    assert {"swagger-ui-bundle.js", "swagger-ui.css"} <= names, names
    # ReDoc needs inline styles the policy forbids: it is not served.
    assert httpx.get(f"{stack.api_url}/redoc", timeout=15).status_code == 404
    assert httpx.get(f"{stack.api_url}/openapi.json", timeout=15).status_code == 200


def test_docs_assets_are_only_the_listed_files(stack: AuthStack) -> None:
    for probe in ("index.html", "../mount.py", "%2e%2e/api.py", "nope.js"):
        r = httpx.get(f"{stack.api_url}/docs/assets/{probe}", timeout=15)
        assert r.status_code == 404, (probe, r.status_code)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_swagger_ui_renders_with_no_request_elsewhere(stack: AuthStack, chromium: Browser) -> None:
    """Every request that leaves the origin is aborted and recorded: none may be attempted."""
    context = chromium.new_context()
    elsewhere: list[str] = []
    local: list[str] = []

    def route(r: Route, request: Request) -> None:
        if same_origin(stack, request.url):
            local.append(request.url)
            r.continue_()
        else:
            elsewhere.append(request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{stack.api_url}/docs")
    page.wait_for_selector(".swagger-ui .information-container .title", timeout=30_000)
    assert "broker_auth" in page.inner_text(".swagger-ui .information-container .title")
    page.wait_for_function("document.querySelectorAll('.opblock').length > 10", timeout=30_000)
    # Try one operation out: its details render and the call goes to this origin.
    products = page.locator(".opblock-get").filter(has_text="/api/products").first
    products.locator(".opblock-summary").click()
    products.locator(".try-out__btn").click()
    products.locator(".execute").click()
    status = products.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=10_000)
    assert status.inner_text().strip() == "200"
    operations = page.locator(".opblock").count()
    context.close()
    print(f"\n/docs: {operations} operations, {len(local)} requests to the origin")
    assert elsewhere == [], elsewhere
    assert any(u.endswith("/openapi.json") for u in local), local
    assert problems == [], problems  # no CSP violation, no script error
