"""The separator behind engine.backend's interface, driven as the worker's scheduler drives a family."""

from __future__ import annotations

import numpy as np
import pytest

from engine.backend import Decision, InvalidRequest, StepReport, run_to_completion
from engine.demucs.backend import DemucsBackend
from engine.demucs.checkpoints import build_random_separator


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> DemucsBackend:
    directory = build_random_separator(tmp_path_factory.mktemp("demucs") / "tiny", seed=7)
    return DemucsBackend.load(directory, device="cpu", max_batch=2)


def song(seconds: float, rate: int = 32000, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, round(seconds * rate)))).astype(np.float32)


def test_a_separation_runs_to_completion_with_progress(backend: DemucsBackend) -> None:
    caps = backend.capabilities
    assert (caps.family, caps.operations, caps.max_batch) == ("demucs", frozenset({"stems"}), 2)
    audio = song(8.0)
    request = backend.validate("stems", {"audio": audio, "sample_rate": 32000})
    reports: list[StepReport] = []
    outcomes = run_to_completion(backend, [("job-1", request)], on_step=reports.append)
    assert [r.progress["job-1"].done for r in reports[:-1]] == [1, 2] and reports[0].progress[
        "job-1"
    ].total == 3
    outcome = outcomes["job-1"]
    assert outcome.status == "completed" and outcome.result is not None
    result = outcome.result
    assert list(result.stems) == ["drums", "bass", "other", "vocals"] and result.steps == 3
    assert all(stem.shape == audio.shape for stem in result.stems.values())
    assert result.sample_rate == 32000 and result.duration_s == 8.0
    np.testing.assert_allclose(result.audio, sum(result.stems.values()), atol=1e-6)
    assert not backend.has_work and backend.progress("job-1") is None


def test_cancel_reports_the_outcome_at_the_next_step(backend: DemucsBackend) -> None:
    long = backend.validate("stems", {"audio": song(20.0, 48000, 2), "sample_rate": 48000})
    other = backend.validate("stems", {"audio": song(4.0, seed=1), "sample_rate": 32000})
    backend.admit("long", long)
    assert backend.can_admit(other).decision is Decision.NOW
    backend.admit("other", other)
    assert backend.can_admit(other).decision is Decision.LATER  # both slots taken
    backend.step()
    assert backend.progress("long") is not None and backend.progress("long").done == 1  # type: ignore[union-attr]
    assert backend.cancel("long") and not backend.cancel("long") and not backend.cancel("unknown")
    report = backend.step()
    assert [(o.request_id, o.status) for o in report.finished] == [
        ("long", "cancelled"),
        ("other", "completed"),
    ]
    assert not backend.has_work


@pytest.mark.parametrize(
    ("operation", "params", "fields"),
    [
        ("generate", {"audio": song(2.0), "sample_rate": 32000}, ["operation"]),
        ("stems", {"audio": song(2.0)}, ["sample_rate"]),
        ("stems", {"audio": song(2.0), "sample_rate": 32000, "prompt": "x"}, ["prompt"]),
        ("stems", {"audio": song(0.5), "sample_rate": 32000}, ["audio"]),
        ("stems", {"audio": song(2.0), "sample_rate": 100}, ["sample_rate"]),
    ],
)
def test_invalid_requests_name_their_fields(
    backend: DemucsBackend, operation: str, params: dict[str, object], fields: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        backend.validate(operation, params)
    assert [error.field for error in refused.value.errors] == fields
    assert str(refused.value).startswith(f"{fields[0]}: ")


def test_memory_is_the_weights(backend: DemucsBackend) -> None:
    assert backend.memory_bytes == 4 * sum(p.numel() for p in backend.separator.bag.parameters())
