"""The catalog's ``index.json``, loaded once per process and cached; reloaded when it changes.

The index (written by :func:`steps.products.catalog.rebuild_catalog`) lists every published item with its datetime,
tile, platform, ``proj:code``, WGS84 bbox, asset keys (relative to the output root) and, per asset, the
raster grid (``proj:shape`` and ``proj:transform`` in the item's UTM CRS), read into a
:class:`steps.products.raster.Grid`. Nothing here opens a COG.

Change detection: a local index is re-``stat``-ed on every lookup (cheap; mtime + size); an index in S3 is
HEAD-ed for its ETag at most every ``check_interval_s`` seconds. Items are kept sorted by
(datetime, tile, id) and the bboxes and times also as numpy arrays for vectorised filtering.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from steps.products.catalog import INDEX_KEY
from steps.products.raster import Grid
from steps.storage import LocalStorage, S3Storage, open_storage
from steps.times import format_datetime, parse_datetime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexItem:
    """One published scene as the index describes it.

    ``epsg``: the item's UTM CRS (``proj:code``); ``bbox``: its WGS84 extent; ``assets`` and ``grids``: per
    product key, the COG's key below the output root and its raster grid (shared by items on the same grid).
    """

    id: str
    datetime: datetime
    tile: str
    platform: str
    epsg: int
    bbox: tuple[float, float, float, float]
    assets: dict[str, str]
    grids: dict[str, Grid]
    #: ``file:checksum`` per asset (the time-series store serves a date only with these checksums)
    checksums: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def acquisition(self) -> tuple[str, str]:
        """Acquisition key: platform and sensing time to the second (neighbour tiles of one datatake share it)."""
        return self.platform, self.datetime.strftime("%Y-%m-%dT%H:%M:%S")

    @functools.cached_property
    def datetime_text(self) -> str:
        """The datetime as the catalog writes it (:func:`steps.times.format_datetime`)."""
        return format_datetime(self.datetime)


def _epsg(code: Any) -> int:
    text = str(code or "")
    if not text.upper().startswith("EPSG:"):
        raise ValueError(f"unsupported proj:code {code!r}")
    return int(text.split(":", 1)[1])


@dataclass
class CatalogIndex:
    """Parsed index with numpy views for fast spatial/temporal filtering."""

    items: list[IndexItem]
    t_us: np.ndarray = field(init=False)  # int64 microseconds since the epoch (UTC)
    bboxes: np.ndarray = field(init=False)  # (N, 4) float64 minlon, minlat, maxlon, maxlat

    def __post_init__(self) -> None:
        self.t_us = np.array([int(it.datetime.timestamp() * 1_000_000) for it in self.items], dtype=np.int64)
        self.bboxes = np.array([it.bbox for it in self.items], dtype=np.float64).reshape(-1, 4)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CatalogIndex:
        """Build from the ``index.json`` document; rows that cannot be parsed are logged and skipped."""
        items = []
        shared: dict[Grid, Grid] = {}
        for row in doc.get("items", []):
            try:
                epsg = _epsg(row["epsg"])
                grids = {}
                for key, g in (row.get("grids") or {}).items():
                    grid = Grid.from_proj(f"EPSG:{epsg}", g)
                    # one instance per distinct grid: caches keyed by it stay small
                    grids[key] = shared.setdefault(grid, grid)
                items.append(IndexItem(
                    id=str(row["id"]), datetime=parse_datetime(row["datetime"]), tile=str(row.get("tile") or ""),
                    platform=str(row.get("platform") or ""), epsg=epsg,
                    bbox=(float(row["bbox"][0]), float(row["bbox"][1]), float(row["bbox"][2]), float(row["bbox"][3])),
                    assets=dict(row.get("assets") or {}), grids=grids,
                    checksums={str(k): str(v) for k, v in (row.get("checksums") or {}).items()}))
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                log.warning("index row %r skipped: %s", row.get("id") if isinstance(row, dict) else row, exc)
        items.sort(key=lambda it: (it.datetime, it.tile, it.id))
        return cls(items)

    def select(self, start: datetime | None, end: datetime | None,
               lonlat_bounds: tuple[float, float, float, float], assets: list[str],
               margin_deg: float = 1e-3) -> list[int]:
        """Indices of items in ``[start, end)`` whose bbox (grown by ``margin_deg``) meets ``lonlat_bounds``
        and that have at least one of ``assets``; in (datetime, tile) order."""
        if not self.items:
            return []
        ok = np.ones(len(self.items), dtype=bool)
        if start is not None:
            ok &= self.t_us >= int(start.timestamp() * 1_000_000)
        if end is not None:
            ok &= self.t_us < int(end.timestamp() * 1_000_000)
        w, s, e, n = lonlat_bounds
        b = self.bboxes
        ok &= (b[:, 0] - margin_deg <= e) & (b[:, 2] + margin_deg >= w)
        ok &= (b[:, 1] - margin_deg <= n) & (b[:, 3] + margin_deg >= s)
        return [int(i) for i in np.flatnonzero(ok) if any(a in self.items[int(i)].assets for a in assets)]

    def extent(self) -> tuple[list[float], datetime | None, datetime | None]:
        """WGS84 bbox of all items and first/last acquisition time (for the collection metadata)."""
        if not self.items:
            return [-180.0, -90.0, 180.0, 90.0], None, None
        b = self.bboxes
        bbox = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())]
        return bbox, self.items[0].datetime, self.items[-1].datetime


@dataclass
class _Entry:
    stamp: Any
    checked: float
    index: CatalogIndex
    storage: LocalStorage | S3Storage


_CACHE: dict[str, _Entry] = {}
_LOCK = threading.Lock()


def _stamp(storage: LocalStorage | S3Storage) -> Any:
    """A value that changes whenever the index object changes (mtime+size locally, ETag in S3)."""
    if isinstance(storage, LocalStorage):
        st = Path(storage.url(INDEX_KEY)).stat()
        return st.st_mtime_ns, st.st_size, st.st_ino
    resp = storage.client.head_object(Bucket=storage.bucket, Key=storage._key(INDEX_KEY), **storage._extra())
    return resp.get("ETag")


def load_index(catalog: str, check_interval_s: float | None = None) -> tuple[CatalogIndex, LocalStorage | S3Storage]:
    """The cached index of the output root ``catalog`` (a directory or ``s3://bucket/prefix``).

    ``check_interval_s``: minimum seconds between change checks (default 0 for local files, 5 for S3).
    Raises ``FileNotFoundError`` when the catalog has no index.
    """
    now = time.monotonic()
    with _LOCK:
        entry = _CACHE.get(catalog)
        if entry is not None:
            interval = check_interval_s if check_interval_s is not None else (
                0.0 if isinstance(entry.storage, LocalStorage) else 5.0)
            if now - entry.checked < interval:
                return entry.index, entry.storage
        storage = entry.storage if entry is not None else open_storage(catalog)
        stamp = _stamp(storage)
        if entry is not None and entry.stamp == stamp:
            entry.checked = now
            return entry.index, entry.storage
        doc = json.loads(storage.read_bytes(INDEX_KEY))
        index = CatalogIndex.from_json(doc)
        if entry is not None:
            from steps.edr.reader import invalidate

            invalidate()  # a republished scene may have replaced a COG: reopen datasets
        _CACHE[catalog] = _Entry(stamp, now, index, storage)
        log.info("loaded catalog index %s: %d items", storage.url(INDEX_KEY), len(index.items))
        return index, storage
