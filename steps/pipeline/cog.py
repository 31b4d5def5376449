"""Step ``cog``: turn a scene's work rasters into validated Cloud-Optimized GeoTIFFs in its product folder.

Each COG is staged locally, validated with rio-cogeo and moved into place atomically; its sha256
multihash and size are returned for the ``stac`` step to verify and record. Nothing becomes visible in the
catalog here: that happens only when ``stac`` writes the item sidecar.
"""

from __future__ import annotations

import json
import logging

from pydantic import Field

from steps.pipeline.contract import Resources, SceneStepInputs, StatusOutputs, Step, StepContext
from steps.products.catalog import scene_folder
from steps.products.definitions import BY_KEY
from steps.products.raster import publish_cog
from steps.storage import join

log = logging.getLogger(__name__)


class CogInputs(SceneStepInputs):
    """Inputs of ``cog``: the scene, the output root and the work rasters to publish."""

    cloud_mask: str = Field(description="href of the work cloud mask")
    ndvi: str = Field(description="href of the work NDVI raster")
    lai: str = Field("", description="href of the work LAI raster ('' if not produced)")
    lai_flags: str = Field("", description="href of the work LAI flags raster ('' if not produced)")


class CogOutputs(StatusOutputs):
    """Outputs of ``cog``."""

    assets: str = Field(description="JSON object: asset key -> {href, checksum, size} of the published COGs")


def run_cog(inputs: CogInputs, ctx: StepContext) -> CogOutputs:
    """Publish every present work raster as a COG next to where the item will be."""
    scene = ctx.scene
    folder = scene_folder(scene.datetime, scene.scene_id)
    published = {}
    for key, src in (("ndvi", inputs.ndvi), ("lai", inputs.lai), ("lai_flags", inputs.lai_flags),
                     ("cloud_mask", inputs.cloud_mask)):
        if not src:
            continue
        asset = publish_cog(src, ctx.storage, join(folder, f"{key}.tif"), BY_KEY[key])
        published[key] = {"href": f"./{key}.tif", "checksum": asset.checksum, "size": asset.size}
        log.info("%s: published %s (%d bytes)", scene.scene_id, key, asset.size)
    return CogOutputs(assets=json.dumps(published, sort_keys=True))


COG = Step(
    name="cog", description="Publish work rasters as validated COGs with overviews in the product folder.",
    Inputs=CogInputs, Outputs=CogOutputs, body=run_cog,
    resources=Resources(cpu="2", memory="2Gi"),
)
