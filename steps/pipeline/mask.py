"""Step ``mask``: the 20 m cloud/cirrus/shadow mask of a scene, and the skip decision.

Scenes with no valid pixel (outside the swath) or no clear pixel (fully clouded) are *skipped*: not a
failure (exit 0, status ``skipped``); a durable skip record is written so that the audit and later runs
know the scene was looked at.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import Field

from steps.pipeline.contract import Resources, SceneStepInputs, StatusOutputs, Step, StepContext
from steps.pipeline.failures import clear_failure
from steps.pipeline.scene import Scene
from steps.products.catalog import record_skip
from steps.products.definitions import CLOUD_MASK
from steps.products.raster import BandRead, read_bands, write_gtiff
from steps.science.scl import MASK_NODATA, clear_fraction
from steps.settings import Settings

log = logging.getLogger(__name__)


class MaskInputs(SceneStepInputs):
    """Inputs of ``mask``: the scene and the output root only."""


class MaskOutputs(StatusOutputs):
    """Outputs of ``mask``."""

    cloud_mask: str = Field(description="href of the 20 m work cloud mask ('' when skipped)")
    clear_fraction: float = Field(description="clear pixels / valid pixels, 0..1")
    method: str = Field(description="how the mask was made (e.g. 'scl' or 's2cloudless+scl')")
    provenance: str = Field(description="JSON object: method, model, resolution, thresholds, dilations")
    status: str = Field("done", description="'done' or 'skipped' (no valid or no clear pixel)")


@lru_cache(maxsize=1)
def _model() -> Any:
    from steps.science.cloudmask import load_s2cloudless_model

    return load_s2cloudless_model()


def _to_20m(mask: np.ndarray, shape20: tuple[int, int]) -> np.ndarray:
    """Map a coarse grid (same extent, any pixel size) onto the 20 m grid by nearest cell."""
    rows = (np.arange(shape20[0]) * mask.shape[0]) // shape20[0]
    cols = (np.arange(shape20[1]) * mask.shape[1]) // shape20[1]
    return mask[np.ix_(rows, cols)]


def _l1c_toa(scene: Scene, res: int) -> tuple[np.ndarray, np.ndarray]:
    """L1C TOA reflectance (H, W, 10) in s2cloudless band order on the ``res`` grid, and its validity."""
    from steps.science.cloudmask import S2CLOUDLESS_BANDS, default_valid

    # (10, H, W) on a res-metre grid (a pixel size, not a product grid class), bands read concurrently;
    # a band's no-data DN 0 reads as NaN, so the array functions' no-data rule applies as it is
    stack = scene.reflectances(S2CLOUDLESS_BANDS, res, level="L1C", grid=scene.grid_at(float(res)))
    toa = np.ascontiguousarray(np.moveaxis(stack, 0, -1))  # pixel-major: the model reads one row per pixel
    del stack
    valid = default_valid(toa)
    toa[~valid] = 0.0  # no-data pixels are never evaluated; zeros keep the array finite
    return toa, valid


def compute_mask(scene: Scene, settings: Settings) -> tuple[np.ndarray, dict[str, Any]]:
    """The scene's ``cloud_mask`` codes on the 20 m grid and a description of how they were made.

    With an L1C pair: s2cloudless (``cloud_mode``: compiled or LightGBM evaluator, same mask) at
    ``cloud_resolution_m`` on
    offset-corrected TOA, mapped to 20 m, OR SCL cloud/shadow/cirrus classes (dilated), OR the B10 cirrus
    test. Without L1C: SCL alone (recorded as a fallback).
    """
    from steps.science.cloudmask import (
        S2CLOUDLESS_MODEL_FILENAME,
        SEN2COR_T1_B10,
        build_cloud_mask,
        cloud_mask,
        params_for_resolution,
    )

    g20 = scene.grid(20)
    # SCL (classes: nearest) and the two 20 m bands that decide no data (valid-DN average), read concurrently
    (scl,) = read_bands([BandRead(scene.scl.href, g20, what=f"{scene.scene_id} SCL")])
    b05_dn, b8a_dn = scene.read_dn(["B05", "B8A"], 20)
    scl_dilation, cloud_dilation = 5, 2
    info: dict[str, Any] = {"scl_classes": {"cloud": [8, 9], "shadow": [3], "cirrus": [10], "snow": [11],
                                            "invalid": [1], "nodata": [0]},
                            "scl_dilation_px_20m": scl_dilation,
                            "scl_cloud_cover_pct": scl_cloud_cover(scl)}
    if scene.l1c_bands:
        res = settings.cloud_resolution_m  # one of the choices: checked when the settings were read
        params = params_for_resolution(res)
        toa, valid = _l1c_toa(scene, res)
        result = cloud_mask(_model(), toa, valid, params, mode=settings.cloud_mode)
        del toa
        s2c20 = _to_20m(result.mask, g20.shape)
        b10 = scene.reflectance("B10", 20, level="L1C")
        codes = build_cloud_mask(scl, s2c_cloud=s2c20, b10_toa=b10, scl_dilation_px=scl_dilation,
                                 cloud_dilation_px=cloud_dilation, cirrus_threshold=SEN2COR_T1_B10)
        info |= {
            "method": "s2cloudless+scl+b10",
            "s2cloudless": {"model": S2CLOUDLESS_MODEL_FILENAME, "resolution_m": res,
                            "threshold": params.threshold, "average_over_px": params.average_over,
                            "dilation_px": params.dilation_size, "input": "L1C TOA, offset-corrected",
                            "mode": settings.cloud_mode, "evaluator": result.engine,
                            "evaluated_px": result.n_evaluated, "rechecked_px": result.n_rechecked},
            "cloud_dilation_px_20m": cloud_dilation,
            "b10_cirrus_threshold": SEN2COR_T1_B10,
            "software": {"s2cloudless": _version("s2cloudless"), "lightgbm": _version("lightgbm"),
                         **({"lleaves": _version("lleaves")} if result.engine == "compiled" else {})},
        }
    else:
        codes = build_cloud_mask(scl, scl_dilation_px=scl_dilation)
        info |= {"method": "scl", "fallback": "no L1C item paired: SCL only, s2cloudless not run"}
    # a pixel whose 20 m reflectance bands are no data is no data whatever SCL says
    for dn in (b05_dn, b8a_dn):
        codes[dn == 0] = MASK_NODATA
    return codes, info


def scl_cloud_cover(scl: np.ndarray) -> float | None:
    """Percentage of valid SCL pixels (class ≠ 0) in classes 8, 9, 10 (cloud medium/high, thin cirrus).

    ESA's ``CLOUDY_PIXEL_PERCENTAGE`` (an item's ``eo:cloud_cover``) is the sum of these three classes'
    percentages, so this reproduces the source's figure from the SCL band as read. None without valid pixels.
    """
    valid = int(np.count_nonzero(scl))
    if valid == 0:
        return None
    cloudy = int(np.count_nonzero((scl == 8) | (scl == 9) | (scl == 10)))
    return round(100.0 * cloudy / valid, 4)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def run_mask(inputs: MaskInputs, ctx: StepContext) -> MaskOutputs:
    """Compute the mask; skip the scene when nothing is valid or clear."""
    scene, storage = ctx.scene, ctx.storage
    mask, info = compute_mask(scene, ctx.settings)
    valid = int(np.count_nonzero(mask != MASK_NODATA))
    frac = clear_fraction(mask)
    method = str(info["method"])
    prov = json.dumps(info, sort_keys=True)
    scene_dict = scene.model_dump()
    if valid == 0 or frac == 0.0:
        # nothing later in the DAG runs for this scene: drop its work folder now
        storage.delete_prefix(ctx.work)
    if valid == 0 or frac == 0.0:
        reason = "no valid pixels (outside the swath)" if valid == 0 else "fully clouded: no clear pixel"
        record_skip(storage, scene_dict, reason, {"mask_method": method})
        clear_failure(storage, scene.scene_id)  # after the commit point (the skip record): no longer failed
        log.info("%s: skipped, %s", scene.scene_id, reason)
        return MaskOutputs(cloud_mask="", clear_fraction=0.0, method=method, provenance=prov, status="skipped")
    href = write_gtiff(storage, ctx.work_key("cloud_mask.tif"), mask, scene.grid(20), CLOUD_MASK)
    return MaskOutputs(cloud_mask=href, clear_fraction=round(frac, 6), method=method, provenance=prov)


MASK = Step(
    name="mask", description="Cloud, cirrus and shadow mask at 20 m; skips fully clouded or empty scenes.",
    Inputs=MaskInputs, Outputs=MaskOutputs, body=run_mask, image="steps",
    resources=Resources(cpu="2", memory="4Gi"),
)
