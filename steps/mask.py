"""Step ``mask``: the 20 m cloud/cirrus/shadow mask of a scene, and the skip decision.

Scenes with no valid pixel (outside the swath) or no clear pixel (fully clouded) are *skipped*: not a
failure (exit 0, status ``skipped``); a durable skip record is written so that the audit and later runs
know the scene was looked at.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from pydantic import Field

from steps.catalog import record_skip, work_folder
from steps.contract import Resources, Step, StepInputs, StepOutputs
from steps.products import CLOUD_MASK
from steps.raster import read_band, write_gtiff
from steps.scene import Scene, load_scene
from steps.science.scl import MASK_NODATA, clear_fraction, scl_to_mask
from steps.settings import Settings
from steps.storage import join, open_storage

log = logging.getLogger(__name__)


class MaskInputs(StepInputs):
    """Inputs of ``mask``."""

    scene: str = Field(description="href of the scene manifest written by ingest")
    out: str = Field(description="output root: directory or s3://bucket/prefix")


class MaskOutputs(StepOutputs):
    """Outputs of ``mask``."""

    cloud_mask: str = Field(description="href of the 20 m work cloud mask ('' when skipped)")
    clear_fraction: float = Field(description="clear pixels / valid pixels, 0..1")
    method: str = Field(description="how the mask was made (e.g. 'scl' or 's2cloudless+scl')")
    provenance: str = Field(description="JSON object: method, model, resolution, thresholds, dilations")
    status: str = Field(description="'done' or 'skipped' (no valid or no clear pixel)")


def compute_mask(scene: Scene, settings: Settings) -> tuple[np.ndarray, dict[str, object]]:
    """The scene's ``cloud_mask`` codes on the 20 m grid and a description of how they were made."""
    scl, _ = read_band(scene.scl_href, grid=scene.grid(20), what=f"{scene.scene_id} SCL")
    mask = scl_to_mask(scl)
    # a pixel whose 20 m reflectance bands are no data is no data whatever SCL says
    for band in ("B05", "B8A"):
        dn, _ = read_band(scene.bands[band].href, grid=scene.grid(20), what=f"{scene.scene_id} {band}")
        mask[dn == 0] = MASK_NODATA
    return mask, {"method": "scl"}


def run_mask(inputs: MaskInputs, settings: Settings) -> MaskOutputs:
    """Compute the mask; skip the scene when nothing is valid or clear."""
    scene = load_scene(inputs.scene)
    storage = open_storage(inputs.out, settings)
    mask, info = compute_mask(scene, settings)
    valid = int(np.count_nonzero(mask != MASK_NODATA))
    frac = clear_fraction(mask)
    method = str(info["method"])
    prov = json.dumps(info, sort_keys=True)
    scene_dict = scene.model_dump()
    if valid == 0 or frac == 0.0:
        # nothing later in the DAG runs for this scene: drop its work folder now
        storage.delete_prefix(work_folder(scene.scene_id))
    if valid == 0:
        record_skip(storage, scene_dict, "no valid pixels (outside the swath)", {"mask_method": method})
        log.info("%s: skipped, no valid pixels", scene.scene_id)
        return MaskOutputs(cloud_mask="", clear_fraction=0.0, method=method, provenance=prov, status="skipped")
    if frac == 0.0:
        record_skip(storage, scene_dict, "fully clouded: no clear pixel", {"mask_method": method})
        log.info("%s: skipped, fully clouded", scene.scene_id)
        return MaskOutputs(cloud_mask="", clear_fraction=0.0, method=method, provenance=prov, status="skipped")
    href = write_gtiff(storage, join(work_folder(scene.scene_id), "cloud_mask.tif"), mask, scene.grid(20),
                       CLOUD_MASK)
    return MaskOutputs(cloud_mask=href, clear_fraction=round(frac, 6), method=method, provenance=prov, status="done")


MASK = Step(
    name="mask", description="Cloud, cirrus and shadow mask at 20 m; skips fully clouded or empty scenes.",
    Inputs=MaskInputs, Outputs=MaskOutputs, run=run_mask, image="steps",
    resources=Resources(cpu="2", memory="4Gi"),
)
