"""Step ``lai``: SNAP biophysical-processor LAI and its 5-bit flags at 20 m, with per-pixel angles.

Inputs are the 8 harmonized L2A reflectances B3, B4, B5, B6, B7, B8A, B11, B12 on the 20 m grid (B3/B4
mean-aggregated from 10 m, as SNAP's resampler does) and cos(view zenith), cos(sun zenith),
cos(sun azimuth − view azimuth) per pixel, bilinearly interpolated from the granule metadata's 23×23 grids
(scene means as fallback when a grid is unusable). The network set is ``3_0`` per platform (S2A/S2B/S2C)
by default, ``2_1`` selectable (``RAW2READY_LAI_NETWORK``). Only clear pixels (cloud mask code 0) get a
value; masked and no-data pixels are no data in ``lai`` and 255 in ``lai_flags``. Values beyond SNAP's
tolerance are no data ("clean" mode, INRA's convention) while their flag bits (8/16) are kept.

Fast path (values identical to the straightforward version, see ``docs/BENCHMARKS.md``): the 8 bands are
read concurrently, only the clear pixels are gathered and converted to reflectance, the network runs on
that compact set on :data:`LAI_WORKERS` threads, and the work rasters are written directly as final COGs.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

import numpy as np
from pydantic import Field

from steps.errors import InvalidInputError
from steps.pipeline.contract import CloudMaskInputs, Resources, StatusOutputs, Step, StepContext
from steps.pipeline.scene import Scene
from steps.products.definitions import LAI, LAI_FLAGS
from steps.products.raster import encode, read_band, write_gtiff
from steps.science.angles import interpolate_azimuth_grid, interpolate_grid, lai_angle_cosines
from steps.science.lai import BAND_ORDER, FLAGS_NODATA, compute_lai, load_network
from steps.science.radiometry import dn_to_reflectance
from steps.science.scl import MASK_CLEAR

log = logging.getLogger(__name__)

LAI_BANDS = BAND_ORDER  # B03 B04 B05 B06 B07 B8A B11 B12
LAI_MODE: Literal["clean", "snap"] = "clean"
LAI_WORKERS = 2
"""Threads evaluating the network (numpy releases the GIL; results are identical for any count)."""
LAI_CHUNK_PX = 1 << 18
"""Pixels per network chunk (about 40 MB of working memory per thread)."""


class LaiInputs(CloudMaskInputs):
    """Inputs of ``lai``: the scene, its cloud mask and the output root."""


class LaiOutputs(StatusOutputs):
    """Outputs of ``lai``."""

    lai: str = Field(description="href of the 20 m work LAI raster")
    lai_flags: str = Field(description="href of the 20 m work LAI flags raster")
    provenance: str = Field(description="JSON object: network set, platform, angle source, mode")


def pixel_angles(scene: Scene, shape: tuple[int, int], res: float) -> tuple[dict[str, np.ndarray | float], str]:
    """Sun/view zenith and azimuth (degrees) per pixel of a grid of pixel size ``res`` m, or scene means.

    Per-pixel values come from bilinear interpolation of the MTD_TL.xml grids; a source without granule
    metadata (or with unusable grids) gets the scene means, and the returned text says which.
    """
    a = scene.angles
    if a.has_grids and a.step_m is not None:
        try:
            out: dict[str, np.ndarray | float] = {
                "sun_zenith": interpolate_grid(a.array("sun_zenith"), step_m=a.step_m, out_shape=shape, res_m=res),
                "sun_azimuth": interpolate_azimuth_grid(a.array("sun_azimuth"), step_m=a.step_m, out_shape=shape,
                                                        res_m=res),
                "view_zenith": interpolate_grid(a.array("view_zenith"), step_m=a.step_m, out_shape=shape,
                                                res_m=res),
                "view_azimuth": interpolate_azimuth_grid(a.array("view_azimuth"), step_m=a.step_m,
                                                         out_shape=shape, res_m=res),
            }
            return out, f"per-pixel bilinear interpolation of the 23x23 grids ({a.source})"
        except ValueError as exc:
            log.warning("%s: angle grids unusable (%s); using scene-mean angles", scene.scene_id, exc)
    means: dict[str, np.ndarray | float] = {
        "sun_zenith": a.mean_sun_zenith, "sun_azimuth": a.mean_sun_azimuth,
        "view_zenith": a.mean_view_zenith, "view_azimuth": a.mean_view_azimuth,
    }
    return means, f"scene-mean angles ({a.source})"


def _gather(a: np.ndarray | float, idx: np.ndarray) -> np.ndarray | float:
    """Values of a full-grid array at flat indices ``idx`` (scalars pass through)."""
    return np.take(a.reshape(-1), idx) if isinstance(a, np.ndarray) else a


def _gather_reflectance(scene: Scene, band: str, dn: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """Reflectance of ``band`` at flat indices ``idx`` into ``out`` (the DN are gathered first: 2 bytes each)."""
    info = scene.band_info(band)
    out[...] = dn_to_reflectance(np.take(dn.reshape(-1), idx), info.scale, info.offset)


def run_lai(inputs: LaiInputs, ctx: StepContext) -> LaiOutputs:
    """Compute LAI and flags on clear pixels of the 20 m grid."""
    scene = ctx.scene
    try:
        net = load_network(ctx.settings.lai_network, scene.platform or "sentinel-2a")
    except ValueError as exc:
        raise InvalidInputError(f"{scene.scene_id}: no LAI network: {exc}") from exc
    mask20, _ = read_band(inputs.cloud_mask, what=f"{scene.scene_id} cloud mask", side="output")
    g20 = scene.grid(20)
    if mask20.shape != g20.shape:
        raise InvalidInputError(f"{scene.scene_id}: cloud mask shape {mask20.shape} is not the 20 m grid {g20.shape}")
    t0 = time.monotonic()
    # only clear pixels get a value: gather them once (DN → reflectance, angles → cosines) and run the
    # network on that compact set instead of on every pixel of the tile
    idx = np.flatnonzero(mask20 == MASK_CLEAR)
    refl = np.empty((len(LAI_BANDS), idx.size), dtype=np.float32)
    neg = np.zeros(idx.size, dtype=bool)
    for k, (band, dn) in enumerate(zip(LAI_BANDS, scene.read_dn(LAI_BANDS, 20), strict=True)):
        _gather_reflectance(scene, band, dn, idx, refl[k])
        neg |= refl[k] < 0
        del dn
    # a reflectance still negative after the offset is invalid input: NaN in, so no LAI and flags 255 out
    # (compute_lai's no-data convention), counted in the item
    negative = int(np.count_nonzero(neg))
    if negative:
        refl[:, np.flatnonzero(neg)] = np.nan
        log.info("%s: %d clear pixels with a negative LAI input reflectance left without LAI", scene.scene_id,
                 negative)
    del neg
    t1 = time.monotonic()
    angles, angle_source = pixel_angles(scene, g20.shape, g20.res)
    cos_vz, cos_sz, cos_raa = lai_angle_cosines(*(_gather(angles[k], idx) for k in (
        "sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth")))
    del angles
    t2 = time.monotonic()
    lai_c, flags_c = compute_lai(refl, cos_vz, cos_sz, cos_raa, net, mode=LAI_MODE, chunk_px=LAI_CHUNK_PX,
                                 workers=LAI_WORKERS)
    del refl, cos_vz, cos_sz, cos_raa
    lai = np.full(g20.shape, np.nan, dtype=np.float32)
    flags = np.full(g20.shape, FLAGS_NODATA, dtype=np.uint8)
    lai.reshape(-1)[idx] = lai_c
    flags.reshape(-1)[idx] = flags_c
    del lai_c, flags_c
    t3 = time.monotonic()
    lai_href = write_gtiff(ctx.storage, ctx.work_key("lai.tif"), encode(lai, LAI), g20, LAI)
    flags_href = write_gtiff(ctx.storage, ctx.work_key("lai_flags.tif"), flags, g20, LAI_FLAGS)
    log.debug("%s: lai read %.2fs, angles %.2fs, network %.2fs, write %.2fs", scene.scene_id, t1 - t0, t2 - t1,
              t3 - t2, time.monotonic() - t3)
    prov = {
        "network": net.id,
        "platform": scene.platform,
        "definition_domain_grid": "snap",
        "mode": LAI_MODE,
        "angles": angle_source,
        "relative_azimuth": "cos(sun_azimuth - view_azimuth), plain difference (SNAP)",
        "resampling": f"bands averaged (valid DNs only) or repeated onto the {g20.res:g} m grid",
        "negative_reflectance_px": negative,
        "software": {"snap-biophysical-networks": f"{net.id} (opttbx-biophysical auxdata)"},
    }
    return LaiOutputs(lai=lai_href, lai_flags=flags_href, provenance=json.dumps(prov, sort_keys=True))


LAI_STEP = Step(
    name="lai", description="SNAP biophysical LAI and 5-bit flags at 20 m with per-pixel angles, clear pixels only.",
    Inputs=LaiInputs, Outputs=LaiOutputs, body=run_lai,
    resources=Resources(cpu="2", memory="4Gi"),
)
