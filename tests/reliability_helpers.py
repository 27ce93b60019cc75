"""Helpers for the reliability tests: a killable server subprocess, a read-only look at the data directory,
and telling a deliberate tool error from a crash.

The database is opened with the sqlite3 module in read-only mode, never through ``storage``: the checks must
not depend on (or be fixed up by) the code they check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp import Client
from mcp_testing import DGX_MUSIC, free_port, server_env, wait_for_port
from mcp_types import CallToolResult

from mcp_server.config import Settings
from mcp_server.server import build_server
from mcp_server.service import JobService

TERMINAL = frozenset({"completed", "failed", "cancelled"})
CRASH_LOG_MARKS = ("raised an unexpected exception", "Traceback (most recent call last)")
# The initialize request of the handshake Claude Desktop and Claude Code speak, for raw-protocol tests.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "dgx-music-tests", "version": "0"},
    },
}


# --- the server as a subprocess ---------------------------------------------------------------------------


@dataclass
class Server:
    """One `dgx-music serve --transport http|sse` child on a loopback port."""

    url: str
    process: subprocess.Popen[bytes]
    home: Path
    log_path: Path  # its stdout and stderr

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed, exactly like a power cut for the process."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve_http(
    home: Path,
    checkpoint: Path,
    *,
    token: str | None = None,
    preexec: Callable[[], None] | None = None,
    settings: Mapping[str, str] | None = None,
    transport: str = "http",
) -> Iterator[Server]:
    """Start the server (``settings`` as DGX_MUSIC_* variables, e.g. {"MAX_QUEUE": "2"}) and stop it after.

    ``preexec`` runs in the child before exec, e.g. to set a resource limit on the server alone.
    Each start appends to one log file per home, so a failing test shows every round.
    """
    port = free_port()
    env = server_env(
        home, checkpoint, **{f"DGX_MUSIC_{key}": value for key, value in (settings or {}).items()}
    )
    if token:
        env["DGX_MUSIC_TOKEN"] = token
    log_path = home.parent / f"{home.name}-server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [DGX_MUSIC, "serve", "--transport", transport, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=preexec,  # only sets a resource limit; no threads in the child yet
        )
    server = Server(f"http://127.0.0.1:{port}", process, home, log_path)
    try:
        wait_for_port(port, process, str(log_path))
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def in_process(
    home: Path, checkpoint: Path, **overrides: Any
) -> AsyncIterator[tuple[JobService, Client]]:
    """The real service (worker thread, store, tiny model) and an MCP client on its server, in-process.

    ``overrides`` are Settings fields, e.g. max_queue=2 or job_timeout_s=0.5.
    """
    settings = Settings.load({}, home=home, model=str(checkpoint), device="cpu", **overrides)
    with JobService(settings) as service:
        async with Client(build_server(service)) as client:
            yield service, client


# --- the data directory, read-only ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    status: str
    file_path: str | None
    sha256: str | None
    file_size: int | None
    error: str | None
    attempts: int


def database(home: Path) -> Path:
    return home / "dgx-music.db"


def read_rows(home: Path) -> dict[str, Row]:
    """Every generation row, read through a read-only SQLite connection."""
    with _read_only(home) as connection:
        cursor = connection.execute(
            "SELECT id, status, file_path, sha256, file_size, error, attempts FROM generations"
        )
        return {row[0]: Row(*row) for row in cursor}


def integrity(home: Path) -> str:
    with _read_only(home) as connection:
        return "; ".join(str(row[0]) for row in connection.execute("PRAGMA integrity_check"))


@contextmanager
def _read_only(home: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(f"file:{database(home)}?mode=ro", uri=True, timeout=10)
    try:
        yield connection
    finally:
        connection.close()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_completed(home: Path) -> dict[str, Row]:
    """What must hold at every instant, even right after a SIGKILL; returns the rows.

    The database passes PRAGMA integrity_check; every completed row names a file under outputs/ that exists
    with the stored size and sha256; no other row names a file.
    """
    assert integrity(home) == "ok"
    rows = read_rows(home)
    for row in rows.values():
        if row.status != "completed":
            assert row.file_path is None and row.sha256 is None, row
            continue
        assert row.file_path is not None and row.file_path.startswith("outputs/"), row
        path = home / row.file_path
        assert path.is_file(), f"completed job {row.id} has no file at {path}"
        assert path.stat().st_size == row.file_size, row
        assert sha256_of(path) == row.sha256, f"completed job {row.id}: {path} does not match its sha256"
    return rows


def check_consistent(home: Path) -> dict[str, Row]:
    """check_completed, and outputs/ holds nothing else: no temp file, no orphan WAV (after recovery)."""
    rows = check_completed(home)
    expected = {home / row.file_path for row in rows.values() if row.file_path is not None}
    visible = {path for path in (home / "outputs").rglob("*") if not path.is_dir()}
    assert visible == expected, f"files under outputs/ without a completed row: {sorted(visible - expected)}"
    return rows


def snapshot_tree(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of everything under ``root``, to prove nothing there changed."""
    return {
        str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in root.rglob("*")
    }


