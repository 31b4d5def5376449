"""Steps ``scenes`` (list the work of a tile/date range) and ``ingest`` (resolve one scene).

``ingest`` reads the L2A item (and the paired L1C item), checks that every asset the products need is
there, parses the granule metadata, checks that the item, its metadata and its rasters agree with the
MGRS tile (CRS and upper-left corner), and derives each band's reflectance conversion **from the
metadata** (never from the date). The result is the scene manifest (:mod:`steps.scene`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import Field

from steps.catalog import is_complete, parse_datetime, work_folder
from steps.contract import Resources, Step, StepInputs, StepOutputs
from steps.errors import InvalidInputError
from steps.grid import normalize_tiles, parse_tile
from steps.raster import raster_info
from steps.scene import AngleGrids, BandInfo, Scene
from steps.sentinel2 import BANDS, L2A_BANDS, S2CLOUDLESS_BANDS, parse_granule_metadata, reflectance_params
from steps.settings import Settings
from steps.source import _resolve, find_scenes
from steps.storage import join, open_storage, read_uri

log = logging.getLogger(__name__)

# bands the products need from L2A (NDVI: B04, B08; LAI: B03 B04 B05 B06 B07 B8A B11 B12)
REQUIRED_L2A = ("B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


# ----------------------------------------------------------------------------------------------- scenes
class ScenesInputs(StepInputs):
    """Inputs of ``scenes``."""

    source: str = Field(description="STAC source: static catalog path/URL (file, s3, https) or STAC API URL")
    tiles: str = Field(description="MGRS tiles, comma-separated, e.g. 47PPR,47PQR")
    start: str = Field(description="first acquisition date, YYYY-MM-DD (inclusive)")
    end: str = Field(description="last acquisition date, YYYY-MM-DD (inclusive)")
    out: str = Field("", description="output root: scenes already complete there are left out ('' = list all)")
    force: bool = Field(False, description="list scenes whose products are already complete too (reprocess)")


class ScenesOutputs(StepOutputs):
    """Outputs of ``scenes``."""

    scenes: str = Field(description="JSON list of the scenes to process (scene_id, tile, datetime, l2a_href, …)")
    count: int = Field(description="number of scenes to process")
    complete: int = Field(0, description="scenes found whose products are already complete (left out)")


def run_scenes(inputs: ScenesInputs, settings: Settings) -> ScenesOutputs:
    """Find, deduplicate and pair the scenes of a tile/date range; leave out those already complete in ``out``.

    Leaving complete scenes out makes a repeated or redelivered order cheap in the cluster, as the local runner
    and the queue worker already are; ``force`` lists them all (to reprocess, e.g. after a science change).
    """
    tiles = normalize_tiles(inputs.tiles)
    scenes = find_scenes(inputs.source, tiles, inputs.start, inputs.end)
    complete = 0
    if inputs.out and not inputs.force:
        storage = open_storage(inputs.out, settings)
        todo = [s for s in scenes if not is_complete(storage, s.scene_id, parse_datetime(s.datetime))]
        complete = len(scenes) - len(todo)
        if complete:
            log.info("%d of %d scenes already complete in %s: left out", complete, len(scenes), inputs.out)
        scenes = todo
    payload = json.dumps([s.model_dump() for s in scenes], separators=(",", ":"))
    return ScenesOutputs(scenes=payload, count=len(scenes), complete=complete)


SCENES = Step(
    name="scenes", description="List the deduplicated L2A/L1C scene pairs of tiles and a date range.",
    Inputs=ScenesInputs, Outputs=ScenesOutputs, run=run_scenes,
    resources=Resources(cpu="250m", memory="512Mi"),
)


# ----------------------------------------------------------------------------------------------- ingest
class IngestInputs(StepInputs):
    """Inputs of ``ingest``."""

    scene_id: str = Field(description="derived scene id, e.g. S2B_47PPR_20240115T035029")
    l2a_href: str = Field(description="href of the source L2A STAC item")
    l1c_href: str = Field("", description="href of the paired L1C STAC item ('' if none)")
    out: str = Field(description="output root: directory or s3://bucket/prefix")


class IngestOutputs(StepOutputs):
    """Outputs of ``ingest``."""

    scene: str = Field(description="href of the scene manifest (work/<scene_id>/scene.json)")
    status: str = Field(description="done")


def _read_item(href: str, what: str) -> dict[str, Any]:
    try:
        obj: dict[str, Any] = json.loads(read_uri(href))
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{what} item not found: {href}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"{what} item {href} is not valid JSON: {exc}") from exc
    if obj.get("type") != "Feature" or "assets" not in obj:
        raise InvalidInputError(f"{what} item {href} is not a STAC item")
    return obj


def _asset_href(item: dict[str, Any], item_href: str, key: str) -> str:
    asset = item["assets"].get(key)
    if not asset or not asset.get("href"):
        raise InvalidInputError(f"item {item.get('id')} has no asset {key!r}")
    return _resolve(item_href, asset["href"])


def _check_raster(href: str, epsg: int, ulx: float, uly: float, res: int, what: str) -> tuple[int, int]:
    info = raster_info(href, what=what)
    if info["epsg"] != epsg:
        raise InvalidInputError(f"{what}: CRS {info['crs']} does not match the tile's EPSG:{epsg}")
    a, _b, c, _d, e, f = info["transform"]
    if abs(a - res) > 1e-6 or abs(e + res) > 1e-6:
        raise InvalidInputError(f"{what}: pixel size {a}×{-e} m, expected {res} m")
    if abs(c - ulx) > 0.01 or abs(f - uly) > 0.01:
        raise InvalidInputError(f"{what}: upper-left corner ({c}, {f}) is not the tile's ({ulx}, {uly})")
    shape: tuple[int, int] = info["shape"]
    return shape


def _band_infos(item: dict[str, Any], item_href: str, meta: Any, names: tuple[str, ...], warnings: list[str]
                ) -> dict[str, BandInfo]:
    out: dict[str, BandInfo] = {}
    for name in names:
        band = BANDS[name]
        href = _asset_href(item, item_href, band.asset_key)
        scale, offset = reflectance_params(meta, name)
        rb = (item["assets"][band.asset_key].get("raster:bands") or [{}])[0]
        if "offset" in rb and abs(float(rb["offset"]) - offset) > 1e-9:
            warnings.append(f"{item['id']} {name}: raster:bands offset {rb['offset']} disagrees with the "
                            f"granule metadata ({offset}); using the metadata")
        out[name] = BandInfo(href=href, resolution=band.resolution, scale=scale, offset=offset)
    return out


def build_scene(scene_id: str, l2a_href: str, l1c_href: str) -> Scene:
    """Resolve one scene into a manifest (reads only JSON, XML and raster headers)."""
    warnings: list[str] = []
    l2a = _read_item(l2a_href, "L2A")
    props = l2a.get("properties", {})
    md_href = _asset_href(l2a, l2a_href, "granule_metadata")
    try:
        meta = parse_granule_metadata(read_uri(md_href))
    except FileNotFoundError as exc:
        raise InvalidInputError(f"granule metadata not found: {md_href}") from exc
    tile = parse_tile(meta.tile_id)
    item_tile = str(props.get("grid:code", "")).removeprefix("MGRS-") or tile.id
    if parse_tile(item_tile).id != tile.id:
        raise InvalidInputError(f"{l2a['id']}: item tile {item_tile} ≠ granule metadata tile {tile.id}")
    if meta.epsg != tile.epsg:
        raise InvalidInputError(f"{l2a['id']}: metadata CRS EPSG:{meta.epsg} does not match tile {tile.id} "
                                f"(EPSG:{tile.epsg})")
    item_epsg = props.get("proj:epsg") or str(props.get("proj:code", "")).removeprefix("EPSG:")
    if item_epsg and int(item_epsg) != tile.epsg:
        raise InvalidInputError(f"{l2a['id']}: item CRS EPSG:{item_epsg} does not match tile {tile.id} "
                                f"(EPSG:{tile.epsg})")
    if abs(meta.ulx - tile.ulx) > 0.01 or abs(meta.uly - tile.uly) > 0.01:
        raise InvalidInputError(f"{l2a['id']}: metadata corner ({meta.ulx}, {meta.uly}) is not tile {tile.id}'s "
                                f"({tile.ulx}, {tile.uly})")
    bands = _band_infos(l2a, l2a_href, meta, L2A_BANDS, warnings)
    scl_href = _asset_href(l2a, l2a_href, "scl")
    shape10 = _check_raster(bands["B04"].href, tile.epsg, tile.ulx, tile.uly, 10, f"{l2a['id']} B04")
    shape20 = _check_raster(scl_href, tile.epsg, tile.ulx, tile.uly, 20, f"{l2a['id']} SCL")
    if (shape20[0] * 2, shape20[1] * 2) != shape10:
        raise InvalidInputError(f"{l2a['id']}: SCL shape {shape20} does not match the 10 m shape {shape10}")

    l1c_bands: dict[str, BandInfo] = {}
    l1c_id = ""
    l1c_baseline = ""
    if l1c_href:
        l1c = _read_item(l1c_href, "L1C")
        l1c_id = l1c["id"]
        l1_md_href = _asset_href(l1c, l1c_href, "granule_metadata")
        try:
            l1_meta = parse_granule_metadata(read_uri(l1_md_href))
        except FileNotFoundError as exc:
            raise InvalidInputError(f"L1C granule metadata not found: {l1_md_href}") from exc
        if l1_meta.tile_id != tile.id or l1_meta.epsg != tile.epsg:
            raise InvalidInputError(f"{l1c_id}: L1C tile/CRS does not match the L2A scene {tile.id}")
        l1c_bands = _band_infos(l1c, l1c_href, l1_meta, S2CLOUDLESS_BANDS, warnings)
        l1c_baseline = l1_meta.processing_baseline
        _check_raster(l1c_bands["B10"].href, tile.epsg, tile.ulx, tile.uly, 60, f"{l1c_id} B10")

    def grid(a: Any) -> list[list[float | None]]:
        return [[None if v != v else float(v) for v in row] for row in a.tolist()]

    angles = AngleGrids(
        step_m=meta.angle_step, sun_zenith=grid(meta.sun_zenith), sun_azimuth=grid(meta.sun_azimuth),
        view_zenith=grid(meta.view_zenith), view_azimuth=grid(meta.view_azimuth),
        mean_sun_zenith=meta.mean_sun_zenith, mean_sun_azimuth=meta.mean_sun_azimuth,
        mean_view_zenith=meta.mean_view_zenith, mean_view_azimuth=meta.mean_view_azimuth,
    )
    for w in warnings:
        log.warning(w)
    return Scene(
        scene_id=scene_id, tile=tile.id, datetime=props.get("datetime") or meta.sensing_time.isoformat(),
        platform=str(props.get("platform") or meta.platform or "").lower(),
        processing_baseline=meta.processing_baseline, l2a_id=l2a["id"], l2a_href=l2a_href, l1c_id=l1c_id,
        l1c_href=l1c_href, epsg=tile.epsg, ulx=tile.ulx, uly=tile.uly, shape_10m=shape10, bands=bands,
        scl_href=scl_href, l1c_bands=l1c_bands, l1c_processing_baseline=l1c_baseline, angles=angles,
        offsets_source="granule metadata " + ("ADD_OFFSET lists" if meta.add_offsets else "(no offset lists)"),
        warnings=warnings,
    )


def run_ingest(inputs: IngestInputs, settings: Settings) -> IngestOutputs:
    """Resolve the scene and write its manifest into the work folder."""
    scene = build_scene(inputs.scene_id, inputs.l2a_href, inputs.l1c_href)
    storage = open_storage(inputs.out, settings)
    key = join(work_folder(scene.scene_id), "scene.json")
    storage.write_bytes(key, scene.dump())
    return IngestOutputs(scene=storage.url(key), status="done")


INGEST = Step(
    name="ingest", description="Resolve one scene: assets, tile checks, radiometric offsets, angle grids.",
    Inputs=IngestInputs, Outputs=IngestOutputs, run=run_ingest,
    resources=Resources(cpu="250m", memory="512Mi"),
)
