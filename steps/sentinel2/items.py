"""One reader for every STAC item convention of Sentinel-2, and L2A↔L1C pairing.

:func:`parse_item` turns one STAC item (a ``dict`` as read from JSON) into an :class:`S2Item`, whatever
catalogue wrote it. It only *extracts* what the item states; it decides no radiometry (that is
``steps.sentinel2.radiometry``'s job, which reads :attr:`BandAsset.scale` / :attr:`BandAsset.offset`,
:attr:`S2Item.boa_offset_applied` and the metadata hrefs from here).

Conventions recognised (value of :attr:`S2Item.convention`)
-----------------------------------------------------------
``earth-search-v0``       Element84 Earth Search v0 (``sentinel-s2-l2a-cogs``): ``sentinel:*`` fields
                          (``sentinel:utm_zone`` may be absent in early items), keys ``B01…B12``/``SCL``,
                          ``info`` (tileInfo.json) and ``metadata`` (tile metadata.xml), 9-element
                          ``proj:transform``. Baseline only inside ``sentinel:product_id``.
``earth-search-v1``       Earth Search v1 ``sentinel-2-l2a`` / ``sentinel-2-l1c``: ``s2:*``, ``mgrs:*``,
                          ``grid:code``, ``earthsearch:*``; keys by common name (``red``, ``nir``, ``scl``) with
                          ``*-jp2`` twins; ids ``S2A_29RKH_20200219_0_L2A``.
``earth-search-v1-2022``  the Oct 2022 v1 variant: ``sentinel2:*`` instead of ``s2:*``, no ``earthsearch:*``,
                          JP2 assets only; ids with an unpadded zone (``S2B_5CNL_20221009_0_L2A``).
``earth-search-c1``       Earth Search ``sentinel-2-c1-l2a``: ids ``S2B_T10TFR_20231223T190950_L2A``,
                          keys by common name, COGs in ``e84-earth-search-sentinel-data``.
``planetary-computer``    Microsoft Planetary Computer ``sentinel-2-l2a``: ``s2:mgrs_tile``, ``s2:*``; keys
                          ``B04``/``SCL``/``granule-metadata``/``product-metadata``; ids are ESA product names
                          *without* the ``N0212`` baseline field.
``stactools``             items written by stactools-sentinel2 from a SAFE (``sentinel2:*`` fields, keys by
                          common name, ``product_metadata``/``granule_metadata``).
``eopf``                  ESA EOPF Zarr items: ``eopf:*``, ``product:type``, ``proj:code``; one
                          ``reflectance`` Zarr asset whose STAC 1.1 ``bands`` list ``b01…b12``/``b8a``.
``cdse``                  Copernicus Data Space STAC v1: per-resolution keys ``B04_10m``/``SCL_20m``,
                          ``processing:version``, ids = product names without ``.SAFE``.

Tile: from ``grid:code`` (``MGRS-5CNL`` → ``05CNL``), ``s2:mgrs_tile``, ``mgrs:*``, ``sentinel:*``, the
granule id, the product id (``_T05CNL_``) and the item id; every source present must agree.

Bands: :attr:`S2Item.bands` is keyed by ESA band name (``B01``…``B12``, ``B8A``). Where a COG and a JP2 twin
exist, the COG is the band's ``href`` and the JP2's href is kept in ``jp2_href``. Relative hrefs are resolved
against the item's own href. EOPF band hrefs point at the Zarr array inside the store
(``…/measurements/reflectance/r10m/b04``); GDAL would open one as
``ZARR:"/vsicurl/<store>.zarr":/measurements/reflectance/r10m/b04`` with its Zarr driver (Zarr v3 needs
GDAL ≥ 3.8), which the pipeline does not do: :func:`processable` says so.

Every item that cannot be understood raises ``InvalidInputError("item <id>: <reason>")``.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from steps.errors import InvalidInputError
from steps.sentinel2.bands import BAND_BY_ASSET_KEY, BANDS
from steps.sentinel2.metadata import baseline_from_product_id, baseline_key

logger = logging.getLogger(__name__)

CONVENTIONS: tuple[str, ...] = (
    "earth-search-v0", "earth-search-v1", "earth-search-v1-2022", "earth-search-c1",
    "planetary-computer", "stactools", "eopf", "cdse",
)
"""The values :attr:`S2Item.convention` can take."""

PLATFORMS: tuple[str, ...] = ("sentinel-2a", "sentinel-2b", "sentinel-2c", "sentinel-2d")

# ESA product name (SAFE without ".SAFE"), e.g. S2A_MSIL2A_20200219T112111_N0214_R037_T29RKH_20200219T123947.
# Planetary Computer ids are the same name without the _Nxxxx field, hence the optional group.
_PRODUCT_RE = re.compile(
    r"^(?P<unit>S2[A-D])_MSI(?P<level>L1C|L2A)_(?P<start>\d{8}T\d{6})(?:_N(?P<baseline>\d{4}))?"
    r"_R(?P<orbit>\d{3})_T(?P<tile>\d{2}[C-X][A-Z]{2})_(?P<gen>\d{8}T\d{6})$"
)
_ES_ID_RE = re.compile(
    r"^(?P<unit>S2[A-D])_(?P<tile>\d{1,2}[C-X][A-Z]{2})_(?P<date>\d{8})_(?P<seq>\d+)_(?P<level>L2A|L1C)$"
)
_C1_ID_RE = re.compile(r"^(?P<unit>S2[A-D])_T(?P<tile>\d{2}[C-X][A-Z]{2})_(?P<start>\d{8}T\d{6})_(?P<level>L2A|L1C)$")
_GRANULE_TILE_RE = re.compile(r"_T(\d{1,2}[C-X][A-Z]{2})(?:_|$)")
_GRID_CODE_RE = re.compile(r"^MGRS-T?(\d{1,2})([C-X])([A-Z]{2})$")
_TILE_RE = re.compile(r"^(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z][A-HJ-NP-V])$")
_CDSE_KEY_RE = re.compile(r"^(B\d{2}|B8A|SCL)_(10|20|60)m$")
_ZARR_TYPES = ("zarr",)


@dataclass(frozen=True)
class BandAsset:
    """One band (or the SCL layer) of an item as the item states it.

    ``href`` is absolute (resolved against the item's href). ``resolution`` is the nominal pixel size in
    metres. ``transform`` is the affine ``(a, b, c, d, e, f)`` of the asset's ``proj:transform`` in the
    tile CRS (metres; ``c``/``f`` = upper-left corner), or None when the item gives none. ``shape`` is
    ``(rows, cols)``. ``scale``/``offset``/``nodata`` come from ``raster:bands[0]`` and are None when the
    item does not state them (no value is implied). ``jp2_href`` holds the JP2 twin's href when the item
    also lists the band as a JPEG 2000 (Earth Search v1 ``red-jp2``).
    """

    band: str
    key: str
    href: str
    resolution: int
    transform: tuple[float, float, float, float, float, float] | None = None
    shape: tuple[int, int] | None = None
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    media_type: str | None = None
    jp2_href: str | None = None


@dataclass(frozen=True, eq=False)
class S2Item:
    """A Sentinel-2 STAC item in one shape, whatever convention wrote it (see the module docstring).

    ``datetime`` is tz-aware UTC. ``tile`` is canonical (``05CNL``). ``processing_baseline`` is ``"04.00"``
    style or None when nothing states it. ``product_id`` is the ESA product name without ``.SAFE`` (None
    when the item does not carry it; Earth Search v1 2022 items and v1 L1C-only hrefs may lack it).
    ``sequence`` is Earth Search's ``_0_``/``_1_`` reprocessing counter (None elsewhere). ``epsg`` is the
    tile's UTM CRS. ``raw`` is the item dict as given.
    """

    id: str
    href: str
    convention: str
    collection: str | None
    level: str
    tile: str
    datetime: datetime
    platform: str
    processing_baseline: str | None
    product_id: str | None
    datatake_id: str | None
    sequence: int | None
    epsg: int
    bands: Mapping[str, BandAsset]
    scl: BandAsset | None
    granule_metadata_href: str | None
    product_metadata_href: str | None
    tileinfo_href: str | None
    boa_offset_applied: bool | None
    derived_from: tuple[str, ...]
    cloud_cover: float | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def scene_key(self) -> tuple[str, str, str]:
        """(tile, sensing time to the second in ISO form with ``Z``, platform): one scene of one tile."""
        return self.tile, self.datetime.strftime("%Y-%m-%dT%H:%M:%SZ"), self.platform

    @property
    def sensing_start(self) -> str | None:
        """Datatake sensing start ``YYYYMMDDTHHMMSS`` from the product id (None without a product id)."""
        m = _PRODUCT_RE.match(self.product_id or "")
        return m.group("start") if m else None

    @property
    def relative_orbit(self) -> int | None:
        """Relative orbit number from the product id (``_R037_`` → 37), or None."""
        m = _PRODUCT_RE.match(self.product_id or "")
        return int(m.group("orbit")) if m else None

    @property
    def origin(self) -> tuple[float, float] | None:
        """Upper-left corner (x, y) in metres of the tile CRS from the item's ``proj:transform``s, or None.

        Taken from the bands, else SCL, else any other asset with a transform (EOPF reflectance bands have
        none, its AOT/SCL/WVP assets do). :func:`parse_item` has checked they all agree.
        """
        for ba in (*self.bands.values(), *((self.scl,) if self.scl else ())):
            if ba.transform is not None:
                return ba.transform[2], ba.transform[5]
        for asset in (self.raw.get("assets") or {}).values():
            t = asset.get("proj:transform") if isinstance(asset, dict) else None
            if isinstance(t, list) and len(t) in (6, 9):
                return float(t[2]), float(t[5])
        return None


@dataclass(frozen=True)
class TileInfo:
    """The AWS ``tileInfo.json`` of a ``sentinel-s2-l1c``/``-l2a`` tile directory.

    ``origin`` is the tile's upper-left corner (x, y) in metres of EPSG ``epsg``; percentages in [0, 100].
    """

    tile: str
    timestamp: datetime
    epsg: int
    origin: tuple[float, float]
    product_name: str | None
    data_coverage: float | None
    cloudy_pixel_percentage: float | None


# --------------------------------------------------------------------------------------------------
# small parsers
# --------------------------------------------------------------------------------------------------


def canonical_tile(text: str) -> str | None:
    """``"5CNL"``/``"05CNL"``/``"T05CNL"`` → ``"05CNL"``; None if ``text`` is no valid MGRS tile name.

    Zone 1–60, latitude band C–X without I/O, 100 km square letters without I/O.
    """
    t = text.strip().upper()
    if t.startswith("T") and len(t) in (5, 6):
        t = t[1:]
    m = _TILE_RE.match(t)
    if not m or not 1 <= int(m.group(1)) <= 60:
        return None
    return f"{int(m.group(1)):02d}{m.group(2)}{m.group(3)}"


def _baseline(value: Any) -> str | None:
    """Normalise ``"2.14"``/``"02.14"`` → ``"02.14"`` (as :func:`baseline_key` reads it); None if not a baseline."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        major, minor = baseline_key(str(value))
    except InvalidInputError:
        return None
    return f"{major:02d}.{minor:02d}"


def _parse_time(value: Any, item_id: str, what: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"item {item_id}: {what} is missing")
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"item {item_id}: {what} {value!r} is not RFC 3339") from None
    if dt.tzinfo is None:  # STAC requires an offset; a bare time is taken as UTC, as Earth Search v0 meant
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # e.g. "nan" in pystac's raster example
        except ValueError:
            return None
    return None


