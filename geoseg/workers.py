"""What geoseg sets up in every Dask worker process it uses (registered by
:func:`geoseg.cluster.client_for`, so workers that a nanny restarts get it too).

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off
glibc's adaptive mmap threshold: every array over 128 KiB is then mapped fresh and its
pages faulted in again. geoseg's tasks allocate tile-sized arrays all the time, and on 2
cores a scene took 3.3 s in such a worker against 1.5 s in a plain process. Raising the
mmap threshold to 32 MiB (glibc's own ceiling) and the trim threshold to 64 MiB restores
the speed while memory still goes back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


@lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Undo the effect of ``MALLOC_TRIM_THRESHOLD_`` on glibc's mmap threshold (once per
    process); True if glibc accepted the settings."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to undo
        return False
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 64 << 20))


class GeosegWorker(WorkerPlugin):
    """Runs :func:`tune_allocator` in each worker as it starts."""

    name = "geoseg-worker"

    def setup(self, worker: Any) -> None:
        tune_allocator()
