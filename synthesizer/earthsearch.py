"""The synthetic archive as a static, self-contained STAC catalog in the Earth Search v1 item shape.

Layout: ``<out>/catalog.json`` → ``<out>/<collection>/collection.json`` → ``<out>/<collection>/<id>/<id>.json``
with the assets next to each item (relative hrefs): uint16 COG bands named like Earth Search's
(``B04.tif`` …, ``SCL.tif``), ``granule_metadata.xml`` (the real ``MTD_TL.xml`` layout),
``product_metadata.xml`` (``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml``) and ``tileinfo_metadata.json`` (the AWS
``tileInfo.json`` of the ``sentinel-s2-l1c``/``-l2a`` buckets). Collections: ``sentinel-2-c1-l2a`` and
``sentinel-2-l1c``.

What the item shape is based on (``tests/test_synth.py`` checks every key against the real files):

* L2A properties and asset keys: the real Earth Search v1 item ``S2A_29RKH_20200219_0_L2A``
  (``shared/real/rio-tiler-pds``): ``s2:*`` (incl. the Sen2Cor percentages, ``s2:granule_id``,
  ``s2:datastrip_id``, ``s2:reflectance_conversion_factor``, ``s2:sequence``), ``mgrs:*``, ``grid:code``
  (``MGRS-`` + unpadded zone), ``proj:epsg``, ``view:sun_*``, ``earthsearch:boa_offset_applied``; assets by
  common name + ``scl``, ``granule_metadata``, ``tileinfo_metadata``; a ``derived_from`` link to its L1C
  item. Plus ``product_metadata``, which Earth Search's Sentinel-2 task adds from the product's
  ``metadata.xml`` (element84 ``sentinel-2-l2a-to-stac`` task, via stactools-sentinel2's ``create_item``;
  the real stactools item ``stac-items/stac-utils+pystac/example-sentinel2.json`` carries it too).
  The ids keep Earth Search v1's ``S2B_47PPR_20240115_0_L2A`` form (:meth:`SceneSpec.item_id`).
* L1C: Earth Search builds ``sentinel-2-l1c`` items with the same stactools code; no real item of that
  collection is in ``shared/real``, so the L1C keys are those of the real stactools L1C item above (with
  the ``s2:`` prefix Earth Search v1 uses instead of ``sentinel2:``) and of the v1 L2A item; no SCL-derived
  percentages and no ``earthsearch:boa_offset_applied`` (there is no BOA offset in L1C).
* Radiometry in ``raster:bands``: scale 0.0001; offset −0.1 when the baseline is ≥ 04.00 (DN =
  round(ρ·10000) + 1000, the offset is *not* applied to the DN, hence ``earthsearch:boa_offset_applied``
  false), else 0 (DN = round(ρ·10000)). DN 0 = no data. The COGs carry the same scale/offset tags.

Everything is deterministic: the same specs, size and seed give byte-identical files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from steps.sentinel2.bands import BANDS, Band
from steps.sentinel2.grid import footprint_lonlat, parse_tile
from synthesizer.esa import (
    bands_of,
    product_metadata_xml,
    product_names,
    reflectance_conversion_u,
    scl_statistics,
    tile_metadata_xml,
)
from synthesizer.render import (
    OFFSET_DN,
    QUANTIFICATION,
    SceneArrays,
    SceneSpec,
    data_footprint_lonlat,
    data_footprint_utm,
    render_scene,
    scene_mean_angles,
)

logger = logging.getLogger(__name__)

__all__ = [
    "L1C_COLLECTION",
    "L2A_COLLECTION",
    "encode_dn",
    "item_dict",
    "synthesize_archive",
    "tileinfo_dict",
    "write_scene",
]

L2A_COLLECTION = "sentinel-2-c1-l2a"
L1C_COLLECTION = "sentinel-2-l1c"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_VERSION = "1.1.0"
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
]
"""Extensions of an Earth Search c1 item (``proj:epsg`` is projection v1.x; v2 replaced it by ``proj:code``)."""

GRANULE_METADATA = "granule_metadata.xml"
PRODUCT_METADATA = "product_metadata.xml"
TILEINFO_METADATA = "tileinfo_metadata.json"

# Earth Search's asset titles/descriptions ("Red (band 4) - 10m"), as in the real 29RKH and stactools items
_DESCRIPTIONS = {
    "B01": "Coastal aerosol (band 1)", "B02": "Blue (band 2)", "B03": "Green (band 3)", "B04": "Red (band 4)",
    "B05": "Red edge 1 (band 5)", "B06": "Red edge 2 (band 6)", "B07": "Red edge 3 (band 7)",
    "B08": "NIR 1 (band 8)", "B8A": "NIR 2 (band 8A)", "B09": "NIR 3 (band 9)", "B10": "Cirrus (band 10)",
    "B11": "SWIR 1 (band 11)", "B12": "SWIR 2 (band 12)",
}
_PERCENTAGES = {  # item property -> MTD_TL Image_Content_QI element (L2A)
    "s2:nodata_pixel_percentage": "NODATA_PIXEL_PERCENTAGE",
    "s2:saturated_defective_pixel_percentage": "SATURATED_DEFECTIVE_PIXEL_PERCENTAGE",
    "s2:dark_features_percentage": "DARK_FEATURES_PERCENTAGE",
    "s2:cloud_shadow_percentage": "CLOUD_SHADOW_PERCENTAGE",
    "s2:vegetation_percentage": "VEGETATION_PERCENTAGE",
    "s2:not_vegetated_percentage": "NOT_VEGETATED_PERCENTAGE",
    "s2:water_percentage": "WATER_PERCENTAGE",
    "s2:unclassified_percentage": "UNCLASSIFIED_PERCENTAGE",
    "s2:medium_proba_clouds_percentage": "MEDIUM_PROBA_CLOUDS_PERCENTAGE",
    "s2:high_proba_clouds_percentage": "HIGH_PROBA_CLOUDS_PERCENTAGE",
    "s2:thin_cirrus_percentage": "THIN_CIRRUS_PERCENTAGE",
    "s2:snow_ice_percentage": "SNOW_ICE_PERCENTAGE",
}


def encode_dn(rho: np.ndarray, add_offset: float, quantification: float = QUANTIFICATION) -> np.ndarray:
    """Reflectance → uint16 DN as ESA encodes it: round(ρ·q) − add_offset clipped to [1, 65535]; NaN → 0.

    ``add_offset`` is the metadata's ADD_OFFSET (−1000 from baseline 04.00, else 0), so DN = round(ρ·10000)
    + 1000 from 04.00 on. Works in row blocks so a full 10980² band needs no float64 copy of the whole array.
    """
    rho = np.asarray(rho)
    out = np.empty(rho.shape, dtype=np.uint16)
    flat_r = rho.reshape(rho.shape[0], -1) if rho.ndim > 1 else rho.reshape(1, -1)
    flat_o = out.reshape(flat_r.shape)
    step = max(1, (1 << 21) // max(1, flat_r.shape[1]))
    for r in range(0, flat_r.shape[0], step):
        dn = np.rint(flat_r[r:r + step].astype(np.float64) * quantification) - add_offset
        nan = np.isnan(dn)
        np.clip(dn, 1, 65535, out=dn)
        dn[nan] = 0
        flat_o[r:r + step] = dn
    return out


def _write_cog(path: Path, data: np.ndarray, res: int, tile_epsg: int, ulx: float, uly: float, *,
               resampling: str, scale: float | None = None, offset: float | None = None) -> None:
    """One-band COG (DEFLATE + predictor 2, 512 blocks, internal overviews), nodata 0, tile CRS."""
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    profile = {
        "driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
        "dtype": data.dtype.name, "crs": f"EPSG:{tile_epsg}", "nodata": 0,
        "transform": Affine(res, 0.0, ulx, 0.0, -res, uly),
    }
    with MemoryFile() as mem, mem.open(**profile) as tmp:
        tmp.write(data, 1)
        if scale is not None:
            tmp.scales = (scale,)
            tmp.offsets = (offset or 0.0,)
        rasterio.shutil.copy(tmp, str(path), driver="COG", compress="DEFLATE", predictor=2,
                             blocksize=512, overview_resampling=resampling, resampling=resampling,
                             num_threads=1)


def _dt_str(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _band_asset(b: Band, spec: SceneSpec, size: int, tile_ulx: float, tile_uly: float) -> dict[str, Any]:
    n = size * 10 // b.resolution
    offset = OFFSET_DN / QUANTIFICATION if spec.has_offsets else 0.0
    desc = _DESCRIPTIONS[b.name]
    return {
        "href": f"./{b.name}.tif",
        "type": COG_MEDIA_TYPE,
        "title": f"{desc} - {b.resolution}m",
        "eo:bands": [{"name": b.asset_key, "common_name": b.common_name, "description": desc,
                      "center_wavelength": b.center_wavelength, "full_width_half_max": b.fwhm}],
        "gsd": b.resolution,
        "proj:shape": [n, n],
        "proj:transform": [b.resolution, 0, tile_ulx, 0, -b.resolution, tile_uly],
        "raster:bands": [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                          "spatial_resolution": b.resolution, "scale": 1.0 / QUANTIFICATION, "offset": offset}],
        "roles": ["data", "reflectance"],
    }


def tileinfo_dict(spec: SceneSpec, arrays: SceneArrays, level: str) -> dict[str, Any]:
    """The AWS ``tileInfo.json`` of the scene's ``level`` tile (shape of ``sentinel-s2-l1c`` …/tileInfo.json).

    ``tileGeometry`` is the scene window, ``tileDataGeometry`` its valid-data polygon, both in the tile CRS
    (metres, ``urn:ogc:def:crs:EPSG:8.8.1:<epsg>``); ``tileOrigin`` the tile's upper-left corner.
    """
    tile = parse_tile(spec.tile)
    names = product_names(spec, level)
    t = names.sensing_time
    crs = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG:8.8.1:{tile.epsg}"}}
    xmin, ymin, xmax, ymax = tile.window_bounds(arrays.size)
    square = [[xmin, ymax], [xmax, ymax], [xmax, ymin], [xmin, ymin], [xmin, ymax]]
    data = [[round(x, 9), round(y, 9)] for x, y in data_footprint_utm(spec, arrays.size)]
    stats = scl_statistics(arrays)
    product_path = f"products/{t.year}/{t.month}/{t.day}/{names.product_id}"
    return {
        "path": f"tiles/{tile.zone}/{tile.band}/{tile.square}/{t.year}/{t.month}/{t.day}/{spec.sequence}",
        "timestamp": _dt_str(t),
        "utmZone": tile.zone,
        "latitudeBand": tile.band,
        "gridSquare": tile.square,
        "datastrip": {"id": names.datastrip_id, "path": f"{product_path}/datastrip/0"},
        "tileGeometry": {"type": "Polygon", "crs": crs, "coordinates": [square]},
        "tileDataGeometry": {"type": "Polygon", "crs": crs, "coordinates": [data]},
        "tileOrigin": {"type": "Point", "crs": crs, "coordinates": [tile.ulx, tile.uly]},
        "dataCoveragePercentage": round(100.0 - stats["NODATA_PIXEL_PERCENTAGE"], 2),
        "cloudyPixelPercentage": round(stats["CLOUDY_PIXEL_PERCENTAGE"], 2),
        "productName": names.product_id,
        "productPath": product_path,
    }


def item_dict(spec: SceneSpec, arrays: SceneArrays, level: str) -> dict[str, Any]:
    """The Earth Search v1-shaped STAC item (a dict) of the scene's ``level`` ("L2A"/"L1C") product.

    Asset hrefs are relative (``./B04.tif``); links point at the collection and catalog of the archive
    layout and, for an L2A with an L1C, ``derived_from`` at the L1C item. Values agree with the metadata
    files written next to it (ids, times, percentages, mean sun angles).
    """
    tile = parse_tile(spec.tile)
    size = arrays.size
    names = product_names(spec, level)
    ring = data_footprint_lonlat(spec, size)
    bbox = [round(min(p[0] for p in ring), 7), round(min(p[1] for p in ring), 7),
            round(max(p[0] for p in ring), 7), round(max(p[1] for p in ring), 7)]
    if not spec.swath_edge:  # a full window: densified edges give the tighter geodesic bbox
        bbox = [round(v, 7) for v in footprint_lonlat(tile.epsg, tile.window_bounds(size))]
    stats = scl_statistics(arrays)
    msz, msa = scene_mean_angles(arrays.sun_zenith, arrays.sun_azimuth)
    props: dict[str, Any] = {
        "datetime": _dt_str(names.sensing_time),
        "platform": spec.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": stats["CLOUDY_PIXEL_PERCENTAGE"],
        "proj:epsg": tile.epsg,
        "mgrs:utm_zone": tile.zone,
        "mgrs:latitude_band": tile.band,
        "mgrs:grid_square": tile.square,
        "grid:code": f"MGRS-{tile.zone}{tile.band}{tile.square}",
        "view:sun_azimuth": round(msa, 6),
        "view:sun_elevation": round(90.0 - msz, 6),
        "s2:degraded_msi_data_percentage": 0,
    }
    if level == "L2A":
        props.update({k: stats[v] for k, v in _PERCENTAGES.items()})
    props.update({
        "s2:product_type": "S2MSI2A" if level == "L2A" else "S2MSI1C",
        "s2:processing_baseline": spec.processing_baseline,
        "s2:product_uri": names.product_uri,
        "s2:generation_time": _dt_str(names.generation_time)[:-1] + "000Z",
        "s2:datatake_id": names.datatake_id,
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": names.datastrip_id,
        "s2:granule_id": names.tile_id,
        "s2:reflectance_conversion_factor": reflectance_conversion_u(names.sensing_start),
        "s2:sequence": str(spec.sequence),
    })
    if level == "L2A":
        props["earthsearch:boa_offset_applied"] = False

    assets: dict[str, Any] = {}
    for name in bands_of(level):
        b = BANDS[name]
        assets[b.asset_key] = _band_asset(b, spec, size, tile.ulx, tile.uly)
    if level == "L2A":
        n20 = size // 2
        assets["scl"] = {
            "href": "./SCL.tif", "type": COG_MEDIA_TYPE, "title": "Scene classification map (SCL)",
            "proj:shape": [n20, n20], "proj:transform": [20, 0, tile.ulx, 0, -20, tile.uly],
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
            "roles": ["data"],
        }
    assets["granule_metadata"] = {"href": f"./{GRANULE_METADATA}", "type": "application/xml",
                                  "roles": ["metadata"]}
    assets["product_metadata"] = {"href": f"./{PRODUCT_METADATA}", "type": "application/xml",
                                  "roles": ["metadata"]}
    assets["tileinfo_metadata"] = {"href": f"./{TILEINFO_METADATA}", "type": "application/json",
                                   "roles": ["metadata"]}
    links = [
        {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../collection.json", "type": "application/json"},
        {"rel": "collection", "href": "../collection.json", "type": "application/json"},
    ]
    if level == "L2A" and spec.has_l1c:
        l1c = spec.item_id("L1C")
        links.append({"rel": "derived_from", "href": f"../../{L1C_COLLECTION}/{l1c}/{l1c}.json",
                      "type": "application/geo+json"})
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": STAC_EXTENSIONS,
        "id": spec.item_id(level),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": bbox,
        "properties": props,
        "links": links,
        "assets": assets,
        "collection": L2A_COLLECTION if level == "L2A" else L1C_COLLECTION,
    }


def _dump(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_scene(root: Path, spec: SceneSpec, arrays: SceneArrays) -> list[Path]:
    """Write the scene's L2A item (and L1C item when ``spec.has_l1c``) under the archive ``root``.

    Layout ``root/<collection>/<item_id>/``: COG bands (uint16, DN = round(ρ·10000) − ADD_OFFSET clipped to
    [1, 65535], 0 = no data; DEFLATE + predictor 2, internal overviews; tile UTM CRS at native 10/20/60 m),
    ``SCL.tif`` (L2A, uint8, 20 m), ``granule_metadata.xml`` (MTD_TL), ``product_metadata.xml`` (MTD_MSIL2A/
    MTD_MSIL1C), ``tileinfo_metadata.json`` and last the item JSON, so an item on disk always has all its
    assets. Returns every path written (item JSONs first). Collections and the root catalog are written by
    :func:`synthesize_archive`.
    """
    tile = parse_tile(spec.tile)
    written: list[Path] = []
    for level in ("L2A", "L1C") if spec.has_l1c else ("L2A",):
        collection = L2A_COLLECTION if level == "L2A" else L1C_COLLECTION
        item_id = spec.item_id(level)
        d = root / collection / item_id
        d.mkdir(parents=True, exist_ok=True)
        for fname, content in ((GRANULE_METADATA, tile_metadata_xml(spec, arrays, level)),
                               (PRODUCT_METADATA, product_metadata_xml(spec, arrays, level)),
                               (TILEINFO_METADATA,
                                (json.dumps(tileinfo_dict(spec, arrays, level), indent=2) + "\n").encode())):
            (d / fname).write_bytes(content)
            written.append(d / fname)
        src = arrays.boa if level == "L2A" else arrays.toa
        add = OFFSET_DN if spec.has_offsets else 0.0
        for name in bands_of(level):
            b = BANDS[name]
            p = d / f"{name}.tif"
            _write_cog(p, encode_dn(src[name], add), b.resolution, tile.epsg, tile.ulx, tile.uly,
                       resampling="AVERAGE", scale=1.0 / QUANTIFICATION, offset=add / QUANTIFICATION)
            written.append(p)
        if level == "L2A":
            p = d / "SCL.tif"
            _write_cog(p, arrays.scl, 20, tile.epsg, tile.ulx, tile.uly, resampling="NEAREST")
            written.append(p)
        item_path = d / f"{item_id}.json"
        _dump(item_path, item_dict(spec, arrays, level))
        written.append(item_path)
    return sorted(written, key=lambda p: p.suffix != ".json" or p.name == TILEINFO_METADATA)


def _collection_dict(cid: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    xs = [it["bbox"] for it in items]
    bbox = [min(b[0] for b in xs), min(b[1] for b in xs), max(b[2] for b in xs), max(b[3] for b in xs)]
    times = sorted(it["properties"]["datetime"] for it in items)
    level = "L2A" if cid == L2A_COLLECTION else "L1C"
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": cid,
        "title": f"Synthetic Sentinel-2 {level} (raw2ready test archive)",
        "description": (f"Synthetic Sentinel-2 {level} scenes shaped like Earth Search v1 '{cid}', made by "
                        "raw2ready's seeded synthesizer (package synthesizer). Not real data."),
        "license": "CC0-1.0",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[times[0], times[-1]]]}},
        "links": [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
            *({"rel": "item", "href": f"./{it['id']}/{it['id']}.json", "type": "application/geo+json"}
              for it in sorted(items, key=lambda i: i["id"])),
        ],
    }


def synthesize_archive(out: Path, specs: list[SceneSpec], size: int, seed: int = 0,
                       progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Render and write ``specs`` as a static STAC archive under ``out``; return ``out/catalog.json``.

    Deterministic: the same specs, size and seed give byte-identical files. ``progress(done, total,
    item_id)`` is called after each scene. Duplicate item ids raise ``ValueError``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = [s.item_id() for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate scene ids in specs (same platform, tile, date and sequence)")
    items: dict[str, list[dict[str, Any]]] = {L2A_COLLECTION: [], L1C_COLLECTION: []}
    for k, spec in enumerate(sorted(specs, key=lambda s: (s.datetime, s.tile, s.sequence, s.platform))):
        arrays = render_scene(spec, size, seed)
        for p in write_scene(out, spec, arrays):
            if p.suffix == ".json" and p.name != TILEINFO_METADATA:
                items[p.parent.parent.name].append(json.loads(p.read_text(encoding="utf-8")))
        del arrays
        logger.info("wrote %s", spec.item_id())
        if progress is not None:
            progress(k + 1, len(specs), spec.item_id())
    children = [cid for cid in (L2A_COLLECTION, L1C_COLLECTION) if items[cid]]
    for cid in children:
        _dump(out / cid / "collection.json", _collection_dict(cid, items[cid]))
    catalog = {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": "raw2ready-synthetic",
        "title": "raw2ready synthetic Sentinel-2 archive",
        "description": f"Synthetic Sentinel-2 L2A/L1C scenes (size {size} px at 10 m, seed {seed}).",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            *({"rel": "child", "href": f"./{cid}/collection.json", "type": "application/json"}
              for cid in children),
        ],
    }
    _dump(out / "catalog.json", catalog)
    return out / "catalog.json"
