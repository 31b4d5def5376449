"""One view of a source product, whatever it came as: a STAC item of any convention, or an ESA SAFE.

:func:`load_source_product` turns an href into a :class:`SourceProduct`: the identity of the product
(level, tile, sensing time, platform, processing baseline), its band files per resolution, what the item
states about radiometry (``raster:bands`` scale/offset, ``earthsearch:boa_offset_applied``), and the ESA
metadata it carries — the product XML (``MTD_MSIL2A.xml``/``MTD_MSIL1C.xml``: baseline, quantification,
offsets) and the granule XML (``MTD_TL.xml``: geocoding, angle grids) — read from where each really
lives: the item's ``product_metadata``/``granule_metadata`` assets, or the SAFE's files. An item's
``tileinfo_metadata`` (AWS ``tileInfo.json``: the tile origin) is read only when there is no granule XML,
to check the grid the item states.

An href is a SAFE when it names a ``.SAFE`` directory or a ``.zip`` (as downloaded from the Copernicus
Data Space); anything else is read as a STAC item (JSON).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from steps.errors import InvalidInputError
from steps.sentinel2.items import S2Item, parse_item, parse_tileinfo
from steps.sentinel2.metadata import ProductMetadata, TileMetadata, parse_product_metadata, parse_tile_metadata
from steps.storage import read_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceProduct:
    """A Sentinel-2 L2A or L1C product as the pipeline needs it (hrefs readable by GDAL/rasterio).

    ``files`` maps a band name (``B01`` … ``B12``, ``B8A``, and ``SCL`` for L2A) to ``{resolution (m):
    href}`` — one entry per file the source has (an Earth Search item has one per band, a SAFE up to three).
    ``item_scale_offset`` holds the item's ``raster:bands`` scale/offset per band, only for bands where the
    item states both. ``item_sun``/``item_view`` are scene-mean (zenith, azimuth) in degrees from the
    item's ``view:*`` fields (None when absent).
    """

    id: str
    href: str
    format: str
    level: str
    tile: str
    datetime: datetime
    platform: str
    baseline: str | None
    files: dict[str, dict[float, str]]
    item_scale_offset: dict[str, tuple[float, float]] | None = None
    boa_offset_applied: bool | None = None
    product: ProductMetadata | None = None
    tile_meta: TileMetadata | None = None
    item_sun: tuple[float, float] | None = None
    item_view: tuple[float, float] | None = None
    cloud_cover: float | None = None
    origin: tuple[float, float] | None = None
    item: S2Item | None = field(default=None, repr=False)

    def finest(self, band: str) -> tuple[float, str] | None:
        """(resolution, href) of the finest file of ``band``, or None when the source has none."""
        files = self.files.get(band)
        if not files:
            return None
        res = min(files)
        return res, files[res]


def is_safe_href(href: str) -> bool:
    """True for a local ``.SAFE`` directory or a ``.zip`` file (a SAFE as CDSE distributes it)."""
    if urlparse(href).scheme not in ("", "file"):
        return False
    p = Path(urlparse(href).path if href.startswith("file:") else href)
    return (p.suffix.upper() == ".SAFE" and p.is_dir()) or (p.suffix.lower() == ".zip" and p.is_file())


def _read_xml(href: str, what: str) -> bytes:
    try:
        return read_uri(href)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{what} not found: {href}") from exc


def _item_angles(props: dict[str, Any]) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    sun = view = None
    elev, saz = props.get("view:sun_elevation"), props.get("view:sun_azimuth")
    if isinstance(elev, int | float) and isinstance(saz, int | float):
        sun = (90.0 - float(elev), float(saz))
    inc, vaz = props.get("view:incidence_angle"), props.get("view:azimuth")
    if isinstance(inc, int | float) and isinstance(vaz, int | float):
        view = (float(inc), float(vaz))
    return sun, view


def from_item(item: S2Item) -> SourceProduct:
    """A :class:`SourceProduct` from a parsed STAC item; reads the product and granule XML it links."""
    files: dict[str, dict[float, str]] = {b: {float(a.resolution): a.href} for b, a in item.bands.items()}
    if item.scl is not None:
        files["SCL"] = {float(item.scl.resolution): item.scl.href}
    so = {b: (a.scale, a.offset) for b, a in item.bands.items() if a.scale is not None and a.offset is not None}
    product = tile_meta = None
    if item.product_metadata_href:
        product = parse_product_metadata(_read_xml(item.product_metadata_href, f"item {item.id}: product metadata"),
                                         source=item.product_metadata_href)
    if item.granule_metadata_href:
        tile_meta = parse_tile_metadata(_read_xml(item.granule_metadata_href, f"item {item.id}: granule metadata"),
                                        source=item.granule_metadata_href)
    sun, view = _item_angles(dict(item.raw.get("properties") or {}))
    origin = item.origin
    if item.tileinfo_href and tile_meta is None:
        # AWS tileInfo.json holds the tile origin: with no granule XML it is the check of the item's grid
        info = parse_tileinfo(json.loads(_read_xml(item.tileinfo_href, f"item {item.id}: tileinfo metadata")),
                              item.tileinfo_href)
        if info.tile != item.tile:
            raise InvalidInputError(f"item {item.id}: tileInfo.json names tile {info.tile}, the item {item.tile}")
        if origin is not None and (abs(origin[0] - info.origin[0]) > 0.01 or abs(origin[1] - info.origin[1]) > 0.01):
            raise InvalidInputError(f"item {item.id}: proj:transform corner {origin} ≠ tileInfo.json tileOrigin "
                                    f"{info.origin}")
        origin = info.origin
    return SourceProduct(
        id=item.id, href=item.href, format=f"stac-item:{item.convention}", level=item.level, tile=item.tile,
        datetime=item.datetime, platform=item.platform,
        baseline=item.processing_baseline or (product.processing_baseline if product else None),
        files=files, item_scale_offset=so or None, boa_offset_applied=item.boa_offset_applied, product=product,
        tile_meta=tile_meta, item_sun=sun, item_view=view, cloud_cover=item.cloud_cover, origin=origin,
        item=item,
    )


def from_safe(path: str) -> SourceProduct:
    """A :class:`SourceProduct` from a local ``.SAFE`` directory or ``.zip``."""
    from steps.sentinel2.safe import open_safe

    safe = open_safe(path)
    pm, tm = safe.product, safe.tile
    absent = set(safe.missing_files())
    # only files that are there: a band whose 10 m file is absent is read from its 20/60 m file
    files = {b: {float(r): h for r, h in per.items() if safe.image_paths[b][r] not in absent}
             for b, per in safe.band_hrefs.items()}
    files = {b: per for b, per in files.items() if per}
    if absent:
        log.info("%s: %d listed image files absent (bands read from the files present)", safe.safe_name, len(absent))
    return SourceProduct(
        id=pm.product_uri.removesuffix(".SAFE"), href=path, format="safe", level=pm.level, tile=tm.tile_id,
        datetime=tm.sensing_time, platform=pm.platform, baseline=pm.processing_baseline, files=files,
        product=pm, tile_meta=tm, cloud_cover=pm.cloud_coverage, origin=(tm.ulx, tm.uly),
    )


def load_source_product(href: str) -> SourceProduct:
    """Read the product at ``href`` (a STAC item, a ``.SAFE`` directory or a ``.zip``).

    Raises ``InvalidInputError`` naming the item/file and the reason when it cannot be understood.
    """
    if is_safe_href(href):
        return from_safe(href)
    try:
        obj = json.loads(read_uri(href))
    except FileNotFoundError as exc:
        raise InvalidInputError(f"source item not found: {href}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"source item {href} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidInputError(f"source item {href} is not a JSON object")
    return from_item(parse_item(obj, href))
