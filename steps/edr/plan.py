"""EDR read planning: a validated query (:mod:`steps.edr.query`) and the catalog index → a :class:`ReadPlan`,
the windows of the product COGs to read (which items, tiles, pixels and dates), which of them the time-series
store may answer instead, and where every value read lands in the answer. Nothing here reads a raster.

Rules
    * Products are in the tile's UTM CRS (item ``proj:code``); the query geometry is transformed per item.
    * ``position``: the pixel that contains the point (pixel-exact, no interpolation), per parameter on that
      parameter's own grid. ``area``/``cube``/``radius``: every pixel whose *centre* lies inside the geometry,
      on the native grid of the finest selected parameter; other parameters (e.g. the 20 m ``cloud_mask``
      next to the 10 m ``ndvi``) are sampled at those centres from the pixel that contains them.
    * Overlapping MGRS tiles: an acquisition is (platform, sensing time to the second); neighbouring tiles of
      one datatake share it. A ground location is served by the tile of that acquisition whose raster centre
      is nearest to it (distance in metres in each tile's own UTM CRS, rounded to the metre; ties go to the
      smaller tile id). ``position`` therefore gets one time step per acquisition; for an area each tile's
      grid keeps only the pixels it owns by that rule, and acquisitions sharing one tile window make one
      grid (with a time axis).
    * A plan whose values (pixels × time steps × parameters) exceed the pixel budget is refused
      (:class:`~steps.edr.query.QueryError`) before anything is read; a query no acquisition covers raises
      :class:`NoDataError`.
    * Windows of one tile and product wanted for at least ``store_min_dates`` dates are candidates for the
      time-series store (:attr:`ReadPlan.store_groups`); the reader takes from it the dates it holds with the
      catalog's checksums and reads everything else from the COGs.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from steps.edr.index import CatalogIndex, IndexItem
from steps.edr.query import EDRQuery, QueryError, QueryShape
from steps.edr.timeq import TimeRange
from steps.products.raster import Grid
from steps.sentinel2.grid import lonlat_to_utm, utm_to_lonlat

log = logging.getLogger(__name__)


class NoDataError(LookupError):
    """No acquisition covers the query's place in its time range (HTTP 204 / no data)."""


# ------------------------------------------------------------------------------------------ pixels
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


def pixel_of(grid: Grid, x: float, y: float) -> tuple[int, int] | None:
    """(row, col) of the pixel of ``grid`` that contains (x, y) in the grid's CRS, or None if outside."""
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    a, b, c0, d, e, f = grid.inverse
    r, c = math.floor(d * x + e * y + f), math.floor(a * x + b * y + c0)
    if 0 <= r < grid.height and 0 <= c < grid.width:
        return r, c
    return None


def grid_lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """WGS84 (minlon, minlat, maxlon, maxlat) of a UTM grid's extent (corners and edge midpoints)."""
    x0, y0, x1, y1 = grid.bounds
    xs = [x0, (x0 + x1) / 2, x1, x1, x1, (x0 + x1) / 2, x0, x0]
    ys = [y0, y0, y0, (y0 + y1) / 2, y1, y1, y1, (y0 + y1) / 2]
    lon, lat = utm_to_lonlat(grid.epsg).transform(xs, ys)
    return float(min(lon)), float(min(lat)), float(max(lon)), float(max(lat))


def window_for_bounds(grid: Grid, bounds: tuple[float, float, float, float]) -> PixelWindow | None:
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


