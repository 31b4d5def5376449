"""Step ``cog``: turn a scene's work rasters into validated Cloud-Optimized GeoTIFFs in its product folder.

Each COG is staged locally, validated with rio-cogeo and moved into place atomically; its sha256
multihash and size are returned for the ``stac`` step to verify and record. Nothing becomes visible in the
catalog here: that happens only when ``stac`` writes the item sidecar.
"""

from __future__ import annotations

import json
import logging

from pydantic import Field

from steps.pipeline.contract import Resources, Step, StepInputs, StepOutputs
from steps.pipeline.scene import load_scene
from steps.products.catalog import parse_datetime, scene_folder
from steps.products.definitions import BY_KEY
from steps.products.raster import publish_cog
from steps.settings import Settings
from steps.storage import join, open_storage

log = logging.getLogger(__name__)


class CogInputs(StepInputs):
    """Inputs of ``cog``."""

    scene: str = Field(description="href of the scene manifest written by ingest")
    out: str = Field(description="output root: directory or s3://bucket/prefix")
    cloud_mask: str = Field(description="href of the work cloud mask")
    ndvi: str = Field(description="href of the work NDVI raster")
    lai: str = Field("", description="href of the work LAI raster ('' if not produced)")
    lai_flags: str = Field("", description="href of the work LAI flags raster ('' if not produced)")


class CogOutputs(StepOutputs):
    """Outputs of ``cog``."""

    assets: str = Field(description="JSON object: asset key -> {href, checksum, size} of the published COGs")
    status: str = Field(description="done")


def run_cog(inputs: CogInputs, settings: Settings) -> CogOutputs:
    """Publish every present work raster as a COG next to where the item will be."""
    scene = load_scene(inputs.scene)
    storage = open_storage(inputs.out, settings)
    folder = scene_folder(parse_datetime(scene.datetime), scene.scene_id)
    published = {}
    for key, src in (("ndvi", inputs.ndvi), ("lai", inputs.lai), ("lai_flags", inputs.lai_flags),
                     ("cloud_mask", inputs.cloud_mask)):
        if not src:
            continue
        asset = publish_cog(src, storage, join(folder, f"{key}.tif"), BY_KEY[key])
        published[key] = {"href": f"./{key}.tif", "checksum": asset.checksum, "size": asset.size}
        log.info("%s: published %s (%d bytes)", scene.scene_id, key, asset.size)
    return CogOutputs(assets=json.dumps(published, sort_keys=True), status="done")


COG = Step(
    name="cog", description="Publish work rasters as validated COGs with overviews in the product folder.",
    Inputs=CogInputs, Outputs=CogOutputs, run=run_cog,
    resources=Resources(cpu="2", memory="2Gi"),
)
