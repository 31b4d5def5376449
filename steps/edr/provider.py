"""A pygeoapi EDR provider that reads the raw2ready catalog's COGs directly.

pygeoapi's own ``xarray-edr`` provider reads NetCDF/Zarr cubes; this one answers EDR queries from the
catalog's ``index.json`` (see :mod:`steps.edr.index`) and windowed reads of the per-scene product COGs
(see :mod:`steps.edr.reader`). One provider instance serves one collection (``ndvi`` or ``lai``); pygeoapi
creates a provider per request, so everything expensive (index, thread pool, CRS transformers) is cached at
module level.

Query types
    ``position`` (``POINT(lon lat)``: a time series), ``radius`` (``POINT`` + ``within`` in m/km/mi),
    ``area`` (``POLYGON``/``MULTIPOLYGON``) and ``cube`` (``bbox=minlon,minlat,maxlon,maxlat``). Coordinates
    are WGS84 longitude/latitude (OGC CRS84). ``datetime``: see :mod:`steps.edr.timeq`. No vertical axis.

Conventions
    * Products are in the tile's UTM CRS (item ``proj:code``); the query geometry is transformed per item.
    * ``position``: the value of the pixel that contains the point (pixel-exact, no interpolation).
      ``area``/``cube``/``radius``: every pixel whose *centre* lies inside the geometry, on the native grid of
      the finest selected parameter; other parameters (e.g. the 20 m ``cloud_mask`` next to the 10 m
      ``ndvi``) are sampled at those centres from the pixel that contains them. Pixels outside the geometry
      or outside the chosen tile are ``null``.
    * Values are physical: stored × scale + offset (:mod:`steps.products.definitions`); stored no-data (−32768 for NDVI
      and LAI — cloud-masked pixels included — and 255 for ``cloud_mask``/``lai_flags``) is ``null``.
    * Overlapping MGRS tiles: an acquisition is (platform, sensing time to the second); neighbouring tiles of
      one datatake share it. A ground location is served by the tile of that acquisition whose raster centre
      is nearest to it (distance in metres in each tile's own UTM CRS, rounded to the metre; ties go to the
      smaller tile id) — the most interior view. ``position`` therefore returns exactly one value per
      acquisition; for an area each tile's grid keeps only the pixels it owns by that rule (the others are
      null), so a location appears once per acquisition even where tiles overlap, and areas spanning
      several tiles get one grid coverage per tile.
    * Output: CoverageJSON. ``position``: one ``PointSeries`` coverage (axes x, y in CRS84 and t).
      ``area``/``cube``/``radius``: a ``CoverageCollection`` of ``Grid`` coverages in the tile's UTM CRS, one
      per distinct grid (usually one per tile), each with a ``t`` axis over its acquisitions. Each coverage
      lists the item ids behind its time steps in ``raw2ready:items``.
    * A request whose values (pixels × time steps × parameters) exceed ``pixel_budget`` is refused with 400
      before any read. Malformed coordinates, datetimes or parameters are 400, never 500.

Provider options (pygeoapi ``providers[].options``): ``collection`` (``ndvi``|``lai``), ``pixel_budget``
(default 4 000 000 values), ``read_workers`` (thread-pool size, default 8), ``index_check_interval_s``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import shapely
from pygeoapi.provider.base import (
    ProviderConnectionError,
    ProviderGenericError,
    ProviderInvalidQueryError,
    ProviderNoDataError,
)
from pygeoapi.provider.base_edr import BaseEDRProvider
from shapely.geometry.base import BaseGeometry

from steps.edr.index import CatalogIndex, IndexItem, RasterGrid, load_index
from steps.edr.reader import WindowRead, read_windows
from steps.edr.timeq import DatetimeQueryError, TimeRange, parse_datetime_query
from steps.errors import TransientError
from steps.products.definitions import BY_KEY, Product
from steps.storage import S3Storage

log = logging.getLogger(__name__)

#: Parameters of each EDR collection; the first is the collection's main product.
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "ndvi": ("ndvi", "cloud_mask"),
    "lai": ("lai", "lai_flags", "cloud_mask"),
}
DEFAULT_PIXEL_BUDGET = 4_000_000
DEFAULT_READ_WORKERS = 8
#: a window wanted for at least this many dates of one tile is read from the time-series store
DEFAULT_CUBE_MIN_DATES = 2
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
UCUM = "http://www.opengis.net/def/uom/UCUM/"
_UNITS: dict[str, tuple[str, str]] = {  # product key -> (UCUM symbol, label)
    "ndvi": ("1", "dimensionless"),
    "lai": ("m2.m-2", "m²/m²"),
    "lai_flags": ("1", "bit flags"),
    "cloud_mask": ("1", "class code"),
}
RADIUS_UNITS = {"m": 1.0, "km": 1000.0, "mi": 1609.344}
_MAX_WKT = 100_000


_CUBE_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edr-cube")
_SEGMENT_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edr-cube-seg")
_READERS: dict[str, Any] = {}
_READERS_LOCK = threading.Lock()


def cube_reader(catalog: str, storage: Any) -> Any:
    """The process-wide :class:`steps.products.cube.CubeReader` of one output root (manifests cached in it)."""
    from steps.products.cube import CubeReader

    with _READERS_LOCK:
        reader = _READERS.get(catalog)
        if reader is None:
            reader = _READERS[catalog] = CubeReader(storage)
        return reader


class ProviderUnavailableError(ProviderGenericError):
    """Storage temporarily unavailable (HTTP 503; retry later)."""

    ogc_exception_code = "NoApplicableCode"
    http_status_code = 503
    default_msg = "storage temporarily unavailable, retry later"


def _bad(msg: str) -> ProviderInvalidQueryError:
    return ProviderInvalidQueryError(user_msg=msg)


# ------------------------------------------------------------------------------------------ parameters
def product_unit(p: Product) -> tuple[str, str]:
    """(UCUM symbol, label) of a product's physical unit."""
    if p.key in _UNITS:
        return _UNITS[p.key]
    return (p.unit.replace("/", ".").replace("m2.m2", "m2.m-2") if p.unit else "1"), (p.unit or "dimensionless")


