"""Sentinel-2 radiometry: digital numbers to reflectance.

From processing baseline 04.00 (operational 2022-01-25, and every Collection-1 reprocessing) the L1C
and L2A products store DN = ρ·Q − offset with a per-band additive offset (−1000 so far) and
Q = 10000, so ρ = (DN + offset)/Q; before 04.00 the metadata lists no offset and ρ = DN/Q. DN 0 is
no data in every baseline. The caller decides scale = 1/Q and offset = add_offset/Q from the sources
(``steps.sentinel2.radiometry``), never from the acquisition date (SCIENCE_NOTES §7).

Reflectance that is still negative after the offset is physically impossible for the vegetation
products (BOA reflectance of a real surface is ≥ 0; negative values come from the correction's noise on
very dark targets, or from an offset applied twice). The products treat such pixels as invalid
(:func:`mask_negative`) and count them, rather than computing an NDVI beyond ±1 and clipping it.
"""

from __future__ import annotations

import numpy as np


def dn_to_reflectance(dn: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Reflectance (float32, unitless 0–1, may be slightly negative) = DN·scale + offset; DN 0 → NaN.

    When the offset is a whole number of DN (−1000 DN = −0.1 at scale 1e-4, or 0) it is added in DN first,
    ρ = (DN + offset/scale)·scale, which is exact in float32 for 16-bit DN: the sign of ρ is then exactly the
    sign of DN + ADD_OFFSET (DN 1000 at baseline ≥ 04.00 is reflectance 0, not −7e-9), so the negative-
    reflectance rule does not depend on float rounding.
    """
    out = np.empty(dn.shape, dtype=np.float32)
    off_dn = offset / scale if scale else 0.0
    if scale and abs(off_dn - round(off_dn)) < 1e-6:
        np.add(dn, np.float32(round(off_dn)), out=out, dtype=np.float32, casting="unsafe")
        np.multiply(out, np.float32(scale), out=out)
    else:
        np.multiply(dn, np.float32(scale), out=out, dtype=np.float32, casting="unsafe")
        np.add(out, np.float32(offset), out=out)
    np.copyto(out, np.float32(np.nan), where=dn == 0)
    return out


def mask_negative(*reflectances: np.ndarray) -> np.ndarray:
    """Set every pixel where any of the given reflectance arrays is < 0 to NaN in all of them (in place).

    Returns the boolean array of the pixels that were masked (NaN inputs are not counted: they were no
    data already). All arrays must have the same shape.
    """
    neg = np.zeros(reflectances[0].shape, dtype=bool)
    for r in reflectances:
        neg |= r < 0  # NaN compares False
    if neg.any():
        for r in reflectances:
            r[neg] = np.nan
    return neg