def resolve_href(base: str, href: str) -> str:
    """``href`` resolved against the document at ``base`` (local path or file/s3/http(s) URL).

    Pure string work (no file-system access): local paths are normalised (``a/b/../c`` → ``a/c``) so that
    the same file always has the same href, e.g. in ``derived_from`` links.
    """
    if not href or urlparse(href).scheme or href.startswith("/") or not base:
        return href
    parsed = urlparse(base)
    if parsed.scheme in ("http", "https", "file"):
        return urljoin(base, href)
    if parsed.scheme:  # s3:// and friends: urljoin does not treat them as hierarchical
        path = posixpath.normpath(posixpath.join(posixpath.dirname(parsed.path), href))
        return f"{parsed.scheme}://{parsed.netloc}{path}"
    return os.path.normpath(Path(base).parent / href)


def _transform(value: Any, item_id: str, key: str) -> tuple[float, float, float, float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) not in (6, 9) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise InvalidInputError(f"item {item_id}: asset {key!r} proj:transform must be 6 or 9 numbers")
    if len(value) == 9 and [float(v) for v in value[6:]] != [0.0, 0.0, 1.0]:
        raise InvalidInputError(f"item {item_id}: asset {key!r} proj:transform last row is not (0, 0, 1)")
    a, b, c, d, e, f = (float(v) for v in value[:6])
    return a, b, c, d, e, f


