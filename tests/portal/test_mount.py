"""mount_portal on a bare FastAPI app: routes, headers, config, and nothing shadowed."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from broker_auth.portal import PortalSettings, mount_portal


def make_app(portal_first: bool, settings: PortalSettings | None = None) -> FastAPI:
    app = FastAPI()

    def add_api() -> None:
        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/api/products")
        def products() -> list[dict[str, object]]:
            return []

        @app.get("/metrics")
        def metrics() -> str:
            return "up 1"

    # The portal must not shadow the API whichever is registered first.
    if portal_first:
        mount_portal(app, settings)
        add_api()
    else:
        add_api()
        mount_portal(app, settings)
    return app


@pytest.mark.parametrize("portal_first", [True, False])
def test_routes_do_not_shadow_the_api(portal_first: bool) -> None:
    client = TestClient(make_app(portal_first, PortalSettings()))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/api/products").json() == []
    assert client.get("/metrics").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/api/nope").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/portal-config.json" not in paths


def test_index_and_static_files() -> None:
    client = TestClient(make_app(False, PortalSettings()))
    index = client.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert 'src="portal/js/app.js"' in index.text
    for path, kind in [
        ("/portal/js/app.js", "javascript"),
        ("/portal/portal.css", "text/css"),
        ("/portal/vendor/mqtt.esm.js", "javascript"),
        ("/portal/vendor/qrcode.mjs", "javascript"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert kind in response.headers["content-type"], (path, response.headers)
    assert client.head("/").status_code == 200
    assert client.get("/portal/../mount.py").status_code == 404


def test_config_defaults_to_the_page_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MQTT_WS_PUBLIC_URL", "MQTT_WS_PORT", "INGEST_WINDOWS", "IOTA_NODE_PUBLIC_URL", "IOTA_MWM",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IOTA_NODE_URL", "http://127.0.0.1:14999")
    client = TestClient(make_app(False), base_url="http://portal.example:8000")
    config = client.get("/portal-config.json").json()
    assert config == {
        "mqtt_ws_url": "ws://portal.example:9001",
        "live_topic_prefix": "live",
        "avg_topic_prefix": "avg",
        "avg_window": "1m",
        "iota_node_url": "http://127.0.0.1:14999",
        "iota_mwm": None,
    }
    proxied = client.get("/portal-config.json", headers={"X-Forwarded-Proto": "https"})
    assert proxied.json()["mqtt_ws_url"] == "wss://portal.example:9001"


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_WS_PUBLIC_URL", "wss://broker.example.com/mqtt")
    monkeypatch.setenv("INGEST_WINDOWS", "15m,1m")
    monkeypatch.setenv("IOTA_NODE_PUBLIC_URL", "https://node.example.com")
    monkeypatch.setenv("IOTA_MWM", "5")
    client = TestClient(make_app(False))
    config = client.get("/portal-config.json").json()
    assert config["mqtt_ws_url"] == "wss://broker.example.com/mqtt"
    assert config["avg_window"] == "15m"
    assert config["iota_node_url"] == "https://node.example.com"
    assert config["iota_mwm"] == 5


def test_ws_port_follows_mqtt_ws_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MQTT_WS_PUBLIC_URL", raising=False)
    monkeypatch.setenv("MQTT_WS_PORT", "19001")
    client = TestClient(make_app(False), base_url="http://127.0.0.1:8000")
    assert client.get("/portal-config.json").json()["mqtt_ws_url"] == "ws://127.0.0.1:19001"
