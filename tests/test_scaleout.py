"""Scale-out on a real PostgreSQL: worker processes with separate homes and one shared outputs directory,
stateless front-ends, MCP clients on both; workers SIGKILLed mid-decode and SIGSTOPped past their lease.
Every job completes exactly once, every file matches its sha256, a stalled worker's late result is
discarded, and waiting clients on either front-end see progress and completion."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp_testing import http_client, structured
from scaleout_testing import (
    LEASE_S,
    Cluster,
    check_all_completed_once,
    claim_figures,
    cluster,
    discarded,
    health,
    metrics,
    no_crashes,
    run_clients,
    wait_until_held,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(900)]
pytest.importorskip("psycopg")


def _database(server: str, name: str) -> str:
    from pg_testing import fresh_database

    return fresh_database(server, name)


async def _stall_past_lease(found: Cluster, worker_id: str, batch: int) -> tuple[list[str], float]:
    """SIGSTOP the worker while it decodes; resume it once its jobs were taken over. (jobs, seconds)"""
    held = await wait_until_held(found, worker_id, at_least=batch)
    proc = found.workers[worker_id]
    stopped = time.monotonic()
    _moments[worker_id] = _utc_now()
    proc.signal(signal.SIGSTOP)
    deadline = stopped + 120
    while time.monotonic() < deadline:
        rows = {row["id"]: row for row in await asyncio.to_thread(found.rows)}
        taken = all(rows[j]["worker_id"] != worker_id or rows[j]["status"] == "pending" for j in held)
        if taken and time.monotonic() - stopped > LEASE_S + 1:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"nobody took over {held} from the stalled {worker_id}")
    proc.signal(signal.SIGCONT)
    return held, time.monotonic() - stopped


_moments: dict[str, datetime] = {}  # worker id -> when the test killed or stopped it (naive UTC, as stored)


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _after(rows: dict[str, dict[str, Any]], jobs: list[str], column: str, moment: datetime) -> float:
    """Seconds from `moment` to the latest `column` time among `jobs`."""
    return round(max((rows[j][column] - moment).total_seconds() for j in jobs), 2)


async def test_a_stalled_worker_is_fenced_and_an_unserved_model_stays_pending(
    server: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    url = _database(server, "scaleout_small")
    with cluster(tmp_path, tiny_checkpoint, url, workers=2, frontends=1) as found:
        front = f"http://127.0.0.1:{found.frontends[0].port}"
        async with http_client(front) as client:
            unserved = structured(
                await client.call_tool(
                    "generate_music", {"prompt": "nobody serves this", "model": "medium", "wait_seconds": 0}
                )
            )["jobs"][0]
            status = structured(await client.call_tool("job_status", {"job_id": unserved["job_id"]}))
            assert status["status"] == "pending"
            assert "no live worker serves model facebook/musicgen-medium" in status["stage"], status
            await client.call_tool("cancel_job", {"job_id": unserved["job_id"]})

        clients = asyncio.ensure_future(run_clients(found, clients=2, jobs_each=6))
        stalled, _ = await _stall_past_lease(found, "w0", batch=2)
        runs = await clients
        expected = {job_id for run in runs for job_id in run.jobs}
        await _settle(found, "w0", set(stalled))
        rows = check_all_completed_once(found, expected, frozenset({unserved["job_id"]}))
        by_id = {row["id"]: row for row in rows}
        for job_id in stalled:  # completed under a later claim (by anyone, w0 included once it resumed)
            assert by_id[job_id]["attempts"] >= 2, by_id[job_id]
        assert set(stalled) <= discarded(found.workers["w0"])
        assert all(run.final[j]["status"] == "completed" for run in runs for j in run.jobs)
        assert any(run.progress_seen for run in runs)
        assert health(found.workers["w0"])["status"] == "ok"  # resumed and serving again
        served = metrics(found.workers["w1"])
        assert 'dgx_music_worker_jobs_total{worker="w1",outcome="completed"}' in served
        assert 'dgx_music_worker_claim_seconds{worker="w1",quantile="0.95"}' in served
        no_crashes([*found.workers.values(), *found.frontends])


async def _settle(found: Cluster, worker_id: str, jobs: set[str], timeout: float = 60.0) -> None:
    """Wait until the resumed worker has dealt with (and logged) every job it held when it stalled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not jobs <= discarded(found.workers[worker_id]):
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_three_workers_two_frontends_sixty_jobs_through_a_kill_and_a_stall(
    server: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    url = _database(server, "scaleout_big")
    with cluster(tmp_path, tiny_checkpoint, url, workers=3, frontends=2) as found:
        started = time.monotonic()
        clients = asyncio.ensure_future(run_clients(found, clients=6, jobs_each=10))
        killed = await wait_until_held(found, "w0", at_least=3)
        before_kill = {"w0": metrics(found.workers["w0"])}
        killed_at = _utc_now()
        found.workers["w0"].signal(signal.SIGKILL)
        stalled, stall_s = await _stall_past_lease(found, "w1", batch=3)
        runs = await clients
        wall = time.monotonic() - started
        expected = {job_id for run in runs for job_id in run.jobs}
        assert len(expected) == 60
        await _settle(found, "w1", set(stalled))
        rows = check_all_completed_once(found, expected)
        by_id = {row["id"]: row for row in rows}
        for job_id in killed:
            assert by_id[job_id]["worker_id"] != "w0" and by_id[job_id]["attempts"] >= 2, by_id[job_id]
        for job_id in stalled:  # completed under a later claim (by anyone, w1 included once it resumed)
            assert by_id[job_id]["attempts"] >= 2, by_id[job_id]
        assert set(stalled) <= discarded(found.workers["w1"])
        assert all(run.final[j]["status"] == "completed" for run in runs for j in run.jobs)
        for index in (0, 1):  # clients of both front-ends saw progress
            assert any(run.progress_seen for run in runs[index::2]), index
        stopped_at = _moments["w1"]
        figures = {
            "jobs": len(rows),
            "wall_s": round(wall, 1),
            "killed_jobs": len(killed),
            "stalled_jobs": len(stalled),
            "stall_s": round(stall_s, 1),
            "lease_s": LEASE_S,
            "killed_jobs_finished_by": sorted({by_id[j]["worker_id"] for j in killed}),
            "killed_jobs_reclaimed_s_after_kill": _after(by_id, killed, "started_at", killed_at),
            "killed_jobs_done_s_after_kill": _after(by_id, killed, "completed_at", killed_at),
            "stalled_jobs_reclaimed_s_after_stop": _after(by_id, stalled, "started_at", stopped_at),
            "stalled_jobs_done_s_after_stop": _after(by_id, stalled, "completed_at", stopped_at),
            **claim_figures(found, rows, before_kill),
        }
        print("scale-out figures:", json.dumps(figures))
        no_crashes([found.workers["w1"], found.workers["w2"], *found.frontends])
