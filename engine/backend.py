"""The face every model family shows the scheduler: one step at a time, requests joining and leaving between.

A family (MusicGen's decode loop, ACE-Step's denoiser, Demucs' separator) implements ``Backend``. The
scheduler (``mcp_server.worker``) owns the loop; the backend owns the device work. One iteration of the
scheduler is::

    for job in pending:                           # at a step boundary, never inside a step
        request = backend.validate(job.operation, job.params)    # InvalidRequest names the fields
        admission = backend.can_admit(request)
        if admission.decision is Decision.NOW:
            backend.admit(job.id, request)
        elif admission.decision is Decision.NEVER:
            fail(job, admission.reason)              # e.g. longer than memory allows even alone
        # Decision.LATER: leave it pending, ask again after the next step
    if backend.has_work:
        report = backend.step()
        show(report.progress)                        # work the device has *finished*
        record(report.finished)                      # completed / failed / cancelled, as each is done

The contract, which every family keeps:

- **Step.** ``step()`` advances every admitted request by one unit of the family's work — a decode step
  (one codec frame for every live row) for MusicGen, one denoising step for a diffusion family, one segment
  for a separator — and returns a ``StepReport``. What a step is and how many a request needs are the
  family's business; the scheduler only sees ``Progress(done, total)``. Work of a request that is not in
  the running batch yet (text encoding, latent set-up) or that has left it (codec decoding, stitching) may
  happen inside ``admit``, inside a ``step`` call, or on a thread of the family's own while the batch steps
  on; the family says which in ``phase``.
- **Admission at a step boundary.** ``admit`` is only called between steps; the request takes part in the
  next ``step()``, or (its set-up running on a thread) in the first one after its set-up is done.
  Families that can only run like requests together (same model, same duration bucket, same task) say
  ``LATER`` for a request that does not match the running group and admit it once that group has drained.
  ``can_admit`` also applies the memory budget: a request that does not fit in the memory free now waits
  (``LATER``) rather than failing or swapping; ``NEVER`` is for a request that could not run even on an
  empty device, with a reason a user can act on.
- **Results as soon as each is done.** ``StepReport.finished`` carries the ``Outcome`` of every request that
  ended in that step — completed with its post-processed audio, failed with a one-line error (non-finite
  samples are a failure, never silence), or cancelled — while its batch-mates keep running. A request's
  outcome is reported exactly once; afterwards the backend has forgotten its id.
- **Progress is finished work.** ``Progress.done`` counts steps the device has completed, not steps merely
  queued (on CUDA a family may keep a step or two in flight and report them once their events complete).
  Time limits and cancellation therefore act on work that really happened.
- **Cancellation.** ``cancel(id)`` takes effect at the next step boundary: the request stops consuming
  device time, its slot is free for the next admission, and its ``Outcome(status="cancelled")`` arrives in
  a following ``StepReport``. Cancelling an id the backend does not hold returns False.
- **Independence.** A request's result depends on its own parameters and seed, never on which other
  requests share its batch or when they joined.
- **Threads.** A backend is driven by one thread (the worker's) at a time; ``capabilities`` is immutable and
  may be read from any thread. Nothing here reads the environment: everything comes in as arguments.

``run_to_completion`` drives a backend to the end for callers that want one blocking call (the CLI's
``generate``, doctor, tests).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from engine.errors import EngineError

RequestT = TypeVar("RequestT")


# --- what a family can do ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One request parameter a family accepts: its type, default and allowed range, for schemas and docs."""

    name: str
    kind: Literal["string", "number", "integer", "boolean"]
    description: str
    default: Any = None
    minimum: float | None = None  # for strings: their length
    maximum: float | None = None
    exclusive_minimum: bool = False  # the minimum itself is not allowed
    nullable: bool = False
    choices: tuple[str, ...] = ()  # for strings with a fixed set of values


@dataclass(frozen=True)
class Capabilities:
    """What a loaded backend can do. Immutable; safe to read from any thread."""

    family: str  # "musicgen", "acestep", "demucs", ...
    model_id: str
    operations: frozenset[str]  # e.g. {"generate"}; {"generate", "continue"}; {"separate"}
    parameters: Mapping[str, Parameter]  # accepted request parameters by name
    max_duration_s: float  # longest audio one request may ask for
    sample_rate: int  # of every result's audio
    channels: int  # of every result's audio
    max_batch: int  # most requests one step carries (slots); the memory budget may allow fewer


# --- requests in and out ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    field: str  # the request parameter at fault, e.g. "duration"
    message: str  # what is allowed, e.g. "must be in [1, 30] seconds (got 45.0)"


