"""EDR query parsing: what pygeoapi hands a provider (coords, bbox, within, datetime, parameter names) → a
validated :class:`EDRQuery`, or a :class:`QueryError` whose message is the client's 400 answer.

Coordinates are WGS84 longitude/latitude (OGC CRS84): ``position`` and ``radius`` take ``POINT(lon lat)``
(radius: ``within`` in m/km/mi, at most 200 km), ``area`` a ``POLYGON``/``MULTIPOLYGON``, ``cube`` a
4-number ``bbox``. ``datetime`` follows :mod:`steps.edr.timeq`. There is no vertical axis (``z`` or a
6-number bbox is a 400). Nothing here reads the catalog: checks come in the order a client fixes them
(geometry, ``z``, ``datetime``, parameter names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from steps.edr.timeq import DatetimeQueryError, TimeRange, parse_datetime_query
from steps.sentinel2.grid import lonlat_to_utm

#: Parameters of each EDR collection; the first is the collection's main product.
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "ndvi": ("ndvi", "cloud_mask"),
    "lai": ("lai", "lai_flags", "cloud_mask"),
}
RADIUS_UNITS = {"m": 1.0, "km": 1000.0, "mi": 1609.344}
MAX_RADIUS_M = 200_000
QUERY_TYPES = ("position", "radius", "area", "cube")
_MAX_WKT = 100_000


class QueryError(ValueError):
    """A malformed EDR query (HTTP 400); the message is written for the client."""


def _check_lonlat(coords: np.ndarray) -> None:
    if coords.size == 0:
        raise QueryError("empty geometry")
    if not np.all(np.isfinite(coords)):
        raise QueryError("coordinates must be finite numbers")
    if np.any(np.abs(coords[:, 0]) > 180) or np.any(np.abs(coords[:, 1]) > 90):
        raise QueryError("coordinates must be WGS84 longitude in [-180, 180] and latitude in [-90, 90]")


@dataclass(frozen=True)
class QueryShape:
    """A query geometry in lon/lat, transformable to each item's UTM CRS.

    ``point`` for position/radius (lon, lat); ``geom`` for area/cube (a lon/lat polygon); ``radius_m`` for
    radius (a circle of that many metres around ``point``, drawn in each item's UTM CRS).
    """

    point: tuple[float, float] | None = None
    geom: BaseGeometry | None = None
    radius_m: float | None = None

    @property
    def is_point(self) -> bool:
        """A position query (one pixel per time step) rather than an area, box or circle."""
        return self.geom is None and self.radius_m is None

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """(minlon, minlat, maxlon, maxlat) for the index pre-filter."""
        if self.geom is not None:
            b = self.geom.bounds
            return float(b[0]), float(b[1]), float(b[2]), float(b[3])
        assert self.point is not None
        lon, lat = self.point
        if self.radius_m:
            dlat = self.radius_m / 110_000.0 * 1.05
            dlon = dlat / max(math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1e-3)
            return lon - dlon, lat - dlat, lon + dlon, lat + dlat
        return lon, lat, lon, lat

    def utm_point(self, epsg: int) -> tuple[float, float]:
        """The query point (or the area's centroid) in ``EPSG:<epsg>`` metres."""
        lon, lat = self.point if self.point is not None else self._centroid()
        x, y = lonlat_to_utm(epsg).transform(lon, lat)
        return float(x), float(y)

    def _centroid(self) -> tuple[float, float]:
        assert self.geom is not None
        c = self.geom.centroid
        return float(c.x), float(c.y)

    def utm_geometry(self, epsg: int, clip: tuple[float, float, float, float]) -> BaseGeometry:
        """The area in ``EPSG:<epsg>``, limited to the lon/lat box ``clip`` grown by 0.05° (the raster's
        extent: only that part can meet it, and far outside its UTM zone a projection is meaningless);
        edges are densified to ≤ 0.005° before projecting. May be empty."""
        if self.radius_m is not None:
            x, y = self.utm_point(epsg)
            if not (math.isfinite(x) and math.isfinite(y)):
                return shapely.Polygon()
            return shapely.Point(x, y).buffer(self.radius_m, quad_segs=32)
        assert self.geom is not None
        m = 0.05
        part = shapely.intersection(self.geom, shapely.box(clip[0] - m, clip[1] - m, clip[2] + m, clip[3] + m))
        if part.is_empty:
            return shapely.Polygon()
        dense = shapely.segmentize(part, 0.005)
        tf = lonlat_to_utm(epsg)

        def fwd(xy: np.ndarray) -> np.ndarray:
            x, y = tf.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        out = shapely.transform(dense, fwd)
        if not np.all(np.isfinite(shapely.get_coordinates(out))):
            return shapely.Polygon()
        if not shapely.is_valid(out):
            out = shapely.make_valid(out)
        return out


def parse_point(wkt: Any) -> tuple[float, float]:
    """(lon, lat) from a shapely ``Point`` given as ``coords``; :class:`QueryError` for anything else."""
    if wkt is None:
        raise QueryError("missing coords parameter: give POINT(lon lat)")
    if not isinstance(wkt, BaseGeometry) or wkt.geom_type != "Point" or wkt.is_empty:
        raise QueryError("coords must be a WKT POINT(lon lat) in WGS84")
    c = np.asarray(shapely.get_coordinates(wkt), dtype=np.float64)
    _check_lonlat(c)
    return float(c[0, 0]), float(c[0, 1])


def parse_area(wkt: Any) -> BaseGeometry:
    """A valid lon/lat polygon from ``coords``; :class:`QueryError` for anything else."""
    if wkt is None:
        raise QueryError("missing coords parameter: give POLYGON((lon lat, ...))")
    if not isinstance(wkt, BaseGeometry) or wkt.geom_type not in ("Polygon", "MultiPolygon") or wkt.is_empty:
        raise QueryError("coords must be a WKT POLYGON or MULTIPOLYGON in WGS84 lon/lat")
    c = np.asarray(shapely.get_coordinates(wkt), dtype=np.float64)
    _check_lonlat(c)
    if len(c) > _MAX_WKT:
        raise QueryError(f"polygon has more than {_MAX_WKT} vertices")
    if not wkt.is_valid:
        raise QueryError(f"polygon is not valid: {shapely.is_valid_reason(wkt)}")
    if wkt.area <= 0:
        raise QueryError("polygon has no area")
    return shapely.force_2d(wkt)


def parse_bbox(bbox: Any) -> BaseGeometry:
    """A lon/lat box polygon from a 4-number ``bbox``; :class:`QueryError` otherwise (6 numbers: no vertical
    axis here)."""
    if not bbox:
        raise QueryError("cube queries need bbox=minlon,minlat,maxlon,maxlat")
    if len(bbox) != 4:
        raise QueryError("these products have no vertical axis: bbox takes 4 numbers minlon,minlat,maxlon,maxlat")
    w, s, e, n = (float(v) for v in bbox)
    _check_lonlat(np.array([[w, s], [e, n]], dtype=np.float64))
    if not (w < e and s < n):
        raise QueryError("bbox must have minlon < maxlon and minlat < maxlat (antimeridian-crossing boxes are not"
                         " supported)")
    return shapely.box(w, s, e, n)


def parse_radius(within: Any, units: Any) -> float:
    """Radius in metres from EDR ``within`` and ``within-units`` (m, km or mi)."""
    if within is None or str(within).strip() == "":
        raise QueryError("radius queries need within=<distance> and within-units=m|km|mi")
    try:
        value = float(str(within))
    except ValueError:
        raise QueryError(f"within must be a number, not {str(within)[:40]!r}") from None
    u = str(units or "").strip().lower()
    if u not in RADIUS_UNITS:
        raise QueryError(f"within-units must be one of {', '.join(RADIUS_UNITS)}")
    metres = value * RADIUS_UNITS[u]
    if not math.isfinite(metres) or metres <= 0:
        raise QueryError("within must be a positive finite distance")
    if metres > MAX_RADIUS_M:
        raise QueryError("within is limited to 200 km")
    return metres


def parse_parameters(names: Any, collection: str) -> tuple[str, ...]:
    """The selected parameters of ``collection`` in the collection's order (all of them when none are named);
    an unknown name is a :class:`QueryError`."""
    keys = COLLECTIONS[collection]
    if not names:
        return keys
    wanted = {str(n).strip() for n in names if str(n).strip()}
    unknown = sorted(wanted - set(keys))
    if unknown:
        raise QueryError(f"unknown parameter-name {', '.join(unknown)}; collection {collection!r} has "
                         f"{', '.join(keys)}")
    if not wanted:
        return keys
    return tuple(k for k in keys if k in wanted)


@dataclass(frozen=True)
class EDRQuery:
    """A validated EDR query: where (lon/lat), when (a half-open UTC range) and which parameters."""

    shape: QueryShape
    trange: TimeRange
    params: tuple[str, ...]


def parse_query(query_type: str, collection: str, args: dict[str, Any]) -> EDRQuery:
    """Validate the keyword arguments pygeoapi passes a provider's ``position``/``radius``/``area``/``cube``
    (``wkt``, ``bbox``, ``within``, ``within_units``, ``z``, ``datetime_``, ``select_properties``)."""
    if query_type == "position":
        shape = QueryShape(point=parse_point(args.get("wkt")))
    elif query_type == "radius":
        point = parse_point(args.get("wkt"))
        shape = QueryShape(point=point, radius_m=parse_radius(args.get("within"), args.get("within_units")))
    elif query_type == "area":
        shape = QueryShape(geom=parse_area(args.get("wkt")))
    elif query_type == "cube":
        shape = QueryShape(geom=parse_bbox(args.get("bbox")))
    else:
        raise QueryError(f"query type {query_type!r} is not one of {', '.join(QUERY_TYPES)}")
    if args.get("z") not in (None, ""):
        raise QueryError("these products have no vertical axis; omit z")
    try:
        trange = parse_datetime_query(args.get("datetime_"))
    except DatetimeQueryError as exc:
        raise QueryError(str(exc)) from exc
    return EDRQuery(shape, trange, parse_parameters(args.get("select_properties"), collection))