def is_integer_coded(p: Product) -> bool:
    """Whether physical values are the stored integers (scale 1, offset 0): class codes and flags."""
    return p.scale == 1.0 and p.offset == 0.0 and not p.dtype.startswith("float")


def covjson_parameter(p: Product) -> dict[str, Any]:
    """The CoverageJSON (and pygeoapi/EDR ``parameter_names``) description of one product."""
    symbol, label = product_unit(p)
    return {
        "type": "Parameter",
        "id": p.key,
        "description": {"en": p.description},
        "observedProperty": {"id": p.key, "label": {"en": p.title}, "description": {"en": p.description}},
        "unit": {"label": {"en": label}, "symbol": {"value": symbol, "type": UCUM}},
    }


# ------------------------------------------------------------------------------------------ geometry
_TLS = threading.local()


def _to_utm(epsg: int) -> Any:
    """A per-thread cached pyproj transformer lon/lat (CRS84 axis order) → ``EPSG:<epsg>``."""
    cache = getattr(_TLS, "tf", None)
    if cache is None:
        cache = _TLS.tf = {}
    tf = cache.get(epsg)
    if tf is None:
        from pyproj import Transformer

        tf = cache[epsg] = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    return tf


def _check_lonlat(coords: np.ndarray) -> None:
    if coords.size == 0:
        raise _bad("empty geometry")
    if not np.all(np.isfinite(coords)):
        raise _bad("coordinates must be finite numbers")
    if np.any(np.abs(coords[:, 0]) > 180) or np.any(np.abs(coords[:, 1]) > 90):
        raise _bad("coordinates must be WGS84 longitude in [-180, 180] and latitude in [-90, 90]")


@dataclass
class QueryShape:
    """A query geometry in lon/lat, transformable to each item's UTM CRS.

    ``point`` for position/radius (lon, lat); ``geom`` for area/cube (a lon/lat polygon); ``radius_m`` for
    radius (a circle of that many metres around ``point``, drawn in each item's UTM CRS).
    """

    point: tuple[float, float] | None = None
    geom: BaseGeometry | None = None
    radius_m: float | None = None

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
        x, y = _to_utm(epsg).transform(lon, lat)
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
        tf = _to_utm(epsg)

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
    """(lon, lat) from a shapely ``Point`` given as ``coords``; 400 for anything else."""
    if wkt is None:
        raise _bad("missing coords parameter: give POINT(lon lat)")
    if not isinstance(wkt, BaseGeometry) or wkt.geom_type != "Point" or wkt.is_empty:
        raise _bad("coords must be a WKT POINT(lon lat) in WGS84")
    c = np.asarray(shapely.get_coordinates(wkt), dtype=np.float64)
    _check_lonlat(c)
    return float(c[0, 0]), float(c[0, 1])


