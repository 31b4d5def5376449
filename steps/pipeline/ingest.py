"""Steps ``scenes`` (list the work of a tile/date range) and ``ingest`` (resolve one scene).

``ingest`` reads the L2A source product (a STAC item of any catalogue convention, or a ``.SAFE``
directory/``.zip``) and the paired L1C, reads the ESA metadata where it really lives (product XML:
baseline, quantification, offsets; granule XML: geocoding, angles), checks that item, metadata and rasters
agree with the Sentinel-2 tile (CRS and upper-left corner), decides each band's reflectance conversion by
the one rule of :mod:`steps.sentinel2.radiometry` (never by date) and the output grids
(``resolution``: 10, 20 or 60 m, default the finest the source has). The result is the scene manifest
(:mod:`steps.pipeline.scene`), which records which source decided each of these.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import Field

from steps.errors import InvalidInputError
from steps.pipeline.contract import OUT_ROOT, Resources, StatusOutputs, Step, StepContext, StepInputs, StepOutputs
from steps.pipeline.scene import AngleGrids, BandInfo, RadiometryRecord, Scene
from steps.products.catalog import is_complete
from steps.products.raster import raster_info
from steps.sentinel2.bands import S2CLOUDLESS_BANDS
from steps.sentinel2.grid import Tile, normalize_tiles, parse_tile
from steps.sentinel2.product import SourceProduct, load_source_product
from steps.sentinel2.radiometry import Radiometry, resolve_radiometry
from steps.sentinel2.source import find_scenes

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- scenes
class ScenesInputs(StepInputs):
    """Inputs of ``scenes``."""

    source: str = Field(description="STAC source: static catalog path/URL (file, s3, https) or STAC API URL")
    tiles: str = Field(description="MGRS tiles, comma-separated, e.g. 47PPR,47PQR")
    start: str = Field(description="first acquisition date, YYYY-MM-DD (inclusive)")
    end: str = Field(description="last acquisition date, YYYY-MM-DD (inclusive)")
    out: str = Field("", description="output root: scenes already complete there are left out ('' = list all)")
    force: bool = Field(False, description="list scenes whose products are already complete too (reprocess)")
    resolution: int = Field(0, description="product resolution in m: 10, 20 or 60 (0 = the finest the source has)")


class ScenesOutputs(StepOutputs):
    """Outputs of ``scenes``."""

    scenes: str = Field(description="JSON list of the scenes to process (scene_id, tile, datetime, l2a_href, …)")
    count: int = Field(description="number of scenes to process")
    complete: int = Field(0, description="scenes found whose products are already complete (left out)")


def run_scenes(inputs: ScenesInputs, ctx: StepContext) -> ScenesOutputs:
    """Find, deduplicate and pair the scenes of a tile/date range; leave out those already complete in ``out``.

    Leaving complete scenes out makes a repeated or redelivered order cheap in the cluster, as the local runner
    and the queue worker already are; ``force`` lists them all (to reprocess, e.g. after a science change).
    """
    tiles = normalize_tiles(inputs.tiles)
    scenes = find_scenes(inputs.source, tiles, inputs.start, inputs.end, resolution=inputs.resolution)
    complete = 0
    if inputs.out and not inputs.force:
        todo = [s for s in scenes if not is_complete(ctx.storage, s.scene_id, s.datetime)]
        complete = len(scenes) - len(todo)
        if complete:
            log.info("%d of %d scenes already complete in %s: left out", complete, len(scenes), inputs.out)
        scenes = todo
    payload = json.dumps([s.model_dump() for s in scenes], separators=(",", ":"))
    return ScenesOutputs(scenes=payload, count=len(scenes), complete=complete)


SCENES = Step(
    name="scenes", description="List the deduplicated L2A/L1C scene pairs of tiles and a date range.",
    Inputs=ScenesInputs, Outputs=ScenesOutputs, body=run_scenes,
    resources=Resources(cpu="250m", memory="512Mi"),
)


# ----------------------------------------------------------------------------------------------- ingest
class IngestInputs(StepInputs):
    """Inputs of ``ingest``."""

    scene_id: str = Field(description="derived scene id, e.g. S2B_47PPR_20240115T035029")
    l2a_href: str = Field(description="href of the source L2A product (STAC item, .SAFE directory or .zip)")
    l1c_href: str = Field("", description="href of the paired L1C product ('' if none)")
    out: str = Field(description=OUT_ROOT)
    resolution: int = Field(0, description="product resolution in m: 10, 20 or 60 (0 = the finest the source has)")

    def scene_of(self) -> str | None:
        """The scene ``ingest`` resolves: ``scene_id``."""
        return self.scene_id or None


class IngestOutputs(StatusOutputs):
    """Outputs of ``ingest``."""

    scene: str = Field(description="href of the scene manifest (work/<scene_id>/scene.json)")


RESOLUTIONS = (0, 10, 20, 60)
"""Accepted ``resolution`` values (0 = automatic)."""


Header = tuple[int | None, float, float, float, tuple[int, int], float | None, int | None]
"""EPSG, pixel size (m), ulx, uly, shape (rows, cols), nodata tag and the factor of an averaged first overview."""


def _header(href: str, what: str) -> Header:
    """The :data:`Header` of a raster file (header only)."""
    info = raster_info(href, what=what)
    a, _b, c, _d, e, f = info["transform"]
    if abs(a + e) > 1e-6 * abs(a):
        raise InvalidInputError(f"{what}: pixels are not square ({a} × {-e} m)")
    ovr = info["overviews"]
    # GDAL builds overview 2 from full resolution (later levels from the previous level): only that first
    # level of an AVERAGE-made overview set with nodata 0 is the valid-DN 2×2 block mean
    avg = ovr[0] if ovr and ovr[0] == 2 and info["overview_resampling"] == "AVERAGE" and info["nodata"] == 0 else None
    return info["epsg"], float(a), float(c), float(f), info["shape"], info["nodata"], avg


def _check_files(sp: SourceProduct, bands: list[tuple[str, float, str]], tile: Tile
                 ) -> tuple[dict[str, Header], tuple[float, float]]:
    """Read the headers of the chosen files concurrently; check CRS, corner and extent against the tile.

    Returns the header of each file and the common extent (height, width) in metres.
    """
    def one(entry: tuple[str, float, str]) -> tuple[str, Header]:
        band, _res, href = entry
        return band, _header(href, f"{sp.id} {band}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        headers = dict(pool.map(one, bands))
    extents: set[tuple[float, float]] = set()
    for band, (epsg, res, ulx, uly, shape, _nodata, _ovr) in headers.items():
        what = f"{sp.id} {band}"
        if epsg != tile.epsg:
            raise InvalidInputError(f"{what}: CRS EPSG:{epsg} is not tile {tile.id}'s EPSG:{tile.epsg}")
        if abs(ulx - tile.ulx) > 0.01 or abs(uly - tile.uly) > 0.01:
            raise InvalidInputError(f"{what}: upper-left corner ({ulx}, {uly}) is not tile {tile.id}'s "
                                    f"({tile.ulx}, {tile.uly})")
        extents.add((round(shape[0] * res, 3), round(shape[1] * res, 3)))
    if len(extents) != 1:
        raise InvalidInputError(f"{sp.id}: band files cover different extents {sorted(extents)} (m)")
    return headers, extents.pop()


def _choose_resolution(sp: SourceProduct, sizes: dict[str, float], nir: str, requested: int) -> dict[int, float]:
    """Pixel size (m) of grid class 10 (NDVI) and 20 (LAI, cloud mask) from the files and ``requested``.

    Class 10 = the coarsest of B04 and the NIR band's files, or ``requested`` if coarser; class 20 = the
    coarsest of class 10 and the LAI/SCL files. Asking for a resolution finer than the files is an error.
    """
    if requested not in RESOLUTIONS:
        raise InvalidInputError(f"resolution {requested} m: choose 10, 20 or 60 (0 = finest available)")
    finest10 = max(sizes["B04"], sizes[nir])
    if requested and requested < finest10:
        raise InvalidInputError(f"{sp.id}: resolution {requested} m asked, but its finest B04/{nir} files are "
                                f"{finest10:g} m")
    res10 = max(finest10, float(requested))
    res20 = max([res10] + [sizes[b] for b in (*LAI_20M_BANDS, "SCL")])
    ratio = res20 / res10
    if abs(ratio - round(ratio)) > 1e-9 or round(ratio) not in (1, 2):
        raise InvalidInputError(f"{sp.id}: NDVI grid {res10:g} m and LAI/mask grid {res20:g} m are not 1:1 or 1:2")
    return {10: res10, 20: res20}


LAI_20M_BANDS = ("B05", "B06", "B07", "B8A", "B11", "B12")
"""LAI inputs whose native resolution is 20 m (B03 and B04 are 10 m)."""


def _band_infos(sp: SourceProduct, names: tuple[str, ...], headers: dict[str, Header], radio: Radiometry
                ) -> dict[str, BandInfo]:
    out = {}
    for b in names:
        finest = sp.finest(b)
        if finest is None:
            raise InvalidInputError(f"{sp.id}: no file for band {b}")
        out[b] = BandInfo(href=finest[1], resolution=headers[b][1], scale=radio.scale[b], offset=radio.offset[b],
                          nodata=headers[b][5], average_overview=headers[b][6])
    return out


def _angles(sp: SourceProduct, warnings: list[str]) -> AngleGrids:
    tm = sp.tile_meta
    if tm is not None:
        def grid(a: np.ndarray) -> list[list[float | None]]:
            return [[None if v != v else float(v) for v in row] for row in a.tolist()]

        vz, va = tm.mean_view_zenith, tm.mean_view_azimuth
        if vz is None or va is None:  # no per-band means in the file: the mean of the grids
            vz, va = float(np.nanmean(tm.view_zenith)), float(np.nanmean(tm.view_azimuth))
        return AngleGrids(
            source=f"granule metadata MTD_TL.xml ({tm.source or sp.id})", step_m=tm.angle_step,
            sun_zenith=grid(tm.sun_zenith), sun_azimuth=grid(tm.sun_azimuth), view_zenith=grid(tm.view_zenith),
            view_azimuth=grid(tm.view_azimuth), mean_sun_zenith=tm.mean_sun_zenith,
            mean_sun_azimuth=tm.mean_sun_azimuth, mean_view_zenith=vz, mean_view_azimuth=va,
        )
    if sp.item_sun is None:
        raise InvalidInputError(f"{sp.id}: no sun angles: the source has no granule metadata (MTD_TL.xml) and "
                                "no view:sun_elevation/view:sun_azimuth")
    view = sp.item_view
    note = "view:incidence_angle/view:azimuth"
    if view is None:
        view, note = (0.0, 0.0), "view zenith unknown, nadir (0°) assumed"
        warnings.append(f"{sp.id}: no granule metadata and no view:incidence_angle; LAI uses a nadir view")
    return AngleGrids(source=f"item scene means (view:sun_elevation/view:sun_azimuth; {note}); no granule metadata",
                      mean_sun_zenith=sp.item_sun[0], mean_sun_azimuth=sp.item_sun[1],
                      mean_view_zenith=view[0], mean_view_azimuth=view[1])


def _check_tile(sp: SourceProduct, tile: Tile) -> None:
    tm = sp.tile_meta
    if tm is not None:
        if parse_tile(tm.tile_id).id != tile.id:
            raise InvalidInputError(f"{sp.id}: granule metadata tile {tm.tile_id} is not {tile.id}")
        if tm.epsg != tile.epsg:
            raise InvalidInputError(f"{sp.id}: granule metadata CRS EPSG:{tm.epsg} is not tile {tile.id}'s "
                                    f"EPSG:{tile.epsg}")
        if abs(tm.ulx - tile.ulx) > 0.01 or abs(tm.uly - tile.uly) > 0.01:
            raise InvalidInputError(f"{sp.id}: granule metadata corner ({tm.ulx}, {tm.uly}) is not tile {tile.id}'s "
                                    f"({tile.ulx}, {tile.uly})")
    if sp.origin is not None and (abs(sp.origin[0] - tile.ulx) > 0.01 or abs(sp.origin[1] - tile.uly) > 0.01):
        raise InvalidInputError(f"{sp.id}: proj:transform corner {sp.origin} is not tile {tile.id}'s "
                                f"({tile.ulx}, {tile.uly})")


def _radiometry(sp: SourceProduct, bands: tuple[str, ...]) -> Radiometry:
    so = sp.item_scale_offset
    if so is not None and not all(b in so for b in bands):
        so = None  # the item states scale/offset for some bands only: not a usable claim for this set
    return resolve_radiometry(bands, level=sp.level, item_scale_offset=so, boa_offset_applied=sp.boa_offset_applied,
                              product=sp.product, baseline=sp.baseline, what=sp.id)


def build_scene(scene_id: str, l2a_href: str, l1c_href: str, resolution: int = 0) -> Scene:
    """Resolve one scene into a manifest (reads only JSON, XML and raster headers)."""
    warnings: list[str] = []
    sp = load_source_product(l2a_href)
    if sp.level != "L2A":
        raise InvalidInputError(f"{sp.id}: expected an L2A product, got {sp.level}")
    tile = parse_tile(sp.tile)
    _check_tile(sp, tile)
    nir = "B08" if "B08" in sp.files else "B8A"
    if nir != "B08":
        warnings.append(f"{sp.id}: no B08 file; NDVI uses B8A as the NIR band")
    needed = tuple(dict.fromkeys((*REQUIRED_L2A_NO_NIR, nir)))
    missing = [b for b in (*needed, "SCL") if sp.finest(b) is None]
    if missing:
        raise InvalidInputError(f"{sp.id}: no file for {', '.join(missing)}")
    radio = _radiometry(sp, needed)
    chosen = [(b, *f) for b in (*needed, "SCL") for f in [sp.finest(b)] if f is not None]
    headers, extent = _check_files(sp, chosen, tile)
    grid_res = _choose_resolution(sp, {b: h[1] for b, h in headers.items()}, nir, resolution)
    bands = _band_infos(sp, needed, headers, radio)
    _scl_res, scl_href = sp.finest("SCL") or (0.0, "")
    scl = BandInfo(href=scl_href, resolution=headers["SCL"][1], scale=1.0, offset=0.0, nodata=headers["SCL"][5])

    l1c_bands: dict[str, BandInfo] = {}
    l1c_id = l1c_baseline = l1c_source = ""
    if l1c_href:
        l1 = load_source_product(l1c_href)
        l1c_id = l1.id
        if l1.level != "L1C":
            raise InvalidInputError(f"{l1.id}: expected an L1C product, got {l1.level}")
        if parse_tile(l1.tile).id != tile.id:
            raise InvalidInputError(f"{l1.id}: L1C tile {l1.tile} does not match the L2A scene {tile.id}")
        _check_tile(l1, tile)
        l1_needed = tuple(dict.fromkeys((*S2CLOUDLESS_BANDS, "B10")))
        l1_missing = [b for b in l1_needed if l1.finest(b) is None]
        if l1_missing:
            raise InvalidInputError(f"{l1.id}: no file for {', '.join(l1_missing)}")
        l1_radio = _radiometry(l1, l1_needed)
        l1_chosen = [(b, *f) for b in l1_needed for f in [l1.finest(b)] if f is not None]
        l1_headers, l1_extent = _check_files(l1, l1_chosen, tile)
        if l1_extent != extent:
            raise InvalidInputError(f"{l1.id}: L1C extent {l1_extent} differs from the L2A extent {extent} (m)")
        l1c_bands = _band_infos(l1, l1_needed, l1_headers, l1_radio)
        l1c_baseline = l1.baseline or ""
        l1c_source = l1_radio.source

    angles = _angles(sp, warnings)
    for w in warnings:
        log.warning(w)
    return Scene(
        scene_id=scene_id, tile=tile.id, datetime=sp.datetime, platform=sp.platform,
        processing_baseline=radio.baseline or sp.baseline or "", l2a_id=sp.id, l2a_href=l2a_href, l1c_id=l1c_id,
        l1c_href=l1c_href, resolution=resolution, epsg=tile.epsg, ulx=tile.ulx, uly=tile.uly, extent_m=extent,
        grid_res=grid_res, source_format=sp.format, bands=bands, scl=scl, ndvi_nir_band=nir, l1c_bands=l1c_bands,
        l1c_processing_baseline=l1c_baseline, angles=angles,
        radiometry=RadiometryRecord(source=radio.source, detail=radio.detail, l1c_source=l1c_source),
        cloud_cover=sp.cloud_cover, warnings=warnings,
    )


REQUIRED_L2A_NO_NIR = ("B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12")
"""L2A bands the products need besides the NDVI's NIR band (NDVI: B04 + B08; LAI: these eight)."""


def run_ingest(inputs: IngestInputs, ctx: StepContext) -> IngestOutputs:
    """Resolve the scene and write its manifest into the work folder."""
    scene = build_scene(inputs.scene_id, inputs.l2a_href, inputs.l1c_href, inputs.resolution)
    key = ctx.work_key("scene.json")
    ctx.storage.write_bytes(key, scene.dump())
    return IngestOutputs(scene=ctx.storage.url(key))


INGEST = Step(
    name="ingest", description="Resolve one scene: source product, tile checks, radiometry rule, grids, angles.",
    Inputs=IngestInputs, Outputs=IngestOutputs, body=run_ingest,
    resources=Resources(cpu="250m", memory="512Mi"),
)
