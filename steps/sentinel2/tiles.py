"""Which Sentinel-2 tiles cover an area: ESA's tiling grid, named areas (Thailand) and bounding boxes.

Every id here comes from ESA's tiling grid (:func:`steps.sentinel2.grid.grid_table`), never from MGRS letter
arithmetic, so only tiles that exist in the Sentinel-2 archive are listed.

* ``--aoi thailand`` (:func:`aoi_tiles`): a committed set, ``steps/data/thailand/tiles.json``, derived from
  ``thailand_tiles.csv`` of the project's real-data folder (``s2-grid/``; provenance in
  ``steps/data/thailand/PROVENANCE.md``). Two covers:

  - ``all`` — every tile of ESA's grid whose 109.8 km square holds Thai land (98 tiles: 73 in EPSG:32647,
    25 in EPSG:32648). Land = the union of Thailand's 77 province polygons, so small islands count:
    47NMH (4.8 km² of Thai islands) is in although ESA's own land flag for it is false.
  - ``minimal`` — the 90 of them that hold Thai land no other tile of the 98 holds. The other 8 (e.g.
    48PTV, whose 2 603 km² of Thailand all lie in the overlaps with neighbouring tiles) add nothing; with
    the 90 every point of Thai land is still inside some tile.

* ``--bbox`` (:func:`tiles_for_bbox`): tiles whose polygon in ESA's grid file intersects the lon/lat box
  (touching counts); optionally only tiles flagged as land in that file. ESA's polygon is the tile's four
  corners in lon/lat joined by straight lon/lat edges; :func:`grid_polygons` rebuilds those corners from
  the grid table with pyproj (the corners in ESA's file agree with the table within 0.1 m, see
  ``steps/data/s2grid/PROVENANCE.md``; the 306 polygons around Thailand within 1e-7°), so the world
  GeoJSON need not ship. Longitudes are unwrapped around each zone's central meridian, so a tile that
  crosses the antimeridian (two polygons in ESA's file) is one polygon here and is found from either side.

* :func:`tiles_for_geometry`: any lon/lat (multi)polygon; a tile is in when its full 109.8 km UTM square
  intersects the area, tested in the tile's own UTM zone (the area's vertices projected there).

Pure numpy + pyproj (no shapely at run time).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from steps.errors import UsageError
from steps.sentinel2.grid import TILE_SIZE_M, Tile, grid_table, lonlat_to_utm, parse_tile, utm_to_lonlat

log = logging.getLogger(__name__)

AOIS = ("thailand",)
COVERS = ("all", "minimal")
_DATA = "data/thailand"


@dataclass(frozen=True)
class Boundary:
    """A WGS84 area: polygons, each a list of closed rings (first = exterior, rest = holes), lon/lat degrees."""

    polygons: tuple[tuple[np.ndarray, ...], ...]

    @classmethod
    def from_geojson(cls, geom: dict[str, Any]) -> Boundary:
        """From a GeoJSON ``Polygon`` or ``MultiPolygon`` geometry (or a Feature holding one)."""
        if geom.get("type") == "Feature":
            geom = geom["geometry"]
        if geom["type"] == "Polygon":
            polys = [geom["coordinates"]]
        elif geom["type"] == "MultiPolygon":
            polys = geom["coordinates"]
        else:
            raise ValueError(f"not a polygon geometry: {geom['type']}")
        return cls(tuple(tuple(np.asarray(r, dtype=float)[:, :2] for r in p) for p in polys))

    @classmethod
    def from_bbox(cls, minlon: float, minlat: float, maxlon: float, maxlat: float, step: float = 0.05) -> Boundary:
        """A lon/lat box, its edges densified every ``step`` degrees (so they follow parallels/meridians)."""
        nx = max(2, int(np.ceil((maxlon - minlon) / step)) + 1)
        ny = max(2, int(np.ceil((maxlat - minlat) / step)) + 1)
        lons = np.linspace(minlon, maxlon, nx)
        lats = np.linspace(minlat, maxlat, ny)
        ring = np.concatenate([
            np.column_stack([lons, np.full(nx, minlat)]),
            np.column_stack([np.full(ny, maxlon), lats])[1:],
            np.column_stack([lons[::-1], np.full(nx, maxlat)])[1:],
            np.column_stack([np.full(ny, minlon), lats[::-1]])[1:],
        ])
        return cls(((ring,),))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(minlon, minlat, maxlon, maxlat) in degrees."""
        pts = np.concatenate([p[0] for p in self.polygons])
        return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))

    def projected(self, epsg: int) -> tuple[tuple[np.ndarray, ...], ...]:
        """The same rings in ``EPSG:epsg`` metres (x, y)."""
        tr = lonlat_to_utm(epsg)
        out = []
        for poly in self.polygons:
            rings = []
            for r in poly:
                x, y = tr.transform(r[:, 0], r[:, 1])
                rings.append(np.column_stack([x, y]))
            out.append(tuple(rings))
        return tuple(out)


