"""The reads of a :class:`~steps.edr.plan.ReadPlan`: from the time-series store where it can answer, else
windowed COG reads on a set of reader threads, with open datasets kept per thread.

:func:`read_plan` asks the store (:class:`steps.products.cube.CubeReader`, one per output root) for the
plan's ``store_groups`` — a window wanted for several dates of one tile — and takes the dates it holds with
the catalog's checksums; everything else, and everything the store fails to answer, comes from the COGs.
Both hold the same stored integers.

COG reads

A read asks for one window of band 1 of one COG; GDAL fetches and decodes only the internal blocks the
window touches (one 512² block for a point). Opening a COG costs more than reading a cached block (header
parsing, CRS, GDAL environment checks — mostly under the GIL), so datasets stay open:

* reads are *sharded*: each URL always goes to the same single-threaded executor (by a stable hash), so
  each COG is opened at most once per process and used by one thread only (rasterio datasets are not
  thread-safe);
* each shard keeps an LRU of at most ``handles_per_thread`` open datasets (bounding file descriptors to
  ``threads × handles_per_thread``);
* GDAL releases the GIL while it decompresses and does I/O, so the shards overlap.

Product COGs are immutable once published (see :mod:`steps.products.catalog`); :func:`invalidate` (called when the
catalog index changes) makes every shard drop its open datasets before its next read anyway.
For ``s3://`` catalogs each shard enters :func:`steps.storage.gdal_env` once (rasterio's environment is
per thread). Values are returned as stored (raw integers); scaling and no-data belong to the caller.
"""

from __future__ import annotations

import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from steps.edr.plan import PixelWindow, ReadPlan
from steps.storage import S3Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowRead:
    """Read ``window`` of band 1 of the COG at ``url``."""

    url: str
    window: PixelWindow


_SHARDS: dict[bool, list[ThreadPoolExecutor]] = {}  # remote? -> reader threads
_LOCK = threading.Lock()
_TLS = threading.local()
_GENERATION = 0
_HANDLES = 64


def invalidate() -> None:
    """Make every reader thread close its open datasets before its next read."""
    global _GENERATION
    _GENERATION += 1


def _init_thread(remote: bool) -> None:
    import rasterio

    from steps.storage import gdal_env

    # one environment per thread for its lifetime: avoids rasterio setting one up around every open
    env = gdal_env(side="output") if remote else rasterio.Env()  # product COGs: the output side
    env.__enter__()
    _TLS.env = env
    _TLS.handles = OrderedDict()
    _TLS.generation = _GENERATION


def _shards(threads: int, remote: bool, handles: int) -> list[ThreadPoolExecutor]:
    global _HANDLES
    with _LOCK:
        if remote not in _SHARDS:
            _HANDLES = max(1, handles)
            _SHARDS[remote] = [
                ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edr-read-{'s3' if remote else 'fs'}-{i}",
                                   initializer=_init_thread, initargs=(remote,))
                for i in range(max(1, threads))]
        return _SHARDS[remote]


def _dataset(url: str) -> Any:
    import rasterio

    handles: OrderedDict[str, Any] = _TLS.handles
    if _TLS.generation != _GENERATION:
        for ds in handles.values():
            ds.close()
        handles.clear()
        _TLS.generation = _GENERATION
    ds = handles.get(url)
    if ds is None:
        ds = rasterio.open(url)
        handles[url] = ds
        if len(handles) > _HANDLES:
            _old, oldest = handles.popitem(last=False)
            oldest.close()
    else:
        handles.move_to_end(url)
    return ds


def _read(req: WindowRead) -> np.ndarray:
    from rasterio.windows import Window

    try:
        ds = _dataset(req.url)
        w = req.window
        return np.asarray(ds.read(1, window=Window(w.col0, w.row0, w.width, w.height)))
    except Exception:
        stale = _TLS.handles.pop(req.url, None)  # never keep a handle that failed
        if stale is not None:
            stale.close()
        raise


