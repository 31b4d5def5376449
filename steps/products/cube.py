"""The time-series store: per tile, the catalog's NDVI, LAI, LAI flags and cloud mask as Zarr v3 arrays
chunked long in time and small in space, so that one pixel's whole history is one range read.

Why it exists
    A 4-year point series read from the per-scene COGs costs one block decode and one range request *per
    date* (≈ 290 requests and ≈ 80 MB for one clicked pixel at full size). The store answers the same
    question with one inner chunk per array. COGs + STAC stay the product of record; the store is derived
    from them, described in the collection (asset ``timeseries``), and can always be rebuilt from them.

Layout (below the output root, local directory or ``s3://bucket/prefix``)::

    cube/<tile>/manifest.json            the commit point: grids and segments, with item ids, datetimes
                                         and the asset checksums each date was copied from
    cube/<tile>/segments/<name>/         one Zarr v3 group per segment, write-once:
        ndvi/ lai/ lai_flags/ cloud_mask/    arrays (time, y, x) on the product's native grid, stored
                                             values (the COGs' integers, scale/offset/nodata in attributes)
        <array>/shard_indexes              every shard's index in one object (see below)
    cube/<tile>/.lock                    the tile's writer lock (local file systems; S3: a lease object)

Chunking: a segment of ``n`` dates has inner chunks of ``n × 32 × 32`` pixels (zstd, crc32c) gathered in
shards of ``n × 512 × 512`` (one object each, index at the end). A position read of one array is therefore
one shard-index read plus one chunk read per segment. Next to its shards, each array keeps
``shard_indexes``: the index of every shard (the bytes Zarr's ``sharding_indexed`` codec puts at the end of
each shard, without their crc32c) concatenated in row-major shard order, zstd-compressed, with a crc32c
of the compressed bytes appended (≈ 1 MB for a 10 m array of a full tile). A reader loads it once per
array and segment (``SHARD_INDEX_CACHE_MB`` in all), after which a position read is *one* range request
per array and segment: on object storage that halves the round trips of a pixel never read before. It is
derived data: a store without it is read through the shard indexes, and ``cube audit --deep`` checks it
against them. Zarr ignores it.

Appending without rewriting: each sync writes the dates the catalog has and the store lacks as a new
segment, then merges the newest segments while the older one is not larger than the newer one (a binary
counter). Each date is rewritten at most log2(N) times and a tile has at most log2(N)+1 segments;
``compact`` merges everything into one (``raw2ready cube rebuild`` writes one from scratch). Merges stream
shard by shard, so memory stays at one shard column (``n × 512 × 512`` values) whatever the tile size.

Consistency: one writer per tile, under the tile lock (``fcntl`` on local disk, released by the kernel if
the writer dies; on S3 a lease object created with ``If-None-Match: *`` that expires after
``LOCK_TTL_S``). Segments are complete before the manifest names them, and the manifest is replaced
atomically, so a killed writer leaves at most an unreferenced segment, removed by the next sync. Segments
a manifest stops naming are deleted one generation later, and every array's fill value is a sentinel no
product uses, so a reader that raced with a deletion sees the sentinel (never a silent no-data) and
falls back to the COGs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steps.errors import TransientError
from steps.products.catalog import INDEX_KEY, dumps
from steps.products.definitions import BY_KEY
from steps.products.raster import Grid
from steps.storage import LocalStorage, S3Storage

log = logging.getLogger(__name__)

Store = LocalStorage | S3Storage

CUBE_PREFIX = "cube"
FORMAT = "raw2ready-cube/1"
#: the products the store holds (every one of them must be in an item for it to enter the store)
CUBE_KEYS: tuple[str, ...] = ("ndvi", "lai", "lai_flags", "cloud_mask")
CHUNK_PX = 32
SHARD_PX = 512
ZSTD_LEVEL = 3
#: fill value of every array: a value no product writes (NDVI/LAI are scaled to ±10000/≤ 15000 with −32768
#: as no data; flags and classes are < 32 with 255 as no data), so an absent chunk is never mistaken for data
SENTINEL: dict[str, int] = {"int16": -32767, "uint8": 254}
#: dates copied from the COGs into one new segment at most (one open file per date while copying)
SYNC_BATCH = 128
SYNC_GDAL_CACHE_MB = 64
LOCK_TTL_S = 900.0
LOCK_WAIT_S = 600.0


class CubeError(RuntimeError):
    """The store cannot answer (absent, stale or mid-rewrite): read the COGs instead."""


# ----------------------------------------------------------------------------------------------- keys
def tile_prefix(tile: str) -> str:
    """Key prefix of one tile's store."""
    return f"{CUBE_PREFIX}/{tile}"


def manifest_key(tile: str) -> str:
    """Key of one tile's manifest (the commit point)."""
    return f"{tile_prefix(tile)}/manifest.json"


def segment_prefix(tile: str, name: str) -> str:
    """Key prefix of one segment's Zarr group."""
    return f"{tile_prefix(tile)}/segments/{name}"


# ------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class Entry:
    """One date of a segment: the item it was copied from and that item's asset checksums."""

    item: str
    datetime: str
    checksums: dict[str, str]


@dataclass
class Segment:
    """A write-once Zarr group holding ``len(entries)`` dates (time axis in entry order)."""

    name: str
    entries: list[Entry]