def _epsg_of(obj: Mapping[str, Any]) -> int | None:
    e = obj.get("proj:epsg")
    if isinstance(e, int) and not isinstance(e, bool):
        return e
    code = obj.get("proj:code")
    if isinstance(code, str):
        m = re.fullmatch(r"EPSG:(\d{4,5})", code.strip())
        if m:
            return int(m.group(1))
    return None


# --------------------------------------------------------------------------------------------------
# convention, level, tile, platform
# --------------------------------------------------------------------------------------------------


def _self_href(obj: Mapping[str, Any]) -> str:
    for link in obj.get("links") or ():
        if isinstance(link, dict) and link.get("rel") == "self" and isinstance(link.get("href"), str):
            return str(link["href"])
    return ""


def _convention(obj: Mapping[str, Any], props: Mapping[str, Any], item_id: str) -> str:
    assets = obj.get("assets") or {}
    keys = set(assets)
    collection = str(obj.get("collection") or "")
    self_href = _self_href(obj)
    if any(any(z in str(a.get("type", "")) for z in _ZARR_TYPES) for a in assets.values() if isinstance(a, dict)):
        return "eopf"
    if any(_CDSE_KEY_RE.match(k) for k in keys) or "stac.dataspace.copernicus.eu" in self_href:
        return "cdse"
    if any(k.startswith("sentinel:") for k in props):
        return "earth-search-v0"
    if collection == "sentinel-2-c1-l2a" or _C1_ID_RE.match(item_id):
        return "earth-search-c1"
    if any(k.startswith("sentinel2:") for k in props):
        return "earth-search-v1-2022" if _ES_ID_RE.match(item_id) else "stactools"
    if any(k.startswith("earthsearch:") for k in props) or _ES_ID_RE.match(item_id):
        return "earth-search-v1"
    if "s2:mgrs_tile" in props or "planetarycomputer" in self_href:
        return "planetary-computer"
    if any(k.startswith("s2:") for k in props):
        return "stactools"
    raise InvalidInputError(f"item {item_id}: no known Sentinel-2 STAC convention (no s2:/sentinel:/sentinel2:/"
                            "eopf fields, no known id or asset-key pattern)")