def read_windows(reqs: Sequence[WindowRead], *, workers: int = 8, remote: bool = False,
                 handles_per_thread: int = 64) -> list[np.ndarray]:
    """Read all windows on the reader threads (``workers`` of them, fixed at first use); results in order.

    Local and remote catalogs get separate reader threads; a remote thread's GDAL environment is built from
    the settings (``RAW2READY_S3_*``) current when the thread starts.

    ``remote``: the URLs are ``s3://``/``https://`` (each reader thread then holds a GDAL S3 environment).
    """
    if not reqs:
        return []
    shards = _shards(workers, remote, handles_per_thread)
    futures: list[Future[np.ndarray]] = [
        shards[zlib.crc32(r.url.encode()) % len(shards)].submit(_read, r) for r in reqs]
    return [f.result() for f in futures]


# ------------------------------------------------------------------------------------------ a plan's reads
_CUBE_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edr-cube")
_SEGMENT_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edr-cube-seg")
_READERS: dict[str, Any] = {}
_READERS_LOCK = threading.Lock()


def cube_reader(catalog: str, storage: Any) -> Any:
    """The process-wide :class:`steps.products.cube.CubeReader` of one output root (manifests cached in it)."""
    from steps.products.cube import CubeReader

    with _READERS_LOCK:
        reader = _READERS.get(catalog)
        if reader is None:
            reader = _READERS[catalog] = CubeReader(storage)
        return reader


def read_plan(plan: ReadPlan, storage: Any, catalog: str, *, workers: int = 8) -> list[np.ndarray]:
    """Stored values of every window of ``plan.reads``, in order (``catalog``: the output root ``storage`` is).

    The ``store_groups`` come from the time-series store for the dates it holds with the catalog's checksums;
    everything else, and everything the store fails to answer, from the COGs (a COG that cannot be read raises
    rasterio's ``RasterioIOError``).
    """
    out: list[np.ndarray | None] = [None] * len(plan.reads)
    from_cogs = _read_store(plan, storage, catalog, out) if plan.store_groups else list(range(len(plan.reads)))
    if from_cogs:
        arrays = read_windows([WindowRead(storage.url(plan.reads[i].asset), plan.reads[i].window)
                               for i in from_cogs], workers=workers, remote=isinstance(storage, S3Storage))
        for i, a in zip(from_cogs, arrays, strict=True):
            out[i] = a
    return out  # type: ignore[return-value]


def _read_store(plan: ReadPlan, storage: Any, catalog: str, out: list[np.ndarray | None]) -> list[int]:
    """Fill ``out`` from the store where it can; returns the indices left for the COGs."""
    reads = plan.reads
    grouped = {i for idxs in plan.store_groups for i in idxs}
    rest: list[int] = [i for i in range(len(reads)) if i not in grouped]
    jobs = []
    reader = cube_reader(catalog, storage)
    for idxs in plan.store_groups:
        first = reads[idxs[0]]
        tile, key, w = first.item.tile, first.key, first.window
        try:
            where = reader.held(tile, {reads[i].item.id: reads[i].item.checksums for i in idxs}, key)
        except Exception as exc:  # an unreadable manifest is the store's problem, not the query's
            log.warning("time-series store of %s unavailable (%s): reading the COGs", tile, exc)
            where = {}
        rest += [i for i in idxs if reads[i].item.id not in where]
        held = [i for i in idxs if reads[i].item.id in where]
        if held:
            jobs.append((tile, held, _CUBE_POOL.submit(reader.read, tile, key, where, w.row0, w.col0, w.height,
                                                       w.width, _SEGMENT_POOL)))
    for tile, held, fut in jobs:
        try:
            blocks = fut.result()
        except Exception as exc:  # CubeError (segment replaced or missing), storage errors
            log.warning("time-series store of %s could not answer (%s): reading the COGs", tile, exc)
            reader.refresh(tile)
            rest += held
            continue
        for i in held:
            out[i] = blocks[reads[i].item.id]
    return sorted(rest)