@dataclass
class Manifest:
    """A tile's store: grids (per product, ``shape`` [rows, cols] and ``transform``), EPSG and segments."""

    tile: str
    epsg: str
    grids: dict[str, dict[str, list[Any]]]
    generation: int = 0
    segments: list[Segment] = field(default_factory=list)
    #: segments dropped by the previous commit, deleted by the next one (readers may still hold them)
    retired: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The manifest document."""
        return {
            "type": FORMAT, "tile": self.tile, "proj:code": self.epsg, "generation": self.generation,
            "chunk_px": CHUNK_PX, "shard_px": SHARD_PX, "grids": self.grids,
            "segments": [{"name": s.name, "dates": len(s.entries),
                          "entries": [{"item": e.item, "datetime": e.datetime, "checksums": e.checksums}
                                      for e in s.entries]} for s in self.segments],
            "retired": self.retired,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        """Parse a manifest; ``CubeError`` on another format."""
        if doc.get("type") != FORMAT:
            raise CubeError(f"not a {FORMAT} manifest: type {doc.get('type')!r}")
        segs = [Segment(str(s["name"]), [Entry(str(e["item"]), str(e["datetime"]), dict(e["checksums"]))
                                         for e in s["entries"]]) for s in doc["segments"]]
        return cls(tile=str(doc["tile"]), epsg=str(doc["proj:code"]), grids=dict(doc["grids"]),
                   generation=int(doc["generation"]), segments=segs, retired=list(doc.get("retired") or []))

    def lookup(self) -> dict[str, tuple[int, int, Entry]]:
        """Item id → (segment index, time index, entry); a later segment supersedes an earlier one."""
        out: dict[str, tuple[int, int, Entry]] = {}
        for si, seg in enumerate(self.segments):
            for ti, e in enumerate(seg.entries):
                out[e.item] = (si, ti, e)
        return out

    @property
    def dates(self) -> int:
        """Distinct items held."""
        return len(self.lookup())


def load_manifest(storage: Store, tile: str) -> Manifest | None:
    """The tile's manifest, or None when the tile has no store yet."""
    try:
        return Manifest.from_json(json.loads(storage.read_bytes(manifest_key(tile))))
    except FileNotFoundError:
        return None


# ----------------------------------------------------------------------------------------- zarr access
def zarr_store(storage: Store, prefix: str, *, read_only: bool = False) -> Any:
    """A Zarr store rooted at ``prefix`` of ``storage``.

    Local disk: ``zarr.storage.LocalStore``. S3: ``zarr.storage.ObjectStore`` over obstore's ``S3Store``,
    configured from the same ``RAW2READY_S3_*`` settings as boto3 and GDAL. obstore (Rust, async) is
    chosen over fsspec/s3fs because it issues concurrent range requests without a Python event loop per
    request, and over boto3 because Zarr needs an async store.
    """
    import zarr.storage

    if isinstance(storage, LocalStorage):
        return zarr.storage.LocalStore(storage.root / prefix, read_only=read_only)
    return zarr.storage.ObjectStore(_obstore(storage, prefix), read_only=read_only)


def _obstore(storage: S3Storage, prefix: str) -> Any:
    """obstore's ``S3Store`` rooted at ``prefix`` of ``storage`` (the ``RAW2READY_S3_*`` output settings)."""
    from obstore.store import S3Store

    cfg = storage.cfg
    kwargs: dict[str, Any] = {"region": cfg.region,
                              "virtual_hosted_style_request": cfg.addressing_style == "virtual"}
    if cfg.endpoint_url:
        kwargs["endpoint"] = cfg.endpoint_url
        kwargs["client_options"] = {"allow_http": cfg.endpoint_url.startswith("http://")}
    if cfg.has_keys:
        kwargs["access_key_id"] = cfg.access_key_id
        kwargs["secret_access_key"] = cfg.secret_access_key
    if cfg.unsigned:
        kwargs["skip_signature"] = True
    if cfg.requester_pays:
        kwargs["request_payer"] = True
    return S3Store(storage.bucket, prefix=f"{storage.prefix}/{prefix}".strip("/"), **kwargs)


def _create_arrays(storage: Store, tile: str, name: str, epsg: str, grids: dict[str, dict[str, list[Any]]],
                   n: int) -> dict[str, Any]:
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    group = zarr.open_group(zarr_store(storage, segment_prefix(tile, name)), mode="w", zarr_format=3)
    arrays = {}
    for key in CUBE_KEYS:
        p = BY_KEY[key]
        rows, cols = (int(v) for v in grids[key]["shape"])
        arrays[key] = group.create_array(
            key, shape=(n, rows, cols), dtype=p.dtype, chunks=(n, CHUNK_PX, CHUNK_PX),
            shards=(n, SHARD_PX, SHARD_PX), compressors=[ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()],
            fill_value=SENTINEL[p.dtype], dimension_names=("time", "y", "x"),
            attributes={"scale": p.scale, "offset": p.offset, "nodata": p.nodata, "title": p.title,
                        "proj:code": epsg, "proj:transform": grids[key]["transform"]},
        )
    return arrays


def open_segment_array(storage: Store, tile: str, name: str, key: str) -> Any:
    """One array of one segment, read-only."""
    import zarr

    return zarr.open_array(zarr_store(storage, segment_prefix(tile, name), read_only=True), path=key, mode="r")


# -------------------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class IndexRow:
    """The parts of a catalog index row the store needs."""

    id: str
    datetime: str
    tile: str
    epsg: str
    assets: dict[str, str]
    grids: dict[str, dict[str, list[Any]]]
    checksums: dict[str, str]


def index_rows(storage: Store) -> list[IndexRow]:
    """The catalog index's rows (``FileNotFoundError`` when there is no catalog)."""
    doc = json.loads(storage.read_bytes(INDEX_KEY))
    rows = []
    for r in doc.get("items", []):
        rows.append(IndexRow(id=str(r["id"]), datetime=str(r["datetime"]),
                             tile=str(r.get("tile") or ""), epsg=str(r.get("epsg") or ""),
                             assets=dict(r.get("assets") or {}), grids=dict(r.get("grids") or {}),
                             checksums=dict(r.get("checksums") or {})))
    return rows


def _grids_of(row: IndexRow) -> dict[str, dict[str, list[Any]]]:
    """The store products' grids of an index row, in the manifest's form (:meth:`Grid.to_proj`)."""
    return {k: Grid.from_proj(row.epsg, row.grids[k]).to_proj() for k in CUBE_KEYS}


def eligible(row: IndexRow) -> bool:
    """Whether an item can enter the store: every store product present, with grid and checksum."""
    return all(k in row.assets and k in row.grids and k in row.checksums for k in CUBE_KEYS)


