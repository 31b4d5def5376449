"""Sentinel-2 radiometry: digital numbers to reflectance.

From processing baseline 04.00 (operational 2022-01-25, and every Collection-1 reprocessing) the L1C
and L2A products store DN = ρ·Q − offset with a per-band additive offset (−1000 so far) and
Q = 10000, so ρ = (DN + offset)/Q; before 04.00 the metadata lists no offset and ρ = DN/Q. DN 0 is
no data in every baseline. The caller decides scale = 1/Q and offset = add_offset/Q **from the
product metadata**, never from the acquisition date (SCIENCE_NOTES §7).
"""

from __future__ import annotations

import numpy as np


def dn_to_reflectance(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Reflectance (float32, unitless 0–1, may be slightly negative) = DN·scale + offset; DN 0 → NaN."""
    out = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
    out[dn == 0] = np.nan
    return out
