"""The derived STAC item of a scene, and the read-back check that precedes publishing it.

``build_item`` is pure (no I/O, no wall-clock time): the same scene and assets give the same item.
"""

from __future__ import annotations

import hashlib
from typing import Any

import steps
from steps.errors import TransientError
from steps.pipeline.scene import Scene
from steps.products.catalog import (
    EXT_FILE,
    EXT_PROCESSING,
    EXT_PROJECTION,
    EXT_RASTER,
    STAC_VERSION,
    item_links,
    parse_datetime,
)
from steps.products.definitions import BY_KEY
from steps.sentinel2.grid import footprint_lonlat, footprint_polygon_lonlat
from steps.storage import join

EXT_GRID = "https://stac-extensions.github.io/grid/v1.1.0/schema.json"


def verify_assets(storage: Any, folder: str, assets: dict[str, dict[str, Any]]) -> None:
    """Read every asset back from ``folder`` and check its size and sha256 multihash (``TransientError`` if not)."""
    for key, a in assets.items():
        obj_key = join(folder, a["href"].removeprefix("./"))
        try:
            data = storage.read_bytes(obj_key)
        except FileNotFoundError as exc:
            raise TransientError(f"asset {key} vanished before publishing: {obj_key}") from exc
        got = "1220" + hashlib.sha256(data).hexdigest()
        if got != a["checksum"] or len(data) != a["size"]:
            raise TransientError(f"asset {key} at {obj_key} does not match its recorded checksum")


def build_item(scene: Scene, assets: dict[str, dict[str, Any]], clear_fraction: float,
               mask_prov: dict[str, Any], lai_prov: dict[str, Any],
               ndvi_prov: dict[str, Any] | None = None) -> dict[str, Any]:
    """The derived STAC item of a scene (deterministic: no wall-clock times).

    Besides the assets it records how the source was read: the deciding source of the radiometric
    conversion, the offsets applied, the source format, the angle source, the output grids and the number
    of clear pixels masked because a reflectance was negative after the offset.
    """
    ndvi_prov = ndvi_prov or {}
    dt = parse_datetime(scene.datetime)
    g10 = scene.grid(10)
    t = g10.transform
    bounds = (t.c, t.f - g10.shape[0] * g10.res, t.c + g10.shape[1] * g10.res, t.f)
    bbox = [round(v, 7) for v in footprint_lonlat(scene.epsg, bounds)]
    geometry = {"type": "Polygon", "coordinates": [footprint_polygon_lonlat(scene.epsg, bounds)]}
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
    out_assets: dict[str, Any] = {}
    for key in sorted(assets):
        p = BY_KEY[key]
        g = scene.grid(p.resolution_m)
        res: float | int = int(g.res) if float(g.res).is_integer() else g.res
        band: dict[str, Any] = {"nodata": p.nodata, "data_type": p.dtype, "spatial_resolution": res,
                                "scale": p.scale, "offset": p.offset}
        if p.unit:
            band["unit"] = p.unit
        out_assets[key] = {
            "href": assets[key]["href"],
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "title": p.title,
            "description": p.description,
            "roles": list(p.roles),
            "proj:shape": list(g.shape),
            "proj:transform": [g.transform.a, g.transform.b, g.transform.c, g.transform.d, g.transform.e,
                               g.transform.f],
            "raster:bands": [band],
            "file:checksum": assets[key]["checksum"],
            "file:size": assets[key]["size"],
        }
    links = item_links(dt)
    links.append({"rel": "derived_from", "href": scene.l2a_href, "type": "application/geo+json",
                  "title": f"source L2A {scene.l2a_id}"})
    if scene.l1c_href:
        links.append({"rel": "derived_from", "href": scene.l1c_href, "type": "application/geo+json",
                      "title": f"source L1C {scene.l1c_id}"})
    props: dict[str, Any] = {
        "datetime": scene.datetime,
        "platform": scene.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "grid:code": f"MGRS-{scene.tile}",
        "proj:code": f"EPSG:{scene.epsg}",
        "processing:level": "L2B",
        "processing:facility": "raw2ready",
        "processing:software": software,
        "processing:lineage": (
            f"From {scene.l2a_id} (L2A, processing baseline {scene.processing_baseline})"
            + (f" and {scene.l1c_id} (L1C)" if scene.l1c_id else "")
            + f"; reflectance = DN·scale + offset decided by {scene.radiometry.source}; cloud mask: "
            + str(mask_prov.get("method", "?"))
            + (f"; LAI: SNAP biophysical network {lai_prov.get('network')}" if lai_prov else "")
            + "."
        ),
        "processing:expression": {"format": "raw2ready-provenance", "expression": provenance},
        "raw2ready:source_processing_baseline": scene.processing_baseline,
        "raw2ready:offsets_applied": offsets,
        "raw2ready:radiometry_source": scene.radiometry.source,
        "raw2ready:negative_reflectance_px": negative,
        "raw2ready:clear_fraction": clear_fraction,
    }
    if scene.cloud_cover is not None:
        props["raw2ready:source_cloud_cover"] = scene.cloud_cover
    if mask_prov.get("scl_cloud_cover_pct") is not None:
        props["raw2ready:scl_cloud_cover"] = mask_prov["scl_cloud_cover_pct"]
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EXT_FILE, EXT_GRID, EXT_PROCESSING, EXT_PROJECTION, EXT_RASTER],
        "id": scene.scene_id,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "links": links,
        "assets": out_assets,
        "collection": "raw2ready-s2-vegetation",
    }
