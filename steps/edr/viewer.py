"""The web viewer at ``/viewer``: a map of one date's NDVI or LAI, point and field time series from the EDR API.

:class:`ViewerApp` is a WSGI dispatcher in front of the pygeoapi application (see :mod:`steps.edr.app`). It
answers these paths itself and passes every other request through:

``GET /viewer``
    The page (``steps/data/viewer/viewer.html``, a Jinja template shaped like pygeoapi's own pages: the same
    header, breadcrumbs and footer, pygeoapi's ``/static/css/default.css``, and a vendored copy of the
    Bootstrap CSS pygeoapi's templates use, so that nothing is loaded from a CDN). The page's script
    (``viewer.js``, plain JavaScript, no build step) uses the vendored Leaflet for the map, draws its own SVG
    charts and queries the EDR API (``/collections/{ndvi,lai}/position`` and ``/area``) for the series.
    Every URL in the page is relative, so the viewer works behind a reverse proxy with a path prefix.
``GET /viewer/static/<path>``
    The page's script and style sheet and the vendored libraries (``steps/data/viewer/``: ``viewer.js``,
    ``viewer.css``, ``vendor/leaflet``, ``vendor/bootstrap``, each library with its LICENSE).
``GET /viewer/items.json``
    The catalog's acquisition dates, items (id, datetime, tile, WGS84 bbox, products) and, per product,
    the colour ramp used by the tiles (for the legend), from the live catalog index.
``GET /viewer/tiles/<key>/<product>/<z>/<x>/<y>.png``
    A 256² Web-Mercator (``WebMercatorQuad``) XYZ tile of ``ndvi`` or ``lai``, coloured with the product's
    ramp; no-data (cloud-masked pixels included) is transparent. ``<key>`` is an item id (that scene only)
    or a UTC day ``YYYY-MM-DD`` (every scene of that day that meets the tile; where scenes overlap, the one
    whose footprint centre is nearest to the tile's centre is drawn on top — close to the EDR rule that the
    tile whose raster centre is nearest serves a location).

It also adds a link to the viewer to pygeoapi's landing page (``/``): a ``related`` link in the JSON
document's ``links`` and a "Web viewer" section in the HTML page.

Why rio-tiler for the tiles: a tile is read with ``rio_tiler.io.Reader.tile``, which picks the COG overview
whose resolution matches the zoom level (a zoomed-out tile of a 10 980² scene reads a few hundred pixels of an
internal overview, not the full-resolution raster), reprojects the tile's window from the scene's UTM CRS to
Web Mercator with nearest-neighbour resampling (displayed pixels are stored values, never blends of a value
and no-data) and carries the no-data mask. Doing the same with a hand-made ``WarpedVRT`` would mean
re-implementing the overview choice. Assets are located exactly as the EDR provider locates them (the index's
asset keys below the catalog's storage root: a local path or ``s3://``, read under
:func:`steps.storage.gdal_env` for the output side).
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from steps.edr.index import CatalogIndex, IndexItem, load_index
from steps.edr.wsgi import StartResponse, WSGIApp, buffered
from steps.products.definitions import BY_KEY
from steps.storage import S3Storage
from steps.times import format_datetime

log = logging.getLogger(__name__)


PREFIX = "/viewer"
TILE_SIZE = 256
MIN_ZOOM = 8  # below this a tile could meet dozens of scenes; the page shows footprints only
MAX_ZOOM = 22
MAX_SCENES_PER_TILE = 12
_TILE_PATH = re.compile(r"^/viewer/tiles/([A-Za-z0-9_.:-]+)/([a-z_]+)/(\d{1,2})/(\d{1,8})/(\d{1,8})\.png$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STATIC_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STATIC_SUFFIXES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml"}
_DATA = ("data", "viewer")


# ------------------------------------------------------------------------------------------ colour ramps
@dataclass(frozen=True)
class Ramp:
    """A colour ramp over physical values ``vmin..vmax``: colours at stop values, linear in between.

    Values outside the range take the end colours. ``stops`` are (value, (r, g, b)) in increasing value.
    """

    vmin: float
    vmax: float
    stops: tuple[tuple[float, tuple[int, int, int]], ...]

    def lut(self) -> np.ndarray:
        """(256, 3) uint8 colours for the 256 equal steps of ``vmin..vmax`` (index 0 = vmin, 255 = vmax)."""
        v = np.linspace(self.vmin, self.vmax, 256)
        xs = [s[0] for s in self.stops]
        return np.stack([np.interp(v, xs, [s[1][c] for s in self.stops]) for c in range(3)], axis=1).round().astype(
            np.uint8)

    def to_json(self) -> dict[str, Any]:
        """The ramp for the page's legend: range and stops as ``[value, "#rrggbb"]``."""
        return {"min": self.vmin, "max": self.vmax,
                "stops": [[v, "#{:02x}{:02x}{:02x}".format(*rgb)] for v, rgb in self.stops]}


