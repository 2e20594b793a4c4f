"""Small ASGI middleware: security headers on every answer, a request-size limit, and a
refusal (400 problem) of a NUL byte in the path or the query before anything parses it
(PostgreSQL cannot store one: it was a 500)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM, PayloadTooLarge

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# The docs pages load their script from a CDN: they get a looser policy than the API.
_CSP_API = b"default-src 'none'; frame-ancestors 'none'"
_CSP_DOCS = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net;"
    b" style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net;"
    b" img-src 'self' data: https://fastapi.tiangolo.com; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")
# The web view (api/routes/web.py): its own files only, and calls to this API. Styles set
# from scripts (uPlot sizes its canvas so) are not inline styles in the CSP's sense.
_CSP_WEB = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    b" connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self';"
    b" frame-ancestors 'none'"
)


def _csp(path: str) -> bytes:
    if path in DOCS_PATHS:
        return _CSP_DOCS
    if path == "/web" or path.startswith("/web/"):
        return _CSP_WEB
    return _CSP_API


async def _send_problem(
    send: Send, status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Hardening:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*SECURITY_HEADERS, (b"content-security-policy", _csp(scope["path"]))]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        if (
            b"\x00" in raw_path
            or b"%00" in raw_path.lower()
            or b"%00" in query.lower()
            or "\x00" in scope["path"]
        ):
            await _send_problem(
                send, 400, "bad request", "a NUL character in the path or query is refused", extra
            )
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _send_problem(
                send,
                413,
                "request too large",
                f"the body may have at most {self.max_body_bytes} bytes",
                extra,
            )
            return
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise PayloadTooLarge(f"the body may have at most {self.max_body_bytes} bytes")
            return message  # type: ignore[return-value]

        await self.app(scope, limited_receive, send_with_headers)
