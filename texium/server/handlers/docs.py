"""The API's description and its interactive viewer.

`GET /openapi.json` serves `texium/openapi.yaml` (the one place the API is described) as
JSON; `GET /docs` is a Swagger UI page, vendored under `static/vendor/swagger-ui/` (no CDN),
that reads it and can "try it out" against the same server. `GET /` is the dashboard.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from texium.core.caches import cached
from texium.server.handlers.base import ApiHandler
from texium.server.handlers.dashboard import asset_version, set_security_headers

SWAGGER_UI_PATH = "vendor/swagger-ui/"  # relative to the application's static path


@cached
def load_description() -> dict[str, Any]:
    """The description as a dict, parsed once per process. Blocking (reads a package file)."""
    text = resources.files("texium").joinpath("openapi.yaml").read_text(encoding="utf-8")
    description = yaml.safe_load(text)
    # Relative to whatever host and port the client reached, so "try it out" calls this server.
    description["servers"] = [{"url": "/"}]
    return description


@cached
def _description_json() -> bytes:
    return json.dumps(load_description(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class OpenApiHandler(ApiHandler):
    """GET /openapi.json: the OpenAPI 3.1 description."""

    public = True  # pages and the description load before signing in

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(_description_json())


# No inline script or style: the page carries the dashboard's Content-Security-Policy (no
# framing either, so another site cannot trick a click on Execute), and static/docs/docs.js
# starts Swagger UI.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Texium API documentation</title>
  <link rel="icon" href="{assets}/app/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="{css}">
  <link rel="stylesheet" href="{assets}/docs/docs.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{js}"></script>
  <script src="{assets}/docs/docs.js"></script>
</body>
</html>
"""


class DocsHandler(ApiHandler):
    """GET /docs: Swagger UI showing /openapi.json."""

    public = True  # pages and the description load before signing in

    def _static(self, name: str) -> str:
        return self.static_url(SWAGGER_UI_PATH + name)  # versioned URL, cacheable for long

    def get(self) -> None:
        page = _PAGE.format(
            css=self._static("swagger-ui.css"),
            js=self._static("swagger-ui-bundle.js"),
            assets=f"/ui/{asset_version(self.settings['static_path'])}",
        )
        set_security_headers(self)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(page)


class HomeHandler(ApiHandler):
    """GET /: the dashboard, a single-page app (static/app/) that speaks only to this API."""

    public = True  # pages and the description load before signing in

    def get(self) -> None:
        static_dir = self.settings["static_path"]
        page = _dashboard_page(static_dir).replace("{{ASSETS}}", f"/ui/{asset_version(static_dir)}")
        set_security_headers(self)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(page)


@cached
def _dashboard_page(static_dir: str) -> str:
    """static/app/index.html, read once per process. Blocking (reads a package file)."""
    return (Path(static_dir) / "app" / "index.html").read_text(encoding="utf-8")
