"""``/web/``: the acute team's web view, served by the API itself (docs/web.md).

The page is static: HTML, an ES module per screen, a style sheet (api/web/static/) and the
browser packages pinned by api/web/package-lock.json, which the set-up step installs with
``npm ci`` into api/web/node_modules (uPlot for the trend plots). Nothing comes from a CDN
and nothing is pasted in by hand. The page holds no data: it calls the API with the user's
bearer token like any other client, so the scope and the audit of every route apply to it.

Only the files named here are served (no directory listing, no path from the request joins
a file system path), with their own content-security policy (api/middleware.py): scripts,
styles and connections from this origin only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

from api.errors import ApiError, NotFound

router = APIRouter(tags=["web"], include_in_schema=False)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_DIR = WEB_DIR / "static"
NODE_MODULES = WEB_DIR / "node_modules"
PREFIX = "/web"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The npm packages' files the page loads, by the name it loads them under.
VENDOR = {
    "uPlot.iife.min.js": NODE_MODULES / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": NODE_MODULES / "uplot" / "dist" / "uPlot.min.css",
}


def _static_files() -> dict[str, Path]:
    """The page's own files, read once: a file added later needs a restart, which is fine
    for files that ship with the code."""
    return {
        p.name: p
        for p in sorted(STATIC_DIR.iterdir())
        if p.is_file() and p.suffix in MEDIA_TYPES and p.name != "index.html"
    }


STATIC = _static_files()


class WebNotInstalled(ApiError):
    status = 503
    title = "web view not installed"


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix))


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get(PREFIX)
@router.get(f"{PREFIX}/")
def index() -> FileResponse:
    """The single page; the screens are chosen by the address's fragment (#/alerts ...)."""
    return _file(STATIC_DIR / "index.html")


@router.get(f"{PREFIX}/static/{{name}}")
def static(name: Annotated[str, PathParam(max_length=100)]) -> FileResponse:
    path = STATIC.get(name)
    if path is None:
        raise NotFound(f"no file {name!r} in the web view")
    return _file(path)


@router.get(f"{PREFIX}/vendor/{{name}}")
def vendor(name: Annotated[str, PathParam(max_length=100)]) -> FileResponse:
    path = VENDOR.get(name)
    if path is None:
        raise NotFound(f"no package file {name!r} in the web view")
    if not path.is_file():
        raise WebNotInstalled(
            f"the package file {name} is missing: run `make setup` (npm ci in api/web)"
        )
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix))
