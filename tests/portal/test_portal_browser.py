"""The portal in headless Chromium against the real stack: John registers, orders, pays on the
devnet, watches his order get confirmed and the raw stream arrive next to the free average."""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.request

from playwright.sync_api import Browser, Page, expect

from broker_auth.ledger import ternary
from tests.devnet_fixture import TEST_MWM
from tests.portal.conftest import ARTIFACTS, DEMO_PRODUCT, PortalStack

ORDER_HOURS = 0.01  # 5 iota at the demo price of 500 iota/h: 36 s of access
ORDER_AMOUNT = 5
ACCESS_S = 36
DOM_TIMEOUT_MS = 30_000

# Records every status the page shows, to check the order went forward only.
WATCH_STATUSES = """() => {
  const el = document.getElementById("order-status");
  window.__statuses = [el.dataset.status];
  new MutationObserver(() => {
    const s = el.dataset.status;
    if (window.__statuses[window.__statuses.length - 1] !== s) window.__statuses.push(s);
  }).observe(el, { attributes: true, childList: true, characterData: true, subtree: true });
}"""

# How many pixels of the chart are close to a colour (the series are drawn in --avg / --raw).
COLOUR_PIXELS = """([r, g, b]) => {
  const c = document.getElementById("chart");
  const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 60) n++;
  }
  return n;
}"""


def series_count(page: Page, kind: str) -> int:
    cell = page.locator(f'#series-body tr[data-kind="{kind}"] td.count')
    return sum(int(text) for text in cell.all_inner_texts())


def wait_series(page: Page, kind: str, at_least: int) -> None:
    page.wait_for_function(
        """([kind, n]) => [...document.querySelectorAll(
             `#series-body tr[data-kind="${kind}"] td.count`)]
             .reduce((sum, td) => sum + Number(td.textContent), 0) >= n""",
        arg=[kind, at_least],
        timeout=DOM_TIMEOUT_MS,
    )


