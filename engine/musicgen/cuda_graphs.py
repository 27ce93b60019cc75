"""The masked MusicGen decode step captured as CUDA graphs, one per (batch-size, length) bucket."""

from __future__ import annotations

import logging
from typing import Any

import torch

from engine.musicgen.decode import DecodeStep
from engine.musicgen.decode_state import DecodeState

log = logging.getLogger(__name__)


class CudaGraphs:
    """The masked step captured as a CUDA graph once per (batch-size bucket, length bucket) and replayed.

    Buckets are powers of two of slots and multiples of ``LENGTH_BUCKET`` positions, so a step reads no more
    cache than its bucket needs. All graphs share one memory pool. They stay valid as long as the state's
    buffers do; ``DecodeState.grow`` replaces buffers, and the owner then calls ``clear``.
    """

    def __init__(self, step: DecodeStep) -> None:
        self.step = step
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.pool: Any = None
        self.captures = 0  # how many graphs were captured, for tests and the gpu check

    @staticmethod
    def bucket(slots: int, capacity: int) -> int:
        return min(1 << max(0, slots - 1).bit_length(), capacity)

    def clear(self) -> None:
        self.graphs.clear()

    def run(self, state: DecodeState, slots: int, length: int) -> None:
        key = (slots, length)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self._capture(state, slots, length)
            self.graphs[key] = graph
        graph.replay()

    def _capture(self, state: DecodeState, slots: int, length: int) -> torch.cuda.CUDAGraph:
        # Warm up on a side stream first (cuBLAS handles, lazy initialisation), as capture requires.
        with state.preserved():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step.masked(state, slots, length)
            torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):  # recorded, not run: the state is untouched
            self.step.masked(state, slots, length)
        self.captures += 1
        log.info("captured the decode step for %d slot(s) x %d positions as a CUDA graph", slots, length)
        return graph