def parse_area(wkt: Any) -> BaseGeometry:
    """A valid lon/lat polygon from ``coords``; 400 for anything else."""
    if wkt is None:
        raise _bad("missing coords parameter: give POLYGON((lon lat, ...))")
    if not isinstance(wkt, BaseGeometry) or wkt.geom_type not in ("Polygon", "MultiPolygon") or wkt.is_empty:
        raise _bad("coords must be a WKT POLYGON or MULTIPOLYGON in WGS84 lon/lat")
    c = np.asarray(shapely.get_coordinates(wkt), dtype=np.float64)
    _check_lonlat(c)
    if len(c) > _MAX_WKT:
        raise _bad(f"polygon has more than {_MAX_WKT} vertices")
    if not wkt.is_valid:
        raise _bad(f"polygon is not valid: {shapely.is_valid_reason(wkt)}")
    if wkt.area <= 0:
        raise _bad("polygon has no area")
    return shapely.force_2d(wkt)


def parse_bbox(bbox: Any) -> BaseGeometry:
    """A lon/lat box polygon from a 4-number ``bbox``; 400 otherwise (6 numbers: no vertical axis here)."""
    if not bbox:
        raise _bad("cube queries need bbox=minlon,minlat,maxlon,maxlat")
    if len(bbox) != 4:
        raise _bad("these products have no vertical axis: bbox takes 4 numbers minlon,minlat,maxlon,maxlat")
    w, s, e, n = (float(v) for v in bbox)
    _check_lonlat(np.array([[w, s], [e, n]], dtype=np.float64))
    if not (w < e and s < n):
        raise _bad("bbox must have minlon < maxlon and minlat < maxlat (antimeridian-crossing boxes are not"
                   " supported)")
    return shapely.box(w, s, e, n)


def parse_radius(within: Any, units: Any) -> float:
    """Radius in metres from EDR ``within`` and ``within-units`` (m, km or mi)."""
    if within is None or str(within).strip() == "":
        raise _bad("radius queries need within=<distance> and within-units=m|km|mi")
    try:
        value = float(str(within))
    except ValueError:
        raise _bad(f"within must be a number, not {str(within)[:40]!r}") from None
    u = str(units or "").strip().lower()
    if u not in RADIUS_UNITS:
        raise _bad(f"within-units must be one of {', '.join(RADIUS_UNITS)}")
    metres = value * RADIUS_UNITS[u]
    if not math.isfinite(metres) or metres <= 0:
        raise _bad("within must be a positive finite distance")
    if metres > 200_000:
        raise _bad("within is limited to 200 km")
    return metres


# ------------------------------------------------------------------------------------------ windows
@dataclass(frozen=True)
class PixelWindow:
    """Rows ``[row0, row0+height)`` and cols ``[col0, col0+width)`` of a grid."""

    row0: int
    col0: int
    height: int
    width: int

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.height * self.width


def pixel_of(grid: RasterGrid, x: float, y: float) -> tuple[int, int] | None:
    """(row, col) of the pixel of ``grid`` that contains (x, y) in the grid's CRS, or None if outside."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    a, b, c0, d, e, f = grid.inverse
    r, c = math.floor(d * x + e * y + f), math.floor(a * x + b * y + c0)
    if 0 <= r < grid.height and 0 <= c < grid.width:
        return r, c
    return None


def grid_lonlat_bounds(grid: RasterGrid) -> tuple[float, float, float, float]:
    """WGS84 (minlon, minlat, maxlon, maxlat) of a UTM grid's extent (corners and edge midpoints)."""
    from pyproj import Transformer

    x0, y0, x1, y1 = grid.bounds
    xs = [x0, (x0 + x1) / 2, x1, x1, x1, (x0 + x1) / 2, x0, x0]
    ys = [y0, y0, y0, (y0 + y1) / 2, y1, y1, y1, (y0 + y1) / 2]
    lon, lat = Transformer.from_crs(f"EPSG:{grid.epsg}", "EPSG:4326", always_xy=True).transform(xs, ys)
    return float(min(lon)), float(min(lat)), float(max(lon)), float(max(lat))


def window_for_bounds(grid: RasterGrid, bounds: tuple[float, float, float, float]) -> PixelWindow | None:
    """Pixels of a north-up ``grid`` whose extent meets ``bounds`` (minx, miny, maxx, maxy), clipped."""
    if not all(math.isfinite(v) for v in bounds):
        return None
    a, b, c, d, e, f = grid.inverse
    c0, r0 = a * bounds[0] + b * bounds[3] + c, d * bounds[0] + e * bounds[3] + f
    c1, r1 = a * bounds[2] + b * bounds[1] + c, d * bounds[2] + e * bounds[1] + f
    col0, col1 = max(0, math.floor(min(c0, c1))), min(grid.width, math.ceil(max(c0, c1)))
    row0, row1 = max(0, math.floor(min(r0, r1))), min(grid.height, math.ceil(max(r0, r1)))
    if col1 <= col0 or row1 <= row0:
        return None
    return PixelWindow(row0, col0, row1 - row0, col1 - col0)


