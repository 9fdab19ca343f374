"""Serve the buyer's web portal from the broker_auth FastAPI app.

The portal is static: one HTML page, ES modules and vendored browser libraries (no build step,
nothing from a CDN). It talks to the JSON API with relative URLs and to Mosquitto over MQTT
WebSockets, so the only thing the server has to tell it is where that WebSocket listener is
reachable from the browser: `/portal-config.json`.

Routes added: `GET /` (the buyer's page), `GET /admin` (the seller's workspace, static too: it
calls the admin API with the token the seller types), `GET /portal-config.json` and the static
mount `/portal/...`.
None of them is a catch-all, so /api, /healthz, /metrics, /docs and /openapi.json keep working
whether `mount_portal` is called before or after the API routes are registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/portal"

# The page only loads its own files; MQTT over WebSockets may go to another host or port.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; "
    # MQTT.js runs its keep-alive timers in a Worker made from a blob: URL.
    "worker-src 'self' blob:; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# Every page of this origin (the portal's, the API documentation) is served with these.
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # The pages are tiny; always fetching them means a new release is picked up at once.
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Full URL browsers use for MQTT over WebSockets, e.g. wss://broker.example.com/mqtt.
    # Unset: ws(s)://<host the page was loaded from>:<MQTT_WS_PORT>.
    mqtt_ws_public_url: str | None = Field(None, alias="MQTT_WS_PUBLIC_URL")
    mqtt_ws_port: int = Field(9001, alias="MQTT_WS_PORT")
    live_topic_prefix: str = Field("live", alias="LIVE_TOPIC_PREFIX")
    avg_topic_prefix: str = Field("avg", alias="AVG_TOPIC_PREFIX")
    ingest_windows: str = Field("1m", alias="INGEST_WINDOWS")
    # Node URL printed in the wallet command line; the API's own IOTA_NODE_URL by default.
    iota_node_public_url: str | None = Field(None, alias="IOTA_NODE_PUBLIC_URL")
    iota_node_url: str = Field("http://127.0.0.1:14265", alias="IOTA_NODE_URL")
    # The node's minimum weight magnitude when it is not IRI's 14 (the devnet's Hornet: 5).
    iota_mwm: int | None = Field(None, alias="IOTA_MWM", ge=1, le=14)

    @property
    def avg_window(self) -> str:
        """The window the portal charts: the first configured one (the default `1m`)."""
        windows = [w.strip() for w in self.ingest_windows.split(",") if w.strip()]
        return windows[0] if windows else "1m"


def mqtt_ws_url(settings: PortalSettings, request: Request) -> str:
    if settings.mqtt_ws_public_url:
        return settings.mqtt_ws_public_url
    # Behind a TLS-terminating proxy the page is https and the browser refuses plain ws://.
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    scheme = "wss" if proto == "https" else "ws"
    host = request.url.hostname or "127.0.0.1"
    if ":" in host:  # an IPv6 literal needs its brackets back
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.mqtt_ws_port}"


def portal_config(settings: PortalSettings, request: Request) -> dict[str, Any]:
    return {
        "mqtt_ws_url": mqtt_ws_url(settings, request),
        "live_topic_prefix": settings.live_topic_prefix,
        "avg_topic_prefix": settings.avg_topic_prefix,
        "avg_window": settings.avg_window,
        "iota_node_url": settings.iota_node_public_url or settings.iota_node_url,
        "iota_mwm": settings.iota_mwm,
    }


def mount_portal(app: FastAPI, settings: PortalSettings | None = None) -> None:
    """Add the portal's routes to `app` (see the module docstring for which)."""
    portal_settings = settings or PortalSettings()
    index_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    admin_html = (STATIC_DIR / "admin.html").read_text(encoding="utf-8")
    headers = PAGE_HEADERS

    async def portal_index() -> HTMLResponse:
        return HTMLResponse(index_html, headers=headers)

    async def admin_index() -> HTMLResponse:
        return HTMLResponse(admin_html, headers=headers)

    async def portal_config_json(request: Request) -> JSONResponse:
        return JSONResponse(
            portal_config(portal_settings, request), headers={"Cache-Control": "no-store"}
        )

    app.add_api_route(
        "/",
        portal_index,
        methods=["GET", "HEAD"],
        include_in_schema=False,
        response_class=HTMLResponse,
    )
    app.add_api_route("/admin", admin_index, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route(
        "/portal-config.json", portal_config_json, methods=["GET"], include_in_schema=False
    )
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="portal-static")
