"""Static files (/static/... and the dashboard's /ui/...) that never answer 500 or HTML.

Tornado's StaticFileHandler turns a NUL byte in the path (`/static/%00`) into a ValueError,
a 500 with a traceback; here it is a 404 like any other file that is not there, and errors
are JSON like the API's.
"""

import json

import tornado.web

from texium.server.transport import set_transport_headers


class SafeStaticFileHandler(tornado.web.StaticFileHandler):
    def initialize(self, path: str = "", default_filename: str | None = None, context=None) -> None:
        super().initialize(path=path or self.settings["static_path"], default_filename=default_filename)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        if "\x00" in path:
            raise tornado.web.HTTPError(404)
        return super().get_absolute_path(root, path)

    def set_default_headers(self) -> None:
        set_transport_headers(self)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"detail": "Not found" if status_code == 404 else self._reason}))