class InvalidRequest(EngineError):
    """A request the family refuses; one ``FieldError`` per parameter at fault."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in self.errors))


class Decision(enum.Enum):
    NOW = "now"  # admit it: it joins the next step
    LATER = "later"  # not now (no free slot, memory, a different group running); ask after a later step
    NEVER = "never"  # it cannot run on this backend even alone; fail it with the reason


@dataclass(frozen=True)
class Admission:
    decision: Decision
    reason: str = ""  # why not, for logs (LATER) or for the user (NEVER)


@dataclass(frozen=True)
class GenerationResult:
    """A request's finished, post-processed audio and the facts about it."""

    audio: np.ndarray  # float32, channels × samples, every sample finite
    sample_rate: int
    seed: int  # the seed actually used (drawn when the request gave none)
    duration_s: float
    loudness_lufs: float | None  # measured after normalisation; None for silence
    peak_dbfs: float
    steps: int  # steps the request took
    generation_seconds: float  # from admission to its outcome
    stems: Mapping[str, np.ndarray] = field(default_factory=dict)  # named extra outputs (e.g. separation)


@dataclass(frozen=True)
class Outcome:
    """How one request ended. Exactly one of ``result`` (completed) or ``error`` (failed) is set, or
    neither (cancelled)."""

    request_id: str
    status: Literal["completed", "failed", "cancelled"]
    result: GenerationResult | None = None
    error: str | None = None  # one line, actionable


@dataclass(frozen=True)
class Progress:
    done: int  # steps the device has finished for this request
    total: int  # steps it needs in all
    phase: str = "running"  # family-specific: e.g. "decoding", "decoding audio", "denoising"

    @property
    def fraction(self) -> float:
        return min(self.done, self.total) / self.total if self.total else 1.0


@dataclass(frozen=True)
class StepReport:
    progress: Mapping[str, Progress]  # every request still held, by id, after this step
    finished: Sequence[Outcome]  # requests that ended in this step (or were cancelled before it)


# --- the interface --------------------------------------------------------------------------------------


class Backend(ABC, Generic[RequestT]):
    """A loaded model family that a scheduler drives step by step. See the module docstring for the
    contract."""

    capabilities: Capabilities

    @abstractmethod
    def validate(self, operation: str, params: Mapping[str, Any]) -> RequestT:
        """The family's validated request for ``operation`` with ``params``; ``InvalidRequest`` naming each
        bad field otherwise (an unknown operation is reported on the field ``operation``)."""

    @abstractmethod
    def can_admit(self, request: RequestT) -> Admission:
        """Whether ``request`` can join the running work at this step boundary (slots, memory, grouping)."""

    @abstractmethod
    def admit(self, request_id: str, request: RequestT) -> None:
        """Add ``request`` to the running work; it takes part in the next ``step()`` (or the first after its
        set-up, where that runs on a thread). Only call it between steps and after ``can_admit`` said
        ``NOW``; ``request_id`` must not already be held."""

    @abstractmethod
    def step(self) -> StepReport:
        """Advance every admitted request by one step; report progress and the requests that ended."""

    @abstractmethod
    def cancel(self, request_id: str) -> bool:
        """Stop ``request_id`` at the next step boundary; False when the backend does not hold it."""

    @abstractmethod
    def progress(self, request_id: str) -> Progress | None:
        """Finished work of a held request, or None when the backend does not hold it."""

    @property
    @abstractmethod
    def has_work(self) -> bool:
        """True while any request is held (running, or ended with its outcome not yet reported)."""

    @property
    def idle(self) -> bool:
        return not self.has_work

    @property
    @abstractmethod
    def memory_bytes(self) -> int:
        """Device memory the resident model takes (weights and buffers kept between batches)."""

    def close(self) -> None:  # optional hook: most families free everything with the object
        """Release device memory held outside Python references (captured graphs, pools)."""


def run_to_completion(
    backend: Backend[RequestT],
    requests: Sequence[tuple[str, RequestT]],
    on_step: Callable[[StepReport], None] | None = None,
) -> dict[str, Outcome]:
    """Admit ``requests`` as room allows and step until every one has ended; their outcomes by id.

    A request the backend can NEVER run fails with the backend's reason, like the scheduler would.
    """
    waiting = list(requests)
    outcomes: dict[str, Outcome] = {}
    while waiting or backend.has_work:
        still_waiting = []
        for request_id, request in waiting:
            admission = backend.can_admit(request)
            if admission.decision is Decision.NOW:
                backend.admit(request_id, request)
            elif admission.decision is Decision.NEVER:
                outcomes[request_id] = Outcome(request_id, "failed", error=admission.reason)
            else:
                still_waiting.append((request_id, request))
        waiting = still_waiting
        if not backend.has_work:
            if waiting:  # nothing running and still no room: the backend's own judgement is broken
                raise EngineError(
                    f"the backend admits none of {len(waiting)} waiting request(s) while idle: "
                    f"{backend.can_admit(waiting[0][1]).reason}"
                )
            break
        report = backend.step()
        outcomes.update((outcome.request_id, outcome) for outcome in report.finished)
        if on_step is not None:
            on_step(report)
    return outcomes