def _agree(item_id: str, what: str, found: Iterable[tuple[str, str]]) -> str | None:
    """The single value all sources agree on, None if there is none; raise listing them on disagreement."""
    pairs = list(found)
    values = {v for _, v in pairs}
    if len(values) > 1:
        listing = ", ".join(f"{src}={v}" for src, v in pairs)
        raise InvalidInputError(f"item {item_id}: conflicting {what} fields ({listing})")
    return pairs[0][1] if pairs else None


def _product_id(obj: Mapping[str, Any], props: Mapping[str, Any], item_id: str) -> str | None:
    found: list[tuple[str, str]] = []
    for key in ("s2:product_uri", "sentinel2:product_uri", "sentinel:product_id", "s2:product_id"):
        v = props.get(key)
        if isinstance(v, str) and v.strip():
            found.append((key, v.strip().removesuffix(".SAFE")))
    m = _PRODUCT_RE.match(item_id)
    if m and m.group("baseline"):  # CDSE / EOPF: the id is the product name (PC ids lack the N field)
        found.append(("id", item_id))
    return _agree(item_id, "product id", found)


def _tile(props: Mapping[str, Any], item_id: str, product_id: str | None) -> str:
    found: list[tuple[str, str]] = []

    def add(src: str, text: Any) -> None:
        if text is None:
            return
        t = canonical_tile(str(text))
        if t is None:
            raise InvalidInputError(f"item {item_id}: {src} {text!r} is not an MGRS tile")
        found.append((src, t))

    code = props.get("grid:code")
    if code is not None:
        m = _GRID_CODE_RE.match(str(code))
        if not m:
            raise InvalidInputError(f"item {item_id}: grid:code {code!r} is not MGRS-<tile>")
        add("grid:code", "".join(m.groups()))
    for key in ("s2:mgrs_tile", "sentinel2:mgrs_tile"):
        add(key, props.get(key))
    for prefix in ("mgrs", "sentinel"):
        zone, band, square = (props.get(f"{prefix}:{k}") for k in ("utm_zone", "latitude_band", "grid_square"))
        if zone is not None and band is not None and square is not None:
            add(f"{prefix}:*", f"{zone}{band}{square}")
    for key in ("s2:granule_id", "sentinel2:granule_id", "sentinel2:id", "s2:tile_id"):
        v = props.get(key)
        if isinstance(v, str):
            m = _GRANULE_TILE_RE.search(v)
            if m:
                add(key, m.group(1))
            elif canonical_tile(v):  # a bare tile name ("T20QRF")
                add(key, v)
    if product_id:
        m = _PRODUCT_RE.match(product_id)
        if not m:
            raise InvalidInputError(f"item {item_id}: product id {product_id!r} is not an ESA product name")
        add("product id", m.group("tile"))
    for rx in (_ES_ID_RE, _C1_ID_RE, _PRODUCT_RE):
        m = rx.match(item_id)
        if m:
            add("id", m.group("tile"))
            break
    tile = _agree(item_id, "tile", found)
    if tile is None:
        raise InvalidInputError(f"item {item_id}: no tile anywhere (grid:code, s2:mgrs_tile, mgrs:*, sentinel:*, "
                                "granule or product id)")
    # Early Earth Search v0 items give only sentinel:latitude_band/grid_square: they must match the tile
    band, square = props.get("sentinel:latitude_band"), props.get("sentinel:grid_square")
    if band is not None and square is not None and tile[2:] != f"{band}{square}".upper():
        raise InvalidInputError(f"item {item_id}: conflicting tile fields (sentinel:latitude_band/grid_square="
                                f"{band}{square}, tile={tile})")
    return tile


def _level(obj: Mapping[str, Any], props: Mapping[str, Any], item_id: str, product_id: str | None) -> str:
    found: list[tuple[str, str]] = []
    for key in ("s2:product_type", "sentinel2:product_type", "product:type"):
        v = props.get(key)
        if isinstance(v, str):
            m = re.search(r"(1C|2A)$", v.strip().upper())
            if m:
                found.append((key, "L" + m.group(1)))
    v = props.get("processing:level")
    if isinstance(v, str) and v.strip().upper() in ("L1C", "L2A"):
        found.append(("processing:level", v.strip().upper()))
    for src, text in (("id", item_id), ("product id", product_id or "")):
        m = _PRODUCT_RE.match(text) or _ES_ID_RE.match(text) or _C1_ID_RE.match(text)
        if m:
            found.append((src, m.group("level")))
    collection = str(obj.get("collection") or "").lower()
    for lv in ("l1c", "l2a"):
        if re.search(rf"(^|[-_]){lv}([-_]|$)", collection):
            found.append(("collection", lv.upper()))
    level = _agree(item_id, "processing level", found)
    if level is None:
        raise InvalidInputError(f"item {item_id}: processing level (L1C/L2A) is stated nowhere")
    return level