#: NDVI: blue-grey below 0 (water, shadowed bare ground), tan at 0, then yellow to dark green; most of the
#: colour change is spent on 0…1 where vegetation differs.
NDVI_RAMP = Ramp(-1.0, 1.0, (
    (-1.0, (38, 70, 140)), (-0.2, (150, 160, 180)), (0.0, (196, 176, 140)), (0.2, (232, 218, 128)),
    (0.4, (166, 204, 92)), (0.6, (84, 164, 62)), (0.8, (24, 112, 44)), (1.0, (0, 62, 26)),
))
#: LAI (m²/m²): pale straw for bare soil to dark green for dense canopies; the SNAP network's range is 0…8.
LAI_RAMP = Ramp(0.0, 7.0, (
    (0.0, (246, 240, 204)), (1.0, (214, 230, 150)), (2.0, (164, 206, 100)), (3.0, (108, 176, 70)),
    (4.5, (48, 134, 52)), (7.0, (0, 70, 34)),
))
RAMPS: dict[str, Ramp] = {"ndvi": NDVI_RAMP, "lai": LAI_RAMP}
_LABELS = {"ndvi": "NDVI", "lai": "LAI"}


def colourise(raw: np.ndarray, valid: np.ndarray, product: str) -> tuple[np.ndarray, np.ndarray]:
    """Stored integers of ``product`` → ((3, h, w) uint8 RGB, (h, w) uint8 alpha: 255 valid, 0 no data).

    ``raw``: (h, w) stored values; ``valid``: (h, w) bool, False for no-data. Physical value = raw × scale +
    offset (:mod:`steps.products.definitions`), mapped onto the product's :data:`RAMPS` entry.
    """
    p, ramp = BY_KEY[product], RAMPS[product]
    phys = raw.astype(np.float64) * p.scale + p.offset
    idx = np.clip(np.rint((phys - ramp.vmin) / (ramp.vmax - ramp.vmin) * 255.0), 0, 255).astype(np.uint8)
    rgb = np.moveaxis(ramp.lut()[idx], -1, 0)
    rgb[:, ~valid] = 0
    return np.ascontiguousarray(rgb), np.where(valid, 255, 0).astype(np.uint8)


