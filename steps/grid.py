"""Sentinel-2 MGRS tiling grid: tile ids, their UTM CRS and their exact 109.8 km footprints.

A Sentinel-2 tile ``ZZBSS`` (UTM zone ``ZZ``, latitude band ``B``, 100 km square ``SS``) is a
109 800 m square (10 980 px at 10 m) in the tile's own UTM zone (EPSG:326ZZ north, 327ZZ south).
Its upper-left corner is the north-west corner of the 100 km MGRS square, snapped *outward* to the
60 m grid so that 10, 20 and 60 m pixels share corners: x rounded down to a multiple of 60 m
(0/−20/−40 m), y rounded up (0/+20/+40 m). Example: 47PPR (Bangkok) starts at (600000, 1600020)
in EPSG:32647.

The 100 km square letters follow the MGRS "AA" lettering scheme (column letter sets repeat every three
zones, row letters every 2 000 km, offset by 5 rows in even zones). The 2 000 km ambiguity of the row
letter is resolved by the latitude band.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from steps.errors import InvalidInputError

TILE_SIZE_M = 109_800
TILE_PX_10M = 10_980
GRID_SNAP_M = 60

_BANDS = "CDEFGHJKLMNPQRSTUVWX"  # 8° latitude bands from 80°S; X spans 72–84°N
_COL_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"  # 20 letters, 2 000 km cycle
_TILE_RE = re.compile(r"^(?:T)?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")


def _band_bounds(band: str) -> tuple[float, float]:
    i = _BANDS.index(band)
    south = -80.0 + 8.0 * i
    north = 84.0 if band == "X" else south + 8.0
    return south, north


def _tm_northing(lat_deg: float, zone: int) -> float:
    """UTM northing (m) of a latitude on the zone's central meridian (minimum over the zone)."""
    epsg = (32600 if lat_deg >= 0 else 32700) + zone
    tr = _transformer(epsg)
    _, y = tr.transform(-183.0 + 6.0 * zone, lat_deg)
    return float(y)


@lru_cache(maxsize=128)
def _transformer(epsg: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)


@dataclass(frozen=True)
class Tile:
    """One Sentinel-2 MGRS tile and its footprint in its own UTM CRS (metres)."""

    id: str  # canonical, e.g. "47PPR" (zone without leading zero is padded: "05QKB")
    zone: int
    band: str
    square: str
    epsg: int
    ulx: float
    uly: float

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the full 109.8 km tile in ``epsg`` metres."""
        return (self.ulx, self.uly - TILE_SIZE_M, self.ulx + TILE_SIZE_M, self.uly)

    @property
    def crs(self) -> str:
        """The tile's CRS as an ``EPSG:`` string."""
        return f"EPSG:{self.epsg}"

    def window_bounds(self, size_px_10m: int) -> tuple[float, float, float, float]:
        """Bounds of the top-left ``size_px_10m``² window of the tile (used by small synthetic scenes)."""
        side = size_px_10m * 10.0
        return (self.ulx, self.uly - side, self.ulx + side, self.uly)

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """Approximate WGS84 bounds (densified edges) of the full tile."""
        return footprint_lonlat(self.epsg, self.bounds)


def footprint_lonlat(epsg: int, bounds: tuple[float, float, float, float], n: int = 21) -> tuple[
    float, float, float, float
]:
    """WGS84 (lon, lat) bounds of a projected box, with each edge densified to ``n`` points."""
    from pyproj import Transformer

    tr = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    xmin, ymin, xmax, ymax = bounds
    xs: list[float] = []
    ys: list[float] = []
    for k in range(n):
        t = k / (n - 1)
        for x, y in ((xmin + t * (xmax - xmin), ymin), (xmin + t * (xmax - xmin), ymax),
                     (xmin, ymin + t * (ymax - ymin)), (xmax, ymin + t * (ymax - ymin))):
            xs.append(x)
            ys.append(y)
    lon, lat = tr.transform(xs, ys)
    return (min(lon), min(lat), max(lon), max(lat))


