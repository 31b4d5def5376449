"""Tests for steps.science.cloudmask: exact s2cloudless probabilities, fast mask, SCL combination."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

# TOA reflectance spectra, S2CLOUDLESS_BANDS order: B01 B02 B04 B05 B08 B8A B09 B10 B11 B12
SPECTRA = {
    "vegetation": [0.125, 0.095, 0.060, 0.105, 0.310, 0.330, 0.095, 0.0030, 0.175, 0.085],
    "soil": [0.140, 0.120, 0.165, 0.190, 0.250, 0.270, 0.080, 0.0035, 0.320, 0.250],
    "water": [0.110, 0.080, 0.040, 0.030, 0.020, 0.018, 0.010, 0.0010, 0.010, 0.006],
    "urban": [0.150, 0.135, 0.145, 0.155, 0.200, 0.210, 0.070, 0.0040, 0.220, 0.190],
    "cloud": [0.480, 0.470, 0.460, 0.470, 0.520, 0.520, 0.220, 0.0600, 0.380, 0.250],
    "cirrus_add": [0.035, 0.035, 0.030, 0.030, 0.030, 0.030, 0.020, 0.0300, 0.025, 0.020],
}


def _blobs(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth random field with zero mean, unit std (Gaussian-filtered white noise)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def make_toa_scene(
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int = 0,
    cloud_cover: float = 0.25,
    cloud_sigma: float = 6.0,
    cirrus_cover: float = 0.15,
    edge: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic L1C TOA scene (float32 H x W x 10) and its valid mask.

    Land cover blobs (vegetation, soil, water, urban), cumulus-like cloud blobs with soft edges, thin
    cirrus sheets, cloud shadows offset from the clouds, per-pixel noise, and a diagonal swath edge.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    spec = {k: np.asarray(v, dtype=np.float32) for k, v in SPECTRA.items()}
    lc1, lc2 = _blobs(rng, shape, 8.0), _blobs(rng, shape, 12.0)
    land = np.where(
        (lc1 > 0.3)[..., None],
        spec["vegetation"],
        np.where((lc2 > 0.6)[..., None], spec["soil"], spec["urban"] * 0.5 + spec["vegetation"] * 0.5),
    )
    land = np.where((lc2 < -1.3)[..., None], spec["water"], land)
    land = land * (1 + 0.08 * _blobs(rng, shape, 2.0))[..., None]
    # clouds: thickness in [0, 1], soft edges
    cf = _blobs(rng, shape, cloud_sigma)
    thr = np.quantile(cf, 1 - cloud_cover) if cloud_cover > 0 else np.inf
    thick = np.clip((cf - thr + 0.15) / 0.6, 0, 1)
    # shadows: the cloud field shifted, darkening land
    shift = (max(2, h // 40), max(2, w // 30))
    shade = np.roll(thick, shift, axis=(0, 1))
    surface = land * (1 - 0.65 * shade)[..., None]
    toa = surface * (1 - thick)[..., None] + spec["cloud"] * thick[..., None]
    ci = _blobs(rng, shape, 2 * cloud_sigma)
    cthr = np.quantile(ci, 1 - cirrus_cover) if cirrus_cover > 0 else np.inf
    cir = np.clip((ci - cthr) / 0.8, 0, 1) * rng.uniform(0.5, 1.2)
    toa = toa + spec["cirrus_add"] * cir[..., None]
    toa = toa + rng.normal(0, 0.004, toa.shape)
    toa = np.clip(toa, 0.0001, None).astype(np.float32)
    valid = np.ones(shape, dtype=bool)
    if edge:
        yy, xx = np.mgrid[0:h, 0:w]
        valid = (xx * 0.8 + yy * 0.35) < 0.85 * w
        toa[~valid] = 0.0
    return toa, valid