def _platform(props: Mapping[str, Any], item_id: str, product_id: str | None) -> str:
    found: list[tuple[str, str]] = []
    v = props.get("platform")
    if isinstance(v, str) and v.strip():
        p = v.strip().lower().replace(" ", "-")
        if p not in PLATFORMS:
            raise InvalidInputError(f"item {item_id}: platform {v!r} is not a Sentinel-2 unit")
        found.append(("platform", p))
    for src, text in (("id", item_id), ("product id", product_id or "")):
        m = re.match(r"^S2([A-D])_", text)
        if m:
            found.append((src, f"sentinel-2{m.group(1).lower()}"))
    platform = _agree(item_id, "platform", found)
    if platform is None:
        raise InvalidInputError(f"item {item_id}: platform is stated nowhere (platform, S2A/S2B/S2C id prefix)")
    return platform


def _processing_baseline(props: Mapping[str, Any], item_id: str, product_id: str | None,
                         datatake_id: str | None) -> str | None:
    found: list[tuple[str, str]] = []
    for key in ("s2:processing_baseline", "sentinel2:processing_baseline", "sentinel:processing_baseline",
                "processing:version"):
        if key in props:
            b = _baseline(props[key])
            if b is None:
                raise InvalidInputError(f"item {item_id}: {key} {props[key]!r} is not a baseline like '04.00'")
            found.append((key, b))
    # the product id's N0509 and the datatake id's _N05.09, read as the SAFE reader reads them (placeholders: none)
    for src, name in (("product id", product_id if _PRODUCT_RE.match(product_id or "") else None),
                      ("datatake id", datatake_id)):
        b = baseline_from_product_id(name) if name else None
        if b is not None:
            found.append((src, b))
    return _agree(item_id, "processing baseline", found)


# --------------------------------------------------------------------------------------------------
# assets
# --------------------------------------------------------------------------------------------------


def _band_of_key(key: str) -> tuple[str | None, int | None, bool]:
    """(ESA band or "SCL", resolution stated by the key, is a ``-jp2`` twin) for an asset key."""
    jp2 = key.endswith("-jp2")
    stem = key.removesuffix("-jp2")
    m = _CDSE_KEY_RE.match(stem)
    if m:
        return m.group(1), int(m.group(2)), jp2
    if stem.upper() == "SCL":
        return "SCL", None, jp2
    if stem.upper() in BANDS:
        return stem.upper(), None, jp2
    if stem in BAND_BY_ASSET_KEY:
        return BAND_BY_ASSET_KEY[stem], None, jp2
    return None, None, jp2


def _band_asset(band: str, key: str, asset: Mapping[str, Any], item_href: str, item_id: str,
                key_res: int | None) -> BandAsset:
    href = asset.get("href")
    if not isinstance(href, str) or not href.strip():
        raise InvalidInputError(f"item {item_id}: asset {key!r} has no href")
    rbs = asset.get("raster:bands")
    rb: Mapping[str, Any] = rbs[0] if isinstance(rbs, list) and rbs and isinstance(rbs[0], dict) else {}
    shape_v = asset.get("proj:shape")
    shape = (int(shape_v[0]), int(shape_v[1])) if isinstance(shape_v, list) and len(shape_v) == 2 else None
    transform = _transform(asset.get("proj:transform"), item_id, key)
    res = _resolution(band, asset.get("gsd"), rb.get("spatial_resolution"), key_res, transform)
    return BandAsset(
        band=band, key=key, href=resolve_href(item_href, href.strip()), resolution=res, transform=transform,
        shape=shape, scale=_float(rb.get("scale")), offset=_float(rb.get("offset")),
        nodata=_float(rb.get("nodata")), media_type=asset.get("type") if isinstance(asset.get("type"), str) else None,
    )


def _resolution(band: str, gsd: Any, spatial: Any, key_res: int | None,
                transform: tuple[float, ...] | None) -> int:
    for v in (gsd, spatial, key_res, transform[0] if transform else None):
        f = _float(v)
        if f is not None and f > 0 and not math.isnan(f):
            return round(f)
    return BANDS[band].resolution if band in BANDS else 20  # SCL is a 20 m product


def _is_jp2(asset: Mapping[str, Any], key: str) -> bool:
    return key.endswith("-jp2") or "jp2" in str(asset.get("type", "")) or str(asset.get("href", "")).endswith(".jp2")


