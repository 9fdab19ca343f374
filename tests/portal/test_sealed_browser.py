"""Buying without an account in headless Chromium against the real stack: the visitor fills the
portal's buy form, the page seals the MQTT login to the seller's key, a wallet pays the quote with
that message, the page shows the login once the payment is confirmed, and the login receives the
live stream over MQTT. A second purchase of the same username is refused, and the page says so."""

from __future__ import annotations

import json
import re
import secrets

from iota import TryteString
from playwright.sync_api import Browser, Page, expect

from broker_auth.ledger import ternary
from testing.mqtt import wait_for_access
from tests.portal.conftest import ARTIFACTS, DEMO_DEVICE, DEMO_PRODUCT, PortalStack
from tests.portal.test_portal_browser import DOM_TIMEOUT_MS, open_portal

HOURS = 0.01  # 5 iota at the demo price of 500 iota/h: 36 s of access
AMOUNT = 5
MAX_MESSAGE_TRYTES = 2187


def buy(page: Page, username: str, password: str) -> dict[str, str]:
    """Fill the buy form and submit it; the payment details the page then shows."""
    page.select_option("#buy-product", DEMO_PRODUCT)
    page.fill("#buy-hours", str(HOURS))
    expect(page.locator("#buy-estimate")).to_contain_text(f"Costs {AMOUNT} i")
    page.fill("#buy-username", username)
    page.fill("#buy-password", password)
    with page.expect_response(lambda r: r.url.endswith("/api/quotes")) as quoted:
        page.click("#buy-submit")
    expect(page.locator("#buy-details")).to_be_visible(timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#buy-form")).to_be_hidden()
    answer = quoted.value.json()
    return {
        "quote_secret": str(answer.get("quote_secret", "")),
        "message": page.input_value("#buy-message"),
        "address": page.inner_text("#buy-address"),
        "amount": page.inner_text("#buy-amount"),
        "tag": page.inner_text("#buy-tag"),
    }


def pay_with_message(stack: PortalStack, seed: str, shown: dict[str, str]) -> None:
    from wallet.payments import pay

    pay(
        stack.node_url,
        seed,
        shown["address"],
        shown["tag"],
        int(shown["amount"]),
        message=shown["message"],
    )


def test_visitor_buys_without_an_account(portal_stack: PortalStack, browser: Browser) -> None:
    from wallet.payments import fund_from_faucet

    page = open_portal(browser, portal_stack)
    username = f"sealed{secrets.token_hex(3)}"
    password = "pässwörd-" + secrets.token_hex(6)  # non-ASCII: sealed as UTF-8 JSON

    # Refused before anything is asked of the server: the account rules of schemas.py.
    page.fill("#buy-username", "No")
    page.fill("#buy-password", password)
    page.click("#buy-submit")
    expect(page.locator("#buy-error")).to_contain_text("3 to 32 characters")
    page.fill("#buy-username", username)
    page.fill("#buy-password", "short")
    page.click("#buy-submit")
    expect(page.locator("#buy-error")).to_contain_text("10 to 128 characters")
    expect(page.locator("#buy-details")).to_be_hidden()

    shown = buy(page, username, password)
    expect(page.locator("#buy-error")).to_be_hidden()
    assert shown["address"] in portal_stack.pool
    assert int(shown["amount"]) == AMOUNT
    assert re.fullmatch(r"[9A-Z]{27}", shown["tag"]), shown["tag"]
    message = shown["message"]
    assert re.fullmatch(r"[9A-Z]+", message) and len(message) <= MAX_MESSAGE_TRYTES
    assert TryteString(message).encode().startswith(b"sealed1:")
    # The password and the quote's secret stay in the page: neither the form, the storage
    # nor the page's text holds them in the clear.
    assert page.input_value("#buy-password") == ""
    stored = page.evaluate("() => JSON.stringify(Object.entries(sessionStorage))")
    secret = shown["quote_secret"]
    assert len(secret) >= 32  # the page did get it (and sealed it)
    assert password not in stored and secret not in stored, stored
    assert password not in page.content() and secret not in page.content()
    expect(page.locator("#buy-status")).to_have_text("pending")
    expect(page.locator("#buy-login")).to_be_hidden()
    qr_dark = page.evaluate(
        """() => { const c = document.getElementById("buy-qr");
          const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 50) n++; return n; }"""
    )
    assert qr_dark > 1000, qr_dark

    # The visitor pays from a seed of their own, the sealed message in the value transaction.
    seed = "".join(secrets.choice(ternary.ALPHABET) for _ in range(81))
    fund_from_faucet(portal_stack.faucet_url, portal_stack.node_url, seed, 1000)
    pay_with_message(portal_stack, seed, shown)

    expect(page.locator("#buy-login")).to_be_visible(timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#buy-login-username")).to_have_text(username)
    expect(page.locator("#buy-subscribe")).to_contain_text(f"-u {username} ")
    expect(page.locator("#buy-status")).to_have_text("confirmed", timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#buy-confirmed")).to_have_text(str(AMOUNT))
    expect(page.locator("#buy-reason")).to_be_hidden()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#buy").screenshot(path=str(ARTIFACTS / "sealed-buy.png"))

    # The login the visitor chose receives the live stream.
    access = wait_for_access(
        portal_stack.mqtt_port, username, password, f"live/{DEMO_DEVICE}/#", timeout=30
    )
    try:
        reading = access.probe.next_message(timeout=10)
        assert reading is not None, "no live reading within 10 s"
        assert reading.topic == f"live/{DEMO_DEVICE}/power"
        assert "value" in json.loads(reading.payload)
    finally:
        access.probe.close()

    # The same username again: the payment arrives, the message is refused, the page says why.
    page.click("#buy-new")
    expect(page.locator("#buy-form")).to_be_visible()
    again = buy(page, username, "another-" + secrets.token_hex(6))
    assert again["address"] != shown["address"]
    pay_with_message(portal_stack, seed, again)
    expect(page.locator("#buy-reason")).to_be_visible(timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#buy-reason")).to_contain_text("taken")
    expect(page.locator("#buy-login")).to_be_hidden()
    # The account the first purchase made is unchanged: its password still works.
    access = wait_for_access(
        portal_stack.mqtt_port, username, password, f"live/{DEMO_DEVICE}/#", timeout=10
    )
    access.probe.close()
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


def test_buy_helpers_in_the_browser(portal_stack: PortalStack, browser: Browser) -> None:
    """js/buy.js's rules and js/sealed.js's box in Chromium itself (Web Crypto's randomness)."""
    page = open_portal(browser, portal_stack)
    result = page.evaluate(
        """async () => {
          const at = (p) => new URL(p, document.baseURI).href;
          const buy = await import(at("portal/js/buy.js"));
          const sealed = await import(at("portal/js/sealed.js"));
          const nacl = (await import(at("portal/vendor/tweetnacl-fast.mjs"))).default;
          const keys = nacl.box.keyPair();
          const message = new TextEncoder().encode("hello ☃");
          const box = sealed.sealedBox(message, keys.publicKey);
          const opened = sealed.openSealedBox(box, keys.publicKey, keys.secretKey);
          box[box.length - 1] ^= 1;
          return {
            problems: [
              buy.loginProblem("john", "0123456789"),
              buy.loginProblem("Jo", "0123456789"),
              buy.loginProblem("john", "012345678"),
              buy.loginProblem("john", "x".repeat(129)),
              buy.loginProblem("john", "😀".repeat(128)),
              buy.loginProblem("john", "tab\\there..."),
            ],
            payload: buy.sealedPayload(
              { quote_id: "q", address: "A", quote_secret: "s", tag: "T", amount_iota: 1 },
              "john", "0123456789"),
            opened: new TextDecoder().decode(opened),
            tampered: sealed.openSealedBox(box, keys.publicKey, keys.secretKey),
          };
        }"""
    )
    problems = result["problems"]
    assert problems[0] is None and problems[4] is None  # 128 code points, 256 UTF-16 units
    assert all(p for p in problems[1:4]) and problems[5], problems
    assert result["payload"] == {
        "v": 1,
        "quote_id": "q",
        "address": "A",
        "secret": "s",
        "username": "john",
        "password": "0123456789",
    }
    assert result["opened"] == "hello ☃"
    assert result["tampered"] is None
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()