def encode_png(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
    """An RGBA PNG from (3, h, w) uint8 colours and an (h, w) uint8 alpha."""
    from rio_tiler.utils import render

    return bytes(render(rgb, mask=alpha, img_format="PNG"))


_EMPTY: dict[int, bytes] = {}


def empty_png() -> bytes:
    """A fully transparent tile."""
    if TILE_SIZE not in _EMPTY:
        _EMPTY[TILE_SIZE] = encode_png(np.zeros((3, TILE_SIZE, TILE_SIZE), np.uint8),
                                       np.zeros((TILE_SIZE, TILE_SIZE), np.uint8))
    return _EMPTY[TILE_SIZE]


# ------------------------------------------------------------------------------------------ catalog views
def day_of(item: IndexItem) -> str:
    """The item's UTC acquisition day, ``YYYY-MM-DD``."""
    return item.datetime.astimezone(UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class _Views:
    index: CatalogIndex
    by_id: dict[str, IndexItem]
    by_day: dict[str, list[IndexItem]]


_VIEWS: list[_Views] = []
_VIEWS_LOCK = threading.Lock()


def _views(index: CatalogIndex) -> _Views:
    """Lookups by id and by day for ``index`` (rebuilt when the index object changes)."""
    with _VIEWS_LOCK:
        if _VIEWS and _VIEWS[0].index is index:
            return _VIEWS[0]
        by_day: dict[str, list[IndexItem]] = {}
        for it in index.items:
            by_day.setdefault(day_of(it), []).append(it)
        v = _Views(index, {it.id: it for it in index.items}, by_day)
        _VIEWS[:] = [v]
        return v


def items_document(index: CatalogIndex) -> dict[str, Any]:
    """``/viewer/items.json``: dates (each with its items and their union bbox), items and colour ramps.

    bboxes are WGS84 ``[minlon, minlat, maxlon, maxlat]``; datetimes RFC 3339 UTC; dates UTC days.
    """
    views = _views(index)
    items = [{"id": it.id, "datetime": format_datetime(it.datetime), "date": day_of(it), "tile": it.tile,
              "bbox": list(it.bbox), "products": [k for k in RAMPS if k in it.assets]} for it in index.items]
    dates = []
    for day in sorted(views.by_day):
        members = views.by_day[day]
        b = np.array([it.bbox for it in members])
        dates.append({"date": day, "items": [it.id for it in members], "tiles": sorted({it.tile for it in members}),
                      "bbox": [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()),
                               float(b[:, 3].max())]})
    bbox, _first, _last = index.extent()
    return {
        "type": "raw2ready-viewer-items",
        "bbox": bbox,
        "dates": dates,
        "items": items,
        "products": {k: {"title": _LABELS[k], "unit": BY_KEY[k].unit or "", "collection": k,
                         "ramp": RAMPS[k].to_json()} for k in RAMPS},
        "tiles": {"url": "viewer/tiles/{key}/{product}/{z}/{x}/{y}.png", "minzoom": MIN_ZOOM, "maxzoom": MAX_ZOOM,
                  "tilesize": TILE_SIZE},
    }


# ------------------------------------------------------------------------------------------ tiles
def _tile_lonlat_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    n = 2.0 ** z

    def lat(row: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def scenes_for_tile(index: CatalogIndex, key: str, product: str, z: int, x: int, y: int) -> list[IndexItem]:
    """The scenes to draw into tile ``z/x/y`` for ``key`` (an item id or a UTC day), top-most first.

    Only scenes that have ``product`` and whose bbox meets the tile; nearest footprint centre first; at most
    :data:`MAX_SCENES_PER_TILE`. Raises ``KeyError`` for an unknown key.
    """
    views = _views(index)
    if key in views.by_id:
        candidates = [views.by_id[key]]
    elif _DAY.match(key):
        candidates = views.by_day.get(key, [])
    else:
        raise KeyError(key)
    w, s, e, n = _tile_lonlat_bounds(z, x, y)
    cx, cy = (w + e) / 2, (s + n) / 2
    hits = [it for it in candidates
            if product in it.assets and it.bbox[0] <= e and it.bbox[2] >= w and it.bbox[1] <= n and it.bbox[3] >= s]
    hits.sort(key=lambda it: ((it.bbox[0] + it.bbox[2]) / 2 - cx) ** 2 + ((it.bbox[1] + it.bbox[3]) / 2 - cy) ** 2)
    return hits[:MAX_SCENES_PER_TILE]


def render_tile(catalog: str, key: str, product: str, z: int, x: int, y: int) -> bytes:
    """The PNG of XYZ tile ``z/x/y`` (Web Mercator, 256²) of ``product`` for ``key`` (item id or UTC day).

    Transparent where no scene has data (and for zoom levels below :data:`MIN_ZOOM`). Raises ``KeyError``
    for an unknown key, ``ValueError`` for an unknown product.
    """
    import morecantile
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    if product not in RAMPS:
        raise ValueError(f"unknown product {product!r} (one of {', '.join(RAMPS)})")
    index, storage = load_index(catalog)
    scenes = scenes_for_tile(index, key, product, z, x, y)
    if z < MIN_ZOOM or not scenes:
        return empty_png()
    tms = morecantile.tms.get("WebMercatorQuad")
    raw = np.zeros((TILE_SIZE, TILE_SIZE), dtype=np.int32)
    filled = np.zeros((TILE_SIZE, TILE_SIZE), dtype=bool)
    with _gdal_env(isinstance(storage, S3Storage)):
        for it in scenes:
            url = storage.url(it.assets[product])
            with Reader(url, tms=tms, options={"resampling_method": "nearest", "reproject_method": "nearest"}) as src:
                if not src.tile_exists(x, y, z):
                    continue
                try:
                    img = src.tile(x, y, z, tilesize=TILE_SIZE, indexes=1)
                except TileOutsideBounds:
                    continue
            band = img.array[0]
            valid = ~np.ma.getmaskarray(band)
            take = valid & ~filled
            raw[take] = np.asarray(band.data)[take]
            filled |= take
            if filled.all():
                break
    if not filled.any():
        return empty_png()
    return encode_png(*colourise(raw, filled, product))


def _gdal_env(remote: bool) -> Any:
    import rasterio

    from steps.storage import gdal_env

    return gdal_env(side="output") if remote else rasterio.Env()  # product COGs live on the output side


# ------------------------------------------------------------------------------------------ landing page
def add_landing_link(doc: dict[str, Any], href: str) -> dict[str, Any]:
    """Add the viewer's link to a landing-page JSON document (once)."""
    links = doc.get("links")
    if isinstance(links, list) and not any(isinstance(lk, dict) and lk.get("href") == href for lk in links):
        links.append({"rel": "related", "type": "text/html", "title": "Web viewer: NDVI/LAI map and time series",
                      "href": href})
    return doc


def add_landing_section(page: str, href: str) -> str:
    """Insert a "Web viewer" section into pygeoapi's landing page HTML (before "API Definition")."""
    if f'href="{html.escape(href)}"' in page:
        return page
    section = (f'<section id="viewer">\n  <h2>Web viewer</h2>\n  <p><a href="{html.escape(href)}">'
               "Map of NDVI and LAI by date, with point and field time series</a></p>\n</section>\n")
    for anchor in ('<section id="openapi">', "</main>"):
        i = page.find(anchor)
        if i >= 0:
            return page[:i] + section + page[i:]
    return page


# ------------------------------------------------------------------------------------------ WSGI
def _data_dir() -> Any:
    return resources.files("steps").joinpath(*_DATA)


def _respond(start_response: StartResponse, status: str, body: bytes, ctype: str,
             extra: list[tuple[str, str]] | None = None, head: bool = False) -> list[bytes]:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *(extra or [])]
    start_response(status, headers)
    return [] if head else [body]


def _error(start_response: StartResponse, status: str, msg: str, head: bool = False) -> list[bytes]:
    code = status.split()[0]
    body = json.dumps({"code": code, "description": msg}).encode()
    return _respond(start_response, status, body, "application/json", head=head)


class ViewerApp:
    """WSGI dispatcher: ``/viewer…`` answered here, the landing page completed with a link, the rest passed on.

    ``catalog``: the output root the EDR collections read (a directory or ``s3://bucket/prefix``);
    ``config``: pygeoapi's configuration (server URL, title, base map).
    """

    def __init__(self, app: WSGIApp, catalog: str, config: dict[str, Any]) -> None:
        import jinja2

        self.app = app
        self.catalog = catalog
        self.config = config
        server = config.get("server") or {}
        self.server_url = str(server.get("url") or "").rstrip("/")
        self.basemap = server.get("map") or None
        env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
        self.template = env.from_string(_data_dir().joinpath("viewer.html").read_text(encoding="utf-8"))

    # ---- pages
    def page(self) -> bytes:
        """The viewer's HTML page."""
        try:
            from pygeoapi import __version__ as pygeoapi_version
        except ImportError:  # pragma: no cover - pygeoapi is what serves the rest
            pygeoapi_version = ""
        ident = (self.config.get("metadata") or {}).get("identification") or {}
        title = ident.get("title") or "raw2ready"
        if isinstance(title, dict):
            title = title.get("en") or next(iter(title.values()), "raw2ready")
        basemap = json.dumps(self.basemap) if self.basemap else "null"
        return self.template.render(title=str(title), version=str(pygeoapi_version), basemap=basemap).encode()

    def static(self, rel: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of a packaged asset below ``steps/data/viewer``; None if not served."""
        parts = rel.split("/")
        if not parts or not all(_STATIC_SEGMENT.match(p) for p in parts):
            return None
        suffix = "." + parts[-1].rsplit(".", 1)[-1] if "." in parts[-1] else ""
        ctype = "text/plain" if parts[-1] == "LICENSE" else _STATIC_SUFFIXES.get(suffix)
        if ctype is None:
            return None
        node = _data_dir().joinpath(*parts)
        if not node.is_file():
            return None
        return node.read_bytes(), ctype + ("; charset=utf-8" if ctype.startswith("text/") else "")

    # ---- dispatch
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Route ``/viewer…`` here, complete ``/``, pass everything else to the wrapped application."""
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            if method not in ("GET", "HEAD"):
                return _error(start_response, "405 METHOD NOT ALLOWED", f"{method} is not supported here")
            return self._viewer(path, start_response, head=method == "HEAD")
        if path == "/" and method == "GET":
            return self._landing(environ, start_response)
        return self.app(environ, start_response)

    def _viewer(self, path: str, start_response: StartResponse, head: bool) -> list[bytes]:
        if path == PREFIX:
            return _respond(start_response, "200 OK", self.page(), "text/html; charset=utf-8",
                            [("Cache-Control", "no-cache")], head)
        if path == PREFIX + "/":
            start_response("308 PERMANENT REDIRECT", [("Location", "../viewer"), ("Content-Length", "0")])
            return []
        if path.startswith(PREFIX + "/static/"):
            found = self.static(path[len(PREFIX + "/static/"):])
            if found is None:
                return _error(start_response, "404 NOT FOUND", "no such file", head)
            return _respond(start_response, "200 OK", found[0], found[1], [("Cache-Control", "max-age=3600")], head)
        if path == PREFIX + "/items.json":
            try:
                index, _storage = load_index(self.catalog)
            except FileNotFoundError:
                return _error(start_response, "404 NOT FOUND", "the catalog has no index", head)
            except Exception as exc:  # storage unreachable: say so, never 500 without a reason
                log.warning("catalog index of %s unavailable: %s", self.catalog, exc)
                return _error(start_response, "503 SERVICE UNAVAILABLE", f"catalog index unavailable: {exc}", head)
            body = json.dumps(items_document(index)).encode()
            return _respond(start_response, "200 OK", body, "application/json", [("Cache-Control", "no-cache")], head)
        m = _TILE_PATH.match(path)
        if m is not None:
            return self._tile(m, start_response, head)
        return _error(start_response, "404 NOT FOUND", f"no viewer resource at {path}", head)

    def _tile(self, m: re.Match[str], start_response: StartResponse, head: bool) -> list[bytes]:
        key, product = m.group(1), m.group(2)
        z, x, y = int(m.group(3)), int(m.group(4)), int(m.group(5))
        if product not in RAMPS:
            return _error(start_response, "404 NOT FOUND", f"unknown product {product!r} (ndvi or lai)", head)
        if z > MAX_ZOOM or x >= 2 ** z or y >= 2 ** z:
            return _error(start_response, "404 NOT FOUND", f"no tile {z}/{x}/{y}", head)
        try:
            png = render_tile(self.catalog, key, product, z, x, y)
        except KeyError:
            return _error(start_response, "404 NOT FOUND", f"no item or date {key!r} in the catalog", head)
        except ImportError as exc:
            return _error(start_response, "501 NOT IMPLEMENTED",
                          f"map tiles need rio-tiler (pip install 'raw2ready[serve]'): {exc}", head)
        except Exception as exc:
            log.warning("tile %s/%s/%d/%d/%d failed: %s", key, product, z, x, y, exc)
            return _error(start_response, "503 SERVICE UNAVAILABLE", f"reading the product failed: {exc}", head)
        return _respond(start_response, "200 OK", png, "image/png", [("Cache-Control", "max-age=300")], head)

    def _landing(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        fmt = (parse_qs(environ.get("QUERY_STRING", "")).get("f") or [""])[0]
        if fmt not in ("", "json", "html"):
            return self.app(environ, start_response)
        resp = buffered(self.app, environ)
        body = resp.body
        ctype = resp.header("content-type")
        href = f"{self.server_url}{PREFIX}"
        if resp.status.startswith("200") and not resp.header("content-encoding"):
            try:
                if ctype.startswith("text/html"):
                    body = add_landing_section(body.decode("utf-8"), href).encode("utf-8")
                elif "json" in ctype and "ld+json" not in ctype:
                    body = json.dumps(add_landing_link(json.loads(body), href)).encode()
            except (ValueError, UnicodeDecodeError):
                log.warning("could not add the viewer link to the landing page")
        return resp.send(start_response, body)


def mount_viewer(app: WSGIApp, catalogs: dict[str, str], config: dict[str, Any]) -> WSGIApp:
    """``app`` with the viewer in front of it (unchanged when no raw2ready collection is configured)."""
    if not catalogs:
        return app
    return ViewerApp(app, next(iter(catalogs.values())), config)

