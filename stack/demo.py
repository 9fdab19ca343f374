"""`make demo`: the Jane/John story, end to end, against a running `make run`.

Only public interfaces are used: the HTTP API, MQTT, the devnet's Hornet node and its faucet,
as John would. His order gets its own deposit address from Jane's pool.
Each step prints what it did and how long it took.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import httpx
from iota.crypto.types import Seed

from stack.mqtt_probe import ConnectionLostError, MqttProbe
from stack.settings import StackSettings
from wallet import payments

T = TypeVar("T")
DEMO_HOURS = 0.01  # 36 s of live access at any price: long enough to see, short enough to wait


class DemoError(RuntimeError):
    pass


def step(title: str, action: Callable[[], T]) -> T:
    print(f"\n>> {title}", flush=True)
    started = time.monotonic()
    result = action()
    print(f"   done in {time.monotonic() - started:.2f} s", flush=True)
    return result


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


def main() -> int:
    s = StackSettings()
    api = httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=10)
    node = f"http://127.0.0.1:{s.devnet_port}"
    faucet = f"http://127.0.0.1:{s.faucet_port}"
    os.environ.setdefault("IOTA_MWM", str(s.iota_mwm))  # Hornet refuses any other weight
    try:
        api.get("/healthz").raise_for_status()
    except httpx.HTTPError:
        print(f"The stack is not running on port {s.api_port}: start it with `make run` first.")
        return 1
    try:
        run_story(api, node, faucet, s.mqtt_port)
    except DemoError as exc:
        print(f"\nDEMO FAILED: {exc}")
        return 1
    print("\nThe story holds: free averages for everyone, live data for exactly the time paid.")
    return 0


def run_story(api: httpx.Client, node: str, faucet: str, mqtt_port: int) -> None:
    anonymous = MqttProbe(mqtt_port)

    def free_averages() -> None:
        anonymous.connect()
        if not anonymous.subscribe("avg/#"):
            raise DemoError("anonymous subscription to avg/# was refused")
        msg = wait_for(lambda: anonymous.next_message(0.5), 15, "a retained average")
        print(f"   anonymous got {msg.topic} = {msg.payload.decode()}")
        refused = not anonymous.subscribe("live/#")
        print(f"   anonymous subscription to live/# refused: {refused}")
        if not refused:
            raise DemoError("anonymous client may read live/#")

    step("1. John, anonymous, reads the free averages; live data is refused", free_averages)

    username = "john-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))
    password = secrets.token_urlsafe(16)
    auth = (username, password)
    mqtt: dict[str, str] = {}  # the MQTT password broker_auth generates (not the login one)

    def register_and_order() -> dict[str, object]:
        created = api.post("/api/accounts", json={"username": username, "password": password})
        created.raise_for_status()
        mqtt["password"] = created.json()["mqtt_password"]
        products = api.get("/api/products").json()
        product = next(p for p in products if p["id"] == "plug-1-live")
        print(
            f"   registered {username}; product {product['id']} on {product['topic_filter']}"
            f" at {product['price_iota_per_hour']} iota/hour"
        )
        r = api.post(
            "/api/orders", json={"product_id": "plug-1-live", "hours": DEMO_HOURS}, auth=auth
        )
        r.raise_for_status()
        order: dict[str, object] = r.json()
        print(
            f"   order {order['order_id']}: pay {order['amount_iota']} iota to"
            f" {str(order['address'])[:20]}... (this order's own address) tag {order['tag']}"
        )
        return order

    order = step(
        f"2. John registers and orders {DEMO_HOURS} hour of plug-1-live", register_and_order
    )

    seed = Seed.random()

    def pay() -> None:
        amount = int(str(order["amount_iota"]))
        payments.fund_from_faucet(faucet, node, seed, amount * 2)
        result = payments.pay(node, seed, str(order["address"]), str(order["tag"]), amount)
        print(f"   bundle {result.bundle_hash} sent from John's own seed")

    step("3. John funds his seed from the devnet faucet and pays with pyota", pay)

    def confirmed() -> dict[str, object]:
        def check() -> dict[str, object] | None:
            o: dict[str, object] = api.get(f"/api/orders/{order['order_id']}", auth=auth).json()
            return o if o["status"] == "confirmed" else None

        o = wait_for(check, 60, "the payment to be confirmed on the tangle")
        print(f"   order confirmed: paid {o['paid_iota']} iota, confirmed {o['confirmed_iota']}")
        return o

    step("4a. Hornet's coordinator confirms the transfer (milestone)", confirmed)

    buyer = MqttProbe(mqtt_port, username, mqtt["password"])

    def subscribe_live() -> bool:
        try:
            return buyer.subscribe("live/plug-1/#")
        except ConnectionLostError:  # the grant kicks connected clients; paho reconnects
            buyer.wait_connected(5)
            return False

    def live_access() -> None:
        buyer.connect()
        wait_for(subscribe_live, 10, "the live subscription to be granted")
        msg = wait_for(lambda: buyer.next_message(0.5), 10, "a live reading")
        print(f"   John's client receives {msg.topic} = {msg.payload.decode()}")

    step(
        "4b. John's MQTT client subscribes to live/plug-1/# and receives raw readings", live_access
    )

    grants = api.get("/api/grants", auth=auth).json()
    expires = datetime.fromisoformat(grants[0]["expires_at"].replace("Z", "+00:00"))
    print(f"   grant active until {expires.isoformat()}")

    def expiry() -> None:
        remaining = expires.timestamp() - time.time()
        print(f"   waiting {remaining:.0f} s for the time bought to run out...")
        time.sleep(max(0.0, remaining))
        end = time.monotonic()
        # Readings keep arriving at 2 Hz until the broker cuts John off; find the last one.
        last_live = None
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3:
            msg = buyer.next_message(0.2)
            if msg and msg.topic.startswith("live/"):
                last_live = msg.received_at
                quiet_since = time.monotonic()
        stopped_after = 0.0 if last_live is None else last_live - end
        print(f"   last live reading arrived {stopped_after:+.2f} s from the grant's end")
        # Revoking a role makes the plugin disconnect the client; paho reconnects by itself.
        if not buyer.wait_connected(10):
            raise DemoError("John's client could not reconnect after the grant ended")
        if buyer.subscribe("live/plug-1/#"):
            raise DemoError("resubscription to live data was granted after expiry")
        if not buyer.subscribe("avg/#"):
            raise DemoError("John lost the free averages after his grant ended")
        print(
            "   resubscription to live refused, avg/# still allowed"
            f" ({buyer.disconnects} disconnect(s) by the broker)"
        )

    step("5. the time runs out: live data stops, the averages stay free", expiry)
    buyer.close()
    anonymous.close()
    print(json.dumps({"buyer": username, "order": order["order_id"]}))
