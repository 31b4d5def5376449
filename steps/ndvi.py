"""Step ``ndvi``: 10 m NDVI from L2A B04/B08 reflectance, masked by the scene's cloud mask."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from steps.catalog import work_folder
from steps.contract import Resources, Step, StepInputs, StepOutputs
from steps.products import CLOUD_MASK, NDVI
from steps.raster import encode, read_band, write_gtiff
from steps.scene import load_scene
from steps.science.ndvi import ndvi
from steps.science.scl import MASK_CLEAR
from steps.settings import Settings
from steps.storage import join, open_storage

log = logging.getLogger(__name__)


class NdviInputs(StepInputs):
    """Inputs of ``ndvi``."""

    scene: str = Field(description="href of the scene manifest written by ingest")
    cloud_mask: str = Field(description="href of the 20 m work cloud mask written by mask")
    out: str = Field(description="output root: directory or s3://bucket/prefix")


class NdviOutputs(StepOutputs):
    """Outputs of ``ndvi``."""

    ndvi: str = Field(description="href of the 10 m work NDVI raster")
    status: str = Field(description="done")


def clear_10m(mask20: np.ndarray) -> np.ndarray:
    """Boolean clear mask on the 10 m grid from 20 m mask codes (each 20 m pixel covers 2×2)."""
    clear = mask20 == MASK_CLEAR
    return np.repeat(np.repeat(clear, 2, axis=0), 2, axis=1)


def run_ndvi(inputs: NdviInputs, settings: Settings) -> NdviOutputs:
    """Compute NDVI on clear pixels; everything else is no data."""
    scene = load_scene(inputs.scene)
    storage = open_storage(inputs.out, settings)
    mask20, _ = read_band(inputs.cloud_mask, what=f"{scene.scene_id} cloud mask")
    if mask20.dtype != np.dtype(CLOUD_MASK.dtype):
        raise ValueError("cloud mask has an unexpected data type")
    red = scene.reflectance("B04", 10)
    nir = scene.reflectance("B08", 10)
    values = ndvi(red, nir, clear_10m(mask20))
    del red, nir
    href = write_gtiff(storage, join(work_folder(scene.scene_id), "ndvi.tif"), encode(values, NDVI),
                       scene.grid(10), NDVI)
    return NdviOutputs(ndvi=href, status="done")


NDVI_STEP = Step(
    name="ndvi", description="NDVI at 10 m from L2A red/NIR reflectance, clear pixels only.",
    Inputs=NdviInputs, Outputs=NdviOutputs, run=run_ndvi,
    resources=Resources(cpu="1", memory="3Gi"),
)
