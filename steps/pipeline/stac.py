"""Steps ``stac`` (verify a scene's assets and publish its item sidecar) and ``catalog`` (rebuild the tree).

The sidecar is the commit point of a scene: it is written only after every asset has been read back
from storage and its sha256 matches what ``cog`` recorded. Until then no catalog node links to the
scene, so no reader sees a half-published product.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import Field

from steps.errors import InvalidInputError, TransientError
from steps.pipeline.contract import Resources, Step, StepInputs, StepOutputs
from steps.pipeline.failures import clear_failure
from steps.pipeline.scene import load_scene
from steps.products.catalog import (
    dumps,
    item_key,
    parse_datetime,
    rebuild_catalog,
    scene_folder,
    work_folder,
    write_if_changed,
)
from steps.products.items import build_item, verify_assets
from steps.settings import Settings
from steps.storage import open_storage

log = logging.getLogger(__name__)

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
    verify_assets(storage, folder, assets)
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
    """Bring the time-series store in line with the index just written (:func:`steps.products.cube.sync`).

    The store is derived from the COGs and the catalog, which stay the product of record: a failure here is
    logged, never fails the catalog (``raw2ready cube audit`` reports what the store lacks, ``cube sync`` or
    the next catalog rebuild adds it). A held lock (another writer) is a transient error and retried.
    """
    from steps.products.cube import sync

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
