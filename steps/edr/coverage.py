"""CoverageJSON building: a :class:`~steps.edr.plan.ReadPlan` and the stored values read for it → the answer.

* ``position``: one ``PointSeries`` coverage (axes x, y in CRS84 and t).
* ``area``/``cube``/``radius``: a ``CoverageCollection`` of ``Grid`` coverages in the tile's UTM CRS, one per
  planned grid (usually one per tile), each with a ``t`` axis over its acquisitions; pixels outside the
  geometry, outside the tile or owned by an overlapping tile are ``null``.
* Every coverage lists the item ids behind its time steps in ``raw2ready:items`` (grids: also
  ``raw2ready:tile``).
* Values are physical: stored × scale + offset (:mod:`steps.products.definitions`), floats rounded to 10
  digits; stored no-data (−32768 for NDVI and LAI — cloud-masked pixels included — and 255 for
  ``cloud_mask``/``lai_flags``) and values not read (an asset an item lacks) are ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from steps.edr.plan import GridPlan, ReadPlan, SeriesPlan
from steps.products.definitions import BY_KEY, Product

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
UCUM = "http://www.opengis.net/def/uom/UCUM/"
_UNITS: dict[str, tuple[str, str]] = {  # product key -> (UCUM symbol, label)
    "ndvi": ("1", "dimensionless"),
    "lai": ("m2.m-2", "m²/m²"),
    "lai_flags": ("1", "bit flags"),
    "cloud_mask": ("1", "class code"),
}


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


def _dtype(p: Product) -> str:
    return "integer" if is_integer_coded(p) else "float"


# ------------------------------------------------------------------------------------------ coverages
def build_coverage(plan: ReadPlan, values: Sequence[np.ndarray]) -> dict[str, Any]:
    """The CoverageJSON document of ``plan``; ``values[i]``: the stored window of ``plan.reads[i]``."""
    if plan.series is not None:
        return _point_series(plan, plan.series, values)
    return {
        "type": "CoverageCollection",
        "domainType": "Grid",
        "parameters": {k: covjson_parameter(BY_KEY[k]) for k in plan.params},
        "coverages": [_grid(plan, gi, g, values) for gi, g in enumerate(plan.grids)],
    }


def _point_series(plan: ReadPlan, series: SeriesPlan, values: Sequence[np.ndarray]) -> dict[str, Any]:
    params, nt = plan.params, len(series.steps)
    raw = {k: np.full(nt, BY_KEY[k].nodata, dtype=np.int64) for k in params}
    for (_g, ti, k), i in plan.slots.items():
        raw[k][ti] = values[i][0, 0]
    lon, lat = series.point
    return {
        "type": "Coverage",
        "domain": {
            "type": "Domain",
            "domainType": "PointSeries",
            "axes": {"x": {"values": [lon]}, "y": {"values": [lat]},
                     "t": {"values": [it.datetime_text for it in series.steps]}},
            "referencing": [
                {"coordinates": ["x", "y"], "system": {"type": "GeographicCRS", "id": CRS84}},
                {"coordinates": ["t"], "system": {"type": "TemporalRS", "calendar": "Gregorian"}},
            ],
        },
        "parameters": {k: covjson_parameter(BY_KEY[k]) for k in params},
        "ranges": {k: {"type": "NdArray", "dataType": _dtype(BY_KEY[k]), "axisNames": ["t"],
                       "shape": [nt], "values": to_physical(raw[k], BY_KEY[k])} for k in params},
        "raw2ready:items": [it.id for it in series.steps],
    }


def _grid(plan: ReadPlan, gi: int, g: GridPlan, values: Sequence[np.ndarray]) -> dict[str, Any]:
    nt, win = len(g.items), g.window
    ranges = {}
    for k in plan.params:
        p = BY_KEY[k]
        cube = np.full((nt, win.height, win.width), p.nodata, dtype=np.int64)
        tis = [ti for ti in range(nt) if (gi, ti, k) in plan.slots]
        if tis:  # every date of the grid at once: one stack, one gather, one mask
            stack = np.stack([values[plan.slots[(gi, ti, k)]] for ti in tis])
            s = g.resample[k]
            if s is None:
                cube[tis] = stack
            else:
                planes = np.full((len(tis), win.height, win.width), p.nodata, dtype=np.int64)
                planes[:, s.inside] = stack[:, s.rows[s.inside], s.cols[s.inside]]
                cube[tis] = planes
        cube[:, ~g.inside] = p.nodata
        for ti, mine in enumerate(g.owned):
            if mine is not None:
                cube[ti][~mine] = p.nodata
        ranges[k] = {"type": "NdArray", "dataType": _dtype(p), "axisNames": ["t", "y", "x"],
                     "shape": [nt, win.height, win.width], "values": to_physical(cube, p)}
    return {
        "type": "Coverage",
        "domain": {
            "type": "Domain",
            "domainType": "Grid",
            "axes": {"x": {"values": [float(v) for v in g.xs]}, "y": {"values": [float(v) for v in g.ys]},
                     "t": {"values": [it.datetime_text for it in g.items]}},
            "referencing": [
                {"coordinates": ["x", "y"], "system": {
                    "type": "ProjectedCRS", "id": f"http://www.opengis.net/def/crs/EPSG/0/{g.epsg}"}},
                {"coordinates": ["t"], "system": {"type": "TemporalRS", "calendar": "Gregorian"}},
            ],
        },
        "ranges": ranges,
        "raw2ready:items": [it.id for it in g.items],
        "raw2ready:tile": g.items[0].tile,
    }
