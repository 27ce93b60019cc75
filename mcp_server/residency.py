"""Model residency for the worker: which models are loaded here, loading them beside running batches, and
choosing what to load or unload when several models have pending jobs (step 4 of the loop in
``mcp_server.worker``).

A load runs on a helper thread and hands its engine (or the reason it failed) back through a queue that the
loop takes at the next step boundary (step 1), so batches of the other resident models keep stepping.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mcp_server import families
from mcp_server.config import Settings
from mcp_server.outcomes import Outcomes
from mcp_server.telemetry import Telemetry
from storage import Generation, Store

if TYPE_CHECKING:
    from mcp_server.worker import _Job

# The worker's lines keep one logger name, whichever of its modules writes them: operators filter by it.
log = logging.getLogger("mcp_server.worker")

MODEL_HEADROOM = 1.2  # a model is loaded beside others when free memory exceeds its weights by this factor


@dataclass
class Resident:
    model_id: str
    engine: families.LoadedModel
    last_used: float = field(default_factory=time.monotonic)
    draining: bool = False  # takes no new jobs: another model is waiting for its memory


class ModelResidency:
    """The residency half of ``Worker`` (a mixin, so the loop and residency share one thread's state).

    The annotations below are all it uses of the worker; ``Worker.__init__`` sets each one.
    """

    settings: Settings
    store: Store
    telemetry: Telemetry
    outcomes: Outcomes
    state: str
    serves: Callable[[str], bool]
    _claim: Callable[[str, int], list[Generation]]
    _notify: Callable[[bool], None]  # the argument: progress only
    _lock: threading.Lock  # guards _loading, read by other threads through loading_since
    _wake: threading.Event
    _last_heartbeat: float
    _waiting: dict[str, list[_Job]]  # model id -> claimed jobs not admitted yet, oldest first
    # owned by residency
    _residents: dict[str, Resident]
    _loading: dict[str, float]  # model id -> monotonic time its load started
    _loaders: list[threading.Thread]
    _loads: queue.SimpleQueue[tuple[str, families.LoadedModel | None, str | None]]

    @property
    def resident_models(self) -> list[str]:
        return list(self._residents)

    def loading_since(self, model_id: str) -> float | None:
        """Seconds ``model_id`` has been loading, or None when it is not loading."""
        with self._lock:
            started = self._loading.get(model_id)
        return None if started is None else time.monotonic() - started

    def _plan_residency(self) -> None:
        """Load a model that has pending jobs and is not resident, when memory allows or can be made to."""
        with self._lock:
            if self._loading:
                return  # one load at a time
        now = datetime.now(UTC)
        for model_id, oldest, _count in self.store.pending_models():
            if model_id in self._residents or not self.serves(model_id):
                continue
            if self._fits_beside_residents(model_id):
                self._begin_load(model_id)
                return
            idle = [
                r
                for r in self._residents.values()
                if not r.engine.core.has_work and not self._waiting.get(r.model_id)
            ]
            if idle:
                victim = min(idle, key=lambda resident: resident.last_used)
                self._unload(victim)
                self._begin_load(model_id)
                return
            if (now - oldest).total_seconds() >= self.settings.model_wait_s:
                for resident in self._residents.values():
                    if not resident.draining:
                        log.info("%s stops taking jobs so %s can be loaded", resident.model_id, model_id)
                    resident.draining = True
            return  # the longest-waiting model goes first

    def _fits_beside_residents(self, model_id: str) -> bool:
        if not self._residents:
            return True
        from engine import loading, memory

        weights = families.weights_bytes(model_id)
        if weights is None:
            weights = max(resident.engine.memory_bytes for resident in self._residents.values())
        device = loading.select_device(self.settings.device)
        return memory.free_bytes(device) >= MODEL_HEADROOM * weights

    def _unload(self, resident: Resident) -> None:
        log.info("unloading %s to make room", resident.model_id)
        del self._residents[resident.model_id]
        self._waiting.pop(resident.model_id, None)
        resident.engine.core.close()
        from engine import loading

        loading.release_memory(resident.engine.device)

    def _begin_load(self, model_id: str) -> None:
        with self._lock:
            self._loading[model_id] = time.monotonic()
        self.state = f"loading {model_id}"
        self._last_heartbeat = 0.0  # tell the workers table at the next boundary
        self._notify(False)
        loader = threading.Thread(target=self._load, args=(model_id,), name=f"load-{model_id}", daemon=True)
        self._loaders = [thread for thread in self._loaders if thread.is_alive()] + [loader]
        loader.start()

    def _load(self, model_id: str) -> None:
        """On a helper thread: the engine or the reason it could not load."""
        log.info("loading %s", model_id)
        from engine import EngineError

        try:
            engine = families.load(model_id, self.settings)
        except EngineError as error:
            self._loads.put((model_id, None, str(error)))
        except Exception as error:
            log.exception("could not load %s", model_id)
            self._loads.put((model_id, None, f"could not load the model: {type(error).__name__}: {error}"))
        else:
            self._loads.put((model_id, engine, None))
        self._wake.set()

    def _take_loaded(self) -> None:
        while True:
            try:
                model_id, engine, error = self._loads.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._loading.pop(model_id, None)
            if engine is None:
                self.state = f"load failed: {error}"
                log.error("could not load %s: %s", model_id, error)
                for generation in self._claim(model_id, self.settings.max_queue):
                    self.outcomes.fail(generation.id, error or "could not load the model", generation)
                continue
            self._residents[model_id] = Resident(model_id, engine)
            self.telemetry.model_loaded(engine)
            for resident in self._residents.values():
                resident.draining = False
            self.state = "ready"
            self._last_heartbeat = 0.0
            log.info(
                "loaded %s on %s (%s) in %.1f s", model_id, engine.device, engine.dtype, engine.load_seconds
            )
            self._wake.set()
