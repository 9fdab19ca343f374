"""Demo data for `make run` (SEED_DEMO=true): device plug-1 and product plug-1-live.

Idempotent: existing records are kept; the device's MQTT password follows DEMO_DEVICE_PASSWORD.
"""

from __future__ import annotations

from broker_auth.catalog.devices import Devices
from broker_auth.catalog.products import Products
from broker_auth.schemas import ProductIn

DEMO_DEVICE = "plug-1"
DEMO_PRODUCT = "plug-1-live"
DEMO_PRICE_IOTA_PER_HOUR = 500


def seed_demo(devices: Devices, products: Products, device_password: str, live_prefix: str) -> None:
    devices.ensure(DEMO_DEVICE, device_password)
    products.ensure(
        ProductIn(
            id=DEMO_PRODUCT,
            topic_filter=f"{live_prefix}/{DEMO_DEVICE}/#",
            price_iota_per_hour=DEMO_PRICE_IOTA_PER_HOUR,
            description="Raw power readings of the demo smart plug, twice a second",
        )
    )
