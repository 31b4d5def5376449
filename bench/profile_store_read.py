"""Where the time of one store position read goes (companion of ``bench_edr.py``; evidence for its notes).

Run: ``.venv/bin/python bench/profile_store_read.py ROOT [--queries 24] [--size 10980]`` on an output root
that ``bench_edr.py`` prepared (``$TMPDIR/raw2ready-edr-bench/size10980/n290``).

In-process, without HTTP: (1) ``CubeReader.read`` of one pixel of ``ndvi`` and of ``cloud_mask`` — the
store part of a position query — cold (page cache dropped, new shard) and warm, counting the store's
``get`` calls and bytes by wrapping the Zarr store; (2) the same through the EDR provider's ``position``
(index lookup, CRS transform, store read, CoverageJSON), to separate provider overhead from the read;
(3) a cProfile of warm provider queries (top functions by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edr_synth
from bench_edr import drop_page_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--size", type=int, default=10980)
    a = ap.parse_args()

    import shapely
    import zarr.storage
    from pyproj import Transformer

    from steps.edr.provider import Raw2ReadyEDRProvider
    from steps.products import cube
    from steps.storage import LocalStorage

    calls: list[tuple[str, int]] = []
    orig_get = zarr.storage.LocalStore.get

    async def counting_get(self: Any, key: str, prototype: Any, byte_range: Any = None) -> Any:
        buf = await orig_get(self, key, prototype, byte_range)
        calls.append((key, 0 if buf is None else len(buf)))
        return buf

    zarr.storage.LocalStore.get = counting_get  # type: ignore[method-assign,assignment]

    storage = LocalStorage(a.root)
    rows = [r for r in cube.index_rows(storage) if r.tile == edr_synth.TILE]
    reader = cube.CubeReader(storage)
    patches = edr_synth.patch_origins(a.size)

    def store_read(r: int, c: int) -> None:
        for key, f in (("ndvi", 1), ("cloud_mask", 2)):
            where = reader.held(edr_synth.TILE, {x.id: x.checksums for x in rows}, key)
            reader.read(edr_synth.TILE, key, where, r // f, c // f, 1, 1)

    out: list[str] = []
    # values: store == COGs == xarray-edr's Zarr, for one pixel per patch
    import rasterio
    import zarr
    from rasterio.windows import Window

    zpath = a.root / "ndvi-xarray.zarr"
    zndvi = zarr.open_array(zpath, path="ndvi", mode="r") if zpath.exists() else None
    same = 0
    for r0, c0 in patches[: a.queries]:
        r, c = r0 + 101, c0 + 203
        where = reader.held(edr_synth.TILE, {x.id: x.checksums for x in rows}, "ndvi")
        got = reader.read(edr_synth.TILE, "ndvi", where, r, c, 1, 1)
        st = np.array([got[x.id][0, 0] for x in rows])
        cog = []
        for x in rows:
            with rasterio.open(a.root / x.assets["ndvi"]) as ds:
                cog.append(ds.read(1, window=Window(c, r, 1, 1))[0, 0])
        ok = np.array_equal(st, np.array(cog)) and (zndvi is None or np.array_equal(st, zndvi[:, r, c]))
        same += int(ok)
    out.append(f"stored NDVI series identical in store, COGs{' and xarray Zarr' if zndvi is not None else ''}: "
               f"{same} of {min(a.queries, len(patches))} pixels ({len(rows)} dates each)")

    store_read(100, 100)  # opens the arrays (no-data part of the tile)
    drop_page_cache([a.root / "cube"])
    for temp, off in (("cold", 7), ("warm", 7)):
        ts, ncalls, nbytes = [], [], []
        for r0, c0 in patches[: a.queries]:
            calls.clear()
            t0 = time.perf_counter()
            store_read(r0 + off * 13, c0 + off * 17)
            ts.append((time.perf_counter() - t0) * 1000)
            ncalls.append(len(calls))
            nbytes.append(sum(b for _k, b in calls))
        gets = (f"{statistics.mean(ncalls):.1f} zarr store gets, {statistics.mean(nbytes) / 1e3:.0f} kB per query"
                if any(ncalls) else "reads bypass zarr.storage (not counted here)")
        out.append(f"CubeReader.read ndvi + cloud_mask, 1 px, {temp}: p50 {statistics.median(ts):.1f} ms, {gets}")

    grid = edr_synth.tile_grid(a.size)
    to_ll = Transformer.from_crs(f"EPSG:{grid.epsg}", "EPSG:4326", always_xy=True)
    prov = Raw2ReadyEDRProvider({"name": "steps.edr.provider.Raw2ReadyEDRProvider", "type": "edr", "data": str(a.root),
                              "options": {"collection": "ndvi"}})

    def position(r: int, c: int) -> None:
        lon, lat = to_ll.transform(grid.ulx + (c + 0.5) * 10, grid.uly - (r + 0.5) * 10)
        prov.position(wkt=shapely.Point(lon, lat), datetime_=None, select_properties=None)

    position(100, 100)
    for temp, off in (("cold", 11), ("warm", 11)):
        if temp == "cold":
            drop_page_cache([a.root / "cube"])
        ts = []
        for r0, c0 in patches[: a.queries]:
            t0 = time.perf_counter()
            position(r0 + off * 13, c0 + off * 17)
            ts.append((time.perf_counter() - t0) * 1000)
        out.append(f"provider.position (no HTTP), {temp}: p50 {statistics.median(ts):.1f} ms")
    pr = cProfile.Profile()
    pr.enable()
    for r0, c0 in patches[: a.queries]:
        position(r0 + 11 * 13, c0 + 11 * 17)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(30)
    print("\n".join(out))
    print(s.getvalue())


if __name__ == "__main__":
    main()