def footprint_polygon_lonlat(epsg: int, bounds: tuple[float, float, float, float], n: int = 5) -> list[
    list[float]
]:
    """Closed WGS84 ring (counter-clockwise) of a projected box, ``n`` points per edge; for GeoJSON."""
    from pyproj import Transformer

    tr = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    xmin, ymin, xmax, ymax = bounds
    pts: list[tuple[float, float]] = []
    corners = [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax), (xmin, ymin)]
    for (x0, y0), (x1, y1) in itertools.pairwise(corners):
        for k in range(n - 1):
            t = k / (n - 1)
            pts.append((x0 + t * (x1 - x0), y0 + t * (y1 - y0)))
    pts.append(pts[0])
    lon, lat = tr.transform([p[0] for p in pts], [p[1] for p in pts])
    return [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]


@lru_cache(maxsize=4096)
def parse_tile(tile_id: str) -> Tile:
    """Parse and validate an MGRS tile id (``47PPR`` or ``T47PPR``); raise ``InvalidInputError`` if unknown.

    Checks: zone 1–60, a valid latitude band, a column letter from the zone's set, a row letter, and that
    the 100 km square actually intersects its latitude band (so e.g. ``47PPA`` — 1 000 km south of band
    P — is rejected).
    """
    m = _TILE_RE.match(tile_id.strip().upper())
    if not m:
        raise InvalidInputError(f"unknown MGRS tile {tile_id!r}: expected e.g. 47PPR (zone, band, 2 letters)")
    zone = int(m.group(1))
    band, col, row = m.group(2), m.group(3), m.group(4)
    if not 1 <= zone <= 60:
        raise InvalidInputError(f"unknown MGRS tile {tile_id!r}: UTM zone {zone} is not in 1..60")
    colset = _COL_SETS[(zone - 1) % 3]
    if col not in colset:
        raise InvalidInputError(
            f"unknown MGRS tile {tile_id!r}: column letter {col} is not used in zone {zone} ({colset})"
        )
    easting_w = (colset.index(col) + 1) * 100_000.0
    row_off = (_ROW_LETTERS.index(row) - (0 if zone % 2 == 1 else 5)) % 20 * 100_000.0
    south, north = _band_bounds(band)
    if south >= 0:
        epsg = 32600 + zone
        n_lo = _tm_northing(south, zone)
        n_hi = _tm_northing(north, zone)
    else:
        epsg = 32700 + zone
        n_lo = _tm_northing(south, zone)  # EPSG:327ZZ already adds the 10 000 km false northing
        n_hi = _tm_northing(north, zone) if north < 0 else 10_000_000.0
    # smallest northing ≡ row_off (mod 2 000 km) whose square reaches into the band
    k = math.floor((n_lo - 100_000.0 - row_off) / 2_000_000.0)
    southing = row_off + k * 2_000_000.0
    while southing + 100_000.0 <= n_lo:
        southing += 2_000_000.0
    if southing >= n_hi + 1.0:  # tolerance: squares may extend a little past the band edge
        raise InvalidInputError(f"unknown MGRS tile {tile_id!r}: square {col}{row} does not meet band {band}")
    ulx = math.floor(easting_w / GRID_SNAP_M) * GRID_SNAP_M
    uly = math.ceil((southing + 100_000.0) / GRID_SNAP_M) * GRID_SNAP_M
    return Tile(id=f"{zone:02d}{band}{col}{row}", zone=zone, band=band, square=col + row, epsg=epsg,
                ulx=float(ulx), uly=float(uly))


def tiles_argument(text: str) -> list[str]:
    """A ``--tiles`` command-line value → canonical ids; bad or empty input is a ``UsageError`` (exit 2)."""
    from steps.errors import UsageError

    try:
        out = normalize_tiles(text)
    except InvalidInputError as exc:
        raise UsageError(str(exc)) from exc
    if not out:
        raise UsageError("no tiles given")
    return out


def normalize_tiles(tiles: str | list[str]) -> list[str]:
    """Split a comma/space separated tile list, validate each id and return canonical ids, sorted."""
    items = tiles.replace(",", " ").split() if isinstance(tiles, str) else list(tiles)
    return sorted({parse_tile(t).id for t in items})