def open_portal(browser: Browser, stack: PortalStack) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(stack.api_url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=DOM_TIMEOUT_MS)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def test_buyer_orders_pays_and_sees_live_data(portal_stack: PortalStack, browser: Browser) -> None:
    from wallet.payments import fund_from_faucet, pay

    page = open_portal(browser, portal_stack)

    # Catalog, and the free average flowing before anyone logs in (anonymous MQTT).
    row = page.locator(f'#catalog-body tr[data-product="{DEMO_PRODUCT}"]')
    expect(row).to_contain_text("500 i/h")
    expect(row).to_contain_text("live/plug-1/#")
    wait_series(page, "avg", 1)
    expect(page.locator('#series-body tr[data-kind="avg"]').first).to_contain_text(
        "avg/1m/plug-1/power"
    )
    assert series_count(page, "raw") == 0

    # Register in the page: that logs in too (POST /api/sessions: a session token).
    username = f"john{secrets.token_hex(3)}"
    page.fill("#username", username)
    password = "correct-horse-" + secrets.token_hex(4)
    page.fill("#password", password)
    page.click("#register-button")
    expect(page.locator("#account-info")).to_be_visible(timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#session-user")).to_have_text(f"Logged in as {username}")
    expect(page.locator("#grant-list")).to_contain_text("No active grant")

    # Order: payment instructions with address, tag, amount, link, QR and wallet command.
    page.select_option("#order-product", DEMO_PRODUCT)
    page.fill("#order-hours", str(ORDER_HOURS))
    expect(page.locator("#order-estimate")).to_contain_text(f"Costs {ORDER_AMOUNT} i")
    page.click("#order-button")
    expect(page.locator("#payment-details")).to_be_visible(timeout=DOM_TIMEOUT_MS)
    page.evaluate(WATCH_STATUSES)
    amount = int(page.inner_text("#pay-amount-value"))
    address = page.inner_text("#pay-address")
    tag = page.inner_text("#pay-tag")
    assert amount == ORDER_AMOUNT
    assert address in portal_stack.pool
    assert re.fullmatch(r"[9A-Z]{27}", tag), tag
    link = f"iota:{address}?amount={amount}&tag={tag}"
    assert page.inner_text("#pay-link") == link
    assert page.get_attribute("#pay-link", "href") == link
    command = page.inner_text("#pay-command")
    assert command.startswith("iot-wallet pay ") and "--seed-file " in command
    assert f"--address {address}" in command and f"--tag {tag}" in command
    assert f"--amount {amount}" in command and portal_stack.node_url in command
    assert command.endswith(f"--mwm {TEST_MWM}")  # Hornet refuses pyota's default weight
    qr_dark = page.evaluate(
        """() => { const c = document.getElementById("pay-qr");
          const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 50) n++; return n; }"""
    )
    assert qr_dark > 1000, qr_dark
    expect(page.locator("#order-status")).to_have_text("pending")

    # John pays from his own seed on the devnet.
    seed = "".join(secrets.choice(ternary.ALPHABET) for _ in range(81))
    fund_from_faucet(portal_stack.faucet_url, portal_stack.node_url, seed, 1000)
    pay(portal_stack.node_url, seed, address, tag, amount)

    expect(page.locator("#order-status")).to_have_text("confirmed", timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#order-paid")).to_have_text(str(amount))
    expect(page.locator("#order-confirmed")).to_have_text(str(amount))
    statuses = page.evaluate("() => window.__statuses")
    steps = ["pending", "unconfirmed", "confirmed"]
    assert statuses[0] == "pending" and statuses[-1] == "confirmed", statuses
    assert [steps.index(s) for s in statuses] == sorted({steps.index(s) for s in statuses})
    print(f"statuses seen by the page: {statuses}")
    expect(page.locator("#order-steps li.done")).to_have_count(3)

    # The grant with its countdown, then the raw stream over the buyer's MQTT connection.
    countdown = page.locator(f'#grant-list li[data-product="{DEMO_PRODUCT}"] .countdown')
    expect(countdown).to_have_text(re.compile(r"^\d\dm \d\ds$"), timeout=DOM_TIMEOUT_MS)
    minutes, seconds = map(int, re.findall(r"\d+", countdown.inner_text()))
    assert 0 < minutes * 60 + seconds <= ACCESS_S
    wait_series(page, "raw", 4)
    expect(page.locator('#series-body tr[data-kind="raw"]').first).to_contain_text(
        "live/plug-1/power"
    )
    expect(page.locator("#mqtt-status")).to_contain_text("live stream")
    before = series_count(page, "avg")
    wait_series(page, "avg", before + 1)  # the average keeps coming too
    page.wait_for_timeout(1500)  # let the chart draw a few more frames for the screenshot
    assert page.evaluate(COLOUR_PIXELS, [0xD9, 0x48, 0x0F]) > 30  # raw line
    assert page.evaluate(COLOUR_PIXELS, [0x2F, 0x6F, 0xDF]) > 30  # average steps

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "portal.png"), full_page=True)

    # Access ends by itself: the grant leaves the list and the raw stream stops.
    expect(page.locator("#grant-list")).to_contain_text(
        "No active grant", timeout=(ACCESS_S + 15) * 1000
    )
    expect(page.locator('#series-body tr[data-kind="raw"] td.updated')).to_have_text("access ended")
    stopped_at = series_count(page, "raw")
    page.wait_for_timeout(2000)
    assert series_count(page, "raw") == stopped_at

    # The page keeps a session token, never the password: a reload keeps the session and the
    # order (sessionStorage); logging out revokes the token and forgets both.
    stored = page.evaluate("() => JSON.stringify(Object.entries(sessionStorage))")
    assert password not in stored and "token" in stored, stored
    mqtt_password = page.inner_text("#mqtt-password")
    assert len(mqtt_password) >= 32 and mqtt_password not in stored
    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#session-user")).to_have_text(f"Logged in as {username}")
    expect(page.locator("#order-status")).to_have_text("confirmed", timeout=DOM_TIMEOUT_MS)
    token = json.loads(page.evaluate("() => sessionStorage.getItem('portal.session')"))["token"]
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#payment-details")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0
    revoked = urllib.request.Request(
        f"{portal_stack.api_url}/api/grants", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        urllib.request.urlopen(revoked, timeout=10)
        raise AssertionError("the session token still works after logging out")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


def test_wrong_password_is_refused(portal_stack: PortalStack, browser: Browser) -> None:
    page = open_portal(browser, portal_stack)
    page.fill("#username", "nobody-here")
    page.fill("#password", "not-the-password")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_have_text(
        "Wrong username or password.", timeout=DOM_TIMEOUT_MS
    )
    expect(page.locator("#account-info")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0
    page.close()


def test_api_is_not_shadowed_and_config_names_the_ws_port(portal_stack: PortalStack) -> None:
    def get(path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(portal_stack.api_url + path, timeout=5) as r:
            return int(r.status), r.read()

    assert get("/healthz")[0] == 200
    assert json.loads(get("/openapi.json")[1])["paths"]
    assert get("/docs")[0] == 200
    assert get("/metrics")[0] == 200
    assert any(p["id"] == DEMO_PRODUCT for p in json.loads(get("/api/products")[1]))
    config = json.loads(get("/portal-config.json")[1])
    assert config["mqtt_ws_url"] == f"ws://127.0.0.1:{portal_stack.ws_port}"
    assert config["iota_node_url"] == portal_stack.node_url


def test_page_helpers(portal_stack: PortalStack, browser: Browser) -> None:
    """The small pure functions of the page's modules, run in the browser itself."""
    page = open_portal(browser, portal_stack)
    result = page.evaluate(
        """async () => {
          const live = await import(new URL("portal/js/live.js", document.baseURI).href);
          const pay = await import(new URL("portal/js/payment.js", document.baseURI).href);
          const cfg = { live_topic_prefix: "live", avg_topic_prefix: "avg", avg_window: "1m" };
          const now = Date.parse("2024-05-01T12:00:00Z");
          return {
            avg: live.avgFilterFor("live/plug-1/#", cfg),
            avgPlus: live.avgFilterFor("live/+/power", cfg),
            match: [
              live.topicMatches("live/plug-1/#", "live/plug-1/power"),
              live.topicMatches("live/+/power", "live/plug-2/power"),
              live.topicMatches("live/plug-1/#", "live/plug-2/power"),
              live.topicMatches("avg/1m/plug-1/power", "avg/1m/plug-1/power/x"),
            ],
            bare: live.parseReading("1234.5", now),
            secs: live.parseReading('{"value": 2, "ts": 1714564790.5}', now),
            millis: live.parseReading('{"value": 3, "ts": 1714564790500}', now),
            rfc: live.parseReading('{"value": 4, "ts": "2024-05-01T11:59:50Z"}', now),
            future: live.parseReading('{"value": 5, "ts": 1914564790}', now),
            bad: [live.parseReading("nan", now), live.parseReading("{}", now),
                  live.parseReading("abc", now)],
            link: pay.paymentLink({ address: "A".repeat(81), amount_iota: 7, tag: "T".repeat(27) }),
          };
        }"""
    )
    assert result["avg"] == "avg/1m/plug-1/#"
    assert result["avgPlus"] == "avg/1m/+/power"
    assert result["match"] == [True, True, False, False]
    now_ms = 1714564800000
    assert result["bare"]["value"] == 1234.5 and result["bare"]["t"] == now_ms
    assert result["secs"]["t"] == now_ms - 9500
    assert result["millis"]["t"] == now_ms - 9500
    assert result["rfc"]["t"] == now_ms - 10000
    assert result["future"]["t"] == now_ms  # far-future stamps fall back to arrival time
    assert result["bad"] == [None, None, None]
    assert result["link"] == f"iota:{'A' * 81}?amount=7&tag={'T' * 27}"
    page.close()