#: a source of dates for a new segment: (number of dates, reader(key, row0, col0, h, w) → (n, h, w) array)
Source = tuple[int, Callable[[str, int, int, int, int], np.ndarray]]


@contextlib.contextmanager
def _cog_source(storage: Store, rows: Sequence[IndexRow]) -> Iterator[Source]:
    """COG windows of ``rows``; the COGs of one product are open at a time (``_write_segment`` goes product
    by product), so a batch of ``SYNC_BATCH`` dates holds at most that many open files."""
    import rasterio
    from rasterio.windows import Window

    from steps.storage import gdal_env

    env = gdal_env(side="output") if isinstance(storage, S3Storage) else contextlib.nullcontext()
    # every block is read once: GDAL's block cache (5 % of the machine's RAM by default, whatever the pod's
    # limit) would only hold memory
    with env, rasterio.Env(GDAL_CACHEMAX=SYNC_GDAL_CACHE_MB), \
            ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        current: dict[str, Any] = {"key": None, "handles": []}

        def close() -> None:
            for ds in current["handles"]:
                ds.close()
            current["handles"] = []

        def read_one(ds: Any, win: Window) -> np.ndarray:
            return np.asarray(ds.read(1, window=win))

        def read(key: str, r0: int, c0: int, h: int, w: int) -> np.ndarray:
            if current["key"] != key:
                close()
                current["handles"] = [rasterio.open(storage.url(r.assets[key])) for r in rows]
                current["key"] = key
            win = Window(c0, r0, w, h)
            # each dataset is read by one thread at a time: one task per dataset
            return np.stack(list(pool.map(lambda ds: read_one(ds, win), current["handles"])))

        try:
            yield len(rows), read
        finally:
            close()


