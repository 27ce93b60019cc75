"""Broadcast WAV files: metadata read back by wavinfo, atomic writes surviving SIGKILL, checksums."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from wavinfo import WavInfoReader

from storage import AudioIntegrityError, Generation, NotFound, Status, Store

MODEL = "facebook/musicgen-small"
LONG_PROMPT = "Lo-fi piano über warm vinyl crackle, " + "slow rain and soft tape hiss " * 12


@pytest.fixture
def store(data_home: Path) -> Store:
    return Store(data_home)


def noise(channels: int, samples: int = 8000) -> np.ndarray:
    return np.random.default_rng(1).uniform(-0.5, 0.5, (channels, samples)).astype(np.float32)


def completed(store: Store, audio: np.ndarray, prompt: str = LONG_PROMPT) -> Generation:
    job = store.create(prompt, MODEL, {"seed": None})
    store.claim(MODEL, 1)
    return store.complete(
        job.id,
        audio,
        32000,
        loudness_lufs=-14.25,
        peak_dbfs=-6.02,
        generation_seconds=1.5,
        device="cpu",
        seed=1234,
    )


@pytest.mark.parametrize("channels", [1, 2])
def test_the_wav_is_24_bit_pcm_with_the_samples_given(store: Store, channels: int) -> None:
    audio = noise(channels)
    job = completed(store, audio)
    assert job.file_path is not None
    info = sf.info(job.file_path)
    assert (info.subtype, info.samplerate, info.channels, info.frames) == ("PCM_24", 32000, channels, 8000)
    read, _ = sf.read(job.file_path, dtype="float64", always_2d=True)
    assert np.max(np.abs(read.T - audio)) <= 1 / 2**23


def test_bext_and_ixml_read_back_with_wavinfo(store: Store) -> None:
    job = completed(store, noise(2))
    assert job.file_path is not None
    wav = WavInfoReader(str(job.file_path))
    assert wav.bext is not None and wav.ixml is not None
    bext = wav.bext
    assert (
        bext.description
        == ("Lo-fi piano uber warm vinyl crackle, " + "slow rain and soft tape hiss " * 12)[:256]
    )
    assert bext.originator == MODEL
    assert bext.originator_ref == job.id.replace("-", "")
    assert bext.originator_date == job.created_at.strftime("%Y-%m-%d")
    assert bext.originator_time == job.created_at.strftime("%H:%M:%S")
    assert (bext.time_reference, bext.version) == (0, 2)
    assert bext.loudness_value == -14.25
    assert bext.max_true_peak is not None and -6.1 < bext.max_true_peak < 0  # >= the -6.02 dB sample peak
    assert bext.loudness_range == 327.67  # 0x7FFF: not measured
    assert (
        bext.coding_history == "A=PCM,F=32000,W=24,M=stereo,T=facebook/musicgen-small on cpu, seed 1234\r\n"
    )
    assert wav.ixml.raw_xml.findtext("NOTE") == LONG_PROMPT


def test_a_silent_file_marks_loudness_unknown(store: Store) -> None:
    job = store.create("silence", MODEL, {})
    store.claim(MODEL, 1)
    done = store.complete(
        job.id,
        np.zeros((1, 3200), np.float32),
        32000,
        loudness_lufs=None,
        peak_dbfs=None,
        generation_seconds=0.1,
        device="cpu",
        seed=1,
    )
    assert done.file_path is not None
    bext = WavInfoReader(str(done.file_path)).bext
    assert bext is not None
    assert (bext.loudness_value, bext.max_true_peak) == (327.67, 327.67)


def test_open_audio_returns_the_file_and_detects_tampering(store: Store) -> None:
    job = completed(store, noise(1))
    assert job.file_path is not None
    assert store.open_audio(job.id) == job.file_path.read_bytes()

    data = bytearray(job.file_path.read_bytes())
    data[-1] ^= 0x01
    job.file_path.write_bytes(bytes(data))
    with pytest.raises(AudioIntegrityError, match="fails its checksum"):
        store.open_audio(job.id)
    job.file_path.unlink()
    with pytest.raises(AudioIntegrityError, match="is missing"):
        store.open_audio(job.id)
    with pytest.raises(NotFound, match="it is pending"):
        store.open_audio(store.create("not yet", MODEL, {}).id)


def test_bad_audio_is_refused_before_anything_is_written(store: Store) -> None:
    job = store.create("x", MODEL, {})
    store.claim(MODEL, 1)
    for audio, message in [
        (np.zeros(100, np.float32), "2-D array"),
        (np.full((1, 10), np.nan, np.float32), "NaN"),
        (np.zeros((1, 0), np.float32), "no samples"),
    ]:
        with pytest.raises(ValueError, match=message):
            store.complete(
                job.id,
                audio,
                32000,
                loudness_lufs=None,
                peak_dbfs=None,
                generation_seconds=0,
                device="cpu",
                seed=None,
            )
    assert not (store.home / "outputs").exists()
    assert store.get(job.id).status is Status.PROCESSING


# The writer runs complete()'s own steps (encode, stage = temp file + fsync) and stops before the rename.
CRASHING_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from storage import Store, bwf, files
    store = Store(Path(sys.argv[1]))
    job = store.get(sys.argv[2])
    data = bwf.encode(np.zeros((1, 32000), np.float32), 32000, bwf.BroadcastInfo(
        description=job.prompt, originator=job.model_name, originator_reference=job.id.replace("-", ""),
        origination=job.created_at, loudness_lufs=None, coding_history="crash test"))
    temp = files.stage(store.home / store.relative_audio_path(job), data)
    print(temp, flush=True)
    time.sleep(60)
    """
)


