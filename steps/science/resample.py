"""No-data-aware block averaging of Sentinel-2 digital numbers (pure numpy).

Sentinel-2 DN 0 is no data in every band and baseline, but ESA's JPEG 2000 files carry no nodata tag,
so GDAL's ``average`` resampling would average the zeros in (a 20 m pixel half outside the swath would
get half its value). :func:`block_mean_dn` averages only the valid (non-zero) DNs of each block and
rounds half up — the same numbers GDAL's ``average`` gives on a file whose nodata tag is 0 (checked
pixel for pixel in ``tests/test_science_resample.py``), so COG sources with a tag and JP2 sources without
one give identical results.
"""

from __future__ import annotations

import numpy as np


def block_mean_dn(dn: np.ndarray, factor: int) -> np.ndarray:
    """Mean of the non-zero DNs of each ``factor``×``factor`` block, rounded half up; 0 where none is valid.

    Args:
        dn: 2-D unsigned integer DN array (e.g. uint16), 0 = no data. Its shape must be a multiple of
            ``factor`` (Sentinel-2 grids are: 10980 = 2·5490 = 6·1830).
        factor: integer downsampling factor ≥ 1 (10 m → 20 m: 2, 10 m → 60 m: 6, 20 m → 60 m: 3).

    Returns:
        Array of ``dn.dtype`` and shape ``(rows // factor, cols // factor)``.
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if factor == 1:
        return dn
    rows, cols = dn.shape
    if rows % factor or cols % factor:
        raise ValueError(f"shape {dn.shape} is not a multiple of the factor {factor}")
    out = np.empty((rows // factor, cols // factor), dtype=dn.dtype)
    step = max(1, 1024 // factor)  # output rows per block: bounds the int64 temporaries to a few MB
    for r0 in range(0, out.shape[0], step):
        r1 = min(r0 + step, out.shape[0])
        blk = dn[r0 * factor:r1 * factor].reshape(r1 - r0, factor, cols // factor, factor)
        total = blk.sum(axis=(1, 3), dtype=np.int64)
        count = np.count_nonzero(blk, axis=(1, 3))
        mean = (total + count // 2) // np.maximum(count, 1)
        out[r0:r1] = np.where(count > 0, mean, 0).astype(dn.dtype)
    return out
