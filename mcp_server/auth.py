"""Bearer-token authentication for the HTTP transports (streamable HTTP and SSE).

A plain ASGI middleware in front of the whole app: every HTTP request must carry
``Authorization: Bearer <token>``, compared in constant time. The token is never logged.

The token is a static secret the operator hands out, not OAuth: the OAuth discovery paths under
``/.well-known/`` answer 404 (before any token check), so clients such as the MCP Inspector and Claude Code
do not start an OAuth flow, and a request without the token gets a 401 whose body names the header to send.
Paths for which ``is_public`` says so (the studio's static files, which must load before the page can ask
for the token) pass without it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

DISCOVERY_PREFIX = "/.well-known/"
UNAUTHORIZED_BODY = (
    b'{"error": "unauthorized", "error_description": "this server needs the header '
    b"'Authorization: Bearer <token>', where <token> is the DGX_MUSIC_TOKEN the server was started with "
    b'(it offers no OAuth)"}'
)
NO_OAUTH_BODY = (
    b'{"error": "not_found", "error_description": "this server offers no OAuth; send the header '
    b"'Authorization: Bearer <token>' with the server's DGX_MUSIC_TOKEN\"}"
)


class BearerTokenMiddleware:
    def __init__(self, app: ASGIApp, token: str, is_public: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._is_public = is_public or (lambda path: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan events pass through
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(DISCOVERY_PREFIX):  # OAuth metadata: there is none to discover
            await _respond(send, 404, NO_OAUTH_BODY)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected) or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        log.warning(
            "refused %s %s from %s: missing or wrong bearer token", scope["method"], scope["path"], client
        )
        await _respond(send, 401, UNAUTHORIZED_BODY, [(b"www-authenticate", b'Bearer realm="dgx-music"')])


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})