def test_a_writer_killed_before_the_rename_leaves_nothing_visible(store: Store) -> None:
    job = store.create("killed mid-write", MODEL, {})
    store.claim(MODEL, 1)
    writer = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(store.home), job.id], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    temp = Path(writer.stdout.readline().strip())
    assert temp.exists() and temp.name.startswith(f".{job.id}.wav.tmp-{writer.pid}-")
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    final = store.home / store.relative_audio_path(job)
    assert not final.exists()
    assert [p for p in final.parent.iterdir() if not p.name.startswith(".")] == []
    after = store.get(job.id)
    assert (after.status, after.file_path) == (Status.PROCESSING, None)

    report = store.recover()
    assert report.requeued == [job.id] and report.pending == [job.id]
    assert report.quarantined == [store.home / "quarantine" / temp.relative_to(store.home)]
    assert report.quarantined[0].exists() and not temp.exists()
    assert list((store.home / "outputs").rglob("*.*")) == []


def test_recover_quarantines_wavs_without_a_completed_row_and_keeps_good_ones(store: Store) -> None:
    kept = completed(store, noise(1))
    orphan = completed(store, noise(1))
    assert kept.file_path is not None and orphan.file_path is not None
    with store.engine.begin() as connection:  # delete() crashed after its commit, before the unlink
        connection.exec_driver_sql("DELETE FROM generations WHERE id = ?", (orphan.id,))
    # and a WAV left by a crash between the rename and the commit:
    stray = store.home / "outputs" / "2026" / "01" / "01" / "stray.wav"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"RIFF")
    live = kept.file_path.with_name(f".{kept.id}.wav.tmp-{os.getpid()}-abcd")
    live.write_bytes(b"a write still in progress in this process")

    report = store.recover()
    assert report.quarantined == [
        store.home / "quarantine" / path.relative_to(store.home) for path in sorted([stray, orphan.file_path])
    ]
    assert kept.file_path.exists() and live.exists()
    assert store.open_audio(kept.id)  # untouched

    kept.file_path.unlink()
    assert store.recover().missing_files == [kept.id]


def test_recover_requeues_interrupted_jobs_until_max_attempts(store: Store) -> None:
    job = store.create("crashes every time", MODEL, {})
    waiting = store.create("never started", MODEL, {})
    store.claim(MODEL, 1)
    first = store.recover(max_attempts=2)
    assert (first.requeued, first.failed, first.pending) == ([job.id], [], [job.id, waiting.id])
    assert store.claim(MODEL, 1)[0].attempts == 2
    second = store.recover(max_attempts=2)
    assert (second.requeued, second.failed, second.pending) == ([], [job.id], [waiting.id])
    failed = store.get(job.id)
    assert failed.status is Status.FAILED and "max_attempts=2" in (failed.error or "")


WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from storage import Store
    store = Store(Path(sys.argv[1]))
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 64000)).astype(np.float32)
    print("ready", flush=True)
    while jobs := store.claim(None, 1):
        store.complete(jobs[0].id, audio, 32000, loudness_lufs=-14.0, peak_dbfs=-6.0,
                       generation_seconds=0.1, device="cpu", seed=1)
    """
)


@pytest.mark.slow
def test_random_sigkills_never_leave_a_completed_row_without_its_audio(store: Store) -> None:
    rng = np.random.default_rng(7)
    for i in range(200):
        store.create(f"crash round job {i}", MODEL, {})
    quarantined = 0
    for _ in range(15):
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(store.home)], stdout=subprocess.PIPE)
        assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"
        signal_after = float(rng.uniform(0.0, 0.4))
        try:
            worker.wait(signal_after)
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        quarantined += len(store.recover(max_attempts=100).quarantined)

        done = store.history(status="completed", limit=500).items
        for job in done:
            assert store.open_audio(job.id)  # exists and matches its sha256
        visible = {p for p in (store.home / "outputs").rglob("*") if p.is_file()}
        assert visible == {job.file_path for job in done}
    assert store.count("completed") > 0
