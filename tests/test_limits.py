"""Resource limits: an unwritable or full disk, a full queue and a job over its time limit each end in a clear
error, and the database stays consistent.

Tests may run as root, where chmod cannot stop a write; the unwritable case then uses a mechanism root
cannot bypass either (outputs/ replaced by a regular file), and the full disk is a real file-size limit
(RLIMIT_FSIZE) on the server process: its writes past the limit fail with EFBIG, as on a full disk.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_testing import error_text, http_client, structured, waited_jobs
from reliability_helpers import check_completed, check_consistent, in_process, read_rows, serve_http

FILE_SIZE_LIMIT = 512 * 1024  # the database, its WAL and the log fit; a 10 s WAV (about 1 MB) does not


async def generate(client: Client, duration: float = 1, wait: float = 120, **args: Any) -> dict[str, Any]:
    arguments = {"prompt": "limits test", "duration": duration, "wait_seconds": wait, **args}
    [job] = waited_jobs(await client.call_tool("generate_music", arguments))["jobs"]
    return dict(job)


async def wait_for_status(
    client: Client, job_id: str, wanted: set[str], timeout: float = 60
) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            job = structured(await client.call_tool("job_status", {"job_id": job_id}))
            if job["status"] in wanted:
                return job
            await anyio.sleep(0.05)


def root_ignores_permissions(directory: Path) -> bool:
    """True when a 0555 directory still accepts files (root, or CAP_DAC_OVERRIDE)."""
    probe = directory / "probe"
    directory.chmod(0o555)
    try:
        probe.touch()
    except PermissionError:
        return False
    finally:
        directory.chmod(0o755)
    probe.unlink()
    return True


@contextmanager
def unwritable_outputs(home: Path, mechanism: str) -> Iterator[str]:
    """Make DGX_MUSIC_HOME/outputs unwritable; yields the words the job's error must contain."""
    outputs = home / "outputs"
    outputs.mkdir(parents=True)
    if mechanism == "read-only directory":
        if root_ignores_permissions(outputs):
            pytest.skip("running with CAP_DAC_OVERRIDE (root): chmod 0555 cannot stop writes here")
        outputs.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            outputs.chmod(0o755)
    else:
        outputs.rmdir()
        outputs.write_text("not a directory")
        try:
            yield "Not a directory"
        finally:
            outputs.unlink()
            outputs.mkdir()


@pytest.mark.anyio
@pytest.mark.parametrize("mechanism", ["read-only directory", "outputs is a file"])
async def test_unwritable_outputs_fail_the_job_with_a_clear_error(
    tiny_checkpoint: Path, data_home: Path, mechanism: str
) -> None:
    with unwritable_outputs(data_home, mechanism) as reason:
        async with in_process(data_home, tiny_checkpoint) as (_, client):
            job = await generate(client)
            assert job["status"] == "failed" and job["audio"] is None, job
            assert reason in job["error"] and "outputs" in job["error"], job["error"]
            check_completed(data_home)
            assert [row.status for row in read_rows(data_home).values()] == ["failed"]
    # Writable again: the same data directory works, with nothing half-written left behind.
    async with in_process(data_home, tiny_checkpoint) as (_, client):
        assert (await generate(client))["status"] == "completed"
    check_consistent(data_home)


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@dataclass(frozen=True)
class FullDisk:
    home: Path
    big: dict[str, Any]  # a job whose WAV does not fit
    small: dict[str, Any]  # a job afterwards whose WAV fits


@pytest.fixture(scope="module")
def full_disk(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> FullDisk:
    """One server run under the file-size limit, shared by the checks below."""
    home = tmp_path_factory.mktemp("full-disk") / "home"

    async def run() -> FullDisk:
        with serve_http(home, tiny_checkpoint, preexec=limit_file_size) as server:
            async with http_client(server.url) as client:
                return FullDisk(home, await generate(client, duration=10), await generate(client, duration=1))

    return anyio.run(run)


def test_a_full_disk_fails_the_job_and_the_server_keeps_serving(full_disk: FullDisk) -> None:
    assert full_disk.big["status"] == "failed" and full_disk.big["audio"] is None, full_disk.big
    assert "File too large" in full_disk.big["error"], full_disk.big["error"]
    assert full_disk.small["status"] == "completed", full_disk.small
    rows = check_consistent(full_disk.home)  # no temp file or half WAV left in outputs/
    assert sorted(row.status for row in rows.values()) == ["completed", "failed"]


def test_a_full_disk_error_says_where_and_what_to_do(full_disk: FullDisk) -> None:
    error = full_disk.big["error"]
    assert str(full_disk.home / "outputs") in error and "free" in error, error


@pytest.mark.anyio
async def test_a_full_queue_is_a_clear_error_and_stores_nothing(
    tiny_checkpoint: Path, data_home: Path
) -> None:
    async with in_process(data_home, tiny_checkpoint, max_queue=2, max_batch=1) as (_, client):
        running = await generate(client, duration=30, wait=0)  # keeps the single worker slot busy
        await wait_for_status(client, running["job_id"], {"processing"})
        queued = [await generate(client, wait=0) for _ in range(2)]
        rows_before = len(read_rows(data_home))
        for variations in (1, 1, 4, 1):
            result = await client.call_tool(
                "generate_music", {"prompt": "one too many", "duration": 1, "variations": variations}
            )
            message = error_text(result)
            # More variations than the whole queue holds is refused as such (it could never fit).
            expected = "variations: 4 is more than the queue holds" if variations > 2 else "queue is full"
            assert expected in message and "DGX_MUSIC_MAX_QUEUE" in message, message
        assert len(read_rows(data_home)) == rows_before, "a refused request must not store anything"
        for job in [running, *queued]:
            await client.call_tool("cancel_job", {"job_id": job["job_id"]})
        await wait_for_status(client, running["job_id"], {"cancelled"})
        assert (await generate(client, wait=0))["status"] in ("pending", "processing", "completed")
    check_completed(data_home)


@pytest.mark.anyio
async def test_more_variations_than_the_queue_holds_names_variations(
    tiny_checkpoint: Path, data_home: Path
) -> None:
    async with in_process(data_home, tiny_checkpoint, max_queue=3) as (_, client):
        result = await client.call_tool(
            "generate_music", {"prompt": "four takes", "duration": 1, "variations": 4}
        )
    assert "variations" in error_text(result), error_text(result)


@pytest.mark.anyio
async def test_a_job_over_the_time_limit_fails(tiny_checkpoint: Path, data_home: Path) -> None:
    async with in_process(data_home, tiny_checkpoint, job_timeout_s=0.5) as (_, client):
        started = time.monotonic()
        job = await generate(client, duration=30, wait=120)
        assert job["status"] == "failed" and job["audio"] is None, job
        assert "time limit" in job["error"] and "DGX_MUSIC_JOB_TIMEOUT_S" in job["error"], job["error"]
        assert time.monotonic() - started < 60
        assert structured(await client.call_tool("list_history", {"limit": 5}))["items"]
    check_consistent(data_home)
    assert not list(data_home.glob("outputs/**/*.wav"))
