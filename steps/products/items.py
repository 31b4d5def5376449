"""The derived STAC item of a scene, and the read-back check that precedes publishing it.

``build_item`` is pure (no I/O, no wall-clock time): the same scene and assets give the same item. It is
built as a :class:`pystac.Item` with pystac's extension classes (projection, raster, file, grid) and the
processing extension of :mod:`steps.products.stacext`, and returned as the JSON object the sidecar holds.

What an item is built from is described here by :class:`ItemScene` (the products do not depend on the
pipeline's scene manifest class, which satisfies it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

import pystac
from pystac.extensions.file import FileExtension
from pystac.extensions.grid import GridExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

import steps
from steps.errors import TransientError
from steps.products.catalog import COLLECTION_ID, item_link_objects
from steps.products.definitions import BY_KEY
from steps.products.raster import Grid
from steps.products.stacext import ProcessingExtension, stac_dict
from steps.sentinel2.grid import footprint_lonlat, footprint_polygon_lonlat
from steps.storage import join, sha256_multihash

COG_MEDIA_TYPE = pystac.MediaType.COG  # "image/tiff; application=geotiff; profile=cloud-optimized"


class BandConversion(Protocol):
    """A band's DN → reflectance conversion (reflectance = DN·scale + offset)."""

    scale: float
    """Reflectance per DN."""

    offset: float
    """Reflectance offset (0 before processing baseline 04.00)."""


class RadiometryDecision(Protocol):
    """Which source decided the DN → reflectance conversion."""

    source: str
    """The deciding source of the L2A conversion."""

    detail: str
    """How it was decided (what it was checked against)."""

    l1c_source: str
    """The deciding source of the L1C conversion ('' without L1C)."""


class AngleSource(Protocol):
    """Where the sun/view angles came from."""

    source: str
    """Where the angles come from."""


class ItemScene(Protocol):
    """What a derived item is built from: the source identities, the grids and the conversion decisions.

    Plain values are attributes; the nested records are read-only properties (so their own protocols
    match the scene manifest's models structurally).
    """

    scene_id: str
    """Derived scene id (also the item id)."""

    tile: str
    """MGRS tile, e.g. ``47PQR``."""

    datetime: dt.datetime
    """Acquisition time, aware UTC."""

    platform: str
    """E.g. ``sentinel-2a``."""

    processing_baseline: str
    """The L2A source's processing baseline, e.g. ``05.10``."""

    l2a_id: str
    """Source L2A item/product id."""

    l2a_href: str
    """Source L2A item href (a ``derived_from`` link)."""

    l1c_id: str
    """Source L1C id ('' without L1C)."""

    l1c_href: str
    """Source L1C href ('' without L1C)."""

    epsg: int
    """EPSG code of the tile's UTM CRS."""

    @property
    def grid_res(self) -> Mapping[int, float]:
        """Nominal grid class (10, 20, 60) → pixel size used (m)."""

    source_format: str
    """``stac-item:<convention>`` or ``safe``."""

    @property
    def bands(self) -> Mapping[str, BandConversion]:
        """L2A band → DN conversion."""

    @property
    def l1c_bands(self) -> Mapping[str, BandConversion]:
        """L1C band → DN conversion (empty without L1C)."""

    ndvi_nir_band: str
    """NIR band of the NDVI (B08, or B8A)."""

    @property
    def radiometry(self) -> RadiometryDecision:
        """Which source decided the conversions."""

    @property
    def angles(self) -> AngleSource:
        """The sun/view angles' source."""

    cloud_cover: float | None
    """The source's stated cloud cover (%), if any."""

    def grid(self, res: int) -> Grid:
        """The scene's grid of nominal class ``res`` (10: NDVI, 20: LAI and cloud mask)."""


def verify_assets(storage: Any, folder: str, assets: dict[str, dict[str, Any]]) -> None:
    """Read every asset back from ``folder`` and check its size and sha256 multihash (``TransientError`` if not)."""
    for key, a in assets.items():
        obj_key = join(folder, a["href"].removeprefix("./"))
        try:
            data = storage.read_bytes(obj_key)
        except FileNotFoundError as exc:
            raise TransientError(f"asset {key} vanished before publishing: {obj_key}") from exc
        if sha256_multihash(data) != a["checksum"] or len(data) != a["size"]:
            raise TransientError(f"asset {key} at {obj_key} does not match its recorded checksum")


