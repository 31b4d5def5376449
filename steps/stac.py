"""Steps ``stac`` (verify a scene's assets and publish its item sidecar) and ``catalog`` (rebuild the tree).

The sidecar is the commit point of a scene: it is written only after every asset has been read back
from storage and its sha256 matches what ``cog`` recorded. Until then no catalog node links to the
scene, so no reader sees a half-published product.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from pydantic import Field

import steps
from steps.catalog import (
    EXT_FILE,
    EXT_PROCESSING,
    EXT_PROJECTION,
    EXT_RASTER,
    STAC_VERSION,
    dumps,
    item_key,
    item_links,
    parse_datetime,
    rebuild_catalog,
    scene_folder,
    work_folder,
    write_if_changed,
)
from steps.contract import Resources, Step, StepInputs, StepOutputs
from steps.errors import InvalidInputError, TransientError
from steps.failures import clear_failure
from steps.grid import footprint_lonlat, footprint_polygon_lonlat
from steps.products import BY_KEY
from steps.scene import Scene, load_scene
from steps.settings import Settings
from steps.storage import join, open_storage

log = logging.getLogger(__name__)

EXT_GRID = "https://stac-extensions.github.io/grid/v1.1.0/schema.json"


class StacInputs(StepInputs):
    """Inputs of ``stac``."""

    scene: str = Field(description="href of the scene manifest written by ingest")
    out: str = Field(description="output root: directory or s3://bucket/prefix")
    assets: str = Field(description="JSON object of published assets from the cog step")
    clear_fraction: float = Field(description="clear fraction from the mask step")
    mask_provenance: str = Field("{}", description="JSON object describing how the mask was made")
    lai_provenance: str = Field("{}", description="JSON object describing the LAI network used")
    ndvi_provenance: str = Field("{}", description="JSON object describing the NDVI bands, grid and masked pixels")


class StacOutputs(StepOutputs):
    """Outputs of ``stac``."""

    item: str = Field(description="href of the published item sidecar")
    status: str = Field(description="done")


def _verify(storage: Any, folder: str, assets: dict[str, dict[str, Any]]) -> None:
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


def run_stac(inputs: StacInputs, settings: Settings) -> StacOutputs:
    """Verify the assets, write the item sidecar (the commit point), then drop the work folder."""
    scene = load_scene(inputs.scene)
    storage = open_storage(inputs.out, settings)
    try:
        assets = json.loads(inputs.assets)
        mask_prov = json.loads(inputs.mask_provenance or "{}")
        lai_prov = json.loads(inputs.lai_provenance or "{}")
        ndvi_prov = json.loads(inputs.ndvi_provenance or "{}")
    except ValueError as exc:
        raise InvalidInputError(f"stac: malformed JSON parameter: {exc}") from exc
    dt = parse_datetime(scene.datetime)
    folder = scene_folder(dt, scene.scene_id)
    _verify(storage, folder, assets)
    item = build_item(scene, assets, inputs.clear_fraction, mask_prov, lai_prov, ndvi_prov)
    key = item_key(dt, scene.scene_id)
    write_if_changed(storage, key, dumps(item))
    clear_failure(storage, scene.scene_id)  # after the commit point: the scene is no longer failed
    storage.delete_prefix(work_folder(scene.scene_id))
    log.info("%s: published %s", scene.scene_id, key)
    return StacOutputs(item=storage.url(key), status="done")


STAC = Step(
    name="stac", description="Verify checksums and publish the scene's STAC item sidecar (commit point).",
    Inputs=StacInputs, Outputs=StacOutputs, run=run_stac,
    resources=Resources(cpu="250m", memory="512Mi"),
)


class CatalogInputs(StepInputs):
    """Inputs of ``catalog``."""

    out: str = Field(description="output root: directory or s3://bucket/prefix")


class CatalogOutputs(StepOutputs):
    """Outputs of ``catalog``."""

    catalog: str = Field(description="href of the root catalog.json")
    items: int = Field(description="number of items in the catalog")
    skipped: int = Field(description="number of skipped scenes recorded")
    status: str = Field(description="done")


def run_catalog(inputs: CatalogInputs, settings: Settings) -> CatalogOutputs:
    """Rebuild the year/quarter/month tree and the index from the sidecars in storage."""
    storage = open_storage(inputs.out, settings)
    res = rebuild_catalog(storage)
    if settings.cube:
        sync_cube(storage)
    return CatalogOutputs(catalog=storage.url("catalog.json"), items=res.items, skipped=res.skipped, status="done")


def sync_cube(storage: Any) -> None:
    """Bring the time-series store in line with the index just written (:func:`steps.cube.sync`).

    The store is derived from the COGs and the catalog, which stay the product of record: a failure here is
    logged, never fails the catalog (``raw2ready cube audit`` reports what the store lacks, ``cube sync`` or
    the next catalog rebuild adds it). A held lock (another writer) is a transient error and retried.
    """
    from steps.cube import sync

    try:
        for r in sync(storage):
            if r.added or r.merged or r.orphans_removed:
                log.info("cube %s: +%d dates, %d segments merged, %d held in %d segments", r.tile, r.added,
                         r.merged, r.dates, r.segments)
    except TransientError:
        raise
    except Exception:
        log.exception("time-series store sync failed; the catalog is complete (run `raw2ready cube sync`)")


CATALOG = Step(
    name="catalog", description="Rebuild the STAC catalog tree (year/quarter/month) from item sidecars.",
    Inputs=CatalogInputs, Outputs=CatalogOutputs, run=run_catalog,
    resources=Resources(cpu="250m", memory="1Gi"), retries=5,
)
