"""Sen2Cor Scene Classification (SCL) classes and raw2ready's ``cloud_mask`` class codes.

SCL (L2A, 20 m): 0 NO_DATA, 1 SATURATED_OR_DEFECTIVE, 2 DARK_AREA/topographic cast shadow, 3 CLOUD_SHADOWS,
4 VEGETATION, 5 NOT_VEGETATED, 6 WATER, 7 UNCLASSIFIED, 8 CLOUD_MEDIUM_PROBABILITY,
9 CLOUD_HIGH_PROBABILITY, 10 THIN_CIRRUS, 11 SNOW (Sen2Cor product specification; see
``shared/reference/SCIENCE_NOTES.md`` §5).

The ``cloud_mask`` product uses its own small, documented code table (uint8, nodata 255):

=====  ===========  ==========================================================
code   name         meaning
=====  ===========  ==========================================================
0      clear        usable surface (land or water)
1      cloud        opaque cloud (s2cloudless and/or SCL 8, 9)
2      cirrus       thin cirrus (SCL 10 and/or L1C B10 test)
3      shadow       cloud shadow (SCL 3)
4      snow         snow or ice (SCL 11)
5      invalid      saturated or defective (SCL 1)
6      buffer       clear by classification but inside the cloud/shadow dilation
255    nodata       outside the swath / no data (DN 0, SCL 0)
=====  ===========  ==========================================================

Only code 0 is "clear"; NDVI and LAI are computed on code 0 pixels only.
"""

from __future__ import annotations

import numpy as np

SCL_NO_DATA = 0
SCL_SATURATED = 1
SCL_DARK = 2
SCL_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_CIRRUS = 10
SCL_SNOW = 11

MASK_CLEAR = 0
MASK_CLOUD = 1
MASK_CIRRUS = 2
MASK_SHADOW = 3
MASK_SNOW = 4
MASK_INVALID = 5
MASK_BUFFER = 6
MASK_NODATA = 255

MASK_CLASSES: dict[int, str] = {
    MASK_CLEAR: "clear",
    MASK_CLOUD: "cloud",
    MASK_CIRRUS: "cirrus",
    MASK_SHADOW: "shadow",
    MASK_SNOW: "snow",
    MASK_INVALID: "invalid",
    MASK_BUFFER: "buffer",
    MASK_NODATA: "nodata",
}

# SCL value -> mask code (lookup table indexed by SCL value, 0..255)
_SCL_TO_MASK = np.full(256, MASK_NODATA, dtype=np.uint8)
_SCL_TO_MASK[[SCL_DARK, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER, SCL_UNCLASSIFIED]] = MASK_CLEAR
_SCL_TO_MASK[SCL_SATURATED] = MASK_INVALID
_SCL_TO_MASK[SCL_SHADOW] = MASK_SHADOW
_SCL_TO_MASK[[SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH]] = MASK_CLOUD
_SCL_TO_MASK[SCL_CIRRUS] = MASK_CIRRUS
_SCL_TO_MASK[SCL_SNOW] = MASK_SNOW


def scl_to_mask(scl: np.ndarray) -> np.ndarray:
    """Map an SCL array (uint8, any shape) to ``cloud_mask`` codes (uint8, same shape, 255 = nodata).

    SCL 2 (dark area / topographic shadow) is treated as clear here; callers that want the conservative
    choice can mask it themselves.
    """
    return _SCL_TO_MASK[np.asarray(scl, dtype=np.uint8)]


def clear_fraction(mask: np.ndarray) -> float:
    """Fraction of valid (non-nodata) pixels that are clear (code 0); 0.0 when nothing is valid."""
    valid = mask != MASK_NODATA
    n = int(valid.sum())
    if n == 0:
        return 0.0
    return float(np.count_nonzero(mask[valid] == MASK_CLEAR)) / n
