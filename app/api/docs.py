"""/docs: Swagger UI served from the gateway itself, so it works with no network beyond it.

FastAPI's default page loads its script and stylesheet from a CDN: offline (a trading host
behind a firewall, a CI box) it is blank. The assets come from the pinned swagger-ui-bundle-v2
wheel and only the four files the page loads are served. No validator badge (it would call
swagger.io).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from app.errors import ErrorCode, GatewayError

ASSETS_PATH = "/docs/assets"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
# The assets change only with the pinned package: a day of caching is safe.
_CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter(include_in_schema=False)


@cache
def _assets_dir() -> Path:
    """The wheel's `vendor/swagger-ui-<version>/` (read, not imported: the package is untyped)."""
    (found,) = Path(str(files("swagger_ui_bundle"))).glob("vendor/swagger-ui-*")
    return found


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Alpaca real-data gateway - API",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
    )


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise GatewayError(ErrorCode.ROUTE_NOT_FOUND, f"No docs asset {name[:64]!r}")
    return FileResponse(_assets_dir() / name, media_type=media_type, headers=_CACHE)
