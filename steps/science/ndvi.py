"""Normalized difference vegetation index."""

from __future__ import annotations

import numpy as np


def ndvi(red: np.ndarray, nir: np.ndarray, clear: np.ndarray | None = None) -> np.ndarray:
    """NDVI = (NIR − red)/(NIR + red) from reflectances (float, NaN = no data), as float32.

    NaN where either input is NaN, where ``clear`` is False (cloud/shadow/invalid), where either
    reflectance is negative (invalid after the radiometric offset: see
    :mod:`steps.science.radiometry`), or where NIR + red is 0. With both inputs ≥ 0 the value lies in
    [−1, 1] by construction, so nothing is clipped.
    """
    red = red.astype(np.float32, copy=False)
    nir = nir.astype(np.float32, copy=False)
    total = nir + red
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (nir - red) / total
    out[~((total > 0) & (red >= 0) & (nir >= 0))] = np.nan
    if clear is not None:
        out[~clear] = np.nan
    return out
