"""Several `dgx-music worker` processes and `serve --no-worker` front-ends on one PostgreSQL database and one
shared outputs directory, driven by MCP clients over streamable HTTP while workers are killed and stalled.

The checks read the database with plain SQL and the files with hashlib, never through ``storage``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import statistics
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_testing import DGX_MUSIC, free_port, http_client, server_env, structured, wait_for_port
from reliability_helpers import crash_lines
from sqlalchemy import create_engine, text

LEASE_S = 3.0
COMPLETED_LINE = re.compile(r"job (\S+) completed \(attempt (\d+)\)")
# A stalled worker's ways of dropping a job it no longer holds: at commit (fenced), or at its next heartbeat.
DISCARDED_LINE = re.compile(
    r"job (\S+): (?:late (?:result|failure) discarded|the lease of attempt \d+ lapsed)"
)


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


@dataclass
class Cluster:
    url: str  # the database
    outputs: Path
    workers: dict[str, Proc] = field(default_factory=dict)
    frontends: list[Proc] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as connection:
                result = connection.execute(
                    text(
                        "SELECT id, status, worker_id, attempts, file_path, sha256, file_size, created_at, "
                        "started_at, completed_at, error FROM generations"
                    )
                )
                return [dict(row._mapping) for row in result]
        finally:
            engine.dispose()

    def held_by(self, worker_id: str) -> list[str]:
        return [r["id"] for r in self.rows() if r["status"] == "processing" and r["worker_id"] == worker_id]


def _env(home: Path, checkpoint: Path, url: str, outputs: Path, **extra: str) -> dict[str, str]:
    return server_env(
        home,
        checkpoint,
        DGX_MUSIC_DATABASE_URL=url,
        DGX_MUSIC_OUTPUTS=str(outputs),
        DGX_MUSIC_LEASE_S=str(LEASE_S),
        DGX_MUSIC_WORKER_MODELS=str(checkpoint),
        **extra,
    )


def _start(name: str, command: list[str], env: dict[str, str], root: Path, port: int) -> Proc:
    log_path = root / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    return Proc(name, process, log_path, port)


def health(proc: Proc) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/health", timeout=5) as response:
        return dict(json.load(response))


def metrics(proc: Proc) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def wait_ready(proc: Proc, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.process.poll() is None, f"{proc.name} exited:\n{proc.log()[-3000:]}"
        try:
            if health(proc)["state"] == "ready":
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{proc.name} never became ready:\n{proc.log()[-3000:]}")


@contextmanager
def cluster(root: Path, checkpoint: Path, url: str, workers: int, frontends: int) -> Iterator[Cluster]:
    """Start the processes (each with its own data directory, all with one outputs directory); stop after."""
    outputs = root / "shared-outputs"
    outputs.mkdir(parents=True)
    found = Cluster(url, outputs)
    with ExitStack() as stack:
        for i in range(workers):
            name, port = f"w{i}", free_port()
            env = _env(root / f"home-{name}", checkpoint, url, outputs, DGX_MUSIC_WORKER_ID=name)
            env["DGX_MUSIC_MAX_BATCH"] = "4"
            proc = _start(name, [DGX_MUSIC, "worker", "--port", str(port)], env, root, port)
            found.workers[name] = proc
            stack.callback(_stop, proc)
        for i in range(frontends):
            name, port = f"front{i}", free_port()
            env = _env(root / f"home-{name}", checkpoint, url, outputs)
            command = [DGX_MUSIC, "serve", "--no-worker", "--transport", "http", "--port", str(port)]
            proc = _start(name, command, env, root, port)
            found.frontends.append(proc)
            stack.callback(_stop, proc)
        for proc in found.frontends:
            wait_for_port(proc.port, proc.process, str(proc.log_path), timeout=180)
        for proc in found.workers.values():
            wait_ready(proc)
        yield found


def _stop(proc: Proc) -> None:
    if proc.process.poll() is None:
        proc.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.process.terminate()
        try:
            proc.process.wait(30)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()


@dataclass
class ClientRun:
    jobs: list[str] = field(default_factory=list)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress_seen: int = 0  # notifications with 0 < progress < total, while a job was unfinished


async def run_client(url: str, seeds: list[int]) -> ClientRun:
    """Queue one 1 s job per seed through the front-end at `url`, then long-poll each with progress."""
    run = ClientRun()
    async with http_client(url) as client:
        for seed in seeds:
            result = await client.call_tool(
                "generate_music",
                {"prompt": f"tiny take {seed}", "duration": 1, "seed": seed, "wait_seconds": 0},
            )
            [job] = structured(result)["jobs"]
            run.jobs.append(job["job_id"])

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            if total and 0 < progress < total:
                run.progress_seen += 1

        for job_id in run.jobs:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                status = structured(
                    await client.call_tool(
                        "job_status", {"job_id": job_id, "wait_seconds": 30}, progress_callback=on_progress
                    )
                )
                if status["status"] in ("completed", "failed", "cancelled"):
                    run.final[job_id] = status
                    break
    return run


async def run_clients(cluster: Cluster, clients: int, jobs_each: int) -> list[ClientRun]:
    urls = [f"http://127.0.0.1:{proc.port}" for proc in cluster.frontends]
    return list(
        await asyncio.gather(
            *(
                run_client(urls[i % len(urls)], list(range(i * 1000, i * 1000 + jobs_each)))
                for i in range(clients)
            )
        )
    )


async def wait_until_held(
    cluster: Cluster, worker_id: str, at_least: int = 1, timeout: float = 120.0
) -> list[str]:
    """The jobs `worker_id` is decoding, once it has held `at_least` of them for a moment (mid-decode)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(await asyncio.to_thread(cluster.held_by, worker_id)) >= at_least:
            await asyncio.sleep(0.3)  # the batch is decoding now
            held = await asyncio.to_thread(cluster.held_by, worker_id)
            if held:
                return held
        await asyncio.sleep(0.05)
    raise AssertionError(f"{worker_id} never held {at_least} jobs at once")


