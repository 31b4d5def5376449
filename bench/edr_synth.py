"""Synthetic full-size product catalog for ``bench/bench_edr.py``: per date the four product COGs of one
MGRS tile (NDVI 10 m, LAI / LAI flags / cloud mask 20 m) with their item sidecars, written straight in the
pipeline's encoding (``steps.products.raster.write_gtiff``: GDAL COG driver, DEFLATE, predictor for continuous
products, 512² blocks, internal overviews) without running the pipeline.

Content: realistic only in ``PATCHES`` query patches, each one 512 × 512 NDVI block (and the 256 × 256
pixels of the 20 m products under it), placed in distinct 20 m blocks so that every patch lives in its
own COG blocks *and* its own store shard. Inside a patch: fields (rectangular parcels of 15–90 px, each
with its own crop calendar: a seasonal NDVI curve with its own phase, amplitude and harvest dip), per-pixel
noise and texture, clouds (smooth random blobs, thin cirrus rims, shadows displaced from the clouds) as
mask classes with NDVI/LAI no data under them, LAI from NDVI with SNAP-like flags. Everything outside the
patches is no data (as beyond a swath edge), which keeps generation and whole-tile store syncs cheap while
the blocks and chunks the queries touch hold realistic, realistically compressible values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

TILE = "47PPR"
PATCH = 512  # NDVI pixels per patch side (one COG block, one store shard)
PATCHES = 24
REVISIT_DAYS = 5


@dataclass(frozen=True)
class TileGrid:
    """The tile's 10 m grid (``size`` px a side, top-left ``ulx``, ``uly`` in ``epsg`` metres)."""

    size: int
    epsg: int
    ulx: float
    uly: float

    def transform(self, res: int) -> list[float]:
        return [float(res), 0.0, self.ulx, 0.0, -float(res), self.uly]

    def shape(self, res: int) -> tuple[int, int]:
        n = self.size * 10 // res
        return n, n


def tile_grid(size: int) -> TileGrid:
    """Grid of the benchmark tile (ESA's real origin of 47PPR), ``size`` 10 m pixels a side."""
    from steps.sentinel2.grid import parse_tile

    t = parse_tile(TILE)
    return TileGrid(size=size, epsg=t.epsg, ulx=t.ulx, uly=t.uly)


