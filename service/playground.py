"""The browser pages: the playground at ``GET /`` and offline ``/docs`` and ``/redoc``.

``add_browser_pages(app)`` is the one call ``create_app`` makes. It adds

- ``GET /``: the playground (service/static/playground/: plain HTML, CSS and JS, no build step), which
  calls the JSON API (``POST /solve``, ``POST /sample``) from the page;
- ``/static/playground/*``: its files, and ``/static/docs/*``: Swagger UI's and ReDoc's JS and CSS from the
  pinned ``fastapi-offline`` package, so every asset comes from this server and the pages work without
  internet (FastAPI's defaults load them from a CDN);
- ``/docs`` and ``/redoc`` rebuilt on those assets (FastAPI's self-hosting recipe), replacing the routes
  FastAPI made at construction, and a link to the playground in the OpenAPI description.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

PLAYGROUND_DIR = Path(__file__).parent / "static" / "playground"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
# Every page loads only from this server: a browser refuses anything else before it asks the network
# (ReDoc's bundle, for one, fetches its vendor's logo from a CDN and hides it when that fails).
# 'unsafe-inline': Swagger UI and ReDoc are started by an inline script and style themselves inline.
CSP = "; ".join([
    "default-src 'self'", "script-src 'self' 'unsafe-inline'", "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:", "font-src 'self' data:", "worker-src 'self' blob:", "connect-src 'self'",
])
PLAYGROUND_LINK = "Try it in a browser: the [playground](/) (Sudoku, N-Queens, graph colouring, MNIST)."


def add_browser_pages(app: FastAPI) -> None:
    """Serve the playground at ``/`` and Swagger UI / ReDoc from local assets (see the module doc)."""
    app.mount("/static/playground", StaticFiles(directory=PLAYGROUND_DIR), name="playground")
    app.mount("/static/docs", StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    app.description = f"{app.description}\n\n{PLAYGROUND_LINK}".strip()

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(PLAYGROUND_DIR / "index.html",
                            headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP})

    docs_url, redoc_url, oauth_url = app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url
    # FastAPI added its CDN-backed pages in its constructor: drop them, then add the local ones.
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in {docs_url, redoc_url, oauth_url}
    ]

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    if docs_url:
        @app.get(docs_url, include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            base = root(request)
            return _with_csp(get_swagger_ui_html(
                openapi_url=f"{base}{app.openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{base}{oauth_url}" if oauth_url else None,
                swagger_js_url=f"{base}/static/docs/swagger-ui-bundle.js",
                swagger_css_url=f"{base}/static/docs/swagger-ui.css",
                swagger_favicon_url=f"{base}/static/docs/favicon.png",
                swagger_ui_parameters=app.swagger_ui_parameters,
            ))

        if oauth_url:
            @app.get(oauth_url, include_in_schema=False)
            async def swagger_ui_redirect() -> HTMLResponse:
                return get_swagger_ui_oauth2_redirect_html()

    if redoc_url:
        @app.get(redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            base = root(request)
            return _with_csp(get_redoc_html(
                openapi_url=f"{base}{app.openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{base}/static/docs/redoc.standalone.js",
                redoc_favicon_url=f"{base}/static/docs/favicon.png",
                with_google_fonts=False,
            ))


def _with_csp(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CSP
    return response
