"""The seller's workspace in headless Chromium against the real stack: Jane logs in with the
admin token, adds a device and sees its first reading, changes a price and sees a new order use
it, imports deposit addresses, sees a payment in the revenue and the CSV export, deletes the
device and sees it cut. Every action goes through the public admin API."""

from __future__ import annotations

import csv
import io
import secrets
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect

from broker_auth.ledger import ternary
from stack.mqtt_probe import MqttProbe
from testing.addresses import random_address
from testing.broker_auth import place_order
from testing.procs import wait_for
from tests.portal.conftest import ARTIFACTS, DEMO_PRODUCT, PortalStack
from wallet.payments import fund_from_faucet, pay

DOM_TIMEOUT_MS = 30_000
BUYER_PASSWORD = "jane-buyer-" + secrets.token_hex(4)


def open_admin(browser: Browser, stack: PortalStack) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(stack.api_url + "/admin")
    page.wait_for_selector("body[data-ready=true]", timeout=DOM_TIMEOUT_MS)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def buyer_order(stack: PortalStack, username: str, hours: float) -> dict[str, Any]:
    return place_order(stack.api_url, username, BUYER_PASSWORD, DEMO_PRODUCT, hours)


def test_seller_runs_the_shop_from_the_workspace(
    portal_stack: PortalStack, browser: Browser
) -> None:
    page = open_admin(browser, portal_stack)
    expect(page.locator("#workspace")).to_be_hidden()
    page.fill("#admin-token", "not-the-token-" + secrets.token_hex(8))
    page.click("#admin-login-form button[type=submit]")
    expect(page.locator("#admin-login-error")).to_contain_text("not the admin token")
    page.fill("#admin-token", portal_stack.admin_token)
    page.click("#admin-login-form button[type=submit]")
    expect(page.locator("#workspace")).to_be_visible(timeout=DOM_TIMEOUT_MS)
    # The token stays in this tab's sessionStorage only.
    assert page.evaluate("() => localStorage.length") == 0

    # A new device: its password is shown once; its first reading shows in the list.
    device = f"jane-{secrets.token_hex(2)}"
    page.fill("#device-id", device)
    page.click("#device-form button[type=submit]")
    password = page.locator("#device-password").inner_text(timeout=DOM_TIMEOUT_MS)
    assert len(password) >= 24
    probe = MqttProbe(portal_stack.mqtt_port, f"device.{device}", password)
    assert probe.connect()
    probe.publish(f"live/{device}/power", "42.5")
    row = page.locator(f'#devices-body tr[data-device="{device}"]')
    expect(row.locator(".last-reading")).not_to_have_text("—", timeout=DOM_TIMEOUT_MS)

    # A new price: the next order uses it.
    product_row = page.locator(f'#products-body tr[data-product="{DEMO_PRODUCT}"]')
    product_row.locator("input.price").fill("1000")
    product_row.locator("button", has_text="Save").click()
    expect(page.locator("#notice")).to_contain_text(f"Product {DEMO_PRODUCT} saved")
    buyer = f"buyer{secrets.token_hex(3)}"
    httpx.post(
        f"{portal_stack.api_url}/api/accounts",
        json={"username": buyer, "password": BUYER_PASSWORD},
        timeout=15,
    ).raise_for_status()
    order = buyer_order(portal_stack, buyer, 0.01)
    assert order["amount_iota"] == 10  # 1000 i/h now (the seed's price was 500)

    # Import deposit addresses (one refused: not an address).
    free_before = httpx.get(
        f"{portal_stack.api_url}/api/deposit-addresses",
        headers={"Authorization": f"Bearer {portal_stack.admin_token}"},
        timeout=15,
    ).json()["counts"]["free"]
    fresh = [random_address() for _ in range(3)]
    page.fill("#pool-text", "\n".join([*fresh, "NOT-AN-ADDRESS"]))
    page.click("#pool-form button[type=submit]")
    expect(page.locator("#pool-result")).to_contain_text("added 3", timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#pool-result")).to_contain_text("refused 1")
    expect(page.locator("#pool-counts")).to_contain_text(f"free {free_before + 3}")

    # A payment: it shows in the revenue, the payments and the CSV export.
    seed = "".join(secrets.choice(ternary.ALPHABET) for _ in range(81))
    fund_from_faucet(portal_stack.faucet_url, portal_stack.node_url, seed, 10)
    pay(portal_stack.node_url, seed, str(order["address"]), str(order["tag"]), 10)
    expect(page.locator("#revenue-total")).to_have_text("10", timeout=DOM_TIMEOUT_MS)
    expect(page.locator("#revenue-body tr").first).to_contain_text(DEMO_PRODUCT)
    expect(page.locator("#payments-body")).to_contain_text(str(order["order_id"]))
    expect(page.locator("#grants-list")).to_contain_text(buyer)
    with page.expect_download() as download:
        page.click("#export-csv")
    table = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    (row_csv,) = [r for r in table if r["order_id"] == order["order_id"]]
    assert row_csv["amount_iota"] == "10" and row_csv["username"] == buyer

    # Delete the device: its connection is cut and it cannot log in again.
    row.locator("button", has_text="Delete").click()
    expect(row).to_have_attribute("data-enabled", "false", timeout=DOM_TIMEOUT_MS)
    wait_for(lambda: probe.disconnects > 0, 5, "the device cut by the broker", 0.05)
    probe.close()
    assert not MqttProbe(portal_stack.mqtt_port, f"device.{device}", password).connect()

    page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