def build_item(scene: ItemScene, assets: dict[str, dict[str, Any]], clear_fraction: float,
               mask_prov: dict[str, Any], lai_prov: dict[str, Any],
               ndvi_prov: dict[str, Any] | None = None) -> dict[str, Any]:
    """The derived STAC item of a scene as its JSON object (deterministic: no wall-clock times).

    ``assets``: product key → ``{"href", "checksum", "size"}`` as recorded by the ``cog`` step.
    Besides the assets it records how the source was read: the deciding source of the radiometric
    conversion, the offsets applied, the source format, the angle source, the output grids and the number
    of clear pixels masked because a reflectance was negative after the offset.
    """
    ndvi_prov = ndvi_prov or {}
    when = scene.datetime
    g10 = scene.grid(10)
    t = g10.transform
    bounds = (t.c, t.f - g10.shape[0] * g10.res, t.c + g10.shape[1] * g10.res, t.f)
    offsets = {b: info.offset for b, info in sorted(scene.bands.items())}
    software = {"raw2ready": steps.__version__}
    software.update({str(k): str(v) for k, v in mask_prov.get("software", {}).items()})
    software.update({str(k): str(v) for k, v in lai_prov.get("software", {}).items()})
    nir = scene.ndvi_nir_band
    negative = {"ndvi": int(ndvi_prov.get("negative_reflectance_px", 0)),
                "lai": int(lai_prov.get("negative_reflectance_px", 0))}
    provenance = {
        "ndvi": f"({nir} - B04) / ({nir} + B04) on L2A BOA reflectance, clear pixels with both reflectances >= 0",
        "radiometry": {"source": scene.radiometry.source, "detail": scene.radiometry.detail,
                       "l1c_source": scene.radiometry.l1c_source, "l2a_offsets": offsets,
                       "l1c_offsets": {b: i.offset for b, i in sorted(scene.l1c_bands.items())},
                       "quantification": round(1 / next(iter(scene.bands.values())).scale),
                       "negative_reflectance_px": negative},
        "source_format": scene.source_format,
        "angles": scene.angles.source,
        "grids_m": {str(k): v for k, v in sorted(scene.grid_res.items())},
        "cloud_mask": mask_prov,
        "lai": lai_prov,
    }

    item = pystac.Item(
        id=scene.scene_id,
        geometry={"type": "Polygon", "coordinates": [footprint_polygon_lonlat(scene.epsg, bounds)]},
        bbox=[round(v, 7) for v in footprint_lonlat(scene.epsg, bounds)],
        datetime=when,
        properties={},
        collection=COLLECTION_ID,
    )
    item.common_metadata.platform = scene.platform
    item.common_metadata.constellation = "sentinel-2"
    item.common_metadata.instruments = ["msi"]
    GridExtension.ext(item, add_if_missing=True).apply(f"MGRS-{scene.tile}")
    ProjectionExtension.ext(item, add_if_missing=True).code = f"EPSG:{scene.epsg}"
    ProcessingExtension.ext(item, add_if_missing=True).apply(
        level="L2B",
        facility="raw2ready",
        software=software,
        lineage=(
            f"From {scene.l2a_id} (L2A, processing baseline {scene.processing_baseline})"
            + (f" and {scene.l1c_id} (L1C)" if scene.l1c_id else "")
            + f"; reflectance = DN·scale + offset decided by {scene.radiometry.source}; cloud mask: "
            + str(mask_prov.get("method", "?"))
            + (f"; LAI: SNAP biophysical network {lai_prov.get('network')}" if lai_prov else "")
            + "."
        ),
        expression={"format": "raw2ready-provenance", "expression": provenance},
    )
    item.properties.update({
        "raw2ready:source_processing_baseline": scene.processing_baseline,
        "raw2ready:offsets_applied": offsets,
        "raw2ready:radiometry_source": scene.radiometry.source,
        "raw2ready:negative_reflectance_px": negative,
        "raw2ready:clear_fraction": clear_fraction,
    })
    if scene.cloud_cover is not None:
        item.properties["raw2ready:source_cloud_cover"] = scene.cloud_cover
    if mask_prov.get("scl_cloud_cover_pct") is not None:
        item.properties["raw2ready:scl_cloud_cover"] = mask_prov["scl_cloud_cover_pct"]

    for link in item_link_objects():
        item.add_link(link)
    item.add_link(pystac.Link("derived_from", scene.l2a_href, pystac.MediaType.GEOJSON,
                              f"source L2A {scene.l2a_id}"))
    if scene.l1c_href:
        item.add_link(pystac.Link("derived_from", scene.l1c_href, pystac.MediaType.GEOJSON,
                                  f"source L1C {scene.l1c_id}"))

    for key in sorted(assets):
        p = BY_KEY[key]
        g = scene.grid(p.resolution_m)
        asset = pystac.Asset(assets[key]["href"], title=p.title, description=p.description,
                             media_type=COG_MEDIA_TYPE, roles=list(p.roles))
        item.add_asset(key, asset)
        proj = ProjectionExtension.ext(asset, add_if_missing=True)
        proj.shape = list(g.shape)
        proj.transform = [g.transform.a, g.transform.b, g.transform.c, g.transform.d, g.transform.e, g.transform.f]
        band = RasterBand.create(nodata=p.nodata, data_type=DataType(p.dtype),
                                 spatial_resolution=int(g.res) if float(g.res).is_integer() else g.res,
                                 scale=p.scale, offset=p.offset)
        if p.unit:
            band.unit = p.unit
        RasterExtension.ext(asset, add_if_missing=True).bands = [band]
        file = FileExtension.ext(asset, add_if_missing=True)
        file.checksum = assets[key]["checksum"]
        file.size = assets[key]["size"]
    item.stac_extensions.sort()
    return stac_dict(item)
