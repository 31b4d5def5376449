"""Normalized difference vegetation index."""

from __future__ import annotations

import numpy as np


def ndvi(red: np.ndarray, nir: np.ndarray, clear: np.ndarray | None = None) -> np.ndarray:
    """NDVI = (NIR − red)/(NIR + red) from reflectances (float, NaN = no data), as float32.

    NaN where either input is NaN, where ``clear`` is False (cloud/shadow/invalid), or where
    NIR + red ≤ 0 (undefined for non-positive totals, e.g. dark water with negative BOA values).
    Values are clipped to [−1, 1], which only matters when one reflectance is negative.
    """
    red = red.astype(np.float32, copy=False)
    nir = nir.astype(np.float32, copy=False)
    total = nir + red
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (nir - red) / total
    out[~(total > 0)] = np.nan
    np.clip(out, -1.0, 1.0, out=out)
    if clear is not None:
        out[~clear] = np.nan
    return out