def _points_in_rings(px: np.ndarray, py: np.ndarray, rings: tuple[np.ndarray, ...]) -> np.ndarray:
    """Even-odd point-in-polygon for points (px, py) against rings (exterior + holes)."""
    inside = np.zeros(px.shape, dtype=bool)
    for r in rings:
        x0, y0 = r[:-1, 0][:, None], r[:-1, 1][:, None]
        x1, y1 = r[1:, 0][:, None], r[1:, 1][:, None]
        crosses = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= (np.count_nonzero(crosses & (px < xint), axis=0) % 2).astype(bool)
    return inside


def box_intersects_polygon(bounds: tuple[float, float, float, float], rings: tuple[np.ndarray, ...]) -> bool:
    """True when the closed box ``(xmin, ymin, xmax, ymax)`` and the polygon (closed rings) share a point.

    Three cases cover it: a polygon vertex lies in the box; a ring edge crosses the box (separating-axis
    test for segment vs box); or the box lies wholly inside the polygon (its centre is inside).
    """
    xmin, ymin, xmax, ymax = bounds
    for r in rings:
        x, y = r[:, 0], r[:, 1]
        if np.any((x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)):
            return True
        x0, y0, x1, y1 = x[:-1], y[:-1], x[1:], y[1:]
        # segment bounding box overlaps the box …
        cand = ((np.minimum(x0, x1) <= xmax) & (np.maximum(x0, x1) >= xmin)
                & (np.minimum(y0, y1) <= ymax) & (np.maximum(y0, y1) >= ymin))
        if np.any(cand):
            # … and the box corners are not all strictly on one side of the segment's line
            dx, dy = (x1 - x0)[cand], (y1 - y0)[cand]
            sides = [dx * (cy - y0[cand]) - dy * (cx - x0[cand])
                     for cx, cy in ((xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax))]
            s = np.stack(sides)
            if np.any(~((s > 0).all(axis=0) | (s < 0).all(axis=0))):
                return True
    cx, cy = np.array([(xmin + xmax) / 2]), np.array([(ymin + ymax) / 2])
    return bool(_points_in_rings(cx, cy, rings)[0])


@dataclass(frozen=True)
class GridPolygons:
    """ESA-style lon/lat polygons of every grid tile: ``rings[i]`` is tile ``ids[i]`` (UL, UR, LR, LL, UL).

    Longitudes are unwrapped around the tile's zone central meridian (they may pass ±180°); ``extent``
    holds each ring's (minlon, minlat, maxlon, maxlat) and ``land`` ESA's land flag.
    """

    ids: tuple[str, ...]
    rings: np.ndarray  # (n, 5, 2) degrees
    extent: np.ndarray  # (n, 4) degrees
    land: np.ndarray  # (n,) bool


@lru_cache(maxsize=1)
def grid_polygons() -> GridPolygons:
    """The lon/lat polygon of every tile of ESA's grid (corners projected from the grid table with pyproj)."""
    table = grid_table()
    ids = tuple(sorted(table))
    by_epsg: dict[int, list[int]] = {}
    for i, tid in enumerate(ids):
        by_epsg.setdefault(table[tid].epsg, []).append(i)
    rings = np.empty((len(ids), 5, 2))
    s = float(TILE_SIZE_M)
    for epsg, idx in by_epsg.items():
        ul = np.array([(table[ids[i]].ulx, table[ids[i]].uly) for i in idx], dtype=float)
        xs = ul[:, :1] + np.array([0.0, s, s, 0.0, 0.0])
        ys = ul[:, 1:] - np.array([0.0, 0.0, s, s, 0.0])
        lon, lat = utm_to_lonlat(epsg).transform(xs, ys)
        cm = -183.0 + 6.0 * (epsg % 100)
        lon = cm + (np.asarray(lon) - cm + 180.0) % 360.0 - 180.0
        rings[idx, :, 0] = lon
        rings[idx, :, 1] = lat
    extent = np.column_stack([rings[:, :, 0].min(1), rings[:, :, 1].min(1),
                              rings[:, :, 0].max(1), rings[:, :, 1].max(1)])
    land = np.array([table[t].land for t in ids], dtype=bool)
    return GridPolygons(ids, rings, extent, land)


def candidate_tiles(bbox: tuple[float, float, float, float], margin_deg: float = 0.0) -> list[str]:
    """Ids (sorted) of grid tiles whose lon/lat polygon extent overlaps ``bbox`` grown by ``margin_deg``.

    A cheap pre-filter (degrees, WGS84); :func:`tiles_for_bbox` and :func:`tiles_for_geometry` decide.
    """
    g = grid_polygons()
    minlon, minlat, maxlon, maxlat = bbox
    hit = np.zeros(len(g.ids), dtype=bool)
    for shift in (-360.0, 0.0, 360.0):
        hit |= ((g.extent[:, 0] <= maxlon + shift + margin_deg) & (g.extent[:, 2] >= minlon + shift - margin_deg)
                & (g.extent[:, 1] <= maxlat + margin_deg) & (g.extent[:, 3] >= minlat - margin_deg))
    return [g.ids[i] for i in np.flatnonzero(hit)]


