"""Windowed COG reads in a shared thread pool.

Each read opens the COG, reads one window of band 1 (GDAL fetches and decodes only the internal blocks that
the window touches: one 512² block for a point) and closes it. Reads run in a process-wide thread pool;
GDAL releases the GIL while it decompresses, so reads of many dates overlap. For ``s3://`` catalogs every
pool thread enters :func:`steps.storage.gdal_env` once (rasterio's environment is thread-local).

Values are returned as stored (raw integers); scaling and no-data handling belong to the caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowRead:
    """Read rows ``[row0, row0+height)`` × cols ``[col0, col0+width)`` of band 1 of the COG at ``url``."""

    url: str
    row0: int
    col0: int
    height: int
    width: int


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_POOL_SIZE = 8
_THREAD = threading.local()


def _init_thread(remote: bool) -> None:
    if remote:
        from steps.storage import gdal_env

        env = gdal_env()
        env.__enter__()  # kept for the thread's lifetime: pool threads live as long as the process
        _THREAD.env = env


def _pool(workers: int, remote: bool) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None:
            _POOL_SIZE = max(1, workers)
            _POOL = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="edr-read",
                                       initializer=_init_thread, initargs=(remote,))
        return _POOL


def _read(req: WindowRead) -> np.ndarray:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(req.url) as ds:
        return np.asarray(ds.read(1, window=Window(req.col0, req.row0, req.width, req.height)))


def read_windows(reqs: Sequence[WindowRead], *, workers: int = 8, remote: bool = False) -> list[np.ndarray]:
    """Read all windows, in parallel, in order. ``remote``: the URLs are ``s3://``/``https://``."""
    if not reqs:
        return []
    if len(reqs) == 1 and not remote:
        return [_read(reqs[0])]
    pool = _pool(workers, remote)
    return list(pool.map(_read, reqs))


def map_parallel(fn: Callable[[Any], Any], args: Sequence[Any], *, workers: int = 8, remote: bool = False) -> list[Any]:
    """Apply ``fn`` to each element of ``args`` in the read pool; results in order."""
    return list(_pool(workers, remote).map(fn, args))