def patch_origins(size: int, n: int = PATCHES) -> list[tuple[int, int]]:
    """(row0, col0) on the 10 m grid of each patch: NDVI block (2i, 2j) of 20 m block (i, j), spread over
    the tile in a fixed pseudo-random order; every patch in a distinct 512² NDVI block, 20 m block and
    store shard (of every product)."""
    blocks20 = (size // 2) // 512  # complete 20 m blocks a side
    cells = [(i, j) for i in range(blocks20) for j in range(blocks20)]
    if len(cells) < n:
        raise SystemExit(f"--size {size} leaves room for {len(cells)} patches only; need {n}")
    rng = np.random.default_rng(7)
    pick = rng.choice(len(cells), size=n, replace=False)
    return sorted((cells[k][0] * 1024, cells[k][1] * 1024) for k in pick)


def dates(n: int) -> list[datetime]:
    """``n`` acquisition times, one every ``REVISIT_DAYS`` days from 2022-01-03 (≈ 4 years for 290)."""
    t0 = datetime(2022, 1, 3, 3, 47, 21, tzinfo=UTC)
    return [t0 + timedelta(days=REVISIT_DAYS * k) for k in range(n)]


def scene_id(dt: datetime) -> str:
    return f"S2B_MSIL2A_{dt:%Y%m%dT%H%M%S}_N0510_R004_T{TILE}_{dt:%Y%m%dT%H%M%S}"


# ------------------------------------------------------------------------------------------- content
class Field:
    """Static per-patch structure: parcel labels and per-parcel crop calendars."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        lab = np.zeros((PATCH, PATCH), dtype=np.int32)
        k = 0
        r = 0
        while r < PATCH:  # rows of parcels of random height, each cut into parcels of random width
            h = int(rng.integers(15, 90))
            c = 0
            while c < PATCH:
                w = int(rng.integers(15, 90))
                lab[r:r + h, c:c + w] = k
                k += 1
                c += w
            r += h
        self.labels = lab
        self.n = k
        self.kind = rng.choice(4, size=k, p=[0.55, 0.2, 0.15, 0.1])  # crop, forest, grass, bare/built
        self.phase = rng.uniform(0, 365, size=k)
        self.amp = rng.uniform(0.25, 0.55, size=k)
        self.base = np.where(self.kind == 1, rng.uniform(0.65, 0.8, size=k),
                             np.where(self.kind == 3, rng.uniform(0.05, 0.2, size=k), rng.uniform(0.15, 0.3, size=k)))
        self.texture = (rng.normal(0, 0.04, size=(PATCH, PATCH))).astype(np.float32)

    def ndvi(self, doy: float, rng: np.random.Generator) -> np.ndarray:
        season = 0.5 * (1 + np.cos(2 * math.pi * (doy - self.phase) / 182.5))  # two seasons a year
        per = np.where(self.kind == 0, self.base + self.amp * season ** 2,
                       np.where(self.kind == 2, self.base + 0.5 * self.amp * season, self.base + 0.03 * season))
        harvested = (self.kind == 0) & (season < 0.15) & (rng.random(self.n) < 0.5)
        per = np.where(harvested, 0.12, per).astype(np.float32)
        v = per[self.labels] + self.texture + rng.normal(0, 0.025, size=(PATCH, PATCH)).astype(np.float32)
        return np.clip(v, -0.2, 0.95)


def _blobs(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """A smooth random field in [0, 1] (bilinear upsampling of a coarse random grid)."""
    h, w = shape
    gh, gw = h // cell + 2, w // cell + 2
    g = rng.random((gh, gw)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def cloud_mask(rng: np.random.Generator, cover: float) -> np.ndarray:
    """20 m mask (PATCH/2)²: 0 clear, 1 cloud, 2 cirrus, 3 shadow, from smooth blobs at ``cover``."""
    n = PATCH // 2
    m = np.zeros((n, n), dtype=np.uint8)
    if cover <= 0:
        return m
    f = _blobs(rng, (n + 16, n + 16), 24) * 0.7 + _blobs(rng, (n + 16, n + 16), 6) * 0.3
    thr = float(np.quantile(f, 1 - cover))
    cloud = f[8:-8, 8:-8] >= thr
    rim = (f[8:-8, 8:-8] >= thr - 0.04) & ~cloud
    shadow = (f[:-16, 16:] >= thr) & ~cloud & ~rim  # the clouds displaced by 8 px: their shadows
    m[shadow] = 3
    m[rim] = 2
    m[cloud] = 1
    return m


def _downsample(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))


def date_products(fields: list[Field], k: int, dt: datetime) -> dict[str, list[np.ndarray]]:
    """Stored-value patches (one per field) of every product for date number ``k``."""
    from steps.products.definitions import BY_KEY
    from steps.products.raster import encode

    rng = np.random.default_rng(1000 + k)
    doy = dt.timetuple().tm_yday + 365 * (dt.year - 2022)
    # a tropical tile: many cloudy dates in the wet season, few in the dry one
    wet = 0.5 * (1 + math.sin(2 * math.pi * (dt.timetuple().tm_yday - 100) / 365))
    out: dict[str, list[np.ndarray]] = {"ndvi": [], "lai": [], "lai_flags": [], "cloud_mask": []}
    for f in fields:
        u = rng.random()
        cover = 0.0 if u < 0.35 * (1 - wet) + 0.1 else (1.0 if u > 0.97 - 0.15 * wet else float(rng.uniform(0.05, 0.9)))
        mask = cloud_mask(rng, cover) if cover < 1.0 else np.ones((PATCH // 2, PATCH // 2), dtype=np.uint8)
        nd = f.ndvi(doy, rng)
        clouded10 = np.repeat(np.repeat(mask != 0, 2, axis=0), 2, axis=1)
        nd_phys = np.where(clouded10, np.nan, nd)
        lai = np.clip(-np.log(np.clip((0.96 - _downsample(nd)) / 0.9, 1e-3, 1)) / 0.55, 0, 8.5)
        lai += rng.normal(0, 0.08, size=lai.shape)
        flags = np.zeros(lai.shape, dtype=np.uint8)
        flags[lai > 7.5] |= 4
        flags[rng.random(lai.shape) < 0.01] |= 1
        flags[lai < 0.05] |= 2
        lai_phys = np.where(mask != 0, np.nan, np.clip(lai, 0, 8.0))
        flags[mask != 0] = 255
        out["ndvi"].append(encode(nd_phys, BY_KEY["ndvi"]))
        out["lai"].append(encode(lai_phys, BY_KEY["lai"]))
        out["lai_flags"].append(flags)
        out["cloud_mask"].append(mask)
    return out


# ------------------------------------------------------------------------------------------- writing
def write_cog(path: Path, data: np.ndarray, grid: Any, product: Any) -> None:
    """The pipeline's COG encoding (``steps.products.raster.cog_options``: DEFLATE level 6, predictor for NDVI/LAI,
    512² blocks, product nodata/scale/offset) without internal overviews (``OVERVIEWS=NONE``): EDR reads
    only full resolution, and computing overviews of a 10980² raster triples the generation time."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    from steps.products.raster import COG_TMP_ENV, _mem_dataset, cog_options

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    mem, ds = _mem_dataset(data, grid, product, None)
    try:
        with rasterio.Env(**COG_TMP_ENV):
            rio_copy(ds, str(tmp), driver="COG", **{**cog_options(product), "OVERVIEWS": "NONE",
                                                     "NUM_THREADS": "1"})
    finally:
        ds.close()
        mem.close()
    tmp.replace(path)


