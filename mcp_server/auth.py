"""Bearer-token authentication for the HTTP transports (streamable HTTP and SSE).

A plain ASGI middleware in front of the whole app: every HTTP request must carry
``Authorization: Bearer <token>``, compared in constant time. The token is never logged. Paths for which
``is_public`` says so (the studio's static files, which must load before the page can ask for the token)
pass without it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)


class BearerTokenMiddleware:
    def __init__(self, app: ASGIApp, token: str, is_public: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._is_public = is_public or (lambda path: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan events pass through
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected) or self._is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        log.warning(
            "refused %s %s from %s: missing or wrong bearer token", scope["method"], scope["path"], client
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="dgx-music"'),
                ],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": b'{"error": "unauthorized", '
                b'"error_description": "send Authorization: Bearer <DGX_MUSIC_TOKEN>"}',
            }
        )
