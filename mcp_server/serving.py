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
    app = build_server(service, studio_url(host, port) if transport == "http" else None)
    with service:
        if transport == "stdio":
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda signum, frame: _stop_and_exit(service, signum))
            announce_ready(ready_line(settings, transport, host, port))
            anyio.run(app.run_stdio_async)
        else:
            asgi = http_app(app, service, settings, transport, host)
            # uvicorn stops on SIGINT/SIGTERM itself; long-polls get 5 s to finish before they are cut.
            config = uvicorn.Config(
                asgi, host=host, port=port, log_config=None, lifespan="on", timeout_graceful_shutdown=5
            )
            try:
                _ReadyServer(config, ready_line(settings, transport, host, port)).run()
            except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled once it has shut down
                pass
            finally:
                log.info("stopping: %s", _what_stopping_does(service))


def ready_line(settings: Settings, transport: str, host: str, port: int) -> str:
    """What the server prints once it accepts requests: where to connect, and what to send."""
    if transport == "stdio":
        where = "MCP over stdio (stdin/stdout)"
    else:
        name = "streamable HTTP" if transport == "http" else "SSE"
        endpoint = f"http://{_url_host(host)}:{port}{_path(transport)}"
        where = f"MCP over {name} at {endpoint}"
        if settings.token:
            where += " (send Authorization: Bearer $DGX_MUSIC_TOKEN)"
        if transport == "http":
            where += (
                f"; studio at {studio_url(host, port)}; "
                f"connect Claude Code: claude mcp add --transport http dgx-music {endpoint}"
            )
    return (
        f"dgx-music ready: {where}; model {settings.model} (loads in the background; the first generation "
        f"waits for it); data in {settings.home}"
    )


def announce_ready(line: str) -> None:
    """On stderr, whatever the log level: stdout is the stdio protocol, and people read stderr."""
    print(line, file=sys.stderr, flush=True)


class _ReadyServer(uvicorn.Server):
    """uvicorn announcing readiness once its socket is bound, not before."""

    def __init__(self, config: uvicorn.Config, ready: str) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            announce_ready(self._ready)


def http_app(app: MCPServer, service: JobService, settings: Settings, transport: str, host: str) -> ASGIApp:
    """The app for the transport, with Host/Origin checks and, when a token is set, auth.

    ``http`` is one port for everything (MCP at /mcp, REST, studio: see ``web``); ``sse`` is MCP alone.
    """
    # The SDK turns DNS-rebinding protection on by itself for loopback hosts only.
    security = None if is_loopback(host) else _security_for(host, settings.allowed_hosts)
    public = None
    if transport == "sse":
        asgi: ASGIApp = app.sse_app(host=host, transport_security=security)
    elif transport == "http":
        from mcp_server.web import is_public, one_port_app  # FastAPI loads for this transport only

        asgi, public = one_port_app(app, service, host, security), is_public
    else:
        raise ConfigError(f"--transport must be stdio, sse or http (got {transport!r})")
    return BearerTokenMiddleware(asgi, settings.token, public) if settings.token else asgi


def studio_url(host: str, port: int) -> str:
    """Where a browser finds the studio: this machine's name when bound to every interface."""
    return f"http://{_url_host(host)}:{port}/"


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]" if ":" in host else host


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
        log.info("stopping on signal %d: %s", signum, _what_stopping_does(service))
        service.stop()
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=stop_and_exit, name="dgx-music-shutdown").start()


def _what_stopping_does(service: JobService) -> str:
    running = service.running_job_ids()
    if not running:
        return "no job was running"
    return f"{len(running)} running job(s) go back to the queue: {', '.join(job[:8] for job in running)}"
