"""Step ``ndvi``: 10 m NDVI from L2A B04/B08 reflectance, masked by the scene's cloud mask.

Fast path (pixel-identical to converting whole bands, see ``docs/BENCHMARKS.md``): both bands are read
concurrently as DN, then row stripes are converted to reflectance, turned into NDVI and encoded by two
threads (numpy releases the GIL), so no full-size float array is ever materialised. The
work raster is written directly as the final COG.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import Field

from steps.catalog import work_folder
from steps.contract import Resources, Step, StepInputs, StepOutputs
from steps.products import CLOUD_MASK, NDVI
from steps.raster import encode, read_band, write_gtiff
from steps.scene import BandInfo, load_scene
from steps.science.ndvi import ndvi
from steps.science.radiometry import dn_to_reflectance
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


STRIPE_ROWS = 512
"""10 m rows per work unit (even, so that stripes align with the 20 m mask rows)."""

WORKERS = 2
"""Threads computing stripes (numpy ufuncs release the GIL)."""


def ndvi_stored(red_dn: np.ndarray, nir_dn: np.ndarray, red: BandInfo, nir: BandInfo, mask20: np.ndarray, *,
                stripe_rows: int = STRIPE_ROWS, workers: int = WORKERS) -> np.ndarray:
    """Encoded NDVI (int16, product ``ndvi``) from 10 m DN arrays (B04, B08) and their radiometry, in stripes.

    Equal, pixel for pixel, to ``encode(ndvi(ρ_red, ρ_nir, clear_10m(mask20)), NDVI)`` on whole bands with
    ρ = :func:`dn_to_reflectance`: every operation is element-wise, so splitting the rows changes no value.
    """
    rows = red_dn.shape[0]
    if red_dn.shape != nir_dn.shape or (2 * mask20.shape[0], 2 * mask20.shape[1]) != red_dn.shape:
        raise ValueError(f"band shapes {red_dn.shape}/{nir_dn.shape} do not match the 20 m mask {mask20.shape}")
    out = np.empty(red_dn.shape, dtype=NDVI.dtype)
    step = max(2, stripe_rows - stripe_rows % 2)

    def stripe(r0: int) -> None:
        r1 = min(r0 + step, rows)
        rho_red = dn_to_reflectance(red_dn[r0:r1], red.scale, red.offset)
        rho_nir = dn_to_reflectance(nir_dn[r0:r1], nir.scale, nir.offset)
        out[r0:r1] = encode(ndvi(rho_red, rho_nir, clear_10m(mask20[r0 // 2:(r1 + 1) // 2])), NDVI)

    starts = range(0, rows, step)
    if workers <= 1:
        for r0 in starts:
            stripe(r0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(stripe, starts))  # list() re-raises the first error
    return out


def run_ndvi(inputs: NdviInputs, settings: Settings) -> NdviOutputs:
    """Compute NDVI on clear pixels; everything else is no data."""
    scene = load_scene(inputs.scene)
    storage = open_storage(inputs.out, settings)
    mask20, _ = read_band(inputs.cloud_mask, what=f"{scene.scene_id} cloud mask")
    if mask20.dtype != np.dtype(CLOUD_MASK.dtype):
        raise ValueError("cloud mask has an unexpected data type")
    red_dn, nir_dn = scene.read_dn(["B04", "B08"], 10)
    stored = ndvi_stored(red_dn, nir_dn, scene.band_info("B04"), scene.band_info("B08"), mask20)
    del red_dn, nir_dn
    href = write_gtiff(storage, join(work_folder(scene.scene_id), "ndvi.tif"), stored, scene.grid(10), NDVI)
    return NdviOutputs(ndvi=href, status="done")


NDVI_STEP = Step(
    name="ndvi", description="NDVI at 10 m from L2A red/NIR reflectance, clear pixels only.",
    Inputs=NdviInputs, Outputs=NdviOutputs, run=run_ndvi,
    resources=Resources(cpu="1", memory="3Gi"),
)