def pixel_centres(grid: RasterGrid, win: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
    """1-D arrays of the x (columns) and y (rows) pixel-centre coordinates of ``win`` in the grid's CRS."""
    t = grid.transform
    xs = t.c + (np.arange(win.col0, win.col0 + win.width) + 0.5) * t.a
    ys = t.f + (np.arange(win.row0, win.row0 + win.height) + 0.5) * t.e
    return xs, ys


def to_physical(raw: np.ndarray, p: Product) -> list[Any]:
    """Stored values → physical values as a flat list, no-data → None (floats rounded to 10 digits)."""
    flat = raw.ravel()
    nodata = flat == p.nodata
    if is_integer_coded(p):
        phys: np.ndarray = flat.astype(np.int64)
    else:
        phys = np.round(flat.astype(np.float64) * p.scale + p.offset, 10)
    if not nodata.any():
        return list(phys.tolist())
    vals = phys.astype(object)  # Python ints/floats, so that None can take their place
    vals[nodata] = None
    return list(vals.tolist())


# ------------------------------------------------------------------------------------------ provider
class Raw2ReadyEDRProvider(BaseEDRProvider):
    """EDR provider over the raw2ready catalog (``data``: output root, a directory or ``s3://bucket/prefix``)."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        super().__init__(provider_def)
        opts = dict(provider_def.get("options") or {})
        self.catalog = str(provider_def["data"])
        self.collection = str(opts.get("collection", "ndvi"))
        if self.collection not in COLLECTIONS:
            raise ProviderConnectionError(f"unknown raw2ready EDR collection {self.collection!r}")
        self.param_keys = COLLECTIONS[self.collection]
        self.pixel_budget = int(opts.get("pixel_budget", DEFAULT_PIXEL_BUDGET))
        self.read_workers = int(opts.get("read_workers", DEFAULT_READ_WORKERS))
        self.use_cube = bool(opts.get("cube", True))
        self.cube_min_dates = int(opts.get("cube_min_dates", DEFAULT_CUBE_MIN_DATES))
        interval = opts.get("index_check_interval_s")
        self.index_check_interval_s = None if interval is None else float(interval)
        self._fields = self.get_fields()

    # -- pygeoapi metadata hooks
    def get_fields(self) -> dict[str, Any]:
        """Field (parameter) descriptions for pygeoapi: JSON type, title, description and ``x-ogc-unit``."""
        out = {}
        for key in self.param_keys:
            p = BY_KEY[key]
            out[key] = {"type": "integer" if is_integer_coded(p) else "number", "title": p.title,
                        "description": p.description, "x-ogc-unit": product_unit(p)[0]}
        return out

    def get_parameters(self, parameters: Any = None, as_list: bool = False) -> Any:
        """CoverageJSON/EDR parameter descriptions (``parameter_names`` in the collection document)."""
        keys = [k for k in self.param_keys if not parameters or k in set(parameters)]
        params = {k: covjson_parameter(BY_KEY[k]) for k in keys}
        return list(params.values()) if as_list else params

    # -- query types
    def position(self, **kwargs: Any) -> dict[str, Any]:
        """Time series at a point: ``coords=POINT(lon lat)``; see the module docstring."""
        point = parse_point(kwargs.get("wkt"))
        return self._query(QueryShape(point=point), kwargs)

    def radius(self, **kwargs: Any) -> dict[str, Any]:
        """Pixels within a distance of a point: ``coords=POINT(lon lat)&within=500&within-units=m``."""
        point = parse_point(kwargs.get("wkt"))
        metres = parse_radius(kwargs.get("within"), kwargs.get("within_units"))
        return self._query(QueryShape(point=point, radius_m=metres), kwargs)

    def area(self, **kwargs: Any) -> dict[str, Any]:
        """Pixels inside a polygon: ``coords=POLYGON((lon lat, ...))``."""
        geom = parse_area(kwargs.get("wkt"))
        return self._query(QueryShape(geom=geom), kwargs)

    def cube(self, **kwargs: Any) -> dict[str, Any]:
        """Pixels inside a lon/lat box: ``bbox=minlon,minlat,maxlon,maxlat``."""
        geom = parse_bbox(kwargs.get("bbox"))
        return self._query(QueryShape(geom=geom), kwargs)

    # -- common machinery
    def _selected(self, names: Any) -> list[str]:
        if not names:
            return list(self.param_keys)
        wanted = {str(n).strip() for n in names if str(n).strip()}
        unknown = sorted(wanted - set(self.param_keys))
        if unknown:
            raise _bad(f"unknown parameter-name {', '.join(unknown)}; collection {self.collection!r} has "
                       f"{', '.join(self.param_keys)}")
        if not wanted:
            return list(self.param_keys)
        return [k for k in self.param_keys if k in wanted]

    def _index(self) -> tuple[CatalogIndex, Any]:
        try:
            return load_index(self.catalog, self.index_check_interval_s)
        except FileNotFoundError as exc:
            raise ProviderConnectionError(f"catalog index not found below {self.catalog}") from exc
        except TransientError as exc:
            raise ProviderUnavailableError(str(exc)) from exc

    def _query(self, shape: QueryShape, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("z") not in (None, ""):
            raise _bad("these products have no vertical axis; omit z")
        try:
            trange = parse_datetime_query(kwargs.get("datetime_"))
        except DatetimeQueryError as exc:
            raise _bad(str(exc)) from exc
        params = self._selected(kwargs.get("select_properties"))
        index, storage = self._index()
        if shape.geom is None and shape.radius_m is None:
            return self._position(index, storage, shape, trange, params)
        return self._area(index, storage, shape, trange, params)

    @staticmethod
    def _primary(item: IndexItem, params: list[str]) -> RasterGrid | None:
        """Grid of the finest selected parameter ``item`` has (None when it has none of them).

        A selected parameter an item lacks (e.g. an asset added to the pipeline later) is returned as null.
        """
        grids = [item.grids[k] for k in params if k in item.grids and k in item.assets]
        if not grids:
            return None
        return min(grids, key=lambda g: g.resolution)

    def _candidates(self, index: CatalogIndex, shape: QueryShape, trange: TimeRange, params: list[str],
                    covers: Any) -> dict[tuple[str, str], list[tuple[float, str, IndexItem, Any]]]:
        """Per acquisition, the covering items as (distance of the reference point to the tile centre in
        metres, tile, item, coverage info)."""
        groups: dict[tuple[str, str], list[tuple[float, str, IndexItem, Any]]] = defaultdict(list)
        # the index shares one grid instance per distinct grid: a tile's dates cost one test, not one each
        seen: dict[tuple[int, int], tuple[float, Any] | None] = {}
        for i in index.select(trange.start, trange.end, shape.lonlat_bounds(), params):
            item = index.items[i]
            grid = self._primary(item, params)
            if grid is None:
                log.warning("item %s has no grid for %s in the index; rebuild the catalog", item.id, params)
                continue
            key = (item.epsg, id(grid))
            if key not in seen:
                hit = covers(item, grid)
                if hit is None:
                    seen[key] = None
                else:
                    info, (x, y) = hit
                    cx, cy = grid.centre
                    # compared to the metre, so that a point midway between two centres is a tie (→ tile id)
                    finite = math.isfinite(x) and math.isfinite(y)
                    seen[key] = (round(math.hypot(x - cx, y - cy)) if finite else math.inf, info)
            got = seen[key]
            if got is not None:
                groups[item.acquisition].append((got[0], item.tile, item, got[1]))
        return groups

    def _choose(self, index: CatalogIndex, shape: QueryShape, trange: TimeRange, params: list[str],
                covers: Any) -> list[tuple[IndexItem, Any]]:
        """One (item, coverage info) per acquisition, by the nearest-tile-centre rule; in time order."""
        groups = self._candidates(index, shape, trange, params, covers)
        chosen = [min(g, key=lambda t: (t[0], t[1])) for g in groups.values()]
        chosen.sort(key=lambda t: (t[2].datetime, t[2].tile))
        return [(t[2], t[3]) for t in chosen]

    def _owned(self, item: IndexItem, win: PixelWindow, siblings: list[IndexItem],
               params: list[str]) -> np.ndarray | None:
        """Mask of the pixels of ``win`` (on ``item``'s primary grid) that belong to ``item`` rather than to a
        sibling tile of the same acquisition: those whose centre is nearer (to the metre; ties → smaller tile
        id) to ``item``'s raster centre than to the centre of any sibling raster that contains them.
        None when there is no sibling (every pixel is the item's)."""
        others = [o for o in siblings if o.id != item.id]
        if not others:
            return None
        grid = self._primary(item, params)
        assert grid is not None
        xs, ys = pixel_centres(grid, win)
        X, Y = np.meshgrid(xs, ys)
        cx, cy = grid.centre
        mine_d = np.round(np.hypot(X - cx, Y - cy))
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(f"EPSG:{item.epsg}", "EPSG:4326", always_xy=True).transform(X, Y)
        keep = np.ones(X.shape, dtype=bool)
        for o in others:
            og = self._primary(o, params)
            if og is None:
                continue
            ox, oy = _to_utm(o.epsg).transform(lon, lat)
            ox, oy = np.asarray(ox), np.asarray(oy)
            inv = ~og.transform
            col = inv.a * ox + inv.b * oy + inv.c
            row = inv.d * ox + inv.e * oy + inv.f
            inside = (col >= 0) & (col < og.width) & (row >= 0) & (row < og.height)
            ocx, ocy = og.centre
            other_d = np.round(np.hypot(ox - ocx, oy - ocy))
            beats = (other_d < mine_d) | ((other_d == mine_d) & (o.tile < item.tile))
            keep &= ~(inside & beats)
        return keep

    def _budget(self, n_values: int, what: str) -> None:
        if n_values > self.pixel_budget:
            raise _bad(f"request too large: {what} = {n_values} values, above this server's pixel budget of "
                       f"{self.pixel_budget}; narrow the area, the datetime interval or the parameter-name list")

    def _read(self, storage: Any, reqs: list[WindowRead], tags: list[tuple[IndexItem, str]]) -> list[np.ndarray]:
        """Stored values of every window of ``reqs`` (``tags``: the item and product of each), in order.

        ``reqs[i].url`` is the asset's key below the catalog root; it becomes a URL only for the windows read
        from the COGs.

        Windows wanted for ``cube_min_dates`` or more dates of one tile (same product, same pixels) come from
        the time-series store for the dates it holds with the catalog's checksums; everything else, and
        everything the store fails to answer, from the COGs. Both hold the same stored integers.
        """
        out: list[np.ndarray | None] = [None] * len(reqs)
        from_cogs = list(range(len(reqs)))
        if self.use_cube and len(reqs) >= self.cube_min_dates:
            from_cogs = self._read_store(storage, reqs, tags, out)
        if from_cogs:
            try:
                arrays = read_windows([replace(reqs[i], url=storage.url(reqs[i].url)) for i in from_cogs],
                                      workers=self.read_workers,
                                      remote=isinstance(storage, S3Storage))
            except Exception as exc:
                import rasterio.errors

                if isinstance(exc, rasterio.errors.RasterioIOError):
                    log.error("COG read failed: %s", exc)
                    raise ProviderUnavailableError(f"reading a product failed: {exc}") from exc
                raise
            for i, a in zip(from_cogs, arrays, strict=True):
                out[i] = a
        return out  # type: ignore[return-value]

    def _read_store(self, storage: Any, reqs: list[WindowRead], tags: list[tuple[IndexItem, str]],
                    out: list[np.ndarray | None]) -> list[int]:
        """Fill ``out`` from the store where it can; returns the indices left for the COGs."""
        groups: dict[tuple[str, str, int, int, int, int], list[int]] = defaultdict(list)
        for i, (r, (item, key)) in enumerate(zip(reqs, tags, strict=True)):
            groups[(item.tile, key, r.row0, r.col0, r.height, r.width)].append(i)
        rest: list[int] = []
        jobs = []
        reader = cube_reader(self.catalog, storage)
        for (tile, key, r0, c0, h, w), idxs in groups.items():
            if len(idxs) < self.cube_min_dates:
                rest += idxs
                continue
            try:
                where = reader.held(tile, {tags[i][0].id: tags[i][0].checksums for i in idxs}, key)
            except Exception as exc:  # an unreadable manifest is the store's problem, not the query's
                log.warning("time-series store of %s unavailable (%s): reading the COGs", tile, exc)
                where = {}
            rest += [i for i in idxs if tags[i][0].id not in where]
            held = [i for i in idxs if tags[i][0].id in where]
            if held:
                jobs.append((tile, key, held, _CUBE_POOL.submit(reader.read, tile, key, where, r0, c0, h, w,
                                                                 _SEGMENT_POOL)))
        for tile, _key, held, fut in jobs:
            try:
                blocks = fut.result()
            except Exception as exc:  # CubeError (segment replaced or missing), storage errors
                log.warning("time-series store of %s could not answer (%s): reading the COGs", tile, exc)
                reader.refresh(tile)
                rest += held
                continue
            for i in held:
                out[i] = blocks[tags[i][0].id]
        return sorted(rest)

    def _position(self, index: CatalogIndex, storage: Any, shape: QueryShape, trange: TimeRange,
                  params: list[str]) -> dict[str, Any]:
        assert shape.point is not None

        utm: dict[int, tuple[float, float]] = {}  # the point in each UTM zone met (one transform per zone)

        def covers(item: IndexItem, grid: RasterGrid) -> Any:
            xy = utm.get(item.epsg)
            if xy is None:
                xy = utm[item.epsg] = shape.utm_point(item.epsg)
            return (xy, xy) if pixel_of(grid, *xy) is not None else None

        chosen = self._choose(index, shape, trange, params, covers)
        if not chosen:
            raise ProviderNoDataError(user_msg="no acquisition covers this point in the requested time range")
        self._budget(len(chosen) * len(params), f"{len(chosen)} time steps × {len(params)} parameters")
        reqs: list[WindowRead] = []
        tags: list[tuple[IndexItem, str]] = []
        slots: list[tuple[int, str]] = []
        pixels: dict[tuple[int, float, float], tuple[int, int] | None] = {}  # per shared grid instance

        def pixel(grid: RasterGrid, x: float, y: float) -> tuple[int, int] | None:
            key = (id(grid), x, y)
            if key not in pixels:
                pixels[key] = pixel_of(grid, x, y)
            return pixels[key]

        for ti, (item, (x, y)) in enumerate(chosen):
            for k in params:
                rc = pixel(item.grids[k], x, y) if k in item.grids and k in item.assets else None
                if rc is None:  # asset missing, or a coarser grid ends before the finer one: no value
                    continue
                reqs.append(WindowRead(item.assets[k], rc[0], rc[1], 1, 1))
                tags.append((item, k))
                slots.append((ti, k))
        raw = {k: np.full(len(chosen), BY_KEY[k].nodata, dtype=np.int64) for k in params}
        for (ti, k), a in zip(slots, self._read(storage, reqs, tags), strict=True):
            raw[k][ti] = a[0, 0]
        values = {k: to_physical(raw[k], BY_KEY[k]) for k in params}
        lon, lat = shape.point
        return {
            "type": "Coverage",
            "domain": {
                "type": "Domain",
                "domainType": "PointSeries",
                "axes": {"x": {"values": [lon]}, "y": {"values": [lat]},
                         "t": {"values": [it.datetime_text for it, _ in chosen]}},
                "referencing": _referencing_crs84(),
            },
            "parameters": {k: covjson_parameter(BY_KEY[k]) for k in params},
            "ranges": {k: {"type": "NdArray", "dataType": _dtype(BY_KEY[k]), "axisNames": ["t"],
                           "shape": [len(chosen)], "values": values[k]} for k in params},
            "raw2ready:items": [it.id for it, _ in chosen],
        }

    def _area(self, index: CatalogIndex, storage: Any, shape: QueryShape, trange: TimeRange,
              params: list[str]) -> dict[str, Any]:
        utm_cache: dict[RasterGrid, BaseGeometry] = {}

        def geom_in(grid: RasterGrid) -> BaseGeometry:
            if grid not in utm_cache:
                g = shape.utm_geometry(grid.epsg, grid_lonlat_bounds(grid))
                shapely.prepare(g)
                utm_cache[grid] = g
            return utm_cache[grid]

        def covers(item: IndexItem, grid: RasterGrid) -> Any:  # once per grid instance (_candidates)
            g = geom_in(grid)
            win = None if g.is_empty else window_for_bounds(grid, g.bounds)
            c = None if win is None else g.centroid
            return None if win is None or c is None else (win, (float(c.x), float(c.y)))

        acquisitions = self._candidates(index, shape, trange, params, covers)
        if not acquisitions:
            raise ProviderNoDataError(user_msg="no acquisition covers this area in the requested time range")
        chosen = [(t[2], t[3]) for cands in acquisitions.values() for t in cands]
        total = sum(win.size for _, win in chosen) * len(params)
        self._budget(total, f"pixels × {len(acquisitions)} acquisitions × {len(params)} parameters")
        # where tiles of one acquisition overlap, each pixel goes to the tile whose centre is nearest to it
        owned = {item.id: self._owned(item, win, [t[2] for t in acquisitions[item.acquisition]], params)
                 for item, win in chosen}
        chosen = [(item, win) for item, win in chosen if _any_or_none(owned[item.id])]

        # group acquisitions sharing one grid window (same tile) into one Grid coverage with a t axis
        groups: dict[tuple[Any, ...], list[tuple[IndexItem, PixelWindow]]] = defaultdict(list)
        for item, win in sorted(chosen, key=lambda iw: (iw[0].datetime, iw[0].tile)):
            grid = self._primary(item, params)
            assert grid is not None
            groups[(item.epsg, tuple(grid.transform)[:6], grid.width, grid.height, win)].append((item, win))

        plans = []  # per group: (items, grid, win, xs, ys, inside, per-param sampling)
        reqs: list[WindowRead] = []
        tags: list[tuple[IndexItem, str]] = []
        for (_epsg, _t, _w, _h, win), members in sorted(groups.items(), key=lambda kv: kv[1][0][0].datetime):
            grid = self._primary(members[0][0], params)
            assert grid is not None
            xs, ys = pixel_centres(grid, win)
            X, Y = np.meshgrid(xs, ys)
            inside = shapely.contains_xy(geom_in(grid), X, Y)
            samplers: dict[str, Any] = {}
            for k in params:
                kg = next((it.grids[k] for it, _ in members if k in it.grids and k in it.assets), None)
                if kg is None:
                    samplers[k] = "missing"
                    continue
                if kg == grid:
                    samplers[k] = None
                    continue
                inv = ~kg.transform
                cols = np.floor(inv.a * X + inv.b * Y + inv.c).astype(np.int64)
                rows = np.floor(inv.d * X + inv.e * Y + inv.f).astype(np.int64)
                ok = (rows >= 0) & (rows < kg.height) & (cols >= 0) & (cols < kg.width)
                if ok.any():
                    r0, r1 = int(rows[ok].min()), int(rows[ok].max()) + 1
                    c0, c1 = int(cols[ok].min()), int(cols[ok].max()) + 1
                else:
                    r0, r1, c0, c1 = 0, 1, 0, 1
                samplers[k] = (PixelWindow(r0, c0, r1 - r0, c1 - c0), rows - r0, cols - c0, ok)
            slots: dict[tuple[int, str], int] = {}  # (time step, parameter) -> index into reqs
            for ti, (item, _) in enumerate(members):
                for k in params:
                    s = samplers[k]
                    if isinstance(s, str) or k not in item.assets or k not in item.grids:
                        continue  # this item lacks the asset: its values stay null
                    w = win if s is None else s[0]
                    slots[(ti, k)] = len(reqs)
                    reqs.append(WindowRead(item.assets[k], w.row0, w.col0, w.height, w.width))
                    tags.append((item, k))
            plans.append((members, grid, win, xs, ys, inside, samplers, slots))
        arrays = self._read(storage, reqs, tags)

        coverages = []
        for members, _grid, win, xs, ys, inside, samplers, slots in plans:
            nt = len(members)
            ranges = {}
            for k in params:
                p = BY_KEY[k]
                cube = np.full((nt, win.height, win.width), p.nodata, dtype=np.int64)
                tis = [ti for ti in range(nt) if (ti, k) in slots]
                if tis:  # every date of the group at once: one stack, one gather, one mask
                    stack = np.stack([arrays[slots[(ti, k)]] for ti in tis])
                    s = samplers[k]
                    if s is None:
                        cube[tis] = stack
                    else:
                        _w, rr, cc, ok = s
                        planes = np.full((len(tis), win.height, win.width), p.nodata, dtype=np.int64)
                        planes[:, ok] = stack[:, rr[ok], cc[ok]]
                        cube[tis] = planes
                cube[:, ~inside] = p.nodata
                for ti, (item, _) in enumerate(members):
                    mine = owned[item.id]
                    if mine is not None:
                        cube[ti][~mine] = p.nodata
                ranges[k] = {"type": "NdArray", "dataType": _dtype(p), "axisNames": ["t", "y", "x"],
                             "shape": [nt, win.height, win.width], "values": to_physical(cube, p)}
            epsg = members[0][0].epsg
            coverages.append({
                "type": "Coverage",
                "domain": {
                    "type": "Domain",
                    "domainType": "Grid",
                    "axes": {"x": {"values": [float(v) for v in xs]}, "y": {"values": [float(v) for v in ys]},
                             "t": {"values": [it.datetime_text for it, _ in members]}},
                    "referencing": [
                        {"coordinates": ["x", "y"], "system": {
                            "type": "ProjectedCRS", "id": f"http://www.opengis.net/def/crs/EPSG/0/{epsg}"}},
                        {"coordinates": ["t"], "system": {"type": "TemporalRS", "calendar": "Gregorian"}},
                    ],
                },
                "ranges": ranges,
                "raw2ready:items": [it.id for it, _ in members],
                "raw2ready:tile": members[0][0].tile,
            })
        return {
            "type": "CoverageCollection",
            "domainType": "Grid",
            "parameters": {k: covjson_parameter(BY_KEY[k]) for k in params},
            "coverages": coverages,
        }


def _any_or_none(mask: np.ndarray | None) -> bool:
    return mask is None or bool(mask.any())


def _dtype(p: Product) -> str:
    return "integer" if is_integer_coded(p) else "float"


def _referencing_crs84() -> list[dict[str, Any]]:
    return [
        {"coordinates": ["x", "y"], "system": {"type": "GeographicCRS", "id": CRS84}},
        {"coordinates": ["t"], "system": {"type": "TemporalRS", "calendar": "Gregorian"}},
    ]
