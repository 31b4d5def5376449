"""The product definitions: one table every writer and reader uses (COG encoding, STAC ``raster:bands``).

Physical value = stored value × scale + offset; ``nodata`` marks no data, cloud-masked pixels included.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Product:
    """How one product asset is encoded."""

    key: str
    title: str
    dtype: str
    nodata: int
    scale: float
    offset: float
    resolution_m: int
    unit: str | None
    roles: tuple[str, ...]
    description: str


NDVI = Product(
    "ndvi", "NDVI", "int16", -32768, 0.0001, 0.0, 10, None, ("data",),
    "Normalized difference vegetation index (NIR−B04)/(NIR+B04) from L2A BOA reflectance, NIR = B08 (B8A when "
    "the source has no B08); clear pixels with both reflectances ≥ 0 only.",
)
LAI = Product(
    "lai", "Leaf area index (SNAP biophysical processor)", "int16", -32768, 0.001, 0.0, 20, "m2/m2", ("data",),
    "Green LAI from the SNAP biophysical neural network at 20 m; clear pixels only.",
)
LAI_FLAGS = Product(
    "lai_flags", "LAI quality flags (SNAP)", "uint8", 255, 1.0, 0.0, 20, None, ("data", "quality"),
    "SNAP bits: 1 input out of range, 2 thresholded to min, 4 thresholded to max, 8 output too low, "
    "16 output too high; 255 no data.",
)
CLOUD_MASK = Product(
    "cloud_mask", "Cloud, cirrus and shadow mask", "uint8", 255, 1.0, 0.0, 20, None, ("cloud", "quality"),
    "Class codes: 0 clear, 1 cloud, 2 cirrus, 3 shadow, 4 snow, 5 invalid, 6 buffer, 255 no data.",
)

PRODUCTS: tuple[Product, ...] = (NDVI, LAI, LAI_FLAGS, CLOUD_MASK)
BY_KEY = {p.key: p for p in PRODUCTS}
