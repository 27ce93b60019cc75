"""Run the MCP server over stdio, SSE or streamable HTTP, with the job service around it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

import anyio
import psutil
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from mcp_server.auth import BearerTokenMiddleware
from mcp_server.config import ConfigError, Settings, check_http_exposure, is_loopback
from mcp_server.server import build_server
from mcp_server.service import JobService

log = logging.getLogger(__name__)


def serve(
    settings: Settings,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    run_worker: bool = True,
) -> None:
    """Serve until stdin closes (stdio) or SIGINT/SIGTERM; the worker re-queues what it was doing.

    ``run_worker=False``: a stateless front-end; `dgx-music worker` processes (any host) do the work."""
    if transport != "stdio":
        check_http_exposure(settings.token, host)
    # The worker thread holds the GIL through the Python parts of each decode step; hand it back to the
    # event loop more often than every 5 ms so status calls stay quick while a batch runs.
    sys.setswitchinterval(0.001)
    service = JobService(settings, run_worker=run_worker)
    app = build_server(service)
    with service:
        if transport == "stdio":
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda signum, frame: _stop_and_exit(service, signum))
            anyio.run(app.run_stdio_async)
        else:
            asgi = http_app(app, settings, transport, host)
            log.info("serving MCP over %s on http://%s:%d%s", transport, host, port, _path(transport))
            # uvicorn stops on SIGINT/SIGTERM itself; long-polls get 5 s to finish before they are cut.
            config = uvicorn.Config(
                asgi, host=host, port=port, log_config=None, lifespan="on", timeout_graceful_shutdown=5
            )
            uvicorn.Server(config).run()


def http_app(app: MCPServer, settings: Settings, transport: str, host: str) -> ASGIApp:
    """The SDK's Starlette app for the transport, with Host/Origin checks and, when a token is set, auth."""
    # The SDK turns DNS-rebinding protection on by itself for loopback hosts only.
    security = None if is_loopback(host) else _security_for(host, settings.allowed_hosts)
    if transport == "sse":
        asgi: ASGIApp = app.sse_app(host=host, transport_security=security)
    elif transport == "http":
        asgi = app.streamable_http_app(host=host, transport_security=security)
    else:
        raise ConfigError(f"--transport must be stdio, sse or http (got {transport!r})")
    return BearerTokenMiddleware(asgi, settings.token) if settings.token else asgi


def _security_for(host: str, extra: str | None) -> TransportSecuritySettings:
    """Accept the names and addresses this machine answers to (all of them when bound to a wildcard)."""
    names = {"127.0.0.1", "localhost", "[::1]", socket.gethostname(), socket.getfqdn()}
    if host in ("0.0.0.0", "::"):
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family == socket.AF_INET:
                    names.add(address.address)
                elif address.family == socket.AF_INET6:
                    names.add(f"[{address.address.split('%')[0]}]")
    else:
        names.add(f"[{host}]" if ":" in host else host)
    names |= {name.strip() for name in (extra or "").split(",") if name.strip()}
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(f"{name}:*" for name in names) + sorted(names),
        allowed_origins=sorted(
            f"{scheme}://{name}{port}"
            for name in names
            for scheme in ("http", "https")
            for port in ("", ":*")
        ),
    )


def _path(transport: str) -> str:
    return "/sse" if transport == "sse" else "/mcp"


def _stop_and_exit(service: JobService, signum: int) -> None:
    """On a signal under stdio: re-queue the running batch, then exit at once.

    Unwinding the event loop instead would hang: the SDK's stdin reader thread stays blocked in a read
    until the client closes the pipe. The work runs on its own thread so the handler returns at once and
    never waits on a lock the interrupted main thread may hold.
    """

    def stop_and_exit() -> None:
        log.info("stopping on signal %d: the running batch goes back to the queue", signum)
        service.stop()
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=stop_and_exit, name="dgx-music-shutdown").start()