def pixel_centres(grid: Grid, win: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
    """1-D arrays of the x (columns) and y (rows) pixel-centre coordinates of ``win`` in the grid's CRS."""
    t = grid.transform
    xs = t.c + (np.arange(win.col0, win.col0 + win.width) + 0.5) * t.a
    ys = t.f + (np.arange(win.row0, win.row0 + win.height) + 0.5) * t.e
    return xs, ys


# ------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class PlannedRead:
    """One window of one product asset (``key``) of one item."""

    item: IndexItem
    key: str
    window: PixelWindow

    @property
    def asset(self) -> str:
        """The asset's key below the catalog root."""
        return self.item.assets[self.key]


@dataclass(frozen=True, eq=False)
class Resample:
    """How a coarser parameter fills a grid: its ``window``, and for each grid pixel the row and column in that
    window of the pixel containing the grid pixel's centre (used where ``inside`` is true)."""

    window: PixelWindow
    rows: np.ndarray
    cols: np.ndarray
    inside: np.ndarray


@dataclass(frozen=True)
class SeriesPlan:
    """A ``position`` answer: one time step per acquisition covering ``point`` (lon, lat), in time order."""

    point: tuple[float, float]
    steps: tuple[IndexItem, ...]


@dataclass(frozen=True, eq=False)
class GridPlan:
    """One grid coverage of an area answer: the items (time steps) sharing one window of one tile's grid.

    ``xs``/``ys``: the pixel-centre coordinates (metres of ``epsg``); ``inside``: pixels whose centre is in the
    query geometry; ``owned``: per time step, the pixels its item owns where tiles overlap (None: all);
    ``resample``: per parameter not on ``grid`` the :class:`Resample` (None: read on ``grid`` itself; a
    parameter no item has is absent).
    """

    items: tuple[IndexItem, ...]
    grid: Grid
    window: PixelWindow
    xs: np.ndarray
    ys: np.ndarray
    inside: np.ndarray
    owned: tuple[np.ndarray | None, ...]
    resample: Mapping[str, Resample | None]

    @property
    def epsg(self) -> int:
        """CRS of the coverage (the tile's UTM zone)."""
        return self.items[0].epsg


@dataclass(frozen=True)
class ReadPlan:
    """What a query reads and where each value goes.

    ``reads``: every window to read, in order; ``slots``: (coverage, time step, parameter) → index into
    ``reads`` (a missing slot is a null: the item lacks that asset, or a coarser grid ends before the finer
    one); ``store_groups``: indices of ``reads`` sharing one tile, product and window for at least
    ``store_min_dates`` dates — candidates for the time-series store. Exactly one of ``series`` (position)
    and ``grids`` (area, cube, radius) is set.
    """

    params: tuple[str, ...]
    reads: tuple[PlannedRead, ...]
    slots: Mapping[tuple[int, int, str], int]
    store_groups: tuple[tuple[int, ...], ...] = ()
    series: SeriesPlan | None = None
    grids: tuple[GridPlan, ...] = ()


# ------------------------------------------------------------------------------------------ planning
Covers = Callable[[IndexItem, Grid], Any]
_Planned = tuple[list[PlannedRead], dict[tuple[int, int, str], int], SeriesPlan | None, list[GridPlan]]


def plan_query(index: CatalogIndex, query: EDRQuery, *, pixel_budget: int,
               store_min_dates: int | None = None) -> ReadPlan:
    """The :class:`ReadPlan` of ``query`` over ``index``; ``store_min_dates`` None: everything from the COGs.

    Raises :class:`NoDataError` when no acquisition covers the query, :class:`QueryError` above the budget.
    """
    planner = _Planner(index, query, pixel_budget)
    reads, slots, series, grids = planner.position() if query.shape.is_point else planner.area()
    return ReadPlan(params=query.params, reads=tuple(reads), slots=slots,
                    store_groups=store_groups(reads, store_min_dates), series=series, grids=tuple(grids))


def store_groups(reads: list[PlannedRead], min_dates: int | None) -> tuple[tuple[int, ...], ...]:
    """Indices of ``reads`` of one tile, product and window wanted for ``min_dates`` dates or more (in order of
    first appearance); none when ``min_dates`` is None."""
    if min_dates is None:
        return ()
    groups: dict[tuple[str, str, PixelWindow], list[int]] = defaultdict(list)
    for i, r in enumerate(reads):
        groups[(r.item.tile, r.key, r.window)].append(i)
    return tuple(tuple(idxs) for idxs in groups.values() if len(idxs) >= min_dates)


def primary_grid(item: IndexItem, params: tuple[str, ...]) -> Grid | None:
    """Grid of the finest selected parameter ``item`` has (None when it has none of them).

    A selected parameter an item lacks (e.g. an asset added to the pipeline later) is returned as null.
    """
    grids = [item.grids[k] for k in params if k in item.grids and k in item.assets]
    if not grids:
        return None
    return min(grids, key=lambda g: abs(g.res))


class _Planner:
    """The planning of one query (the caches below live for one query)."""

    def __init__(self, index: CatalogIndex, query: EDRQuery, pixel_budget: int) -> None:
        self.index = index
        self.shape: QueryShape = query.shape
        self.trange: TimeRange = query.trange
        self.params = query.params
        self.pixel_budget = pixel_budget

    def _budget(self, n_values: int, what: str) -> None:
        if n_values > self.pixel_budget:
            raise QueryError(f"request too large: {what} = {n_values} values, above this server's pixel budget of "
                             f"{self.pixel_budget}; narrow the area, the datetime interval or the parameter-name list")

    def _candidates(self, covers: Covers) -> dict[tuple[str, str], list[tuple[float, str, IndexItem, Any]]]:
        """Per acquisition, the covering items as (distance of the reference point to the tile centre in
        metres, tile, item, coverage info)."""
        groups: dict[tuple[str, str], list[tuple[float, str, IndexItem, Any]]] = defaultdict(list)
        # the index shares one grid instance per distinct grid: a tile's dates cost one test, not one each
        seen: dict[tuple[int, int], tuple[float, Any] | None] = {}
        for i in self.index.select(self.trange.start, self.trange.end, self.shape.lonlat_bounds(),
                                   list(self.params)):
            item = self.index.items[i]
            grid = primary_grid(item, self.params)
            if grid is None:
                log.warning("item %s has no grid for %s in the index; rebuild the catalog", item.id,
                            list(self.params))
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

    def _owned(self, item: IndexItem, win: PixelWindow, siblings: list[IndexItem]) -> np.ndarray | None:
        """Mask of the pixels of ``win`` (on ``item``'s primary grid) that belong to ``item`` rather than to a
        sibling tile of the same acquisition: those whose centre is nearer (to the metre; ties → smaller tile
        id) to ``item``'s raster centre than to the centre of any sibling raster that contains them.
        None when there is no sibling (every pixel is the item's)."""
        others = [o for o in siblings if o.id != item.id]
        if not others:
            return None
        grid = primary_grid(item, self.params)
        assert grid is not None
        xs, ys = pixel_centres(grid, win)
        X, Y = np.meshgrid(xs, ys)
        cx, cy = grid.centre
        mine_d = np.round(np.hypot(X - cx, Y - cy))
        lon, lat = utm_to_lonlat(item.epsg).transform(X, Y)
        keep = np.ones(X.shape, dtype=bool)
        for o in others:
            og = primary_grid(o, self.params)
            if og is None:
                continue
            ox, oy = lonlat_to_utm(o.epsg).transform(lon, lat)
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

    # -- position: one pixel per acquisition
    def position(self) -> _Planned:
        shape, params = self.shape, self.params
        assert shape.point is not None
        utm: dict[int, tuple[float, float]] = {}  # the point in each UTM zone met (one transform per zone)

        def covers(item: IndexItem, grid: Grid) -> Any:
            xy = utm.get(item.epsg)
            if xy is None:
                xy = utm[item.epsg] = shape.utm_point(item.epsg)
            return (xy, xy) if pixel_of(grid, *xy) is not None else None

        groups = self._candidates(covers)
        best = [min(g, key=lambda t: (t[0], t[1])) for g in groups.values()]
        best.sort(key=lambda t: (t[2].datetime, t[2].tile))
        chosen: list[tuple[IndexItem, tuple[float, float]]] = [(t[2], t[3]) for t in best]
        if not chosen:
            raise NoDataError("no acquisition covers this point in the requested time range")
        self._budget(len(chosen) * len(params), f"{len(chosen)} time steps × {len(params)} parameters")
        reads: list[PlannedRead] = []
        slots: dict[tuple[int, int, str], int] = {}
        pixels: dict[tuple[int, float, float], tuple[int, int] | None] = {}  # per shared grid instance

        def pixel(grid: Grid, x: float, y: float) -> tuple[int, int] | None:
            key = (id(grid), x, y)
            if key not in pixels:
                pixels[key] = pixel_of(grid, x, y)
            return pixels[key]

        for ti, (item, (x, y)) in enumerate(chosen):
            for k in params:
                rc = pixel(item.grids[k], x, y) if k in item.grids and k in item.assets else None
                if rc is None:  # asset missing, or a coarser grid ends before the finer one: no value
                    continue
                slots[(0, ti, k)] = len(reads)
                reads.append(PlannedRead(item, k, PixelWindow(rc[0], rc[1], 1, 1)))
        return reads, slots, SeriesPlan(shape.point, tuple(it for it, _ in chosen)), []

    # -- area, cube, radius: the pixels inside, one grid per tile window
    def area(self) -> _Planned:
        shape, params = self.shape, self.params
        utm_cache: dict[Grid, BaseGeometry] = {}

        def geom_in(grid: Grid) -> BaseGeometry:
            if grid not in utm_cache:
                g = shape.utm_geometry(grid.epsg, grid_lonlat_bounds(grid))
                shapely.prepare(g)
                utm_cache[grid] = g
            return utm_cache[grid]

        def covers(item: IndexItem, grid: Grid) -> Any:  # once per grid instance (_candidates)
            g = geom_in(grid)
            win = None if g.is_empty else window_for_bounds(grid, g.bounds)
            c = None if win is None else g.centroid
            return None if win is None or c is None else (win, (float(c.x), float(c.y)))

        acquisitions = self._candidates(covers)
        if not acquisitions:
            raise NoDataError("no acquisition covers this area in the requested time range")
        chosen: list[tuple[IndexItem, PixelWindow]] = [(t[2], t[3]) for cands in acquisitions.values()
                                                        for t in cands]
        total = sum(win.size for _, win in chosen) * len(params)
        self._budget(total, f"pixels × {len(acquisitions)} acquisitions × {len(params)} parameters")
        # where tiles of one acquisition overlap, each pixel goes to the tile whose centre is nearest to it
        owned = {item.id: self._owned(item, win, [t[2] for t in acquisitions[item.acquisition]])
                 for item, win in chosen}
        chosen = [(item, win) for item, win in chosen if _any_or_none(owned[item.id])]

        # group acquisitions sharing one grid window (same tile) into one Grid coverage with a t axis
        groups: dict[tuple[Any, ...], list[tuple[IndexItem, PixelWindow]]] = defaultdict(list)
        for item, win in sorted(chosen, key=lambda iw: (iw[0].datetime, iw[0].tile)):
            grid = primary_grid(item, params)
            assert grid is not None
            groups[(item.epsg, tuple(grid.transform)[:6], grid.width, grid.height, win)].append((item, win))

        plans: list[GridPlan] = []
        reads: list[PlannedRead] = []
        slots: dict[tuple[int, int, str], int] = {}
        for gi, ((_epsg, _t, _w, _h, win), members) in enumerate(
                sorted(groups.items(), key=lambda kv: kv[1][0][0].datetime)):
            grid = primary_grid(members[0][0], params)
            assert grid is not None
            xs, ys = pixel_centres(grid, win)
            X, Y = np.meshgrid(xs, ys)
            inside = shapely.contains_xy(geom_in(grid), X, Y)
            resample: dict[str, Resample | None] = {}
            for k in params:
                kg = next((it.grids[k] for it, _ in members if k in it.grids and k in it.assets), None)
                if kg is None:
                    continue  # no item of the group has it: null
                resample[k] = None if kg == grid else _resample(kg, X, Y)
            for ti, (item, _) in enumerate(members):
                for k in params:
                    if k not in resample or k not in item.assets or k not in item.grids:
                        continue  # this item lacks the asset: its values stay null
                    s = resample[k]
                    slots[(gi, ti, k)] = len(reads)
                    reads.append(PlannedRead(item, k, win if s is None else s.window))
            plans.append(GridPlan(items=tuple(it for it, _ in members), grid=grid, window=win, xs=xs, ys=ys,
                                  inside=inside, owned=tuple(owned[it.id] for it, _ in members),
                                  resample=resample))
        return reads, slots, None, plans


def _resample(kg: Grid, X: np.ndarray, Y: np.ndarray) -> Resample:
    """The window of grid ``kg`` holding the pixel centres (X, Y), and where each centre falls in it."""
    inv = ~kg.transform
    cols = np.floor(inv.a * X + inv.b * Y + inv.c).astype(np.int64)
    rows = np.floor(inv.d * X + inv.e * Y + inv.f).astype(np.int64)
    ok = (rows >= 0) & (rows < kg.height) & (cols >= 0) & (cols < kg.width)
    if ok.any():
        r0, r1 = int(rows[ok].min()), int(rows[ok].max()) + 1
        c0, c1 = int(cols[ok].min()), int(cols[ok].max()) + 1
    else:
        r0, r1, c0, c1 = 0, 1, 0, 1
    return Resample(PixelWindow(r0, c0, r1 - r0, c1 - c0), rows - r0, cols - c0, ok)


def _any_or_none(mask: np.ndarray | None) -> bool:
    return mask is None or bool(mask.any())
