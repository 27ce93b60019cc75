"""Memory the device has free right now, for admission decisions (every family shares the measure).

On CUDA: what the driver reports free (``torch.cuda.mem_get_info``) plus what torch's caching allocator holds
reserved but unused (it hands that out first). On a CPU (and on unified-memory machines without CUDA): the
RAM the kernel reports available (``psutil``), which counts reclaimable page cache.
"""

from __future__ import annotations

import psutil
import torch


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    return int(psutil.virtual_memory().available)


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.2f} GB"