# --- tool results -----------------------------------------------------------------------------------------


def tool_text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def is_crash(result: CallToolResult, tool: str) -> bool:
    """True when the server crashed inside the tool: the SDK then sends only "Error executing tool NAME".

    A deliberate ToolError arrives as "Error executing tool NAME: <message>", rejected arguments as
    "NAME: N invalid arguments, ...", a failed job as "job ID failed: <error>" followed by the job.
    """
    if not result.is_error:
        return False
    text = tool_text(result).strip()
    return not text or text.rstrip(":") == f"Error executing tool {tool}"


class CrashRecords(logging.Handler):
    """Collects log records that mean a handler or the worker crashed (in-process servers): the SDK's errors
    (an unexpected exception in a tool or resource) and any traceback logged by our server. Plain error
    lines such as "could not load MODEL" are expected outcomes of bad input and are not collected."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or record.name.startswith("mcp.server"):
            self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{record.name}: {record.getMessage()}" for record in self.records]


@contextmanager
def crash_records() -> Iterator[CrashRecords]:
    """ERROR records from the SDK's server and from our server package while the block runs."""
    handler = CrashRecords()
    loggers = [logging.getLogger(name) for name in ("mcp.server", "mcp_server")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def crash_lines(log: str) -> list[str]:
    """Lines of a server log that show a crash (for subprocess servers)."""
    return [line for line in log.splitlines() if any(mark in line for mark in CRASH_LOG_MARKS)]


# --- raw JSON-RPC over a stdio server ---------------------------------------------------------------------


class RawStdio:
    """`dgx-music serve` over stdio driven line by line, for messages no client library would send."""

    def __init__(self, command: list[str], env: dict[str, str], timeout: float = 60.0) -> None:
        self.command, self.env, self.timeout = command, env, timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def __enter__(self) -> RawStdio:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()  # end of input: the stdio server shuts down
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def send_raw(self, line: str | bytes) -> None:
        assert self.process is not None and self.process.stdin is not None
        data = line.encode() if isinstance(line, str) else line
        self.process.stdin.write(data + b"\n")
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message))

    def receive(self, request_id: int) -> dict[str, Any]:
        """The response to ``request_id``, skipping notifications and other responses; bounded in time."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                message = json.loads(line)  # anything but JSON-RPC on stdout is itself a failure
                if message.get("id") == request_id and "method" not in message:
                    return dict(message)
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to request {request_id} within {self.timeout} s"
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"the server closed stdout (exit {self.process.poll()}) before answering"
                self._buffer += chunk

    def initialize(self) -> None:
        """The initialize handshake (the protocol revision Claude Desktop and Claude Code speak)."""
        self.send(INITIALIZE)
        assert "result" in self.receive(1)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
