"""A pygeoapi EDR provider that reads the raw2ready catalog's COGs (and its time-series store) directly.

pygeoapi's own ``xarray-edr`` provider reads NetCDF/Zarr cubes; this one answers EDR queries from the
catalog's ``index.json`` (see :mod:`steps.edr.index`). One provider instance serves one collection (``ndvi``
or ``lai``); pygeoapi creates a provider per request, so everything expensive (index, reader threads, CRS
transformers) is cached at module level elsewhere.

The provider is a thin adapter over three pieces, one query flowing through them in order:

1. :mod:`steps.edr.query` — pygeoapi's arguments → a validated :class:`~steps.edr.query.EDRQuery` (query
   types ``position``, ``radius``, ``area``, ``cube``; WGS84 lon/lat; ``datetime`` per
   :mod:`steps.edr.timeq`; no vertical axis);
2. :mod:`steps.edr.plan` — query + index → a :class:`~steps.edr.plan.ReadPlan` (which items, tiles, pixels
   and dates; the overlapping-tile rule; the pixel budget), read by :func:`steps.edr.reader.read_plan`
   from the time-series store and the COGs;
3. :mod:`steps.edr.coverage` — plan + values → the CoverageJSON document.

Errors: a malformed query or one above ``pixel_budget`` is 400 (before any read), nothing in range is
"no data", a missing index is a connection error, storage that fails is 503 — never 500.

Provider options (pygeoapi ``providers[].options``): ``collection`` (``ndvi``|``lai``), ``pixel_budget``
(default 4 000 000 values), ``read_workers`` (thread-pool size, default 8), ``cube`` (read from the
time-series store, default true), ``cube_min_dates`` (a window wanted for at least this many dates of one
tile is asked of the store, default 2), ``index_check_interval_s``.
"""

from __future__ import annotations

import logging
from typing import Any

from pygeoapi.provider.base import (
    ProviderConnectionError,
    ProviderGenericError,
    ProviderInvalidQueryError,
    ProviderNoDataError,
)
from pygeoapi.provider.base_edr import BaseEDRProvider

from steps.edr.coverage import build_coverage, covjson_parameter, is_integer_coded, product_unit
from steps.edr.index import CatalogIndex, load_index
from steps.edr.plan import NoDataError, plan_query
from steps.edr.query import COLLECTIONS, QueryError, parse_query
from steps.edr.reader import read_plan
from steps.errors import TransientError
from steps.products.definitions import BY_KEY

log = logging.getLogger(__name__)

DEFAULT_PIXEL_BUDGET = 4_000_000
DEFAULT_READ_WORKERS = 8
#: a window wanted for at least this many dates of one tile is read from the time-series store
DEFAULT_CUBE_MIN_DATES = 2


class ProviderUnavailableError(ProviderGenericError):
    """Storage temporarily unavailable (HTTP 503; retry later)."""

    ogc_exception_code = "NoApplicableCode"
    http_status_code = 503
    default_msg = "storage temporarily unavailable, retry later"


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

    # -- query types (pygeoapi registers the methods of these names)
    def position(self, **kwargs: Any) -> dict[str, Any]:
        """Time series at a point: ``coords=POINT(lon lat)``."""
        return self._answer("position", kwargs)

    def radius(self, **kwargs: Any) -> dict[str, Any]:
        """Pixels within a distance of a point: ``coords=POINT(lon lat)&within=500&within-units=m``."""
        return self._answer("radius", kwargs)

    def area(self, **kwargs: Any) -> dict[str, Any]:
        """Pixels inside a polygon: ``coords=POLYGON((lon lat, ...))``."""
        return self._answer("area", kwargs)

    def cube(self, **kwargs: Any) -> dict[str, Any]:
        """Pixels inside a lon/lat box: ``bbox=minlon,minlat,maxlon,maxlat``."""
        return self._answer("cube", kwargs)

    # -- parse, plan, read, build
    def _index(self) -> tuple[CatalogIndex, Any]:
        try:
            return load_index(self.catalog, self.index_check_interval_s)
        except FileNotFoundError as exc:
            raise ProviderConnectionError(f"catalog index not found below {self.catalog}") from exc
        except TransientError as exc:
            raise ProviderUnavailableError(str(exc)) from exc

    def _answer(self, query_type: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            query = parse_query(query_type, self.collection, kwargs)
        except QueryError as exc:
            raise ProviderInvalidQueryError(user_msg=str(exc)) from exc
        index, storage = self._index()
        try:
            plan = plan_query(index, query, pixel_budget=self.pixel_budget,
                              store_min_dates=self.cube_min_dates if self.use_cube else None)
        except QueryError as exc:
            raise ProviderInvalidQueryError(user_msg=str(exc)) from exc
        except NoDataError as exc:
            raise ProviderNoDataError(user_msg=str(exc)) from exc
        try:
            values = read_plan(plan, storage, self.catalog, workers=self.read_workers)
        except Exception as exc:
            import rasterio.errors

            if isinstance(exc, rasterio.errors.RasterioIOError):
                log.error("COG read failed: %s", exc)
                raise ProviderUnavailableError(f"reading a product failed: {exc}") from exc
            raise
        return build_coverage(plan, values)
