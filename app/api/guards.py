"""ASGI guards around the whole app: allowed Host names, plain names, body limits, security headers."""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings, is_loopback_name

KIB = 1024

# Request body limits by path prefix, first match wins: the one home of these numbers.
# Sign-in bodies hold two short strings; review writes are small JSON; nothing takes uploads.
BODY_LIMITS: tuple[tuple[str, int], ...] = (
    ("/api/auth/", 4 * KIB),
    ("/api/", 64 * KIB),
)
DEFAULT_BODY_LIMIT = 64 * KIB

# No inline script or style anywhere: every page loads /static modules and the stylesheet. JSON data blocks
# (<script type="application/json">) are never executed, so `script-src 'self'` leaves them working.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
# The interactive API docs (Swagger UI, served from the swagger-ui-bundle package): still no inline script,
# but Swagger UI sets style attributes and draws icons as data: images. They hold no review data.
DOCS_PATHS = frozenset({"/docs"})
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def body_limit(path: str) -> int:
    """The largest request body accepted on this path, in bytes."""
    for prefix, limit in BODY_LIMITS:
        if path.startswith(prefix):
            return limit
    return DEFAULT_BODY_LIMIT


def _json_error(status: int, code: str, detail: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"detail": detail, "code": code}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ],
    }
    return start, body


async def _send_error(send: Send, status: int, code: str, detail: str) -> None:
    start, body = _json_error(status, code, detail)
    await send(start)
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def host_name(host_header: str) -> str:
    """The name part of a Host header, lower case, without the port (IPv6 keeps its brackets)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_host_names(settings: Settings) -> frozenset[str] | None:
    """Loopback names plus the configured ones; None (any host) for "*" or an unconfigured team server."""
    extra = settings.extra_allowed_hosts()
    if "*" in extra or (not extra and not settings.on_loopback()):
        return None
    return frozenset((*LOOPBACK_HOSTS, *extra))


class AllowedHosts:
    """400 for a Host header the server does not answer to: a DNS rebinding page names its own host."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.allowed = allowed_host_names(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed is None:
            await self.app(scope, receive, send)
            return
        name = host_name(_header(scope, b"host") or "")
        if name in self.allowed or (name not in ("", "localhost") and is_loopback_name(name)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _send_error(
            send,
            400,
            "bad_host",
            "this server does not answer to that Host name (LESION_REVIEW_ALLOWED_HOSTS)",
        )


def _control_character_answer(scope: Scope) -> tuple[int, str, str] | None:
    path: str = scope.get("path", "")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        # No route, file or slice name holds one: the API's answer for a name that names nothing.
        return 404, "not_found", "no such name: control characters in the path"
    # In the query only NUL: a tab or newline there is plain (if odd) text, as in a sign-in page's `next=`.
    if b"%00" in scope.get("query_string", b""):
        return 422, "invalid_input", "NUL in the query"
    return None


class PlainNames:
    """404 for control characters (NUL, tab, newline...) in the path, 422 for NUL in the query.

    No name, file or filter has one, and PostgreSQL refuses NUL in text (a 500 deep inside a query).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = _control_character_answer(scope) if scope["type"] == "http" else None
        if answer is not None:
            await _send_error(send, *answer)
            return
        await self.app(scope, receive, send)


class BodyTooLargeError(HTTPException):
    """A request body over its route's limit, found while it streams in."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail={"detail": f"request body larger than {limit} bytes", "code": "body_too_large"},
        )


class BodyLimit:
    """413 for a body over its route's limit: by Content-Length up front, else by counting as it streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"])
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                too_large = False  # the server rejects a malformed length itself
            if too_large:
                await _send_error(send, 413, "body_too_large", f"request body larger than {limit} bytes")
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPException from body reading, so the app's error handler answers.
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _send_error(send, 413, "body_too_large", f"request body larger than {limit} bytes")


class SecurityHeaders:
    """Content-Security-Policy, nosniff, no framing and a same-origin Referrer-Policy on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CONTENT_SECURITY_POLICY if scope["path"] in DOCS_PATHS else CONTENT_SECURITY_POLICY

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in (("Content-Security-Policy", csp), *SECURITY_HEADERS):
                    key = name.lower().encode()
                    if key not in present:
                        headers.append((key, value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install_guards(app: Any, settings: Settings) -> None:
    """Wrap the app: headers outermost (every answer gets them), then the Host check, names, body limits."""
    app.add_middleware(BodyLimit)
    app.add_middleware(PlainNames)
    app.add_middleware(AllowedHosts, settings=settings)
    app.add_middleware(SecurityHeaders)
