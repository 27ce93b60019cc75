"""The worker through the real job service (store, worker thread, tiny checkpoints): jobs admitted into a
running batch as they arrive, "loading model" while a model loads, non-finite decodes failed, several models
resident, a waiting model served after a bounded wait."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine import GenerationRequest, MusicEngine
from engine.musicgen import audio_out
from mcp_server import worker as worker_module
from mcp_server.config import Settings
from mcp_server.schemas import Job
from mcp_server.service import JobService
from mcp_server.service_waits import SAFETY_POLL_SECONDS, Changes

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("one_torch_thread")]


@asynccontextmanager
async def service_for(home: Path, checkpoint: Path, **overrides: Any) -> AsyncIterator[JobService]:
    settings = Settings.load({}, home=home, model=str(checkpoint), device="cpu", dtype="float32", **overrides)
    with JobService(settings) as service:
        yield service


async def submit(service: JobService, model: str | None = None, **params: Any) -> Job:
    request = GenerationRequest(**{"prompt": "lofi piano", "seed": 1, **params})
    [job] = await service.submit([request], model, local_paths=True)
    return job


async def wait_until(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await _sleep(0.02)
    raise AssertionError("timed out waiting")


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


async def test_a_job_joins_the_running_batch_and_returns_before_it(
    tiny_checkpoint: Path, data_home: Path
) -> None:
    async with service_for(data_home, tiny_checkpoint) as service:
        long = await submit(service, duration=8.0)

        async def long_running() -> bool:
            job = await service.job(long.job_id)
            return job.status == "processing" and job.progress > 0.05

        await wait_until(long_running)
        short = await submit(service, duration=1.0, seed=2)
        [short_done] = await service.wait([short.job_id], timeout=120)
        long_now = await service.job(long.job_id)
        assert short_done.status == "completed", short_done.error
        # It was admitted while the long one decoded, and finished while that one still ran.
        assert long_now.status == "processing" and long_now.stage == "decoding", long_now
        [long_done] = await service.wait([long.job_id], timeout=120)
        assert long_done.status == "completed"
        assert short_done.completed_at is not None and long_done.completed_at is not None
        assert short_done.completed_at < long_done.completed_at
    assert service.worker.first_audio_seconds is not None


async def test_job_status_says_loading_model_while_the_model_loads(
    tiny_checkpoint: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_load = MusicEngine.load

    def slow_load(*args: Any, **kwargs: Any) -> MusicEngine:
        release.wait(30)  # a slow disk or a large checkpoint
        return real_load(*args, **kwargs)

    monkeypatch.setattr(MusicEngine, "load", slow_load)
    async with service_for(data_home, tiny_checkpoint) as service:
        job = await submit(service, duration=1.0)
        # The worker thread starts the load right after start-up recovery: on a loaded CPU the job can be
        # seen "queued" for a moment first. What must hold is that, while the load is held up, it says so.
        deadline = time.monotonic() + 20
        seen = await service.job(job.job_id)
        while not (seen.stage or "").startswith("loading model") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            seen = await service.job(job.job_id)
        assert seen.status == "pending"
        assert seen.stage is not None and seen.stage.startswith(f"loading model {tiny_checkpoint}"), (
            seen.stage
        )
        release.set()
        [done] = await service.wait([job.job_id], timeout=60)
        assert done.status == "completed" and done.stage is None


async def test_a_non_finite_decode_fails_its_job_and_stores_nothing(
    tiny_checkpoint: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_decode = audio_out.decode_audio

    def overflowing_codec(model: Any, codes: list[torch.Tensor]) -> list[np.ndarray]:
        audio = real_decode(model, codes)
        for samples in audio:
            samples[:, ::7] = np.nan
        return audio

    monkeypatch.setattr(audio_out, "decode_audio", overflowing_codec)
    async with service_for(data_home, tiny_checkpoint) as service:
        job = await submit(service, duration=1.0)
        [done] = await service.wait([job.job_id], timeout=60)
    assert done.status == "failed" and done.audio is None
    assert done.error is not None and "non-finite values (NaN or infinity)" in done.error
    assert not list(data_home.glob("outputs/**/*.wav"))


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loads: list[str] = []
    real_load = MusicEngine.load

    def counting_load(model: str, **kwargs: Any) -> MusicEngine:
        loads.append(model)
        return real_load(model, **kwargs)

    monkeypatch.setattr(MusicEngine, "load", counting_load)
    return loads


async def test_alternating_models_stay_resident(
    tiny_checkpoint: Path, tiny_stereo_checkpoint: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = _count_loads(monkeypatch)
    async with service_for(data_home, tiny_checkpoint) as service:
        jobs = []
        for index in range(4):
            model = str(tiny_stereo_checkpoint if index % 2 else tiny_checkpoint)
            jobs.append(await submit(service, model, duration=1.0, seed=index))
            [done] = await service.wait([jobs[-1].job_id], timeout=60)
            assert done.status == "completed", done.error
            assert done.audio is not None and done.audio.channels == (2 if index % 2 else 1)
    assert sorted(loads) == sorted([str(tiny_checkpoint), str(tiny_stereo_checkpoint)])


async def test_a_waiting_model_gets_its_turn_after_a_bounded_wait(
    tiny_checkpoint: Path, tiny_stereo_checkpoint: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module.Worker, "_fits_beside_residents", lambda self, model_id: False)
    loads = _count_loads(monkeypatch)
    async with service_for(data_home, tiny_checkpoint, model_wait_s=0.5, max_batch=1) as service:
        # Long enough to still be decoding when the other model's bounded wait (0.5 s) runs out, however fast
        # the machine: otherwise the resident model is free again and rightly takes the later job first.
        first = await submit(service, duration=30.0)
        await wait_until(lambda: _status_is(service, first.job_id, "processing"))
        other = await submit(service, str(tiny_stereo_checkpoint), duration=1.0)
        later = await submit(service, duration=1.0, seed=3)
        done = await service.wait([first.job_id, other.job_id, later.job_id], timeout=120)
        assert [job.status for job in done] == ["completed"] * 3, [job.error for job in done]
        first_done, other_done, later_done = done
        assert first_done.completed_at and other_done.completed_at and later_done.completed_at
        # The resident model stopped taking jobs for the waiting one, which ran before the later job.
        assert other_done.completed_at < later_done.completed_at
    assert loads == [str(tiny_checkpoint), str(tiny_stereo_checkpoint), str(tiny_checkpoint)]


async def _status_is(service: JobService, job_id: str, status: str) -> bool:
    return (await service.job(job_id)).status == status


def test_failing_a_job_that_was_cancelled_meanwhile_is_not_an_error(
    data_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """cancel_job can land between a job's claim and its validation failing: the cancellation stands, and
    the worker says so at info level instead of logging an error with a traceback."""
    from mcp_server.outcomes import Outcomes
    from mcp_server.telemetry import Telemetry
    from storage import Store

    settings = Settings.load({"DGX_MUSIC_HOME": str(data_home)})
    store = Store(settings.home, settings.database_url)
    job = store.create("a clip", "some/model", {"duration": 1.0})
    [claim] = store.claim("some/model", 1)
    store.cancel(job.id)
    outcomes = Outcomes(settings, store, Telemetry(), lambda progress_only: None)
    with caplog.at_level("INFO", logger="mcp_server.worker"):
        outcomes.fail(job.id, "duration: too long", claim)
    assert store.get(job.id).status == "cancelled"
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
    assert any("was cancelled before its failure" in record.getMessage() for record in caplog.records)
    assert outcomes.counts["failed"] == 0
    store.close()


async def test_progress_wakes_only_the_waiters_that_show_it() -> None:
    changes = Changes()
    with changes.listening(progress=False) as for_an_end, changes.listening() as showing_progress:
        changes.notify(progress_only=True)
        await _sleep(0.01)  # the wake-up is scheduled on this loop
        assert showing_progress.is_set() and not for_an_end.is_set()
        changes.notify()
        await _sleep(0.01)
        assert for_an_end.is_set()


async def test_waiting_for_our_workers_job_reads_it_at_its_end_not_at_every_step(
    tiny_checkpoint: Path, data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with service_for(data_home, tiny_checkpoint) as service:
        job = await submit(service, duration=20.0)
        await wait_until(lambda: _status_is(service, job.job_id, "processing"))
        reads: list[str] = []
        real_read = service._job

        def counted(job_id: str) -> Job:
            reads.append(job_id)
            return real_read(job_id)

        monkeypatch.setattr(service, "_job", counted)
        started = time.monotonic()
        [done] = await service.wait([job.job_id], timeout=120)
        seconds = time.monotonic() - started
        assert done.status == "completed", done.error
        # Progress is announced every 0.2 s and the timer re-reads every 5 s for a job our worker holds:
        # the first read, the one at its end, and at most one a timer's worth.
        assert seconds > 1.0 and len(reads) <= 2 + seconds / SAFETY_POLL_SECONDS, (len(reads), seconds)
