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
from steps.pipeline.contract import (
    OUT_ROOT,
    Resources,
    SceneStepInputs,
    StatusOutputs,
    Step,
    StepContext,
    StepInputs,
)
from steps.pipeline.failures import clear_failure
from steps.products.catalog import dumps, item_key, rebuild_catalog, scene_folder, write_if_changed
from steps.products.items import build_item, verify_assets

log = logging.getLogger(__name__)


class StacInputs(SceneStepInputs):
    """Inputs of ``stac``: the scene, the output root and what the earlier steps recorded."""

    assets: str = Field(description="JSON object of published assets from the cog step")
    clear_fraction: float = Field(description="clear fraction from the mask step")
    mask_provenance: str = Field("{}", description="JSON object describing how the mask was made")
    lai_provenance: str = Field("{}", description="JSON object describing the LAI network used")
    ndvi_provenance: str = Field("{}", description="JSON object describing the NDVI bands, grid and masked pixels")


class StacOutputs(StatusOutputs):
    """Outputs of ``stac``."""

    item: str = Field(description="href of the published item sidecar")


def run_stac(inputs: StacInputs, ctx: StepContext) -> StacOutputs:
    """Verify the assets, write the item sidecar (the commit point), then drop the work folder."""
    scene, storage = ctx.scene, ctx.storage
    try:
        assets = json.loads(inputs.assets)
        mask_prov = json.loads(inputs.mask_provenance or "{}")
        lai_prov = json.loads(inputs.lai_provenance or "{}")
        ndvi_prov = json.loads(inputs.ndvi_provenance or "{}")
    except ValueError as exc:
        raise InvalidInputError(f"stac: malformed JSON parameter: {exc}") from exc
    dt = scene.datetime
    folder = scene_folder(dt, scene.scene_id)
    verify_assets(storage, folder, assets)
    item = build_item(scene, assets, inputs.clear_fraction, mask_prov, lai_prov, ndvi_prov)
    key = item_key(dt, scene.scene_id)
    write_if_changed(storage, key, dumps(item))
    clear_failure(storage, scene.scene_id)  # after the commit point: the scene is no longer failed
    storage.delete_prefix(ctx.work)
    log.info("%s: published %s", scene.scene_id, key)
    return StacOutputs(item=storage.url(key))


STAC = Step(
    name="stac", description="Verify checksums and publish the scene's STAC item sidecar (commit point).",
    Inputs=StacInputs, Outputs=StacOutputs, body=run_stac,
    resources=Resources(cpu="250m", memory="512Mi"),
)


class CatalogInputs(StepInputs):
    """Inputs of ``catalog``."""

    out: str = Field(description=OUT_ROOT)


class CatalogOutputs(StatusOutputs):
    """Outputs of ``catalog``."""

    catalog: str = Field(description="href of the root catalog.json")
    items: int = Field(description="number of items in the catalog")
    skipped: int = Field(description="number of skipped scenes recorded")


def run_catalog(inputs: CatalogInputs, ctx: StepContext) -> CatalogOutputs:
    """Rebuild the year/quarter/month tree and the index from the sidecars in storage."""
    storage = ctx.storage
    res = rebuild_catalog(storage)
    if ctx.settings.cube:
        sync_cube(storage)
    return CatalogOutputs(catalog=storage.url("catalog.json"), items=res.items, skipped=res.skipped)


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
    Inputs=CatalogInputs, Outputs=CatalogOutputs, body=run_catalog,
    resources=Resources(cpu="250m", memory="1Gi"), retries=5,
)