def tiles_for_bbox(bbox: tuple[float, float, float, float], land_only: bool = False) -> list[str]:
    """Tile ids (sorted) whose ESA grid polygon intersects the lon/lat box ``(minlon, minlat, maxlon, maxlat)``.

    Touching counts. ``land_only`` keeps only tiles that ESA's grid file flags as land.
    """
    g = grid_polygons()
    index = {t: i for i, t in enumerate(g.ids)}
    minlon, minlat, maxlon, maxlat = bbox
    shifts = (-360.0, 0.0, 360.0)
    out = []
    for tid in candidate_tiles(bbox):
        i = index[tid]
        if land_only and not g.land[i]:
            continue
        e = g.extent[i]
        # a polygon wholly inside the box needs no exact test (the common case for large boxes)
        if any(e[0] >= minlon + k and e[2] <= maxlon + k for k in shifts) and e[1] >= minlat and e[3] <= maxlat:
            out.append(tid)
            continue
        ring = (g.rings[i],)
        if any(box_intersects_polygon((minlon + k, minlat, maxlon + k, maxlat), ring) for k in shifts):
            out.append(tid)
    return out


def tiles_for_geometry(area: Boundary, land_only: bool = False, margin_deg: float = 1.0) -> list[str]:
    """Tile ids (sorted) whose full 109.8 km UTM square intersects ``area`` (tested in the tile's UTM zone).

    Candidates are the grid tiles whose lon/lat extent is within ``margin_deg`` of the area's bbox.
    """
    by_epsg: dict[int, list[Tile]] = {}
    for tid in candidate_tiles(area.bbox, margin_deg):
        t = parse_tile(tid)
        if land_only and not t.land:
            continue
        by_epsg.setdefault(t.epsg, []).append(t)
    hits = []
    for epsg, tiles in by_epsg.items():
        polys = area.projected(epsg)
        extents = [(p[0][:, 0].min(), p[0][:, 1].min(), p[0][:, 0].max(), p[0][:, 1].max()) for p in polys]
        for t in tiles:
            xmin, ymin, xmax, ymax = t.bounds
            for rings, (a, b, c, d) in zip(polys, extents, strict=True):
                if a > xmax or c < xmin or b > ymax or d < ymin:
                    continue
                if box_intersects_polygon(t.bounds, rings):
                    hits.append(t.id)
                    break
    return sorted(hits)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``minlon,minlat,maxlon,maxlat`` (degrees); ``UsageError`` if malformed or out of range."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise UsageError(f"--bbox {text!r}: expected minlon,minlat,maxlon,maxlat in degrees") from exc
    if len(vals) != 4:
        raise UsageError(f"--bbox {text!r}: expected 4 numbers, got {len(vals)}")
    minlon, minlat, maxlon, maxlat = vals
    if not (-180 <= minlon < maxlon <= 180 and -80 <= minlat < maxlat <= 84):
        raise UsageError(f"--bbox {text!r}: need -180 ≤ minlon < maxlon ≤ 180 and -80 ≤ minlat < maxlat ≤ 84")
    return minlon, minlat, maxlon, maxlat


def _read_data(name: str) -> str:
    return resources.files("steps").joinpath(f"{_DATA}/{name}").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def thailand_boundary() -> Boundary:
    """Thailand's land area (Natural Earth 1:10m admin 0, simplified; WGS84 lon/lat); for cross-checks."""
    return Boundary.from_geojson(json.loads(_read_data("boundary.geojson")))


@lru_cache(maxsize=1)
def _thailand_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_read_data("tiles.json"))
    return doc


def thailand_tiles() -> tuple[str, ...]:
    """Every Sentinel-2 tile holding Thai land (98 ids, sorted; the ``all`` cover)."""
    return tuple(_thailand_doc()["tiles"])


def thailand_minimal_tiles() -> tuple[str, ...]:
    """The minimal covering set for Thailand (90 ids, sorted): tiles holding Thai land no other tile holds."""
    return tuple(_thailand_doc()["minimal"])


def thailand_land_km2() -> dict[str, tuple[float, float]]:
    """Tile id → (Thai land in the tile, Thai land in no other tile), km² (see PROVENANCE.md for the areas)."""
    return {r["tile"]: (r["thai_land_km2"], r["unique_thai_land_km2"]) for r in _thailand_doc()["details"]}


def aoi_tiles(aoi: str, cover: str = "all") -> list[str]:
    """Tiles of a named area of interest (``thailand``).

    ``cover``: ``all`` = every tile with land in the area; ``minimal`` = only the tiles holding land no
    other tile holds (still covers all of it). ``UsageError`` for an unknown name or cover.
    """
    name = aoi.strip().lower()
    if cover not in COVERS:
        raise UsageError(f"unknown cover {cover!r}: expected one of {', '.join(COVERS)}")
    if name == "thailand":
        return list(thailand_tiles() if cover == "all" else thailand_minimal_tiles())
    raise UsageError(f"unknown --aoi {aoi!r}: known areas are {', '.join(AOIS)}")