def _bands(obj: Mapping[str, Any], item_href: str, item_id: str) -> tuple[dict[str, BandAsset], BandAsset | None]:
    assets = obj.get("assets") or {}
    if not isinstance(assets, dict):
        raise InvalidInputError(f"item {item_id}: assets is not an object")
    # candidates per band: (asset key, asset, resolution stated by the key)
    cands: dict[str, list[tuple[str, Mapping[str, Any], int | None]]] = {}
    for key, asset in assets.items():
        if not isinstance(asset, dict):
            continue
        band, key_res, _ = _band_of_key(key)
        if band is not None:
            cands.setdefault(band, []).append((key, asset, key_res))
    out: dict[str, BandAsset] = {}
    for band, lst in cands.items():
        native = BANDS[band].resolution if band in BANDS else 20

        # Prefer a COG over a JP2 and the band's native resolution over resampled copies (CDSE B04_20m …).
        def rank(c: tuple[str, Mapping[str, Any], int | None], native: int = native) -> tuple[int, int, int, str]:
            key, asset, key_res = c
            res = key_res if key_res is not None else native
            return (int(_is_jp2(asset, key)), abs(res - native), res, key)

        lst.sort(key=rank)
        key, asset, key_res = lst[0]
        ba = _band_asset(band, key, asset, item_href, item_id, key_res)
        if not _is_jp2(asset, key):
            same_res = [c for c in lst[1:] if _is_jp2(c[1], c[0]) and (c[2] is None or c[2] == key_res)]
            if same_res and isinstance(same_res[0][1].get("href"), str):
                ba = replace(ba, jp2_href=resolve_href(item_href, same_res[0][1]["href"]))
        out[band] = ba
    scl = out.pop("SCL", None)
    eopf = _eopf_bands(assets, item_href, item_id)
    for band, ba in eopf.items():
        out.setdefault(band, ba)
    ordered = {b: out[b] for b in BANDS if b in out}
    return ordered, scl


def _eopf_bands(assets: Mapping[str, Any], item_href: str, item_id: str) -> dict[str, BandAsset]:
    """Bands listed in a Zarr ``reflectance`` asset's STAC 1.1 ``bands`` (EOPF): hrefs into the store.

    EOPF groups reflectance by resolution (``measurements/reflectance/r10m/b04``, as the item's own viewer
    links show), so a band's array is ``<asset href>/r<gsd>m/<name>``.
    """
    out: dict[str, BandAsset] = {}
    for key, asset in assets.items():
        if not isinstance(asset, dict) or not isinstance(asset.get("bands"), list):
            continue
        if "zarr" not in str(asset.get("type", "")):
            continue
        base = asset.get("href")
        if not isinstance(base, str) or not base:
            raise InvalidInputError(f"item {item_id}: asset {key!r} has no href")
        base = resolve_href(item_href, base).rstrip("/")
        for b in asset["bands"]:
            if not isinstance(b, dict) or not isinstance(b.get("name"), str):
                continue
            name = b["name"].upper()
            if name not in BANDS:
                continue
            gsd = _float(b.get("gsd")) or _float(asset.get("gsd"))
            res = round(gsd) if gsd else BANDS[name].resolution
            shp = b.get("proj:shape")
            out[name] = BandAsset(
                band=name, key=f"{key}:{b['name']}", href=f"{base}/r{res}m/{b['name']}", resolution=res,
                transform=None, shape=(int(shp[0]), int(shp[1])) if isinstance(shp, list) and len(shp) == 2 else None,
                media_type=str(asset.get("type")),
            )
    return out


