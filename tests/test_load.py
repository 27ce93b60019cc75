"""Concurrent clients over streamable HTTP: no protocol error, no lost or duplicated job, and job_status stays
fast while the worker generates.

Each client opens its own MCP session to one `dgx-music serve --transport http` process and makes a seeded
random mix of calls: generate_music (1 s, tiny checkpoint, wait_seconds=0), job_status, list_history, and
reads of both resources (each WAV read is checked against its sha256). At the end the database must hold
exactly the jobs the clients were given, each once, all completed, with their files intact.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp_testing import http_client, structured
from mcp_types import BlobResourceContents, TextResourceContents
from reliability_helpers import TERMINAL, check_consistent, read_rows, serve_http

DRAIN_SECONDS = 300.0
CALL_TIMEOUT = 60.0
MIX = ["status", "status", "history", "read"]  # between generations (every fifth call)


@dataclass
class Tally:
    """What all clients saw, shared between their tasks (one event loop, so no lock is needed)."""

    jobs: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    status_seconds: list[float] = field(default_factory=list)


async def one_client(url: str, number: int, calls: int, seed: int, tally: Tally) -> None:
    rng = random.Random(seed * 1000 + number)
    mine: list[str] = []
    async with http_client(url) as client:
        for n in range(calls):
            kind = (
                "generate" if not mine or n % 5 == 0 else rng.choice(["status", "status", "history", "read"])
            )
            tally.calls[kind] += 1
            try:
                with anyio.fail_after(CALL_TIMEOUT):
                    if kind == "generate":
                        arguments = {"prompt": f"load {number}-{n}", "duration": 1, "wait_seconds": 0}
                        jobs = structured(await client.call_tool("generate_music", arguments))["jobs"]
                        mine += [job["job_id"] for job in jobs]
                        tally.jobs += [job["job_id"] for job in jobs]
                    elif kind == "status":
                        started = time.perf_counter()
                        result = await client.call_tool("job_status", {"job_id": rng.choice(mine)})
                        tally.status_seconds.append(time.perf_counter() - started)
                        assert structured(result)["job_id"] in mine
                    elif kind == "history":
                        structured(await client.call_tool("list_history", {"limit": rng.randint(1, 100)}))
                    else:
                        await read_job(client, rng.choice(mine))
            except Exception as exc:  # every failure is counted, none stops the run
                tally.errors.append(f"client {number} call {n} ({kind}): {type(exc).__name__}: {exc}")


async def read_job(client: Client, job_id: str) -> None:
    """The job resource; when completed, its audio too, checked against the recorded sha256."""
    [text] = (await client.read_resource(f"music://generations/{job_id}", cache_mode="bypass")).contents
    assert isinstance(text, TextResourceContents)
    job = json.loads(text.text)
    if job["status"] == "completed":
        [blob] = (await client.read_resource(job["audio"]["uri"], cache_mode="bypass")).contents
        assert isinstance(blob, BlobResourceContents)
        assert hashlib.sha256(base64.b64decode(blob.blob)).hexdigest() == job["audio"]["sha256"]


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18]


def run_load(home: Path, checkpoint: Path, clients: int, calls: int) -> None:
    seed = random.SystemRandom().randrange(2**16)
    tally = Tally()

    async def all_clients(url: str) -> None:
        async with anyio.create_task_group() as group:
            for number in range(clients):
                group.start_soon(one_client, url, number, calls, seed, tally)

    started = time.monotonic()
    # A generous queue bound: this test is about concurrency, not refusals (test_limits covers those).
    with serve_http(home, checkpoint, settings={"MAX_QUEUE": "10000"}) as server:
        anyio.run(all_clients, server.url)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + DRAIN_SECONDS
        while any(row.status not in TERMINAL for row in read_rows(home).values()):
            assert time.monotonic() < deadline, f"jobs still unfinished {DRAIN_SECONDS} s after the load"
            time.sleep(0.2)

    rows = check_consistent(home)
    made = sum(tally.calls.values())
    print(
        f"load: {clients} clients x {calls} calls = {made} calls in {elapsed:.1f} s (seed {seed}), "
        f"mix {dict(tally.calls)}; protocol/tool errors {len(tally.errors)}; jobs {len(tally.jobs)}; "
        f"job_status p50 {statistics.median(tally.status_seconds) * 1000:.0f} ms, "
        f"p95 {p95(tally.status_seconds) * 1000:.0f} ms"
    )
    assert made == clients * calls
    assert tally.errors == [], tally.errors[:10]
    assert len(set(tally.jobs)) == len(tally.jobs), "a job id was handed out twice"
    assert sorted(rows) == sorted(tally.jobs), "the database and the clients disagree about the jobs"
    assert Counter(row.status for row in rows.values()) == {"completed": len(tally.jobs)}


def test_four_clients_under_load(tiny_checkpoint: Path, data_home: Path) -> None:
    run_load(data_home, tiny_checkpoint, clients=4, calls=15)


@pytest.mark.slow
def test_eight_clients_fifty_calls_each(tiny_checkpoint: Path, data_home: Path) -> None:
    run_load(data_home, tiny_checkpoint, clients=8, calls=50)