def write_date(root: Path, grid: TileGrid, origins: list[tuple[int, int]], fields: list[Field], k: int,
               dt: datetime) -> dict[str, Any]:
    """Write the four COGs and the item sidecar of date ``k`` below ``root``; return the item."""
    from affine import Affine

    from steps.products.catalog import item_links, scene_folder
    from steps.products.definitions import BY_KEY
    from steps.products.raster import Grid
    from steps.sentinel2.grid import footprint_lonlat, footprint_polygon_lonlat
    from steps.storage import sha256_multihash_file

    sid = scene_id(dt)
    folder = scene_folder(dt, sid)
    patches = date_products(fields, k, dt)
    assets: dict[str, Any] = {}
    for key, tiles in patches.items():
        p = BY_KEY[key]
        res = p.resolution_m
        shape = grid.shape(res)
        data = np.full(shape, p.nodata, dtype=p.dtype)
        for (r0, c0), t in zip(origins, tiles, strict=True):
            rr, cc = r0 * 10 // res, c0 * 10 // res
            data[rr:rr + t.shape[0], cc:cc + t.shape[1]] = t
        g = Grid(crs=f"EPSG:{grid.epsg}", transform=Affine(*grid.transform(res)), shape=shape)
        path = root / folder / f"{key}.tif"
        write_cog(path, data, g, p)
        assets[key] = {
            "href": f"./{key}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": p.title, "roles": list(p.roles), "proj:shape": list(shape),
            "proj:transform": grid.transform(res),
            "raster:bands": [{"nodata": p.nodata, "data_type": p.dtype, "spatial_resolution": res,
                              "scale": p.scale, "offset": p.offset}],
            "file:checksum": sha256_multihash_file(path), "file:size": path.stat().st_size,
        }
    side = grid.size * 10.0
    bounds = (grid.ulx, grid.uly - side, grid.ulx + side, grid.uly)
    clear = float(np.mean([np.mean(m == 0) for m in patches["cloud_mask"]]))
    item = {
        "type": "Feature", "stac_version": "1.1.0", "id": sid,
        "geometry": {"type": "Polygon", "coordinates": [footprint_polygon_lonlat(grid.epsg, bounds)]},
        "bbox": [round(v, 7) for v in footprint_lonlat(grid.epsg, bounds)],
        "properties": {"datetime": dt.strftime("%Y-%m-%dT%H:%M:%S.000000Z"), "platform": "sentinel-2b",
                       "constellation": "sentinel-2", "instruments": ["msi"], "grid:code": f"MGRS-{TILE}",
                       "proj:code": f"EPSG:{grid.epsg}", "processing:level": "L2B",
                       "raw2ready:clear_fraction": round(clear, 4), "raw2ready:synthetic": "bench/edr_synth.py"},
        "links": item_links(dt), "assets": assets, "collection": "raw2ready-s2-vegetation",
    }
    (root / folder / f"{sid}.json").write_text(json.dumps(item, indent=1, sort_keys=True))
    return item


_STATE: dict[str, Any] = {}


def _init_worker(archive: str, size: int) -> None:
    _STATE.update(archive=Path(archive), grid=tile_grid(size), origins=patch_origins(size),
                  fields=[Field(100 + i) for i in range(PATCHES)])


def _one_date(k: int) -> str:
    dt = dates(k + 1)[k]
    write_date(_STATE["archive"], _STATE["grid"], _STATE["origins"], _STATE["fields"], k, dt)
    return scene_id(dt)


def build_archive(archive: Path, size: int, n: int, processes: int = 2) -> list[dict[str, Any]]:
    """All ``n`` dates below ``archive`` (cached: dates already written are kept), written by ``processes``
    processes; their items in date order."""
    import time
    from concurrent.futures import ProcessPoolExecutor

    from steps.products.catalog import item_key

    def sidecar(k: int, dt: datetime) -> Path:
        return archive / item_key(dt, scene_id(dt))

    todo = [k for k, dt in enumerate(dates(n)) if not sidecar(k, dt).exists()]
    if todo:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(processes, initializer=_init_worker, initargs=(str(archive), size)) as pool:
            for i, _sid in enumerate(pool.map(_one_date, todo)):
                if i % 20 == 0 or i == len(todo) - 1:
                    print(f"  synthesized {i + 1}/{len(todo)} dates ({time.perf_counter() - t0:.0f} s)", flush=True)
    return [json.loads(sidecar(k, dt).read_text()) for k, dt in enumerate(dates(n))]