def completions(cluster: Cluster) -> Counter[str]:
    """job id -> how many times any worker's log says it committed that job as completed."""
    counted: Counter[str] = Counter()
    for proc in cluster.workers.values():
        counted.update(match.group(1) for match in COMPLETED_LINE.finditer(proc.log()))
    return counted


def _completed_attempts(cluster: Cluster) -> dict[str, int]:
    """job id -> the attempt whose claim committed it, as the committing worker logged it."""
    return {
        match.group(1): int(match.group(2))
        for proc in cluster.workers.values()
        for match in COMPLETED_LINE.finditer(proc.log())
    }


def discarded(proc: Proc) -> set[str]:
    return {match.group(1) for match in DISCARDED_LINE.finditer(proc.log())}


def check_all_completed_once(
    cluster: Cluster, expected: set[str], cancelled: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Every expected job completed exactly once with a sound file; the rest of the table is `cancelled`."""
    rows = {row["id"]: row for row in cluster.rows()}
    assert set(rows) == expected | cancelled
    assert all(rows[job_id]["status"] == "cancelled" for job_id in cancelled)
    rows = {job_id: rows[job_id] for job_id in expected}
    for row in rows.values():
        assert row["status"] == "completed", row
        path = cluster.outputs / Path(row["file_path"]).relative_to("outputs")
        data = path.read_bytes()
        assert len(data) == row["file_size"] and hashlib.sha256(data).hexdigest() == row["sha256"], row
    counted = completions(cluster)
    assert {job_id: counted[job_id] for job_id in expected} == dict.fromkeys(expected, 1), "double completion"
    attempts = _completed_attempts(cluster)
    assert {job_id: attempts[job_id] for job_id in expected} == {j: rows[j]["attempts"] for j in expected}
    leftovers = [p for p in cluster.outputs.rglob("*") if p.is_file() and p.suffix != ".wav"]
    assert leftovers == [], leftovers
    return list(rows.values())


def no_crashes(procs: list[Proc]) -> None:
    for proc in procs:
        assert crash_lines(proc.log()) == [], f"{proc.name}:\n{proc.log()[-4000:]}"


def claim_figures(
    cluster: Cluster, rows: list[dict[str, Any]], earlier: dict[str, str] | None = None
) -> dict[str, Any]:
    """Claim latency per worker (its /metrics summary: now for live ones, `earlier` texts for workers that
    were killed) and the queue wait (submit to the final claim)."""
    texts = dict(earlier or {})
    texts.update({n: metrics(p) for n, p in cluster.workers.items() if p.process.poll() is None})
    figures: dict[str, Any] = {}
    for name, text_ in sorted(texts.items()):
        quantiles = dict(re.findall(r'claim_seconds\{[^}]*quantile="([\d.]+)"\} ([\d.e-]+)', text_))
        count = re.search(r"claim_seconds_count\{[^}]*\} (\d+)", text_)
        figures[name] = {
            "claim_p50_ms": round(float(quantiles.get("0.5", "nan")) * 1000, 2),
            "claim_p95_ms": round(float(quantiles.get("0.95", "nan")) * 1000, 2),
            "claims": int(count.group(1)) if count else 0,
        }
    waits = sorted((row["started_at"] - row["created_at"]).total_seconds() for row in rows)
    figures["queue_wait_p50_s"] = round(statistics.median(waits), 2)
    figures["queue_wait_p95_s"] = round(statistics.quantiles(waits, n=20)[-1], 2)
    return figures
