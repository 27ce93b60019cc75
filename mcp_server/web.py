"""One process, one port: streamable HTTP MCP at ``/mcp``, and the REST API, ``/health``, ``/metrics`` and
the studio everywhere else, behind one door (bearer token when set, then Host/Origin checks).

The MCP part is the SDK's own Starlette app, untouched; this module routes by path and gives the REST part
the same DNS-rebinding protection and request-size limit the SDK gives ``/mcp``. CORS stays closed: no
route sends Access-Control-Allow-Origin, and a foreign Origin is refused outright.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import (
    RequestBodyLimitMiddleware,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.rest import build_api
from mcp_server.service import JobService

MCP_PATH = "/mcp"
MAX_REST_BODY_BYTES = 1024 * 1024  # the largest body (an export of 32 ids) is a few kB
# What a browser must load before it has the token: the studio's own files and the API's description.
PUBLIC_PATHS = frozenset({"/", "/docs", "/openapi.json", "/favicon.ico"})
PUBLIC_PREFIXES = ("/studio/",)
# The names the SDK accepts on its own for a loopback bind.
LOOPBACK_SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def one_port_app(
    mcp: MCPServer, service: JobService, host: str, security: TransportSecuritySettings | None
) -> ASGIApp:
    """``/mcp`` to the SDK (``security`` None = its loopback default), the rest to the REST API."""
    mcp_asgi = mcp.streamable_http_app(host=host, transport_security=security)
    api = build_api(service)
    guarded = RequestBodyLimitMiddleware(
        HostOriginGuard(SecurityHeaders(api), security or LOOPBACK_SECURITY), MAX_REST_BODY_BYTES
    )
    return PathRouter(mcp_asgi, guarded)


class PathRouter:
    """``/mcp`` and the lifespan (which runs the SDK's session manager) to the MCP app, the rest elsewhere."""

    def __init__(self, mcp: ASGIApp, rest: ASGIApp) -> None:
        self.mcp, self.rest = mcp, rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan" or path == MCP_PATH or path.startswith(MCP_PATH + "/"):
            await self.mcp(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


class SecurityHeaders:
    """What a browser must not do with these pages: run foreign scripts, load foreign media, frame them
    (clickjacking a local GPU), sniff types, or send the page's URL onwards. /docs loads Swagger UI from its
    CDN, so its page alone keeps the browser's defaults."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
            b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/docs":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


class HostOriginGuard:
    """The SDK's Host/Origin check (421 / 403) in front of an app that is not an MCP transport."""

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings) -> None:
        self.app = app
        self.checker = TransportSecurityMiddleware(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self.checker.validate_request(Request(scope), is_post=False)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
