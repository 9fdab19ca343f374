"""The API documentation: Swagger UI at /docs, served from this origin and nothing else.

/docs shares its origin with the portal, whose sessionStorage holds the seller's admin token and
the buyers' session tokens: a script loaded there from a CDN could read them. So Swagger UI's
files come from a pinned, hashed package (fastapi-offline, whose files are swagger-ui-dist's
byte for byte), the page carries the portal's Content-Security-Policy, and it has no inline
script (the policy would not run one): Swagger UI starts from `start.js`, served here too.
ReDoc is not served: it needs inline styles, which the policy refuses.

Routes (none in the OpenAPI schema): `GET /docs`, `GET /docs/assets/{name}` for the files of
ASSETS only. Their URLs are relative, so the page also works behind a proxy under a prefix.
"""

from __future__ import annotations

import functools
import html
import importlib.metadata
import importlib.resources

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from broker_auth.portal.mount import PAGE_HEADERS

PACKAGE = "fastapi_offline"
VERSION = importlib.metadata.version("fastapi-offline")
ASSETS_PATH = "docs/assets"  # relative to the page: /docs/assets/...
# name -> media type: the package's files, and start.js.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
    "start.js": "text/javascript; charset=utf-8",
}
# Swagger UI as FastAPI starts it, less the parts that would reach out: no validator badge
# (validator.swagger.io), no OAuth2 redirect page.
START_JS = """\
// Swagger UI's start-up, a file of its own: the page's Content-Security-Policy runs no inline
// script. The schema's URL is the page's data-openapi attribute, relative to the page.
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: new URL(root.dataset.openapi, document.baseURI).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""

router = APIRouter(include_in_schema=False)


def docs_page(title: str, openapi_url: str) -> str:
    def asset(name: str) -> str:
        return f"{ASSETS_PATH}/{name}?v={VERSION}"

    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<link rel="icon" type="image/png" href="{asset("favicon.png")}">
<link rel="stylesheet" href="{asset("swagger-ui.css")}">
</head>
<body>
<div id="swagger-ui" data-openapi="{html.escape(openapi_url.lstrip("/"))}"></div>
<script src="{asset("swagger-ui-bundle.js")}"></script>
<script src="{asset("start.js")}"></script>
</body>
</html>
"""


@functools.cache
def asset_bytes(name: str) -> bytes:
    if name == "start.js":
        return START_JS.encode()
    return (importlib.resources.files(PACKAGE) / "static" / name).read_bytes()


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    page = docs_page(f"{app.title} API", app.openapi_url or "/openapi.json")
    return HTMLResponse(page, headers=PAGE_HEADERS)


@router.get("/docs/assets/{name}")
async def docs_asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    return Response(
        asset_bytes(name),
        media_type=media_type,
        # The URLs carry the package's version: a new one is fetched anew.
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