def _meta_href(assets: Mapping[str, Any], item_href: str, keys: Sequence[str], basenames: Sequence[str]) -> str | None:
    for key in keys:
        a = assets.get(key)
        if isinstance(a, dict) and isinstance(a.get("href"), str) and a["href"]:
            return resolve_href(item_href, a["href"])
    for a in assets.values():
        if isinstance(a, dict) and isinstance(a.get("href"), str):
            name = posixpath.basename(urlparse(a["href"]).path)
            if name in basenames:
                return resolve_href(item_href, a["href"])
    return None


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def parse_item(obj: Mapping[str, Any], href: str) -> S2Item:
    """Parse one Sentinel-2 STAC item (any convention of the module docstring) read from ``href``.

    ``href`` is where the item was read (local path or URL); relative asset hrefs are resolved against it
    (when empty, the item's ``self`` link is used). Raises ``InvalidInputError("item <id>: <reason>")`` for
    an item that cannot be understood: no datetime, no tile, fields that contradict each other (tile,
    platform, level, baseline, product id, EPSG vs the tile's UTM zone, band grids with different origins).
    """
    if not isinstance(obj, Mapping):
        raise InvalidInputError(f"item at {href or '?'}: not a JSON object")
    item_id = obj.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise InvalidInputError(f"item at {href or '?'}: no id")
    if obj.get("type") not in (None, "Feature"):
        raise InvalidInputError(f"item {item_id}: type {obj.get('type')!r} is not a STAC Item (Feature)")
    props = obj.get("properties")
    if not isinstance(props, Mapping):
        raise InvalidInputError(f"item {item_id}: no properties")
    item_href = href or _self_href(obj)

    convention = _convention(obj, props, item_id)
    dt_value = props.get("datetime") or props.get("start_datetime")
    when = _parse_time(dt_value, item_id, "datetime")
    product_id = _product_id(obj, props, item_id)
    datatake_id = next((str(props[k]) for k in ("s2:datatake_id", "sentinel2:datatake_id", "eopf:datatake_id")
                        if isinstance(props.get(k), str)), None)
    tile = _tile(props, item_id, product_id)
    level = _level(obj, props, item_id, product_id)
    platform = _platform(props, item_id, product_id)
    baseline = _processing_baseline(props, item_id, product_id, datatake_id)

    seq: int | None = None
    for key in ("s2:sequence", "sentinel:sequence"):
        if props.get(key) is not None:
            try:
                seq = int(props[key])
            except (TypeError, ValueError):
                raise InvalidInputError(f"item {item_id}: {key} {props[key]!r} is not an integer") from None
    m = _ES_ID_RE.match(item_id)
    if m:
        if seq is not None and seq != int(m.group("seq")):
            raise InvalidInputError(f"item {item_id}: conflicting sequence fields (id={m.group('seq')}, "
                                    f"property={seq})")
        seq = int(m.group("seq"))

    bands, scl = _bands(obj, item_href, item_id)
    assets = obj.get("assets") or {}

    # EPSG: the item's, else any asset's; all must agree and match the tile's UTM zone
    epsgs = [("properties", e) for e in [_epsg_of(props)] if e is not None]
    epsgs += [(f"asset {k}", e) for k, a in assets.items() if isinstance(a, dict)
              for e in [_epsg_of(a)] if e is not None]
    epsg_s = _agree(item_id, "EPSG", [(s, str(e)) for s, e in epsgs])
    zone, north = int(tile[:2]), tile[2] >= "N"
    expected_epsg = (32600 if north else 32700) + zone
    if epsg_s is not None and int(epsg_s) != expected_epsg:
        raise InvalidInputError(f"item {item_id}: EPSG:{epsg_s} is not the UTM CRS of tile {tile} "
                                f"(EPSG:{expected_epsg})")
    epsg = expected_epsg

    origins = {(t[2], t[5]) for k, a in assets.items() if isinstance(a, dict)
               for t in [_transform(a.get("proj:transform"), item_id, k)] if t is not None}
    if len(origins) > 1:
        raise InvalidInputError(f"item {item_id}: assets disagree on the tile's upper-left corner {sorted(origins)}")

    boa: bool | None = None
    for key in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied", "sentinel2:boa_offset_applied"):
        v = props.get(key)
        if v is not None:
            if not isinstance(v, bool):
                raise InvalidInputError(f"item {item_id}: {key} {v!r} is not a boolean")
            boa = v

    derived = tuple(resolve_href(item_href, str(link["href"])) for link in obj.get("links") or ()
                    if isinstance(link, dict) and link.get("rel") == "derived_from" and link.get("href"))
    cc = _float(props.get("eo:cloud_cover"))

    item = S2Item(
        id=item_id, href=item_href, convention=convention,
        collection=str(obj["collection"]) if obj.get("collection") else None, level=level, tile=tile,
        datetime=when, platform=platform, processing_baseline=baseline, product_id=product_id,
        datatake_id=datatake_id, sequence=seq, epsg=epsg, bands=bands, scl=scl,
        granule_metadata_href=_meta_href(assets, item_href, ("granule_metadata", "granule-metadata", "metadata"),
                                         ("MTD_TL.xml",)),
        product_metadata_href=_meta_href(assets, item_href, ("product_metadata", "product-metadata"),
                                         ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")),
        tileinfo_href=_meta_href(assets, item_href, ("tileinfo_metadata", "tileinfo-metadata", "info"),
                                 ("tileInfo.json",)),
        boa_offset_applied=boa, derived_from=derived, cloud_cover=cc, raw=obj,
    )
    logger.debug("item %s: %s %s %s %s baseline %s", item_id, convention, level, tile, platform, baseline)
    return item


def parse_items(obj: Mapping[str, Any], href: str) -> list[S2Item]:
    """Parse a single item or an ItemCollection / stac-task payload (``features``) into items, in order.

    Every feature must parse; the first that cannot raises ``InvalidInputError`` naming its id.
    """
    if obj.get("type") == "FeatureCollection" or isinstance(obj.get("features"), list):
        feats = obj.get("features")
        if not isinstance(feats, list):
            raise InvalidInputError(f"item collection at {href}: features is not a list")
        return [parse_item(f, href) for f in feats]
    return [parse_item(obj, href)]


def processable(item: S2Item, bands: Sequence[str] = ("B04", "B08")) -> str | None:
    """None when the pipeline can read ``bands`` (and SCL for L2A) of ``item``; else the reason, one line.

    Reasons: a band (or SCL) is missing, or a band lives inside a Zarr store (EOPF), which the pipeline's
    GeoTIFF/JPEG 2000 reader does not open.
    """
    missing = [b for b in bands if b not in item.bands]
    if item.level == "L2A" and item.scl is None:
        missing.append("SCL")
    if missing:
        return f"item {item.id}: no asset for {', '.join(missing)}"
    zarr = [ba for ba in (*(item.bands[b] for b in bands), *((item.scl,) if item.scl else ()))
            if "zarr" in (ba.media_type or "")]
    if zarr:
        ex = zarr[0]
        return (f"item {item.id}: {ex.band} is an array inside a Zarr store ({ex.href}); the pipeline reads "
                "GeoTIFF/JPEG 2000 only (GDAL's Zarr driver would need ZARR:\"/vsicurl/<store>\":/<array path>)")
    return None


def parse_tileinfo(obj: Mapping[str, Any], href: str = "") -> TileInfo:
    """Parse an AWS ``tileInfo.json`` (``sentinel-s2-l1c``/``-l2a`` tile directories)."""
    where = href or "tileInfo.json"
    try:
        zone, band, square = int(obj["utmZone"]), str(obj["latitudeBand"]), str(obj["gridSquare"])
        x, y = (float(v) for v in obj["tileOrigin"]["coordinates"][:2])
        crs = str(obj["tileOrigin"]["crs"]["properties"]["name"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInputError(f"{where}: missing or malformed {exc}") from None
    tile = canonical_tile(f"{zone}{band}{square}")
    m = re.search(r"(\d{4,5})$", crs)
    if tile is None or not m:
        raise InvalidInputError(f"{where}: bad tile {zone}{band}{square} or CRS {crs!r}")
    return TileInfo(
        tile=tile, timestamp=_parse_time(obj.get("timestamp"), where, "timestamp"), epsg=int(m.group(1)),
        origin=(x, y), product_name=obj.get("productName") if isinstance(obj.get("productName"), str) else None,
        data_coverage=_float(obj.get("dataCoveragePercentage")),
        cloudy_pixel_percentage=_float(obj.get("cloudyPixelPercentage")),
    )


# --------------------------------------------------------------------------------------------------
# pairing and de-duplication
# --------------------------------------------------------------------------------------------------


def _last_segment(href: str) -> str:
    return posixpath.basename(urlparse(href).path.rstrip("/")).removesuffix(".json")


def _datatake_core(dt_id: str | None) -> str | None:
    """``GS2A_20200219T112111_024344_N02.14`` → ``GS2A_20200219T112111_024344`` (baseline dropped)."""
    if not dt_id:
        return None
    return re.sub(r"_N\d{2}\.\d{2}$", "", dt_id)


def match_l1c(l2a: S2Item, l1c: Sequence[S2Item]) -> tuple[S2Item | None, str]:
    """The L1C item of ``l2a`` among ``l1c`` and the rule that matched (``"none"`` when none does).

    Rules in order: ``derived_from`` (a link naming the L1C item's id or href); ``product id`` (same unit,
    datatake sensing start, relative orbit and tile, level swapped; baseline and generation time may
    differ); ``datatake id`` (same datatake, baseline suffix ignored, same tile); ``tile+second+platform``
    (same :attr:`S2Item.scene_key`; the times must be the same kind, e.g. both granule sensing times).
    """
    cands = [c for c in l1c if c.level == "L1C"]
    links = {(_last_segment(h), h) for h in l2a.derived_from}
    for c in cands:
        if any(seg == c.id or h == c.href for seg, h in links):
            return c, "derived_from"
    if l2a.sensing_start:
        for c in cands:
            if (c.sensing_start == l2a.sensing_start and c.platform == l2a.platform and c.tile == l2a.tile
                    and c.relative_orbit == l2a.relative_orbit):
                return c, "product id"
    core = _datatake_core(l2a.datatake_id)
    if core:
        for c in cands:
            if _datatake_core(c.datatake_id) == core and c.tile == l2a.tile:
                return c, "datatake id"
    for c in cands:
        if c.scene_key == l2a.scene_key:
            return c, "tile+second+platform"
    return None, "none"


def pair_items(l2a: Sequence[S2Item], l1c: Sequence[S2Item]) -> list[tuple[S2Item, S2Item | None]]:
    """Pair each L2A item with its L1C item (or None), in the order of ``l2a``; see :func:`match_l1c`."""
    out: list[tuple[S2Item, S2Item | None]] = []
    for a in l2a:
        if a.level != "L2A":
            raise InvalidInputError(f"item {a.id}: is {a.level}, expected L2A for pairing")
        c, rule = match_l1c(a, l1c)
        if c is None:
            logger.info("item %s: no L1C item found (tile %s, %s)", a.id, a.tile, a.scene_key[1])
        else:
            logger.info("item %s: paired with L1C %s by %s", a.id, c.id, rule)
        out.append((a, c))
    return out


def best_per_scene(items: Iterable[S2Item]) -> list[S2Item]:
    """One item per scene (:attr:`S2Item.scene_key`): newest processing baseline, then highest sequence, then
    the greatest id (ESA/PC ids end with the generation time, so this is the latest product). Logs each
    superseded item. Returned in scene-key order.
    """
    best: dict[tuple[str, ...], S2Item] = {}

    def rank(it: S2Item) -> tuple[tuple[int, int], int, str]:
        pb = baseline_key(it.processing_baseline) if it.processing_baseline else (-1, -1)
        return pb, it.sequence if it.sequence is not None else -1, it.id

    for it in items:
        key = (it.level, *it.scene_key)
        cur = best.get(key)
        if cur is None:
            best[key] = it
            continue
        if cur.id == it.id and cur.href == it.href:
            continue
        win, lose = (it, cur) if rank(it) > rank(cur) else (cur, it)
        logger.info("scene %s: item %s (baseline %s, sequence %s) supersedes %s (baseline %s, sequence %s)",
                    "/".join(it.scene_key), win.id, win.processing_baseline, win.sequence, lose.id,
                    lose.processing_baseline, lose.sequence)
        best[key] = win
    return [best[k] for k in sorted(best)]