def _segment_source(storage: Store, tile: str, seg: Segment, keep: list[int]) -> Source:
    # the direct chunk reader (zarr's per-chunk asyncio would cost minutes per full-size merge)
    arrays = {k: open_reader_array(storage, tile, seg.name, k) for k in CUBE_KEYS}
    sel = np.asarray(keep, dtype=np.int64)
    whole = len(keep) == len(seg.entries)

    def read(key: str, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        block = arrays[key].read(r0, c0, h, w)
        if (block == SENTINEL[block.dtype.name]).any():
            raise CubeError(f"segment {seg.name} of {tile}: {key} has missing chunks")
        return block if whole else block[sel]

    return len(keep), read


def _write_segment(storage: Store, tile: str, epsg: str, grids: dict[str, dict[str, list[Any]]], entries: list[Entry],
                   sources: Sequence[Source], progress: Callable[[str], None] | None = None) -> Segment:
    """Write a new segment whose time axis is the concatenation of ``sources`` (in order), shard by shard."""
    n = sum(s[0] for s in sources)
    assert n == len(entries), (n, len(entries))
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    _create_arrays(storage, tile, name, epsg, grids, n)  # the metadata (zarr.json) of the group and arrays
    prefix = segment_prefix(tile, name)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for key in CUBE_KEYS:
            rows, cols = (int(v) for v in grids[key]["shape"])
            fill = SENTINEL[BY_KEY[key].dtype]

            indexes: dict[tuple[int, int], bytes] = {}

            def encode(r0: int, c0: int, block: np.ndarray, key: str = key, fill: int = fill,
                       indexes: dict[tuple[int, int], bytes] = indexes) -> None:
                data, index = encode_shard(block, fill)
                storage.write_bytes(f"{prefix}/{key}/c/0/{r0 // SHARD_PX}/{c0 // SHARD_PX}", data)
                indexes[(r0 // SHARD_PX, c0 // SHARD_PX)] = index

            pending: list[Any] = []
            for r0 in range(0, rows, SHARD_PX):
                h = min(SHARD_PX, rows - r0)
                for c0 in range(0, cols, SHARD_PX):
                    w = min(SHARD_PX, cols - c0)
                    parts = [read(key, r0, c0, h, w) for _n, read in sources]
                    block = parts[0] if len(parts) == 1 else np.concatenate(parts)
                    pending.append(pool.submit(encode, r0, c0, block))
                    if len(pending) >= 2:  # bounded: at most a few shard columns in memory
                        pending.pop(0).result()
            for f in pending:
                f.result()
            storage.write_bytes(f"{prefix}/{key}/{SHARD_INDEXES}",
                                encode_shard_indexes([indexes[k] for k in sorted(indexes)]))
            if progress:
                progress(f"{tile}: segment {name} {key} written ({n} dates)")
    return Segment(name, entries)


def encode_shard(block: np.ndarray, fill: int) -> tuple[bytes, bytes]:
    """One shard file of the layout :func:`_create_arrays` declares, for the data ``block`` (dates, h, w) with
    h, w ≤ ``SHARD_PX`` (a shard at the array's edge is smaller).

    Zarr v3 ``sharding_indexed``: the chunks (dates × ``CHUNK_PX`` × ``CHUNK_PX``, edge chunks padded with the
    fill value, chunks wholly outside the array left out) one after the other, each the little-endian bytes
    compressed by zstd with its crc32c appended; then the index, (offset, nbytes) as little-endian uint64 per
    chunk in C order of the shard's chunk grid (2⁶⁴−1 twice for a chunk not written), with its own crc32c.
    Written here rather than through zarr's array API, which spends ~1 ms of asyncio per chunk (minutes per
    full-size date); zarr reads these files (the tests and ``cube audit --deep`` read every chunk with it).
    Returns the file and its index (without the crc32c), for the array's ``shard_indexes``.
    """
    import google_crc32c
    from numcodecs import Zstd

    zstd = Zstd(level=ZSTD_LEVEL)
    n, h, w = block.shape
    per = SHARD_PX // CHUNK_PX
    index = np.full((per, per, 2), np.iinfo(np.uint64).max, dtype="<u8")
    out: list[bytes] = []
    offset = 0
    le = block.dtype.newbyteorder("<")
    for cy in range(-(-h // CHUNK_PX)):
        for cx in range(-(-w // CHUNK_PX)):
            part = block[:, cy * CHUNK_PX:(cy + 1) * CHUNK_PX, cx * CHUNK_PX:(cx + 1) * CHUNK_PX]
            if part.shape[1:] != (CHUNK_PX, CHUNK_PX):
                full = np.full((n, CHUNK_PX, CHUNK_PX), fill, dtype=block.dtype)
                full[:, :part.shape[1], :part.shape[2]] = part
                part = full
            comp = bytes(zstd.encode(np.ascontiguousarray(part, dtype=le).tobytes()))
            crc = google_crc32c.value(comp).to_bytes(4, "little")
            out += [comp, crc]
            index[cy, cx] = (offset, len(comp) + 4)
            offset += len(comp) + 4
    raw_index = index.tobytes()
    out += [raw_index, google_crc32c.value(raw_index).to_bytes(4, "little")]
    return b"".join(out), raw_index


def encode_shard_indexes(indexes: Sequence[bytes]) -> bytes:
    """The ``shard_indexes`` object of an array: its shards' indexes (row-major shard order), zstd, crc32c."""
    import google_crc32c
    from numcodecs import Zstd

    comp = bytes(Zstd(level=ZSTD_LEVEL).encode(b"".join(indexes)))
    return comp + google_crc32c.value(comp).to_bytes(4, "little")


def _commit(storage: Store, man: Manifest, dropped: list[str]) -> None:
    """Replace the manifest (atomically); delete the segments retired one commit ago."""
    old_retired = list(man.retired)
    man.generation += 1
    man.retired = sorted(dropped)
    storage.write_bytes(manifest_key(man.tile), dumps(man.to_json()))
    for name in old_retired:
        _delete_segment(storage, man.tile, name)


def _delete_segment(storage: Store, tile: str, name: str) -> None:
    prefix = segment_prefix(tile, name)
    # metadata first, so that a reader opening the segment mid-deletion fails to open it
    for key in CUBE_KEYS:
        storage.delete(f"{prefix}/{key}/zarr.json")
    storage.delete(f"{prefix}/zarr.json")
    if isinstance(storage, LocalStorage):
        storage.delete_prefix(prefix)
    else:
        for k in list(storage.list(prefix + "/")):
            storage.delete(k)


def _orphans(storage: Store, man: Manifest) -> list[str]:
    """Segments in storage that the manifest neither names nor retires (left by a killed writer)."""
    named = {s.name for s in man.segments} | set(man.retired)
    base = f"{tile_prefix(man.tile)}/segments/"
    seen = set()
    for key in storage.list(base):
        seen.add(key[len(base):].split("/", 1)[0])
    return sorted(seen - named)


@dataclass
class SyncResult:
    """What one tile's sync did."""

    tile: str
    added: int = 0
    merged: int = 0
    segments: int = 0
    dates: int = 0
    orphans_removed: int = 0
    skipped_items: list[str] = field(default_factory=list)


def _merge(storage: Store, man: Manifest, first: int, live: dict[str, IndexRow],
           progress: Callable[[str], None] | None) -> list[str]:
    """Merge segments ``first:`` into one, dropping dates superseded later or no longer in the catalog.
    Returns the names of the segments it replaced."""
    segs = man.segments[first:]
    last_seen: dict[str, tuple[int, int]] = {}
    for si, seg in enumerate(segs):
        for ti, e in enumerate(seg.entries):
            last_seen[e.item] = (si, ti)
    entries: list[Entry] = []
    sources: list[Source] = []
    for si, seg in enumerate(segs):
        keep = [ti for ti, e in enumerate(seg.entries)
                if last_seen[e.item] == (si, ti) and e.item in live and _sums(live[e.item]) == e.checksums]
        if keep:
            sources.append(_segment_source(storage, man.tile, seg, keep))
            entries.extend(seg.entries[ti] for ti in keep)
    replaced = [s.name for s in segs]
    if entries:
        new = _write_segment(storage, man.tile, man.epsg, man.grids, entries, sources, progress)
        man.segments[first:] = [new]
    else:
        man.segments[first:] = []
    return replaced


def sync_tile(storage: Store, tile: str, rows: Sequence[IndexRow], *, compact: bool = False,
              progress: Callable[[str], None] | None = None) -> SyncResult:
    """Bring one tile's store in line with the catalog rows of that tile (under the tile lock).

    Adds the items the store lacks (or holds with other checksums) as one new segment, then merges as
    described in the module docstring (everything when ``compact``). Items without every store product, or
    on another grid than the store's, stay COG-only and are listed in ``skipped_items``.
    """
    res = SyncResult(tile)
    with tile_lock(storage, tile):
        man = load_manifest(storage, tile)
        ok_rows = [r for r in rows if eligible(r)]
        res.skipped_items = sorted(r.id for r in rows if not eligible(r))
        if man is None:
            if not ok_rows:
                return res
            first = min(ok_rows, key=lambda r: (r.datetime, r.id))
            man = Manifest(tile=tile, epsg=first.epsg, grids=_grids_of(first))
        else:
            for name in _orphans(storage, man):
                log.info("cube %s: removing unreferenced segment %s (a writer stopped before committing)",
                         tile, name)
                _delete_segment(storage, tile, name)
                res.orphans_removed += 1
        same_grid = [r for r in ok_rows if r.epsg == man.epsg and _grids_of(r) == man.grids]
        res.skipped_items += sorted(r.id for r in ok_rows if r not in same_grid)
        live = {r.id: r for r in same_grid}
        held = {item: e for item, (_s, _t, e) in man.lookup().items()}
        new_rows = sorted((r for r in same_grid if r.id not in held or held[r.id].checksums != _sums(r)),
                          key=lambda r: (r.datetime, r.id))
        dropped: list[str] = []
        for b0 in range(0, len(new_rows), SYNC_BATCH):
            batch = new_rows[b0:b0 + SYNC_BATCH]
            with _cog_source(storage, batch) as src:
                seg = _write_segment(storage, tile, man.epsg, man.grids,
                                     [Entry(r.id, r.datetime, _sums(r)) for r in batch], [src], progress)
            man.segments.append(seg)
            _commit(storage, man, dropped)
            dropped = []
            res.added += len(batch)
            if not compact:  # binary counter: merge while the older segment is not larger than the newer
                while len(man.segments) >= 2 and len(man.segments[-2].entries) <= len(man.segments[-1].entries):
                    dropped += _merge(storage, man, len(man.segments) - 2, live, progress)
                    res.merged += 2
        stale = set(held) - set(live)
        if (compact and (len(man.segments) > 1 or _has_superseded(man))) or stale:
            dropped += _merge(storage, man, 0, live, progress)
            res.merged += len(dropped)
        if dropped or (not new_rows and man.retired):
            _commit(storage, man, dropped)
        elif not new_rows and load_manifest(storage, tile) is None:
            _commit(storage, man, [])
        res.segments = len(man.segments)
        res.dates = man.dates
    log.info("cube %s: %d dates added, %d segments merged, %d segments, %d dates held", tile, res.added,
             res.merged, res.segments, res.dates)
    return res


def _sums(row: IndexRow) -> dict[str, str]:
    """The checksums of the products the store holds (other assets of the item do not matter here)."""
    return {k: row.checksums[k] for k in CUBE_KEYS}


def _has_superseded(man: Manifest) -> bool:
    return sum(len(s.entries) for s in man.segments) != man.dates


def sync(storage: Store, tiles: Sequence[str] | None = None, *, compact: bool = False,
         progress: Callable[[str], None] | None = None) -> list[SyncResult]:
    """Sync every tile of the catalog (or ``tiles``) with the store; see :func:`sync_tile`."""
    rows = index_rows(storage)
    by_tile: dict[str, list[IndexRow]] = {}
    for r in rows:
        by_tile.setdefault(r.tile, []).append(r)
    wanted = sorted(by_tile) if tiles is None else list(tiles)
    return [sync_tile(storage, t, by_tile.get(t, []), compact=compact, progress=progress) for t in wanted]


def rebuild(storage: Store, tiles: Sequence[str] | None = None,
            progress: Callable[[str], None] | None = None) -> list[SyncResult]:
    """Delete the store of each tile and write it again from the COGs as one segment."""
    rows = index_rows(storage)
    tiles = sorted({r.tile for r in rows}) if tiles is None else list(tiles)
    for t in tiles:
        with tile_lock(storage, t):
            man = load_manifest(storage, t)
            storage.delete(manifest_key(t))
            if man is not None:
                for name in [s.name for s in man.segments] + man.retired:
                    _delete_segment(storage, t, name)
            if isinstance(storage, LocalStorage):
                storage.delete_prefix(f"{tile_prefix(t)}/segments")
            else:
                for k in list(storage.list(f"{tile_prefix(t)}/segments/")):
                    storage.delete(k)
    results = sync(storage, tiles, compact=True, progress=progress)
    for t in tiles:  # the batch segments a long history was copied through: nobody reads them, drop them now
        with tile_lock(storage, t):
            man = load_manifest(storage, t)
            if man is not None and man.retired:
                _commit(storage, man, [])
    return results


# -------------------------------------------------------------------------------------------- auditing
@dataclass
class CubeAudit:
    """Findings of :func:`audit_tile` (empty lists: the store matches the catalog)."""

    tile: str
    missing: list[str] = field(default_factory=list)  # catalog items the store lacks
    stale: list[str] = field(default_factory=list)  # held with other checksums than the catalog's
    extra: list[str] = field(default_factory=list)  # held but no longer in the catalog
    broken: list[str] = field(default_factory=list)  # segment problems (unreadable, missing chunks)

    @property
    def ok(self) -> bool:
        """Whether nothing needs doing."""
        return not (self.missing or self.stale or self.extra or self.broken)


def audit_tile(storage: Store, tile: str, rows: Sequence[IndexRow], *, deep: bool = False) -> CubeAudit:
    """Compare a tile's store with the catalog rows; ``deep`` also decodes every chunk of every segment
    (zstd + crc32c) and checks that none is missing."""
    out = CubeAudit(tile)
    man = load_manifest(storage, tile)
    live = {r.id: r for r in rows if eligible(r)}
    held = {} if man is None else {i: e for i, (_s, _t, e) in man.lookup().items()}
    for i, r in sorted(live.items()):
        if i not in held:
            out.missing.append(i)
        elif held[i].checksums != {k: r.checksums[k] for k in CUBE_KEYS}:
            out.stale.append(i)
    out.extra = sorted(set(held) - set(live))
    if man is not None and deep:
        for seg in man.segments:
            for key in CUBE_KEYS:
                try:
                    arr = open_segment_array(storage, tile, seg.name, key)
                    for r0 in range(0, arr.shape[1], SHARD_PX):
                        block = np.asarray(arr[:, r0:r0 + SHARD_PX, :])
                        if (block == SENTINEL[block.dtype.name]).any():
                            raise CubeError("missing chunks")
                    check_shard_indexes(storage, tile, seg.name, key)
                except Exception as exc:  # any failure to decode is a finding, not a crash
                    out.broken.append(f"{seg.name}/{key}: {type(exc).__name__}: {exc}")
    return out


def check_shard_indexes(storage: Store, tile: str, name: str, key: str) -> None:
    """``CubeError`` unless the array's ``shard_indexes`` object (when it has one) equals its shards' own
    indexes."""
    arr = DirectArray.open(_Bytes(storage, segment_prefix(tile, name)), key)
    if arr is not None:
        arr.check_shard_indexes()


def audit(storage: Store, *, deep: bool = False) -> list[CubeAudit]:
    """Audit every tile of the catalog plus every tile that has a store."""
    rows = index_rows(storage)
    by_tile: dict[str, list[IndexRow]] = {}
    for r in rows:
        by_tile.setdefault(r.tile, []).append(r)
    tiles = set(by_tile)
    for key in storage.list(f"{CUBE_PREFIX}/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json":
            tiles.add(parts[1])
    return [audit_tile(storage, t, by_tile.get(t, []), deep=deep) for t in sorted(tiles)]


# ---------------------------------------------------------------------------------------------- locking
@contextlib.contextmanager
def tile_lock(storage: Store, tile: str, *, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Exclusive writer lock of one tile's store.

    Local disk: ``fcntl.flock`` on ``cube/<tile>/.lock`` (released by the kernel when the holder dies).
    S3: a lease object ``cube/<tile>/.lock`` created with ``If-None-Match: *``, holding its expiry; an
    expired lease (its writer died) is taken over. Waiting longer than ``wait_s`` raises ``TransientError``
    (exit 75: retried later).
    """
    if isinstance(storage, LocalStorage):
        import fcntl

        path = storage.root / tile_prefix(tile) / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+") as f:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TransientError(f"cube {tile}: lock held by another writer for {wait_s:.0f} s") from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return
    with _s3_lease(storage, tile, wait_s):
        yield


@contextlib.contextmanager
def _s3_lease(storage: S3Storage, tile: str, wait_s: float) -> Iterator[None]:
    from botocore.exceptions import ClientError

    key = storage._key(f"{tile_prefix(tile)}/.lock")
    owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        body = json.dumps({"owner": owner, "expires": time.time() + LOCK_TTL_S}).encode()
        try:
            storage.client.put_object(Bucket=storage.bucket, Key=key, Body=body, IfNoneMatch="*")
            break
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise
        try:
            head = storage.client.get_object(Bucket=storage.bucket, Key=key)
            lease = json.loads(head["Body"].read())
            if float(lease.get("expires", 0)) < time.time():
                log.warning("cube %s: taking over the expired lock of %s", tile, lease.get("owner"))
                storage.client.delete_object(Bucket=storage.bucket, Key=key, IfMatch=head["ETag"])
                continue
        except ClientError:
            continue  # released meanwhile
        if time.monotonic() > deadline:
            raise TransientError(f"cube {tile}: lock held by another writer for {wait_s:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    try:
        yield
    finally:
        with contextlib.suppress(ClientError):
            storage.client.delete_object(Bucket=storage.bucket, Key=key)


# ------------------------------------------------------------------------------------ direct chunk reads
_INDEX_ENTRY = np.dtype([("offset", "<u8"), ("nbytes", "<u8")])
_EMPTY = np.uint64(2**64 - 1)
_INDEX_CACHE = 8192  # shard indexes kept per reader (4 KiB each at 16 × 16 chunks per shard)
SHARD_INDEXES = "shard_indexes"
SHARD_INDEX_CACHE_MB = 256  # whole-array indexes held per process (≈ 2 MB per 10 m array and segment)


class _Bytes:
    """Byte ranges of the files of one segment: ``pread`` on local disk, obstore range requests on S3."""

    def __init__(self, storage: Store, prefix: str) -> None:
        self.local = storage.root / prefix if isinstance(storage, LocalStorage) else None
        self.remote: Any = None if isinstance(storage, LocalStorage) else _obstore(storage, prefix)

    def whole(self, path: str) -> bytes:
        if self.local is not None:
            return (self.local / path).read_bytes()
        import obstore

        return bytes(obstore.get(self.remote, path).bytes())

    def tail(self, path: str, n: int) -> bytes:
        if self.local is not None:
            with (self.local / path).open("rb") as f:
                f.seek(-n, os.SEEK_END)
                return f.read(n)
        import obstore

        return bytes(obstore.get(self.remote, path, options={"range": {"suffix": n}}).bytes())

    def range(self, path: str, start: int, length: int) -> bytes:
        if self.local is not None:
            fd = os.open(self.local / path, os.O_RDONLY)
            try:
                return os.pread(fd, length, start)
            finally:
                os.close(fd)
        import obstore

        return bytes(obstore.get_range(self.remote, path, start=start, length=length))


class DirectArray:
    """One array of a segment read chunk by chunk straight from its shard files, without zarr's machinery.

    Only the layout :func:`_create_arrays` writes is accepted (regular grid, default ``/`` chunk keys, one
    ``sharding_indexed`` codec with inner ``bytes`` (little endian) → ``zstd`` → ``crc32c`` and index ``bytes``
    → ``crc32c`` at the end of the shard); :meth:`open` returns None for anything else and the caller uses
    zarr. Shard indexes are cached, so a warm read is one range request per chunk. Every chunk's and index's
    crc32c is checked; a mismatch or a chunk never written raises :class:`CubeError`.
    """

    def __init__(self, src: _Bytes, key: str, meta: dict[str, Any]) -> None:
        from numcodecs import Zstd

        self.src, self.key = src, key
        self.shape = tuple(int(v) for v in meta["shape"])
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        conf = meta["codecs"][0]["configuration"]
        self.shard = tuple(int(v) for v in meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.chunk = tuple(int(v) for v in conf["chunk_shape"])
        self.per_shard = tuple(s // c for s, c in zip(self.shard, self.chunk, strict=True))
        self.index_bytes = int(np.prod(self.per_shard)) * _INDEX_ENTRY.itemsize + 4
        self._zstd = Zstd()
        self._indexes: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()
        self.grid_shards = tuple(-(-s // c) for s, c in zip(self.shape[1:], self.shard[1:], strict=True))
        self._all: np.ndarray | None = None  # every shard's index, from ``shard_indexes`` (None: not loaded)
        self._no_all = False  # the store has no ``shard_indexes`` for this array

    @classmethod
    def open(cls, src: _Bytes, key: str) -> DirectArray | None:
        """The array ``key`` of a segment, or None when its layout is not the one described above."""
        meta = json.loads(src.whole(f"{key}/zarr.json"))
        try:
            (codec,) = meta["codecs"]
            conf = codec["configuration"]
            ok = (codec["name"] == "sharding_indexed" and meta["chunk_grid"]["name"] == "regular"
                  and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                  and [c["name"] for c in conf["codecs"]] == ["bytes", "zstd", "crc32c"]
                  and conf["codecs"][0].get("configuration", {}).get("endian", "little") == "little"
                  and [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
                  and conf["index_codecs"][0].get("configuration", {}).get("endian") == "little"
                  and conf.get("index_location", "end") == "end" and len(meta["shape"]) == 3
                  and int(meta["shape"][0]) == int(conf["chunk_shape"][0])
                  == int(meta["chunk_grid"]["configuration"]["chunk_shape"][0]))
        except (KeyError, TypeError, ValueError):
            ok = False
        return cls(src, key, meta) if ok else None

    @staticmethod
    def _checked(data: bytes, what: str) -> bytes:
        import google_crc32c

        if len(data) < 4 or google_crc32c.value(data[:-4]) != int.from_bytes(data[-4:], "little"):
            raise CubeError(f"{what}: crc32c mismatch (damaged; run `raw2ready cube audit --deep`)")
        return data[:-4]

    def _load_all(self) -> np.ndarray | None:
        """Every shard's index from the array's ``shard_indexes`` object (None when the store has none)."""
        with self._lock:
            if self._no_all:
                return None
            whole = self._all
        if whole is not None:
            _WHOLE_INDEXES.touch(self)
            return whole
        path = f"{self.key}/{SHARD_INDEXES}"
        try:
            raw = self.src.whole(path)
        except FileNotFoundError:  # a store written before the file existed (obstore's NotFoundError too)
            self._no_all = True
            return None
        except OSError as exc:
            raise CubeError(f"{path}: unreadable ({exc})") from exc
        data = self._zstd.decode(self._checked(raw, path))
        per = self.per_shard[1:]
        want = self.grid_shards[0] * self.grid_shards[1] * per[0] * per[1] * _INDEX_ENTRY.itemsize
        if len(data) != want:
            raise CubeError(f"{path}: {len(data)} bytes, expected {want} (damaged; run `raw2ready cube audit --deep`)")
        whole = np.frombuffer(data, dtype=_INDEX_ENTRY).reshape(*self.grid_shards, *per)
        with self._lock:
            self._all = whole
        _WHOLE_INDEXES.add(self, whole.nbytes)
        return whole

    def _evict_all(self) -> None:
        with self._lock:
            self._all = None

    def check_shard_indexes(self) -> None:
        """``CubeError`` unless ``shard_indexes`` (when the store has it) equals every shard's own index."""
        whole = self._load_all()
        if whole is None:
            return
        for sy in range(self.grid_shards[0]):
            for sx in range(self.grid_shards[1]):
                if not np.array_equal(whole[sy, sx], self._shard_index(sy, sx)):
                    raise CubeError(f"{self.key}/{SHARD_INDEXES}: shard ({sy}, {sx}) differs from the shard's "
                                    "own index")

    def _index(self, sy: int, sx: int) -> np.ndarray:
        whole = self._load_all()
        if whole is not None:
            return whole[sy, sx]
        return self._shard_index(sy, sx)

    def _shard_index(self, sy: int, sx: int) -> np.ndarray:
        """The index at the end of shard (sy, sx), cached."""
        with self._lock:
            idx = self._indexes.get((sy, sx))
        if idx is not None:
            return idx
        path = f"{self.key}/c/0/{sy}/{sx}"
        try:
            raw = self.src.tail(path, self.index_bytes)
        except (FileNotFoundError, OSError) as exc:
            raise CubeError(f"{path}: shard missing ({exc})") from exc
        idx = np.frombuffer(self._checked(raw, f"{path} index"), dtype=_INDEX_ENTRY).reshape(self.per_shard[1:])
        with self._lock:
            if len(self._indexes) >= _INDEX_CACHE:
                self._indexes.pop(next(iter(self._indexes)))
            self._indexes[(sy, sx)] = idx
        return idx

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        py, px = self.per_shard[1], self.per_shard[2]
        sy, sx = cy // py, cx // px
        entry = self._index(sy, sx)[cy % py, cx % px]
        path = f"{self.key}/c/0/{sy}/{sx}"
        if entry["offset"] == _EMPTY and entry["nbytes"] == _EMPTY:
            raise CubeError(f"{path}: chunk ({cy}, {cx}) was never written")
        data = self._checked(self.src.range(path, int(entry["offset"]), int(entry["nbytes"])),
                             f"{path} chunk ({cy}, {cx})")
        raw = self._zstd.decode(data)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.chunk)

    def read(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        """Stored values of rows ``r0:r0+h`` × cols ``c0:c0+w``, every date: shape (dates, h, w); clipped
        to the array like a numpy slice."""
        h, w = max(0, min(h, self.shape[1] - r0)), max(0, min(w, self.shape[2] - c0))
        ch, cw = self.chunk[1], self.chunk[2]
        out = np.empty((self.shape[0], h, w), dtype=self.dtype.newbyteorder("="))
        if h == 0 or w == 0:
            return out
        cells = [(cy, cx) for cy in range(r0 // ch, (r0 + h - 1) // ch + 1)
                 for cx in range(c0 // cw, (c0 + w - 1) // cw + 1)]
        # several chunks over the network: their range requests in parallel (one round trip, not one each)
        remote = self.src.remote is not None and len(cells) > 1
        blocks = (_CHUNK_POOL.map if remote else map)(lambda c: self._chunk(*c), cells)
        for (cy, cx), block in zip(cells, blocks, strict=True):
            y0, y1 = max(r0, cy * ch), min(r0 + h, (cy + 1) * ch)
            x0, x1 = max(c0, cx * cw), min(c0 + w, (cx + 1) * cw)
            out[:, y0 - r0:y1 - r0, x0 - c0:x1 - c0] = block[:, y0 - cy * ch:y1 - cy * ch,
                                                             x0 - cx * cw:x1 - cx * cw]
        return out


class _IndexBudget:
    """The whole-array indexes held in this process, least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._held: dict[int, tuple[DirectArray, int]] = {}  # insertion order = least recently used first
        self._lock = threading.Lock()

    def add(self, arr: DirectArray, nbytes: int) -> None:
        with self._lock:
            self._held.pop(id(arr), None)
            self._held[id(arr)] = (arr, nbytes)
            total = sum(n for _a, n in self._held.values())
            drop = []
            for k, (a, n) in self._held.items():
                if total <= self.max_bytes or a is arr:
                    break
                drop.append((k, a))
                total -= n
            for k, _a in drop:
                del self._held[k]
        for _k, a in drop:
            a._evict_all()

    def touch(self, arr: DirectArray) -> None:
        with self._lock:
            held = self._held.pop(id(arr), None)
            if held is not None:
                self._held[id(arr)] = held


_WHOLE_INDEXES = _IndexBudget(SHARD_INDEX_CACHE_MB * 2**20)
_CHUNK_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cube-chunks")


class _ZarrArray:
    """The same ``read`` as :class:`DirectArray`, through zarr (any layout zarr reads)."""

    def __init__(self, arr: Any) -> None:
        self.arr = arr

    def read(self, r0: int, c0: int, h: int, w: int) -> np.ndarray:
        return np.asarray(self.arr[:, r0:r0 + h, c0:c0 + w])


def open_reader_array(storage: Store, tile: str, name: str, key: str) -> DirectArray | _ZarrArray:
    """A reader for one array of one segment: :class:`DirectArray` when the layout is ours, else zarr."""
    direct = DirectArray.open(_Bytes(storage, segment_prefix(tile, name)), key)
    return direct if direct is not None else _ZarrArray(open_segment_array(storage, tile, name, key))


# --------------------------------------------------------------------------------------------- reading
@dataclass
class _Cached:
    manifest: Manifest | None
    stamp: Any
    checked: float
    lookup: dict[str, tuple[int, int, Entry]]
    arrays: dict[tuple[str, str], Any] = field(default_factory=dict)


class CubeReader:
    """Reads pixel series of one output root's stores; manifests cached per tile and re-checked at most
    every ``check_interval_s`` (S3; local manifests are re-``stat``-ed on every call)."""

    def __init__(self, storage: Store, check_interval_s: float = 5.0) -> None:
        self.storage = storage
        self.check_interval_s = check_interval_s
        self._tiles: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def _stamp(self, tile: str) -> Any:
        key = manifest_key(tile)
        if isinstance(self.storage, LocalStorage):
            try:
                st = (self.storage.root / key).stat()
            except FileNotFoundError:
                return None
            return st.st_mtime_ns, st.st_size
        return None

    def _state(self, tile: str, force: bool = False) -> _Cached:
        now = time.monotonic()
        with self._lock:
            cached = self._tiles.get(tile)
        if cached is not None and not force:
            if isinstance(self.storage, LocalStorage):
                if self._stamp(tile) == cached.stamp:
                    return cached
            elif now - cached.checked < self.check_interval_s:
                return cached
        stamp = self._stamp(tile)
        man = load_manifest(self.storage, tile)
        state = _Cached(man, stamp, now, {} if man is None else man.lookup())
        if cached is not None and man is not None and cached.manifest is not None:
            keep = {s.name for s in man.segments}
            state.arrays = {k: v for k, v in cached.arrays.items() if k[0] in keep}
        with self._lock:
            self._tiles[tile] = state
        return state

    def _array(self, state: _Cached, tile: str, seg: str, key: str) -> Any:
        arr = state.arrays.get((seg, key))
        if arr is None:
            arr = open_reader_array(self.storage, tile, seg, key)
            state.arrays[(seg, key)] = arr
        return arr

    def held(self, tile: str, items: dict[str, dict[str, str]], key: str) -> dict[str, tuple[int, int]]:
        """Of ``items`` (id → asset checksums from the catalog), those the store holds for ``key`` with the
        same checksum: id → (segment index, time index)."""
        state = self._state(tile)
        out = {}
        for item, sums in items.items():
            hit = state.lookup.get(item)
            if hit is not None and key in sums and hit[2].checksums.get(key) == sums[key]:
                out[item] = (hit[0], hit[1])
        return out

    def read(self, tile: str, key: str, where: dict[str, tuple[int, int]], row0: int, col0: int, height: int,
             width: int, pool: ThreadPoolExecutor | None = None) -> dict[str, np.ndarray]:
        """Windows (height × width, stored values) of the items in ``where`` (from :meth:`held`), one read
        per segment involved (in parallel on ``pool``). ``CubeError`` when a segment vanished or a chunk
        is missing (the caller reads the COGs instead)."""
        state = self._state(tile)
        if state.manifest is None:
            raise CubeError(f"no store for tile {tile}")
        segs = sorted({si for si, _ti in where.values()})

        def one(si: int) -> np.ndarray:
            name = state.manifest.segments[si].name  # type: ignore[union-attr]
            try:
                block = self._array(state, tile, name, key).read(row0, col0, height, width)
            except CubeError:
                raise
            except Exception as exc:
                raise CubeError(f"cube {tile} segment {name}: {type(exc).__name__}: {exc}") from exc
            if (block == SENTINEL[block.dtype.name]).any():
                raise CubeError(f"cube {tile} segment {name}: {key} chunk missing")
            return block

        blocks = dict(zip(segs, pool.map(one, segs) if pool and len(segs) > 1 else map(one, segs), strict=True))
        return {item: blocks[si][ti] for item, (si, ti) in where.items()}

    def refresh(self, tile: str) -> None:
        """Forget the cached manifest of ``tile`` (after a failed read)."""
        self._state(tile, force=True)


def describe(storage: Store) -> list[dict[str, Any]]:
    """Per tile with a store: tile, generation, segments, dates and time range (for ``cube status``)."""
    out = []
    for key in storage.list(f"{CUBE_PREFIX}/"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json":
            man = load_manifest(storage, parts[1])
            if man is None:
                continue
            dts = sorted(e.datetime for _s, _t, e in man.lookup().values())
            out.append({"tile": man.tile, "generation": man.generation, "segments": len(man.segments),
                        "dates": len(dts), "first": dts[0] if dts else None, "last": dts[-1] if dts else None})
    return out

