"""A soak run: `dgx-music serve` under a steady mix of clients for minutes or hours, watched for leaks.

    python -m bench.soak --minutes 10                    # a tiny random checkpoint: the service's soak
    python -m bench.soak --minutes 1440 --checkpoint DIR # the 24 h uptime target, on the real model

The server runs as a subprocess (streamable HTTP, its own DGX_MUSIC_HOME in a temporary directory), and
``--clients`` MCP clients (the official client, over HTTP) loop over a mix of what agents do: generate and
wait, poll job_status, search list_history, cancel a job just queued, extend a finished piece, export two
pieces to Ardour, a request with an out-of-range argument (which must be refused, naming it), and REST reads
of /health, /metrics and /api/v1/history. Every ``--sample-seconds`` the server process's resident memory,
open file descriptors and threads, and the size of its home directory, are sampled.

Printed at the end: operations per kind with p50/p95 latency, the share that went wrong (an exception, a tool
error that was not asked for, a failed job, a timeout; refusals of the bad argument are counted apart as
expected), memory and descriptors at start / end / peak, and the memory slope (least squares over the samples
after the first fifth, the warm-up) projected over 24 h. The exit status is 1 when errors reach 5 % (the
brief's target) or the projected growth exceeds ``--leak-mb`` (500), so the run can gate a deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from engine.musicgen.checkpoints import SAMPLE_PROMPTS, build_random_checkpoint

ERROR_TARGET = 0.05  # the brief: < 5 % errors
DGX_MUSIC = shutil.which("dgx-music", path=str(Path(sys.executable).parent)) or "dgx-music"


class Unexpected(Exception):
    """An operation's outcome that a working server would not give."""


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    fds: int
    threads: int
    home_mb: float


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def operations(self) -> int:
        return sum(len(times) for times in self.latencies.values()) + self.failures

    @property
    def failures(self) -> int:
        return sum(len(messages) for messages in self.errors.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(home: Path, checkpoint: Path, port: int, threads: int) -> subprocess.Popen[bytes]:
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    env.update(
        DGX_MUSIC_HOME=str(home),
        DGX_MUSIC_MODEL=str(checkpoint),
        OMP_NUM_THREADS=str(threads),
        HF_HUB_OFFLINE="1",
    )
    log = (home.parent / "server.log").open("wb")  # the child keeps it open until it exits
    return subprocess.Popen(
        [DGX_MUSIC, "serve", "--transport", "http", "--port", str(port)], env=env, stdout=log, stderr=log
    )


async def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}; see its server.log")
            try:
                if (await http.get(url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit(f"/health did not answer 200 within {timeout:g} s")


@asynccontextmanager
async def mcp_client(url: str) -> Any:
    async with create_mcp_http_client() as http:
        transport = streamable_http_client(url + "/mcp", http_client=http, max_sse_event_size=None)
        async with Client(transport) as client:
            yield client


def home_megabytes(home: Path) -> float:
    """The size of the server's home; files and folders renamed or removed meanwhile (atomic audio writes,
    a session directory moved into place) are skipped: os.walk ignores a folder that vanished."""
    total = 0
    for folder, _, files in os.walk(home):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total / 1e6


async def sampler(
    server: psutil.Process, home: Path, every: float, samples: list[Sample], start: float
) -> None:
    while server.is_running():
        try:
            with server.oneshot():
                rss, fds, threads = server.memory_info().rss, server.num_fds(), server.num_threads()
        except psutil.Error:  # it exited between the check and the read: the run reports that
            return
        samples.append(Sample(time.monotonic() - start, rss / 1e6, fds, threads, home_megabytes(home)))
        await asyncio.sleep(every)


class Workload:
    """The operations one client picks from, with the jobs it has made so far."""

    def __init__(self, client: Any, url: str, http: httpx.AsyncClient, duration: tuple[float, float]) -> None:
        self.client, self.url, self.http, self.duration = client, url, http, duration
        self.completed: list[str] = []

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.client.call_tool(tool, arguments)
        if result.is_error or result.structured_content is None:
            raise Unexpected(f"{tool}: {result.content[0].text if result.content else result}"[:300])
        return dict(result.structured_content)

    def jobs_done(self, content: dict[str, Any]) -> None:
        for job in content.get("jobs", [content]):
            if job["status"] != "completed":
                raise Unexpected(f"job {job['job_id']} ended {job['status']}: {job.get('error')}")
            self.completed.append(job["job_id"])

    async def generate(self) -> None:
        seconds = round(random.uniform(*self.duration), 1)
        content = await self.call(
            "generate_music",
            prompt=random.choice(SAMPLE_PROMPTS),
            duration=seconds,
            temperature=round(random.uniform(0.7, 1.2), 2),
            top_k=random.choice([50, 250]),
            wait_seconds=120,
        )
        self.jobs_done(content)

    async def status(self) -> None:
        if self.completed:
            await self.call("job_status", job_id=random.choice(self.completed))

    async def search(self) -> None:
        await self.call(
            "list_history", query=random.choice(["piano", "synth*", "drums", "ambient"]), limit=10
        )

    async def cancel(self) -> None:
        content = await self.call(
            "generate_music", prompt=random.choice(SAMPLE_PROMPTS), duration=self.duration[1], wait_seconds=0
        )
        [job] = content["jobs"]
        cancelled = await self.call("cancel_job", job_id=job["job_id"])
        if cancelled["status"] not in ("cancelled", "completed"):  # it may have finished first
            raise Unexpected(f"cancel_job left {job['job_id']} {cancelled['status']}")

    async def extend(self) -> None:
        if self.completed:
            self.jobs_done(
                await self.call("extend_music", job_id=self.completed[-1], seconds=1, wait_seconds=120)
            )

    async def export(self) -> None:
        if len(self.completed) >= 2:
            await self.call(
                "export_to_ardour",
                job_ids=self.completed[-2:],
                session_name=f"soak {random.randrange(10**6)}",
            )

    async def refused(self) -> None:
        result = await self.client.call_tool(
            "generate_music", {"prompt": "too long", "duration": 100_000, "wait_seconds": 0}
        )
        text = " ".join(getattr(block, "text", "") for block in result.content)
        if not result.is_error or "duration" not in text:
            raise Unexpected(f"an out-of-range duration was not refused by name: {text[:200]}")

    async def rest(self) -> None:
        for path in ("/health", "/metrics", "/api/v1/history?limit=5"):
            response = await self.http.get(self.url + path)
            if response.status_code != 200:
                raise Unexpected(f"GET {path}: {response.status_code} {response.text[:200]}")


MIX: list[tuple[str, float]] = [
    ("generate", 0.45),
    ("status", 0.15),
    ("search", 0.1),
    ("cancel", 0.06),
    ("extend", 0.06),
    ("export", 0.05),
    ("refused", 0.05),
    ("rest", 0.08),
]


async def client_loop(url: str, until: float, duration: tuple[float, float], tally: Tally) -> None:
    async with mcp_client(url) as client, httpx.AsyncClient(timeout=60) as http:
        workload = Workload(client, url, http, duration)
        names, weights = zip(*MIX, strict=True)
        while time.monotonic() < until:
            name = random.choices(names, weights)[0]
            operation: Callable[[], Awaitable[Any]] = getattr(workload, name)
            start = time.monotonic()
            try:
                await asyncio.wait_for(operation(), timeout=300)
            except Exception as error:  # every way an operation can go wrong is counted, not raised
                tally.errors[name].append(f"{type(error).__name__}: {error}"[:300])
                continue
            tally.latencies[name].append(time.monotonic() - start)


def slope_mb_per_hour(samples: list[Sample]) -> float | None:
    """Least-squares slope of resident memory over the samples after the first fifth (warm-up)."""
    steady = samples[len(samples) // 5 :]
    if len(steady) < 3:
        return None
    xs, ys = [sample.seconds / 3600 for sample in steady], [sample.rss_mb for sample in steady]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def soak(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    checkpoint = args.checkpoint or build_random_checkpoint(scratch / "musicgen-tiny")
    home, port = scratch / "home", free_port()
    home.mkdir()
    server = start_server(home, checkpoint, port, args.threads)
    url = f"http://127.0.0.1:{port}"
    samples: list[Sample] = []
    tally = Tally()
    try:
        await wait_healthy(url, server)
        start = time.monotonic()
        watch = asyncio.create_task(
            sampler(psutil.Process(server.pid), home, args.sample_seconds, samples, start)
        )
        until = start + args.minutes * 60
        await asyncio.gather(*(client_loop(url, until, args.duration, tally) for _ in range(args.clients)))
        if watch.done():
            watch.result()  # a sampler that broke is a bug of this script: say so
        watch.cancel()
        elapsed = time.monotonic() - start
        alive = server.poll() is None
        log_tail = "" if alive else (scratch / "server.log").read_text(errors="replace")[-3000:]
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    slope = slope_mb_per_hour(samples)
    return {
        "minutes": elapsed / 60,
        "clients": args.clients,
        "server_alive_at_end": alive,
        "server_log_tail": log_tail,
        "operations": tally.operations,
        "error_rate": tally.failures / tally.operations if tally.operations else 1.0,
        "refused_as_expected": len(tally.latencies.get("refused", [])),
        "latency_s": {
            name: {"count": len(times), "p50": percentile(times, 0.5), "p95": percentile(times, 0.95)}
            for name, times in sorted(tally.latencies.items())
        },
        "errors": {name: messages[:5] for name, messages in tally.errors.items()},
        "error_counts": {name: len(messages) for name, messages in tally.errors.items()},
        "rss_mb_slope_per_hour": slope,
        "samples": [asdict(sample) for sample in samples],
    }


def report(result: dict[str, Any], leak_mb: float) -> bool:
    print(f"{result['minutes']:.1f} min, {result['clients']} clients, {result['operations']} operations")
    for name, figures in result["latency_s"].items():
        errors = result["error_counts"].get(name, 0)
        print(
            f"  {name:9s} {figures['count']:5d} ok  {errors:3d} wrong  p50 {figures['p50']:6.2f} s  "
            f"p95 {figures['p95']:6.2f} s"
        )
    for name, messages in result["errors"].items():
        print(f"  {name} went wrong, e.g.: {messages[0]}")
    if not result["server_alive_at_end"]:
        print(f"  the server died; the end of its log:\n{result['server_log_tail']}")
    samples = result["samples"]
    projected = None if result["rss_mb_slope_per_hour"] is None else 24 * result["rss_mb_slope_per_hour"]
    if samples:
        first, last = samples[0], samples[-1]
        peak_rss = max(sample["rss_mb"] for sample in samples)
        peak_fds = max(sample["fds"] for sample in samples)
        print(
            f"  server memory {first['rss_mb']:.0f} -> {last['rss_mb']:.0f} MB (peak {peak_rss:.0f}), "
            f"descriptors {first['fds']} -> {last['fds']} (peak {peak_fds}), threads {first['threads']} -> "
            f"{last['threads']}, home {first['home_mb']:.1f} -> {last['home_mb']:.1f} MB"
        )
    errors_ok = result["error_rate"] < ERROR_TARGET and result["server_alive_at_end"]
    leak_ok = projected is None or projected <= leak_mb
    print(
        f"errors {100 * result['error_rate']:.2f} % (target < {100 * ERROR_TARGET:g} %: "
        f"{'met' if errors_ok else 'NOT met'}); refusals of the bad argument {result['refused_as_expected']}"
    )
    print(
        "memory slope "
        + (
            "n/a (too few samples)"
            if projected is None
            else f"{projected / 24:+.1f} MB/h, {projected:+.0f} MB in 24 h"
        )
        + f" (limit {leak_mb:g} MB: {'met' if leak_ok else 'NOT met'})"
    )
    return errors_ok and leak_ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the clients run (10)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent MCP clients (3)")
    parser.add_argument("--checkpoint", type=Path, help="a MusicGen checkpoint (default: a tiny random one)")
    parser.add_argument(
        "--duration", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"), help="seconds (1 3)"
    )
    parser.add_argument("--threads", type=int, default=1, help="the server's OMP_NUM_THREADS (1)")
    parser.add_argument(
        "--sample-seconds", type=float, default=5.0, help="how often to sample the server (5)"
    )
    parser.add_argument(
        "--leak-mb", type=float, default=500.0, help="most memory growth allowed in 24 h (500)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dgx-music-soak-") as scratch:
        result = asyncio.run(soak(args, Path(scratch)))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if report(result, args.leak_mb) else 1


if __name__ == "__main__":
    sys.exit(main())
