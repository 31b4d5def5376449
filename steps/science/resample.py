"""No-data-aware block averaging of Sentinel-2 digital numbers (pure numpy).

Sentinel-2 DN 0 is no data in every band and baseline, but ESA's JPEG 2000 files carry no nodata tag,
so GDAL's ``average`` resampling would average the zeros in (a 20 m pixel half outside the swath would
get half its value). :func:`block_mean_dn` averages only the valid (non-zero) DNs of each block and
rounds half up — the same numbers GDAL's ``average`` gives on a file whose nodata tag is 0 (checked
pixel for pixel in ``tests/test_science_resample.py``), so a reader can let GDAL average tagged files (COGs,
faster) and use this for untagged ones (JPEG 2000), with identical results.
"""

from __future__ import annotations

import numpy as np


def block_mean_dn(dn: np.ndarray, factor: int) -> np.ndarray:
    """Mean of the non-zero DNs of each ``factor``×``factor`` block, rounded half up; 0 where none is valid.

    Args:
        dn: 2-D unsigned integer DN array (uint8 or uint16), 0 = no data. Its shape must be a multiple of
            ``factor`` (Sentinel-2 grids are: 10980 = 2·5490 = 6·1830).
        factor: integer downsampling factor, 1 to 15 (10 m → 20 m: 2, 10 m → 60 m: 6, 20 m → 60 m: 3).

    Returns:
        Array of ``dn.dtype`` and shape ``(rows // factor, cols // factor)``.
    """
    if not 1 <= factor <= 15:  # the per-block valid count is kept in a uint8
        raise ValueError(f"factor must be in 1..15, got {factor}")
    if dn.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8/uint16 DN, got {dn.dtype}")
    if factor == 1:
        return dn
    rows, cols = dn.shape
    if rows % factor or cols % factor:
        raise ValueError(f"shape {dn.shape} is not a multiple of the factor {factor}")
    total = np.zeros((rows // factor, cols // factor), dtype=np.uint32)  # ≤ 225 · 65535 < 2³²
    count = np.zeros(total.shape, dtype=np.uint8)
    for i in range(factor):  # one strided pass per position in the block: no 4-D temporaries
        for j in range(factor):
            part = dn[i::factor, j::factor]
            total += part
            count += part != 0
    total += count >> 1  # round half up
    np.floor_divide(total, np.maximum(count, 1), out=total)
    return total.astype(dn.dtype)
