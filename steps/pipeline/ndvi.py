"""Step ``ndvi``: NDVI from L2A B04/B08 reflectance (10 m for a full-resolution source), masked by the cloud mask.

Pixels where either reflectance is negative after the radiometric offset are invalid (no data) and counted;
the count is returned in the step's provenance and recorded in the item. When the source has no B08 (a
60 m-only product), B8A is the NIR band, recorded in the scene manifest and the item.

Fast path (pixel-identical to converting whole bands, see ``docs/BENCHMARKS.md``): both bands are read
concurrently as DN, then row stripes are converted to reflectance, turned into NDVI and encoded by two
threads (numpy releases the GIL), so no full-size float array is ever materialised. The
work raster is written directly as the final COG.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from pydantic import Field

from steps.pipeline.contract import CloudMaskInputs, Resources, StatusOutputs, Step, StepContext
from steps.pipeline.scene import BandInfo
from steps.products.definitions import CLOUD_MASK, NDVI
from steps.products.raster import encode, read_band, write_gtiff
from steps.science.ndvi import ndvi
from steps.science.radiometry import dn_to_reflectance
from steps.science.scl import MASK_CLEAR

log = logging.getLogger(__name__)


class NdviInputs(CloudMaskInputs):
    """Inputs of ``ndvi``: the scene, its cloud mask and the output root."""


class NdviOutputs(StatusOutputs):
    """Outputs of ``ndvi``."""

    ndvi: str = Field(description="href of the work NDVI raster (grid class 10)")
    provenance: str = Field("{}", description="JSON object: bands, grid, negative-reflectance pixels masked")


def clear_fine(mask: np.ndarray, factor: int = 2) -> np.ndarray:
    """Boolean clear mask on a grid ``factor`` times finer than the mask codes' grid (each pixel repeated)."""
    clear = mask == MASK_CLEAR
    if factor == 1:
        return clear
    return np.repeat(np.repeat(clear, factor, axis=0), factor, axis=1)


STRIPE_ROWS = 512
"""10 m rows per work unit (even, so that stripes align with the 20 m mask rows)."""

WORKERS = 2
"""Threads computing stripes (numpy ufuncs release the GIL)."""


def ndvi_stored(red_dn: np.ndarray, nir_dn: np.ndarray, red: BandInfo, nir: BandInfo, mask20: np.ndarray, *,
                stripe_rows: int = STRIPE_ROWS, workers: int = WORKERS) -> tuple[np.ndarray, int]:
    """Encoded NDVI (int16, product ``ndvi``) from DN arrays (B04, NIR) and their radiometry, in stripes.

    ``mask20`` holds the cloud-mask codes on a grid 1 or 2 times coarser than the bands (20 m mask for 10 m
    bands; the same grid when the products are made at 20 or 60 m). Returns the encoded NDVI and the
    number of clear pixels masked because a reflectance was negative after the offset.

    Equal, pixel for pixel, to ``encode(ndvi(ρ_red, ρ_nir, clear_fine(mask20, k)), NDVI)`` on whole bands
    with ρ = :func:`dn_to_reflectance`: every operation is element-wise, so splitting the rows changes
    no value.
    """
    rows = red_dn.shape[0]
    k = rows // max(mask20.shape[0], 1)
    if red_dn.shape != nir_dn.shape or k not in (1, 2) or (k * mask20.shape[0], k * mask20.shape[1]) != red_dn.shape:
        raise ValueError(f"band shapes {red_dn.shape}/{nir_dn.shape} do not match the mask grid {mask20.shape}")
    out = np.empty(red_dn.shape, dtype=NDVI.dtype)
    step = max(2, stripe_rows - stripe_rows % 2)
    negatives = [0] * (rows // step + 1)

    def stripe(r0: int) -> None:
        r1 = min(r0 + step, rows)
        rho_red = dn_to_reflectance(red_dn[r0:r1], red.scale, red.offset)
        rho_nir = dn_to_reflectance(nir_dn[r0:r1], nir.scale, nir.offset)
        clear = clear_fine(mask20[r0 // k:(r1 + k - 1) // k], k)
        # ndvi() leaves negative reflectances without a value; here they are only counted
        negatives[r0 // step] = int(np.count_nonzero(((rho_red < 0) | (rho_nir < 0)) & clear))
        out[r0:r1] = encode(ndvi(rho_red, rho_nir, clear), NDVI)

    starts = range(0, rows, step)
    if workers <= 1:
        for r0 in starts:
            stripe(r0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(stripe, starts))  # list() re-raises the first error
    return out, sum(negatives)


def run_ndvi(inputs: NdviInputs, ctx: StepContext) -> NdviOutputs:
    """Compute NDVI on clear pixels; everything else is no data."""
    scene = ctx.scene
    mask20, _ = read_band(inputs.cloud_mask, what=f"{scene.scene_id} cloud mask", side="output")
    if mask20.dtype != np.dtype(CLOUD_MASK.dtype):
        raise ValueError("cloud mask has an unexpected data type")
    nir_band = scene.ndvi_nir_band
    red_dn, nir_dn = scene.read_dn(["B04", nir_band], 10)
    stored, negative = ndvi_stored(red_dn, nir_dn, scene.band_info("B04"), scene.band_info(nir_band), mask20)
    del red_dn, nir_dn
    grid = scene.grid(10)
    href = write_gtiff(ctx.storage, ctx.work_key("ndvi.tif"), stored, grid, NDVI)
    if negative:
        log.info("%s: %d clear pixels with negative B04/%s reflectance masked in NDVI", scene.scene_id, negative,
                 nir_band)
    prov = {"bands": ["B04", nir_band], "resolution_m": grid.res, "negative_reflectance_px": negative}
    return NdviOutputs(ndvi=href, provenance=json.dumps(prov, sort_keys=True))


NDVI_STEP = Step(
    name="ndvi", description="NDVI at 10 m from L2A red/NIR reflectance, clear pixels only.",
    Inputs=NdviInputs, Outputs=NdviOutputs, body=run_ndvi,
    resources=Resources(cpu="1", memory="3Gi"),
)
