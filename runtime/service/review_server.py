"""``[ui]`` / ``--ui-port``: the review page, served by the box itself with the standard library's HTTP server
(the bounded ``ThreadingHTTPServer`` of ``health.py``: a connection cap and socket timeouts, so the page can never
cost the box its classification). No framework, no build step, no CDN: a device has no internet.

Routes: ``GET /`` (the page, rendered here), ``/app.js``, ``/app.css``, ``/api/status`` (JSON: cameras, counts,
captures), ``/live/<source>.jpg`` (the latest frame), ``/capture/<source>/<name>`` (a captured JPEG), and
``POST /api/label`` with ``{"source", "name", "label"}``.

Who may ask: bound to loopback, anyone on the machine (an SSH tunnel for a person elsewhere), but only with a
``Host`` header naming loopback (a web page cannot reach it through DNS rebinding). Bound elsewhere, every request
needs the token: ``Authorization: Bearer …``, the ``edgeport_ui`` cookie, or ``?token=…`` once (which sets the
cookie); anything else is 401. A POST must be JSON (a cross-site form cannot send it without the browser asking
first) and at most ``MAX_BODY`` bytes, or it is refused before a byte of it is read.
"""

from __future__ import annotations

import hmac
import json
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .config import UiConfig
from .health import SOCKET_TIMEOUT_S, ThreadedServer
from .live import LiveView
from .review import Refused, ReviewStore
from .review_page import APP_CSS, APP_JS, render_page

__all__ = ["ReviewServer", "MAX_BODY", "COOKIE"]

#: Bytes a label request may have; a label is a few dozen.
MAX_BODY = 4096
#: The cookie that carries the token after ``?token=`` (HttpOnly, SameSite=Strict).
COOKIE = "edgeport_ui"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]", "::1"}
_SECURITY = (("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
             ("X-Frame-Options", "DENY"),
             ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                         "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"))


class ReviewServer(ThreadedServer):
    """The page's HTTP server in a daemon thread over a ``ReviewStore`` and a ``LiveView``."""

    def __init__(self, config: UiConfig, store: ReviewStore, live: LiveView):
        self.config, self.store, self.live = config, store, live
        super().__init__("--ui-port", config.host, config.port, _handler(self), "edgeport-review")

    def status(self) -> dict[str, Any]:
        return {"cameras": self.live.snapshot(), "classes": list(self.store.classes), "counts": self.store.counts(),
                "captures": self.store.captures()}

    def allowed(self, headers: Any, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(allowed, set the cookie): the token when there is one, else a loopback ``Host``."""
        token = self.config.token
        if token is None:
            host = _host_name(headers.get("Host") or "")
            return host in _LOOPBACK_NAMES or host == self.config.host, False
        offered = []
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            offered.append(auth[7:].strip())
        for part in (headers.get("Cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE:
                offered.append(value)
        from_query = query.get("token", [])[:1]
        good = any(hmac.compare_digest(o.encode(), token.encode()) for o in offered)
        good_query = any(hmac.compare_digest(o.encode(), token.encode()) for o in from_query)
        return good or good_query, good_query


def _host_name(value: str) -> str:
    """``127.0.0.1:8080`` → ``127.0.0.1``, ``[::1]:8080`` → ``[::1]``."""
    if value.startswith("["):
        return value[:value.find("]") + 1]
    return value.rsplit(":", 1)[0]


def _handler(app: ReviewServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S
        server_version = "edgeport"
        sys_version = ""

        def log_message(self, *args: Any) -> None:  # no access log on the records' stderr
            pass

        def _send(self, status: int, body: bytes, kind: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (*_SECURITY, *extra):
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any, extra: tuple[tuple[str, str], ...] = ()) -> None:
            self._send(status, json.dumps(data).encode(), "application/json", extra)

        def _error(self, status: int, message: str) -> None:
            extra = (("WWW-Authenticate", 'Bearer realm="edgeport review"'),) if status == 401 else ()
            if status == 413:
                extra += (("Connection", "close"),)
                self.close_connection = True
            self._json(status, {"error": message}, extra)

        def _gate(self) -> tuple[str, tuple[tuple[str, str], ...]] | None:
            """The request's path when it may go on (with a Set-Cookie to add), else None after answering."""
            parts = urlsplit(self.path)
            ok, set_cookie = app.allowed(self.headers, parse_qs(parts.query))
            if not ok:
                if app.config.token is None:
                    self._error(403, "this page answers to 127.0.0.1/localhost only (open it through an SSH tunnel)")
                else:
                    self._error(401, "a token is needed: open the page as /?token=… or send Authorization: Bearer …")
                return None
            cookie = ((("Set-Cookie", f"{COOKIE}={app.config.token}; HttpOnly; SameSite=Strict; Path=/"),)
                      if set_cookie else ())
            return parts.path, cookie

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            gate = self._gate()
            if gate is None:
                return
            path, cookie = gate
            try:
                if path == "/":
                    page = render_page(app.status(), app.config.token is not None)
                    self._send(200, page.encode(), "text/html; charset=utf-8", cookie)
                elif path == "/app.js":
                    self._send(200, APP_JS.encode(), "text/javascript; charset=utf-8")
                elif path == "/app.css":
                    self._send(200, APP_CSS.encode(), "text/css; charset=utf-8")
                elif path == "/api/status":
                    self._json(200, app.status())
                elif path.startswith("/live/") and path.endswith(".jpg"):
                    data = app.live.latest_jpeg(unquote(path[len("/live/"):-len(".jpg")]))
                    if data is None:
                        raise Refused(404, "no frame from this source yet")
                    self._send(200, data, "image/jpeg")
                elif path.startswith("/capture/") and path.count("/") == 3:
                    _, _, source, name = path.split("/")
                    self._send(200, app.store.read(unquote(source), unquote(name)), "image/jpeg")
                else:
                    raise Refused(404, "no such page: try / or /api/status")
            except Refused as exc:
                self._error(exc.status, str(exc))

        def do_POST(self) -> None:
            gate = self._gate()
            if gate is None:
                return
            path, _ = gate
            try:
                if path != "/api/label":
                    raise Refused(404, "POST goes to /api/label")
                body = self._body()
                result = app.store.label(body.get("source"), body.get("name"), body.get("label"))
                self._json(200, result)
            except Refused as exc:
                self._error(exc.status, str(exc))
            except OSError as exc:  # a full or read-only dataset disk: nothing was half-written (atomic), say so
                self._error(507, f"could not write the label ({exc.strerror or exc}); the capture is kept, free space "
                                 "and label it again")

        def _body(self) -> dict[str, Any]:
            kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise Refused(415, 'send the label as JSON (Content-Type: application/json): {"source", "name", "label"}')
            length = self.headers.get("Content-Length")
            if length is None or self.headers.get("Transfer-Encoding"):
                raise Refused(411, "send a Content-Length (no chunked bodies)")
            try:
                size = int(length)
            except ValueError:
                raise Refused(400, "Content-Length is not a number") from None
            if size < 0 or size > MAX_BODY:
                raise Refused(413, f"a label request is at most {MAX_BODY} bytes; this one says {size}")
            try:
                body = json.loads(self.rfile.read(size))
            except (ValueError, UnicodeDecodeError):
                raise Refused(400, 'the body is not JSON: send {"source": …, "name": …, "label": …}') from None
            if not isinstance(body, dict):
                raise Refused(400, 'the body must be a JSON object: {"source": …, "name": …, "label": …}')
            return body

    return Handler
